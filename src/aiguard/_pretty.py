"""A readable console view of guarded calls: one compact tree per call.

``aiguard.configure(exporter="pretty")`` prints, for each call, its one span with its attempts,
fallback, tokens and cost, then one line per failed attempt and the retry waits, fallbacks and
refusals as ``~`` lines. ``aiguard demo`` prints its scenes with the same printer. Colour only
when the stream is a terminal (and ``NO_COLOR`` is not set)::

    ok chat gpt-4o    226.2 ms  attempts=3  fallback=gpt-4o-mini  tokens in=420 out=210  $0.000189
       x attempt 1 gpt-4o: openai.InternalServerError (outage)
       ~ aiguard.retry attempt=1, type=openai.InternalServerError, wait_s=0.068
       x attempt 2 gpt-4o: openai.InternalServerError (outage)
       ~ aiguard.fallback model=gpt-4o-mini, reason=outage
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence
from typing import TextIO

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

from aiguard._telemetry import report_fault

# The span events worth a line of their own.
EVENTS = (
    "aiguard.attempt.failed",
    "aiguard.retry",
    "aiguard.fallback",
    "aiguard.check.failed",
    "aiguard.budget.refused",
)


class Style:
    """ANSI colour when ``stream`` is a terminal and ``NO_COLOR`` is not set; plain text else."""

    def __init__(self, stream: TextIO, colour: bool | None = None) -> None:
        if colour is None:
            try:
                colour = stream.isatty() and not os.environ.get("NO_COLOR")
            except Exception:  # a closed or odd stream: plain text
                colour = False
        self.on = colour

    def __call__(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.on else text


def print_tree(
    spans: Sequence[ReadableSpan], out: TextIO, style: Style, indent: str = "   "
) -> None:
    """Print ``spans`` as trees: each span whose parent is not among them is a root."""
    for line in tree_lines(spans, style):
        print(indent + line, file=out)


def tree_lines(spans: Sequence[ReadableSpan], style: Style) -> list[str]:
    """The lines :func:`print_tree` prints, without the indent."""
    ids = {s.context.span_id for s in spans if s.context is not None}
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in spans:
        parent = span.parent.span_id if span.parent is not None else None
        children.setdefault(parent if parent in ids else None, []).append(span)
    lines: list[str] = []

    def show(span: ReadableSpan, depth: int) -> None:
        lines.append(_span_line(span, depth, style))
        for event in span.events:
            if event.name in EVENTS:
                ea = event.attributes or {}
                if event.name == "aiguard.attempt.failed":  # compact: one failed request
                    line = style(f"x attempt {ea.get('aiguard.attempt')}", "31") + (
                        f" {ea.get('aiguard.attempt.model')}: {ea.get('error.type')}"
                        f" ({ea.get('aiguard.failure.class')})"
                    )
                else:
                    detail = ", ".join(
                        f"{k.split('.')[-1]}={f'{v:.3f}' if isinstance(v, float) else v}"
                        for k, v in ea.items()
                    )
                    line = f"{style('~ ' + event.name, '33')} {detail}"
                lines.append(f"{'   ' * (depth + 1)}{line}")
        if span.context is not None:
            for child in sorted(children.get(span.context.span_id, []), key=_start):
                show(child, depth + 1)

    for root in sorted(children.get(None, []), key=_start):
        show(root, 0)
    return lines


def _span_line(span: ReadableSpan, depth: int, style: Style) -> str:
    a = {k: str(v) if isinstance(v, bytes) else v for k, v in (span.attributes or {}).items()}
    ms = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
    facts: list[str] = []
    if "aiguard.attempts" in a:
        facts.append(f"attempts={a['aiguard.attempts']}")
        if a.get("aiguard.fallback.used"):
            facts.append(f"fallback={a.get('aiguard.fallback.model')}")
        if a.get("aiguard.breaker.skipped"):
            facts.append(f"breaker skipped {a['aiguard.breaker.skipped']}")
    if "gen_ai.usage.input_tokens" in a:
        facts.append(
            f"tokens in={a['gen_ai.usage.input_tokens']} out={a.get('gen_ai.usage.output_tokens')}"
        )
        if "gen_ai.usage.cache_read.input_tokens" in a:
            facts.append(f"cached={a['gen_ai.usage.cache_read.input_tokens']}")
    if isinstance(a.get("aiguard.cost.usd"), float):
        facts.append(f"${a['aiguard.cost.usd']:.6f}")
    elif isinstance(a.get("aiguard.cost.total_usd"), float):
        facts.append(f"total ${a['aiguard.cost.total_usd']:.6f}")
    if "aiguard.stream.chunks" in a:
        facts.append(f"chunks={a['aiguard.stream.chunks']}")
    failed = span.status.status_code is StatusCode.ERROR
    if failed:
        facts.append(style(f"error={a.get('error.type')}", "31"))
    mark = style("x", "31") if failed else style("ok", "32")
    return f"{'   ' * depth}{mark} {span.name}  {ms:7.1f} ms  {'  '.join(map(str, facts))}"


def _start(span: ReadableSpan) -> int:
    return span.start_time or 0


class PrettySpanExporter(SpanExporter):
    """Print one compact tree per trace as soon as its root span ends.

    A guarded call is normally a trace of its own (one span, its attempts as events), so each
    call prints as one tree; calls made inside a span of yours (a web request, a decorated
    function) print with it when it ends. Spans of a trace whose root has not ended yet wait (at
    most ``max_pending`` of them, then they are printed as they are), and whatever is left is
    printed at flush and shutdown. Printing never raises into the application: a fault is logged
    once and the spans are dropped.

    ``out`` is the stream (default: ``sys.stderr`` at the time of printing, like logging, so the
    program's own output stays clean when redirected); ``colour`` forces colour on or off
    (default: only on a terminal, and not when ``NO_COLOR`` is set).
    """

    # Print soon after the call ends: a console view is read live.
    schedule_delay_millis = 200

    def __init__(
        self, out: TextIO | None = None, colour: bool | None = None, max_pending: int = 2048
    ) -> None:
        self._out = out
        self._colour = colour
        self._max_pending = max_pending
        self._pending: dict[int, list[ReadableSpan]] = {}
        self._count = 0
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            ready: list[list[ReadableSpan]] = []
            with self._lock:
                for span in spans:
                    if span.context is None:
                        continue
                    trace_id = span.context.trace_id
                    self._pending.setdefault(trace_id, []).append(span)
                    self._count += 1
                    if span.parent is None or span.parent.is_remote:
                        ready.append(self._pending.pop(trace_id))
                        self._count -= len(ready[-1])
                if self._count > self._max_pending:
                    ready.extend(self._take_all())
            for group in ready:
                self._print(group)
        except Exception as exc:
            report_fault("printing spans (exporter='pretty')", exc)
        return SpanExportResult.SUCCESS

    def _take_all(self) -> list[list[ReadableSpan]]:
        groups = list(self._pending.values())
        self._pending.clear()
        self._count = 0
        return groups

    def _print(self, spans: Sequence[ReadableSpan]) -> None:
        out = self._out if self._out is not None else sys.stderr
        if out is None:  # pythonw
            return
        lines = tree_lines(spans, Style(out, self._colour))
        out.write("".join(line + "\n" for line in lines))
        out.flush()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        try:
            with self._lock:
                groups = self._take_all()
            for group in groups:
                self._print(group)
        except Exception as exc:
            report_fault("printing spans (exporter='pretty')", exc)
        return True

    def shutdown(self) -> None:
        self.force_flush()
