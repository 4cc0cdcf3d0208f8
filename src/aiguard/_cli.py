"""The ``aiguard`` command line: ``aiguard demo`` shows the guarded call at work, offline."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

import aiguard
from aiguard.testing import Capture, MockServer

_MESSAGES: Any = [{"role": "user", "content": "Summarise this support ticket in one line."}]


class _Style:
    def __init__(self, stream: TextIO) -> None:
        self.on = stream.isatty()

    def __call__(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.on else text


def demo(out: TextIO) -> int:
    """Run a scripted scenario against the testing kit's server and print the traces."""
    try:
        import openai
    except ImportError:
        print("aiguard demo needs the openai SDK: pip install 'aiguard[openai]'", file=sys.stderr)
        return 2
    style = _Style(out)
    with MockServer() as server, Capture() as capture:
        raw = openai.OpenAI(base_url=server.url, api_key="sk-demo-not-a-real-key")
        retry = aiguard.Retry(attempts=3, wait_initial=0.05, wait_jitter=0.05)
        breaker = aiguard.Breaker(failures=3, reset_after=30)
        client = aiguard.wrap(
            raw,
            retry=retry,
            fallback=["gpt-4o-mini"],
            timeout=10,
            breaker=breaker,
            provider="openai",
        )
        server.reply("gpt-4o", prompt_tokens=42, completion_tokens=18, cached_tokens=32)
        server.reply("gpt-4o-mini", prompt_tokens=42, completion_tokens=21)

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

        @scene("2. An outage: retries spent, the fallback model answers")
        def outage() -> str:
            server.fail("gpt-4o", status=503, times=3)
            return _ask(client)

        @scene("3. The breaker is open now: gpt-4o is skipped without a request")
        def skipped() -> str:
            return _ask(client)

        @scene("4. A bad request is not retried: the provider's own error reaches you")
        def bad_request() -> str:
            try:
                aiguard.wrap(raw, retry=retry).chat.completions.create(
                    model="gpt-4o", messages=_MESSAGES, temperature=9
                )
            except openai.BadRequestError as exc:
                return f"openai.BadRequestError raised to the caller ({exc.status_code})"
            return "unexpected success"

        for title, fn in scenes:
            capture.clear()
            if title.startswith("4."):
                server.fail("gpt-4o", status=400)
            result = fn()
            print(style(title, "1"), file=out)
            _tree(capture.spans(), out, style)
            print(f"   -> {result}\n", file=out)
        print(
            style("What you saw", "1")
            + ": every call is one trace; each attempt is a GenAI inference span under an\n"
            "aiguard span that records attempts, retries and fallbacks. Export these to your\n"
            "collector with aiguard.configure(service_name=..., exporter='otlp').",
            file=out,
        )
    return 0


def _ask(client: Any) -> str:
    reply = client.chat.completions.create(model="gpt-4o", messages=_MESSAGES)
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
        failed = span.status.status_code is StatusCode.ERROR
        if failed:
            facts.append(style(f"error={a.get('error.type')}", "31"))
        mark = style("x", "31") if failed else style("ok", "32")
        line = f"{'   ' * depth}{mark} {span.name}  {ms:7.1f} ms  {'  '.join(map(str, facts))}"
        print("   " + line, file=out)
        events = [e for e in span.events if e.name in ("aiguard.retry", "aiguard.fallback")]
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


def _start(span: ReadableSpan) -> int:
    return span.start_time or 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aiguard", description=aiguard.__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="run a short offline scenario and print its traces")
    args = parser.parse_args(argv)
    if args.command == "demo":
        try:
            return demo(sys.stdout)
        except BrokenPipeError:  # e.g. piped into `head`
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
            return 0
    return 2  # pragma: no cover - argparse refuses unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
