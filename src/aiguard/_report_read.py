"""Reading an exported span file for ``aiguard report``: JSONL of OTLP/JSON batches or of
flat spans, one record a line; what cannot be read is counted, never fatal."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from aiguard import _semconv as sc


class ReportError(Exception):
    """The file cannot be read; the message says why, for the command line's stderr."""


_INTERNAL = 1
_STATUS_ERROR = 2
_MAX_DEPTH = 64  # parent links followed at most: guards a cyclic or corrupt file
# What the guard span of a file from before one span per call carried.
_OLD_GUARD_OPERATION = "aiguard.operation"
_OLD_GUARD_REQUEST_MODEL = "aiguard.request.model"


@dataclass(slots=True)
class _Span:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    start: int
    end: int
    status: int
    scope: str
    attrs: dict[str, Any]
    # (error.type, model) of each failed attempt, from its ``aiguard.attempt.failed`` event
    failed_attempts: list[tuple[str, str]] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return (self.trace_id, self.span_id)

    @property
    def parent_key(self) -> tuple[str, str] | None:
        return (self.trace_id, self.parent_id) if self.parent_id else None

    def is_guard(self) -> bool:
        """A guarded call: a model call's inference span, or a guarded function's span."""
        attrs = self.attrs
        if sc.GUARD_FUNCTION in attrs:
            return True
        if sc.OPERATION in attrs:
            return sc.GUARD_ATTEMPTS in attrs
        return _OLD_GUARD_OPERATION in attrs

    def is_attempt(self) -> bool:
        """A span with an answer's tokens and cost (the inference span, or an old attempt span)."""
        attrs = self.attrs
        return (
            sc.OPERATION in attrs
            and sc.GUARD_FUNCTION not in attrs  # a tool's or agent's span: a guarded function
            and (sc.GUARD_ATTEMPTS in attrs or sc.ATTEMPT in attrs or self.scope == "aiguard")
        )


@dataclass
class _Skipped:
    invalid_lines: int = 0  # not JSON, not an object, or not a span
    foreign_spans: int = 0  # spans, but not aiguard's
    duplicate_spans: int = 0  # the same trace and span id seen before

    @property
    def total(self) -> int:
        return self.invalid_lines + self.foreign_spans + self.duplicate_spans


# -- reading -------------------------------------------------------------------------------------


def _read(path: str, skipped: _Skipped) -> Iterator[_Span]:
    try:
        file = open(path, "rb")  # noqa: SIM115 - closed below; bytes: a bad line is one bad line
    except FileNotFoundError:
        raise ReportError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise ReportError(f"{path} is a directory, not a span file") from None
    except PermissionError:
        raise ReportError(f"cannot read {path}: permission denied") from None
    except OSError as exc:
        raise ReportError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    with file:
        try:
            for raw in file:
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                except ValueError:  # includes UnicodeDecodeError
                    skipped.invalid_lines += 1
                    continue
                spans = _spans_of(record)
                if spans is None:
                    skipped.invalid_lines += 1
                    continue
                yield from spans
        except OSError as exc:  # e.g. EISDIR on read where open succeeded
            raise ReportError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None


def _spans_of(record: Any) -> list[_Span] | None:
    """The spans of one line, or None when the line is not one of the two shapes."""
    if not isinstance(record, dict):
        return None
    if isinstance(record.get("evaluation"), dict) or isinstance(record.get("resourceLogs"), list):
        return []  # evaluation results: read by the quality part (aiguard._report_quality)
    if "span" in record:
        scope = record.get("scope")
        span = _span(record["span"], scope.get("name") if isinstance(scope, dict) else None)
        return None if span is None else [span]
    if isinstance(record.get("resourceSpans"), list):
        found: list[_Span] = []
        for resource_spans in record["resourceSpans"]:
            for scope_spans in _dicts(_get(resource_spans, "scopeSpans")):
                scope = _get(scope_spans, "scope")
                name = scope.get("name") if isinstance(scope, dict) else None
                for raw in _dicts(_get(scope_spans, "spans")):
                    span = _span(raw, name)
                    if span is not None:
                        found.append(span)
        return found
    return None


def _span(raw: Any, scope: Any) -> _Span | None:
    if not isinstance(raw, dict):
        return None
    trace_id, span_id, name = raw.get("traceId"), raw.get("spanId"), raw.get("name")
    if not (isinstance(trace_id, str) and isinstance(span_id, str) and isinstance(name, str)):
        return None
    parent = raw.get("parentSpanId")
    status = raw.get("status")
    return _Span(
        trace_id=trace_id.lower(),
        span_id=span_id.lower(),
        parent_id=parent.lower() if isinstance(parent, str) else "",
        name=name,
        kind=_int(raw.get("kind")),
        start=_int(raw.get("startTimeUnixNano")),
        end=_int(raw.get("endTimeUnixNano")),
        status=_int(status.get("code")) if isinstance(status, dict) else 0,
        scope=scope if isinstance(scope, str) else "",
        attrs=_attributes(raw.get("attributes")),
        failed_attempts=[
            _failure(_attributes(event.get("attributes")))
            for event in _dicts(raw.get("events"))
            if event.get("name") == "aiguard.attempt.failed"
        ],
    )


def _failure(attrs: dict[str, Any]) -> tuple[str, str]:
    kind, model = attrs.get(sc.ERROR_TYPE), attrs.get(sc.ATTEMPT_MODEL)
    return (
        kind if isinstance(kind, str) and kind else "(unknown)",
        model if isinstance(model, str) and model else "(unknown)",
    )


def _attributes(raw: Any) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for item in _dicts(raw):
        key = item.get("key")
        if isinstance(key, str):
            attrs[key] = _value(item.get("value"))
    return attrs


def _value(raw: Any) -> Any:
    """An OTLP/JSON ``AnyValue`` as a Python value (None for what is not one)."""
    if not isinstance(raw, dict):
        return None
    if "stringValue" in raw:
        return raw["stringValue"]
    if "boolValue" in raw:
        return raw["boolValue"] is True
    if "intValue" in raw:
        return _int_or_none(raw["intValue"])
    if "doubleValue" in raw:
        value = raw["doubleValue"]
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value  # kept as written: a float, or an int for whole numbers
        return None  # "NaN", "Infinity": of no use to a sum
    if "arrayValue" in raw:
        return [_value(item) for item in _dicts(_get(raw["arrayValue"], "values"))]
    return None


# -- small readers -------------------------------------------------------------------------------


def _get(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, dict) else None


def _dicts(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, list):
        yield from (item for item in value if isinstance(item, dict))


def _int(value: Any) -> int:
    found = _int_or_none(value)
    return 0 if found is None else found


def _int_or_none(value: Any) -> int | None:
    """An int64 as OTLP/JSON writes it (a decimal string, or a number from other writers)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        # repr() is the shortest text that reads back as this float: the number as written.
        result = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        return None
    return result if result.is_finite() else None


def _exact(cost: Decimal | None) -> str | None:
    if cost is None:
        return None
    text = format(cost.normalize(), "f")
    return "0" if text in ("-0", "0") else text
