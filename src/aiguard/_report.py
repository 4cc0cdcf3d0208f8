"""``aiguard report FILE.jsonl``: what the guarded calls in a span file did, cost and took.

It reads the lines :class:`aiguard._jsonl.JsonlSpanExporter` writes (one OTLP/JSON span per line);
lines holding a whole OTLP/JSON export request (``{"resourceSpans": [...]}``, as the collector's
file exporter writes them) are read too. Reading is tolerant: blank lines are ignored, and lines
that are not a JSON span, spans of other instrumentations and repeated spans are skipped and
counted.

Two kinds of aiguard spans are summarised:

- **guarded model calls**: the one inference span of each call of a wrapped client,
  ``{operation} {model}`` with ``gen_ai.operation.name`` and ``aiguard.attempts``. It carries the
  answer's tokens and cost, which belong to the model that answered (``gen_ai.response.model``,
  else ``gen_ai.request.model``) and to the call's tag (``aiguard.tag``, else its enclosing
  guarded function's), ``(none)`` without one. Its attempts are ``aiguard.attempts``; each failed
  one is an ``aiguard.attempt.failed`` span event naming its ``error.type``.
- **guarded functions**: the spans of ``@aiguard.guard`` functions (``aiguard.function``).

A call nested in another (a wrapped client used inside a guarded function) counts as a call of
its own; ``nested`` says how many there were. Files written before aiguard had one span per call
(a guard span with ``aiguard.operation`` and one span per attempt with ``aiguard.attempt``) are
read too.

Latency percentiles use the **nearest-rank** method: the p-th percentile of n sorted durations
is the ``ceil(p/100 * n)``-th, always a duration that was observed.

Costs are summed as ``Decimal`` from the values written in the file. The table shows them with
six decimals; ``--json`` gives them as **strings** holding the exact decimal sum (``"0.015"``;
parse with ``decimal.Decimal``), or ``null`` for a model or tag with no priced attempt.

The evaluation results in the file (feedback, online evaluators, review verdicts) make the
``quality`` part: per model, tag and time window (``--window`` minutes), each evaluation's mean
score, pass rate and cost per well-rated answer, and a quality-decay flag (see
:mod:`aiguard._report_quality`).

Exit codes: 0 a report was printed; 1 the file holds no aiguard span; 2 the file cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TextIO

from aiguard import _report_quality
from aiguard import _semconv as sc
from aiguard._report_print import PERCENTILES, print_table
from aiguard._report_read import (
    _MAX_DEPTH,
    _OLD_GUARD_REQUEST_MODEL,
    _STATUS_ERROR,
    ReportError,
    _decimal,
    _exact,
    _int,
    _read,
    _Skipped,
    _Span,
)

NO_TAG = "(none)"


class _Usage:
    """Attempts, tokens and cost of one model or tag."""

    attempts: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cost: Decimal | None = None  # None: no attempt had a price

    def add(self, span: _Span, attempts: int = 1, errors: int | None = None) -> None:
        """Add a span's tokens and cost, and its ``attempts`` (``errors``: of them failed;
        None: one if the span failed)."""
        self.attempts += attempts
        self.errors += (1 if _failed(span) else 0) if errors is None else errors
        self.input_tokens += _int(span.attrs.get(sc.USAGE_INPUT))
        self.output_tokens += _int(span.attrs.get(sc.USAGE_OUTPUT))
        self.cache_read_tokens += _int(span.attrs.get(sc.USAGE_CACHE_READ))
        cost = _decimal(span.attrs.get(sc.COST_USD))
        if cost is not None:
            self.cost = cost if self.cost is None else self.cost + cost

    def as_json(self) -> dict[str, Any]:
        return {
            "attempts": self.attempts,
            "errors": self.errors,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cost_usd": _exact(self.cost),
        }


@dataclass
class Summary:
    """The numbers of one report, in the shape of its ``--json`` document."""

    path: str
    skipped: _Skipped
    calls: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    abandoned: int = 0
    retries: int = 0
    fallbacks: int = 0
    rate_waits: int = 0  # calls that waited for a rate limit's room
    rate_wait_s: float = 0.0
    nested: int = 0
    latency: dict[str, list[int]] = field(default_factory=dict)  # "" is every call
    function_latency: dict[str, list[int]] = field(default_factory=dict)
    attempts: int = 0
    attempt_errors: Counter[str] = field(default_factory=Counter)
    by_model: dict[str, _Usage] = field(default_factory=dict)
    by_tag: dict[str, _Usage] = field(default_factory=dict)
    total: _Usage = field(default_factory=_Usage)
    quality: dict[str, Any] = field(default_factory=dict)  # see aiguard._report_quality

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "skipped": {
                "invalid_lines": self.skipped.invalid_lines,
                "foreign_spans": self.skipped.foreign_spans,
                "duplicate_spans": self.skipped.duplicate_spans,
            },
            "calls": {
                "total": self.calls,
                "ok": self.ok,
                "errors": sum(self.errors.values()),
                "errors_by_type": dict(sorted(self.errors.items())),
                "abandoned": self.abandoned,
                "retries": self.retries,
                "fallbacks": self.fallbacks,
                "budget_refusals": self.errors["aiguard.BudgetExceeded"],
                "check_refusals": self.errors["aiguard.CheckFailed"],
                "rate_limit_refusals": self.errors["aiguard.RateLimited"],
                "rate_limit_waits": self.rate_waits,
                "rate_limit_wait_s": round(self.rate_wait_s, 3),
                "nested": self.nested,
            },
            "latency_ms": {
                "all": _percentiles(self.latency.get("", [])),
                "by_model": {
                    model: _percentiles(values)
                    for model, values in sorted(self.latency.items())
                    if model
                },
                "by_function": {
                    name: _percentiles(values)
                    for name, values in sorted(self.function_latency.items())
                },
            },
            "attempts": {
                "total": self.attempts,
                "errors": sum(self.attempt_errors.values()),
                "errors_by_type": dict(sorted(self.attempt_errors.items())),
            },
            "by_model": {name: usage.as_json() for name, usage in sorted(self.by_model.items())},
            "by_tag": {name: usage.as_json() for name, usage in _tags(self.by_tag)},
            "total": self.total.as_json(),
            "quality": self.quality,
        }


def report(
    path: str,
    *,
    as_json: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
    window_minutes: float = 60.0,
) -> int:
    """Print a summary of the aiguard spans in a JSONL span file; return the exit code.

    ``out`` gets the table (or with ``as_json`` one JSON document), ``err`` the error messages
    (default: ``sys.stdout`` / ``sys.stderr`` at call time). Exit codes: 0 done, 1 no aiguard
    span in the file, 2 the file cannot be read.

    Example::

        aiguard.configure(exporter=JsonlSpanExporter("spans.jsonl"))
        ...
        sys.exit(report("spans.jsonl"))          # or: aiguard report spans.jsonl --json
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        summary = summarise(path, window_minutes * 60)
    except ReportError as exc:
        print(f"aiguard report: {exc}", file=err)
        return 2
    if summary.calls == 0 and summary.attempts == 0:
        print(
            f"aiguard report: no aiguard spans in {path}{_skipped_note(summary.skipped)}", file=err
        )
        return 1
    if as_json:
        json.dump(summary.as_json(), out, indent=2)
        out.write("\n")
    else:
        print_table(summary.as_json(), summary.path, _skipped_note(summary.skipped), out)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``report``'s arguments to a (sub)parser; :func:`run` takes the parsed namespace.

    Example::

        _report.add_arguments(commands.add_parser("report", help="summarise a JSONL span file"))
        ...
        if args.command == "report":
            return _report.run(args)
    """
    parser.add_argument("file", help="a file of spans, one OTLP/JSON span per line")
    parser.add_argument(
        "--json",
        action="store_true",
        dest="as_json",
        help="print one JSON document instead of tables (costs as exact decimal strings)",
    )
    parser.add_argument(
        "--window",
        type=_minutes,
        default=60.0,
        metavar="MINUTES",
        help="the time window of the quality numbers (default 60)",
    )


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"--window takes a number of minutes > 0, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    """Run ``report`` with the arguments :func:`add_arguments` defined."""
    return report(args.file, as_json=args.as_json, window_minutes=args.window)


# -- reading -------------------------------------------------------------------------------------


def summarise(path: str, window_s: float = 3600.0) -> Summary:
    """Read ``path`` and add up its aiguard spans and the evaluations of their calls (quality
    numbers per ``window_s`` seconds). Raises :class:`ReportError`."""
    skipped, spans = collect(path)
    summary = Summary(path, skipped)
    add_up(summary, spans.values(), spans)
    summary.quality = _report_quality.summarise(path, spans, window_s)
    return summary


def collect(path: str) -> tuple[_Skipped, dict[tuple[str, str], _Span]]:
    """What was skipped, and the aiguard spans of ``path`` by (trace id, span id). Raises
    :class:`ReportError`."""
    skipped = _Skipped()
    spans: dict[tuple[str, str], _Span] = {}
    for span in _read(path, skipped):
        if not (span.is_guard() or span.is_attempt()):
            skipped.foreign_spans += 1
        elif span.key in spans:
            skipped.duplicate_spans += 1
        else:
            spans[span.key] = span
    return skipped, spans


def add_up(summary: Summary, some: Iterable[_Span], spans: dict[tuple[str, str], _Span]) -> None:
    """Add ``some`` of a file's spans to ``summary`` (``spans``: all of them, for the links to
    the calls they run in). The HTML report sums its time windows so."""
    for span in some:
        if span.is_guard():
            _add_call(summary, span, spans)
        if span.is_attempt():
            _add_attempt(summary, span, spans)


# -- adding up -----------------------------------------------------------------------------------


def _add_call(summary: Summary, span: _Span, spans: dict[tuple[str, str], _Span]) -> None:
    attrs = span.attrs
    summary.calls += 1
    outcome = attrs.get(sc.GUARD_OUTCOME)
    if outcome == "abandoned":
        summary.abandoned += 1
    elif _failed(span):
        summary.errors[_error_type(span)] += 1
    else:
        summary.ok += 1
    summary.retries += _int(attrs.get(sc.GUARD_RETRIES))
    if attrs.get(sc.FALLBACK_USED) is True:
        summary.fallbacks += 1
    waited = attrs.get(sc.RATE_LIMIT_WAIT)
    if isinstance(waited, int | float) and waited > 0:
        summary.rate_waits += 1
        summary.rate_wait_s += waited
    if _guard_above(span, spans) is not None:
        summary.nested += 1
    if span.end < span.start or span.start <= 0:
        return  # no usable times: counted, but not timed
    duration = span.end - span.start
    summary.latency.setdefault("", []).append(duration)
    model = attrs.get(sc.REQUEST_MODEL, attrs.get(_OLD_GUARD_REQUEST_MODEL))
    function = attrs.get(sc.GUARD_FUNCTION)
    if isinstance(model, str):
        summary.latency.setdefault(model, []).append(duration)
    elif isinstance(function, str):
        summary.function_latency.setdefault(function, []).append(duration)


def _add_attempt(summary: Summary, span: _Span, spans: dict[tuple[str, str], _Span]) -> None:
    """Add a call's attempts, tokens and cost by model and tag.

    Failed attempts count for the model they were sent to; the answer (its tokens, cost and
    attempt: more than one after re-asks) for the model that answered.
    """
    attrs = span.attrs
    model = attrs.get(sc.RESPONSE_MODEL) or attrs.get(sc.REQUEST_MODEL)
    model = model if isinstance(model, str) else "(unknown)"
    tag = attrs.get(sc.TAG)
    if tag is None:
        guard = _guard_above(span, spans)
        tag = guard.attrs.get(sc.TAG) if guard is not None else None
    tag = tag if isinstance(tag, str) else NO_TAG
    answered, errors = 1, None
    if sc.GUARD_ATTEMPTS in attrs:  # one span for the whole call
        attempts = _int(attrs.get(sc.GUARD_ATTEMPTS))
        summary.attempts += attempts
        answered, errors = max(0, attempts - len(span.failed_attempts)), 0
        for kind, tried in span.failed_attempts:
            summary.attempt_errors[kind] += 1
            for usage in _usages(summary, tried, tag):
                usage.attempts += 1
                usage.errors += 1
        if not answered and sc.COST_USD not in attrs and sc.USAGE_INPUT not in attrs:
            return  # refused, or no attempt answered: nothing more to add
    else:  # an old file's attempt span
        summary.attempts += 1
        if _failed(span):
            summary.attempt_errors[_error_type(span)] += 1
    for usage in _usages(summary, model, tag):
        usage.add(span, answered, errors)


def _usages(summary: Summary, model: str, tag: str) -> tuple[_Usage, _Usage, _Usage]:
    return (
        summary.by_model.setdefault(model, _Usage()),
        summary.by_tag.setdefault(tag, _Usage()),
        summary.total,
    )


def _guard_above(span: _Span, spans: dict[tuple[str, str], _Span]) -> _Span | None:
    """The nearest guarded call this span runs in, if the file holds it."""
    key = span.parent_key
    for _ in range(_MAX_DEPTH):
        parent = spans.get(key) if key is not None else None
        if parent is None:
            return None
        if parent.is_guard():
            return parent
        key = parent.parent_key
    return None


def _failed(span: _Span) -> bool:
    return span.status == _STATUS_ERROR or sc.ERROR_TYPE in span.attrs


def _error_type(span: _Span) -> str:
    value = span.attrs.get(sc.ERROR_TYPE)
    return value if isinstance(value, str) and value else "(unknown)"


def _percentiles(durations: Sequence[int]) -> dict[str, Any]:
    """Nearest-rank percentiles of durations in ns, as milliseconds rounded to the µs."""
    ordered = sorted(durations)
    result: dict[str, Any] = {"count": len(ordered)}
    for p in PERCENTILES:
        if ordered:
            rank = max(1, -(-p * len(ordered) // 100))  # ceil, in integers
            result[f"p{p}"] = round(ordered[rank - 1] / 1e6, 3)
        else:
            result[f"p{p}"] = None
    return result


# -- printing ------------------------------------------------------------------------------------


def _skipped_note(skipped: _Skipped) -> str:
    if not skipped.total:
        return ""
    parts = [
        f"{count} {what}"
        for count, what in (
            (skipped.invalid_lines, "not a JSON span"),
            (skipped.foreign_spans, "not aiguard's"),
            (skipped.duplicate_spans, "repeated"),
        )
        if count
    ]
    return f" (skipped {skipped.total}: {', '.join(parts)})"


def _tags(by_tag: dict[str, _Usage]) -> list[tuple[str, _Usage]]:
    """Tags by name, the untagged last."""
    return sorted(by_tag.items(), key=lambda item: (item[0] == NO_TAG, item[0]))
