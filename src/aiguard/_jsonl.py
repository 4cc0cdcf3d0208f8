"""A span exporter that appends one OTLP/JSON span per line to a file, for ``aiguard report``.

Each line is a JSON object that stands on its own (the resource and the instrumentation scope
are repeated on every line), so a file can be appended to by several runs, cut, ``grep``-ed or
concatenated and still be read line by line::

    {"resource": {"attributes": [<KeyValue>...]},
     "scope": {"name": "aiguard", "version": "0.1.0"},
     "span": {"traceId": "<32 hex>", "spanId": "<16 hex>", "parentSpanId": "<16 hex>" or "",
              "name": "chat gpt-4o", "kind": 3,
              "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "...",
              "attributes": [<KeyValue>...],
              "events": [{"timeUnixNano": "...", "name": "...", "attributes": [...]}],
              "links": [{"traceId": "...", "spanId": "...", "attributes": [...]}],
              "status": {"code": 0, "message": ""}}}

The encoding is the OTLP/JSON mapping of the protobuf messages (``Span``, ``KeyValue``,
``AnyValue``): ids are lowercase hex, 64-bit integers (times, ``intValue``) are decimal strings,
enums are their numbers (kind: 1 INTERNAL, 2 SERVER, 3 CLIENT, 4 PRODUCER, 5 CONSUMER; status
code: 0 UNSET, 1 OK, 2 ERROR), and a ``KeyValue`` is ``{"key": ..., "value": <AnyValue>}`` with
one of ``stringValue``, ``boolValue``, ``intValue``, ``doubleValue`` (a number, or ``"NaN"``,
``"Infinity"``, ``"-Infinity"``) or ``arrayValue: {"values": [<AnyValue>...]}``. ``scope`` and
``resource`` carry ``schemaUrl`` when one is set; ``span`` carries ``traceState`` when non-empty.
"""

from __future__ import annotations

import base64
import json
import math
import os
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from aiguard._telemetry import report_fault

# OTLP numbers its enums from an UNSPECIFIED 0; the Python API numbers SpanKind from INTERNAL 0.
_KINDS = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}
_INT64 = range(-(2**63), 2**63)

Json = dict[str, Any]
_open_exporters: weakref.WeakSet[JsonlSpanExporter] = weakref.WeakSet()


def write_evaluation(evaluation: Json) -> None:
    """Append an evaluation result to every open JSONL span file of this process."""
    for exporter in list(_open_exporters):
        exporter.write_evaluation(evaluation)


class JsonlSpanExporter(SpanExporter):
    """Append each finished span to ``path`` as one line of OTLP/JSON (see the module's docs).

    The file and its parent directory are created on the first export; every export is written
    and flushed under a lock, so the file is safe to share between threads and readable at any
    time. A file-system fault is logged once and the export reports FAILURE: it never raises.

    Example::

        from aiguard._jsonl import JsonlSpanExporter

        aiguard.configure(exporter=JsonlSpanExporter("traces/aiguard.jsonl"))
        # later: aiguard report traces/aiguard.jsonl
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        _open_exporters.add(self)  # evaluation results of its calls go to the same file
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self._file: TextIO | None = None
        self._closed = False
        self._broken = False  # a write failed: the file may end in part of a line
        # The resource is almost always one object for a whole run: encode it once.
        self._resource: tuple[Resource | None, Json] = (None, {"attributes": []})

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._closed:  # checked again under the lock; this only saves the encoding
            return SpanExportResult.FAILURE
        try:
            text = "".join(self._line(span) for span in spans)
        except Exception as exc:  # a span this encoder cannot read must not break the app
            report_fault("encoding spans for the JSONL file", exc)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS if self._write(text) else SpanExportResult.FAILURE

    def write_evaluation(self, evaluation: Json) -> None:
        """Append an evaluation result line: ``{"evaluation": {"traceId", "spanId",
        "timeUnixNano", "attributes"}}`` (the ``gen_ai.evaluation.result`` event's)."""
        if not self._closed:
            line = {"evaluation": evaluation}
            self._write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")

    def _write(self, text: str) -> bool:
        with self._lock:
            if self._closed:
                return False
            try:
                if self._file is None:
                    self._file = self._open()
                # After a failed write, start on a new line: the fragment stays one bad line.
                self._file.write("\n" + text if self._broken else text)
                self._file.flush()
            except (OSError, ValueError) as exc:  # ValueError: a file closed under us
                self._broken = True
                report_fault(f"writing spans to {self.path}", exc)
                return False
            self._broken = False
        return True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # every export is flushed before it returns

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except OSError as exc:
                report_fault(f"closing {self.path}", exc)

    def _open(self) -> TextIO:
        parent = os.path.dirname(self.path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        # backslashreplace turns a lone surrogate into "\udcxx", itself a valid JSON escape.
        return open(self.path, "a", encoding="utf-8", errors="backslashreplace")

    def _line(self, span: ReadableSpan) -> str:
        record = {
            "resource": self._encoded_resource(span.resource),
            "scope": _scope(span),
            "span": encode_span(span),
        }
        return json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n"

    def _encoded_resource(self, resource: Resource | None) -> Json:
        cached, encoded = self._resource
        if resource is cached:
            return encoded
        encoded = {"attributes": encode_attributes(resource.attributes if resource else None)}
        if resource is not None and resource.schema_url:
            encoded["schemaUrl"] = resource.schema_url
        self._resource = (resource, encoded)
        return encoded


def encode_span(span: ReadableSpan) -> Json:
    """One span as an OTLP/JSON ``Span`` object."""
    context = span.context
    parent = span.parent
    encoded: Json = {
        "traceId": f"{context.trace_id:032x}" if context is not None else "",
        "spanId": f"{context.span_id:016x}" if context is not None else "",
    }
    if context is not None and context.trace_state:
        encoded["traceState"] = context.trace_state.to_header()
    encoded.update(
        {
            "parentSpanId": f"{parent.span_id:016x}" if parent is not None else "",
            "name": span.name,
            "kind": _KINDS.get(span.kind, 0),
            "startTimeUnixNano": str(span.start_time or 0),
            "endTimeUnixNano": str(span.end_time or 0),
            "attributes": encode_attributes(span.attributes),
            "events": [
                {
                    "timeUnixNano": str(event.timestamp or 0),
                    "name": event.name,
                    "attributes": encode_attributes(event.attributes),
                }
                for event in span.events
            ],
            "links": [
                {
                    "traceId": f"{link.context.trace_id:032x}",
                    "spanId": f"{link.context.span_id:016x}",
                    "attributes": encode_attributes(link.attributes),
                }
                for link in span.links
            ],
            "status": {
                "code": int(span.status.status_code.value),
                "message": span.status.description or "",
            },
        }
    )
    return encoded


def encode_attributes(attributes: Mapping[str, Any] | None) -> list[Json]:
    """Attributes as OTLP/JSON ``KeyValue`` objects, in their order."""
    if not attributes:
        return []
    return [{"key": str(key), "value": encode_value(value)} for key, value in attributes.items()]


def encode_value(value: Any) -> Json:
    """One attribute value as an OTLP/JSON ``AnyValue``."""
    if isinstance(value, bool):  # before int: bool is an int
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)} if value in _INT64 else {"stringValue": str(value)}
    if isinstance(value, float):
        if math.isfinite(value):
            return {"doubleValue": value}
        if math.isnan(value):
            return {"doubleValue": "NaN"}
        return {"doubleValue": "Infinity" if value > 0 else "-Infinity"}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bytes | bytearray):
        return {"bytesValue": base64.b64encode(value).decode("ascii")}
    if isinstance(value, Sequence):
        return {"arrayValue": {"values": [encode_value(item) for item in value]}}
    return {"stringValue": str(value)}


def _scope(span: ReadableSpan) -> Json:
    scope = span.instrumentation_scope
    if scope is None:
        return {"name": "", "version": ""}
    encoded: Json = {"name": scope.name, "version": scope.version or ""}
    if scope.schema_url:
        encoded["schemaUrl"] = scope.schema_url
    return encoded
