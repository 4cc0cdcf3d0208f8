"""The call record: everything telemetry for one logical call, ended exactly once.

The GenAI conventions count *logical operations as the caller sees them*: a call that aiguard
retried and then answered from a fallback is one inference span covering every attempt and wait,
and one ``gen_ai.client.operation.duration`` point equal to that span's duration. A
:class:`CallRecord` owns that span, its metric points and its captured content; the guarded-call
core tells it what happened (an attempt failed, an attempt answered, a stream's first chunk
came) and it ends with :meth:`CallRecord.end`, once.

Failed attempts stay visible in the trace as ``aiguard.attempt.failed`` span events, never as
spans of their own with ``gen_ai.operation.name``, so a backend counts one generation per call.
The happy path creates exactly one span.

A decorated function (``@aiguard.guard``) has a record too, without the GenAI parts: its span is
``INTERNAL`` and carries ``aiguard.function`` unless the function declared itself a tool or an
agent.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import _logs, trace
from opentelemetry.trace import Span, SpanKind

from aiguard import _capture
from aiguard import _semconv as sc
from aiguard._capture import CaptureSettings
from aiguard._telemetry import (
    Attrs,
    Telemetry,
    add_event,
    end_span,
    error_type,
    report_fault,
    usage_attributes,
)
from aiguard._types import Usage

# Attributes of the answering target that replace the primary's when a fallback answered.
_TARGET_KEYS = (sc.PROVIDER, sc.SERVER_ADDRESS, sc.SERVER_PORT)


class CallRecord:
    """The span, metric points and captured content of one logical call."""

    __slots__ = (
        "answer",
        "capture",
        "chunk_attrs",
        "done",
        "inference",
        "input_attrs",
        "measuring",
        "metric_attrs",
        "response",
        "span",
        "started",
        "target",
        "telemetry",
        "tracing",
        "unanswered",
        "usage",
    )

    def __init__(
        self,
        telemetry: Telemetry,
        tracing: bool,
        measuring: bool,
        name: str,
        kind: SpanKind,
        attributes: Attrs,
        inference: bool,
        capture: CaptureSettings | None = None,
        input_attrs: Attrs | None = None,
    ) -> None:
        self.telemetry = telemetry
        self.tracing = tracing
        self.measuring = measuring
        self.inference = inference
        self.capture = capture
        self.input_attrs = input_attrs
        if self.tracing:
            if capture is not None and capture.span and input_attrs:
                attributes = {**attributes, **input_attrs}
            self.span = telemetry.start_span(name, kind, attributes)
        else:
            self.span = trace.INVALID_SPAN
        # The metric attributes the conventions name, taken from the span's start attributes.
        self.metric_attrs: Attrs | None = (
            {k: attributes[k] for k in sc.METRIC_KEYS if k in attributes}
            if self.measuring
            else None
        )
        self.chunk_attrs: Attrs | None = None
        self.response: Attrs = {}  # what the answering attempt said: set on the span at the end
        self.usage: Usage | None = None
        self.target: Attrs | None = None  # the answering target's provider and server
        self.answer: Attrs | None = None  # the output messages, when captured
        # The primary's server, left out of the start attributes because a fallback has none:
        # the call's unless a target answers.
        self.unanswered: Attrs | None = None
        self.started = time.perf_counter()
        self.done = False

    # -- while the call runs -------------------------------------------------------------------

    def event(self, name: str, attributes: Attrs) -> None:
        if self.tracing:
            add_event(self.span, name, attributes)

    def attempt_failed(
        self, attempt: int, model: str, error: BaseException, failure: str, seconds: float
    ) -> None:
        """One attempt failed: a span event, not a generation of its own."""
        if self.tracing:
            add_event(
                self.span,
                "aiguard.attempt.failed",
                {
                    sc.ATTEMPT: attempt,
                    sc.ATTEMPT_MODEL: model,
                    sc.ERROR_TYPE: error_type(error),
                    sc.FAILURE_CLASS: failure,
                    sc.ATTEMPT_DURATION: seconds,
                },
            )

    def answered(
        self,
        target: Attrs,
        attrs: Attrs,
        usage: Usage | None,
        output: Attrs | None,
    ) -> None:
        """An attempt answered: its response attributes and usage become the call's.

        ``target`` holds the answering target's provider and server attributes (they replace
        the primary's when a fallback answered). Usage adds up over the attempts that answered
        (an answer re-asked after output validation was still paid for).
        """
        response = self.response
        response.update(attrs)
        self.target = target
        for key in _TARGET_KEYS:
            value = target.get(key)
            if value is not None:
                response[key] = value
        if usage is not None:
            self.usage = usage if self.usage is None else self.usage.plus(usage)
        if output is not None:
            self.answer = output

    def first_chunk(self, seconds: float, response_model: object) -> None:
        """A stream's first chunk came ``seconds`` after the call started."""
        if self.tracing:
            try:
                self.span.set_attribute(sc.TIME_TO_FIRST_CHUNK, seconds)
            except Exception as exc:
                report_fault("setting a span attribute", exc)
        if self.metric_attrs is not None:
            attrs = dict(self.metric_attrs)
            if isinstance(response_model, str):
                attrs[sc.RESPONSE_MODEL] = response_model
            self.chunk_attrs = attrs
            self.telemetry.record(self.telemetry.first_chunk, seconds, attrs)

    # -- the end -------------------------------------------------------------------------------

    def end(self, error: BaseException | None, summary: Attrs, cancelled: bool = False) -> None:
        """End the span and record the call's metric points, exactly once.

        A call the caller cancelled (task cancellation, Ctrl-C) records no metric point: its
        duration says nothing about the provider.
        """
        if self.done:
            return
        self.done = True
        if self.target is None and self.unanswered is not None:  # no target answered
            self.response.update(self.unanswered)
            if self.metric_attrs is not None:
                self.metric_attrs.update(self.unanswered)
        seconds = time.perf_counter() - self.started
        if self.metric_attrs is not None and not cancelled:
            self._measure(seconds, error)
        response = self.response
        if self.usage is not None:
            response.update(usage_attributes(self.usage, self.telemetry.latest))
        response.update(summary)
        capture = self.capture
        if self.inference:
            if capture is not None and capture.event:
                self._details(error)
            if error is not None:
                self._exception(error)
        if not self.tracing:
            return
        if capture is not None and self.answer is not None and capture.span:
            response.update(self.answer)
        end_span(self.span, error, response)

    def _measure(self, seconds: float, error: BaseException | None) -> None:
        assert self.metric_attrs is not None
        attrs = self.metric_attrs
        target = self.target
        if target is not None:  # an in-process fallback has no server: none in its points
            for key in _TARGET_KEYS:
                if key in target:
                    attrs[key] = target[key]
                else:
                    attrs.pop(key, None)
        model = self.response.get(sc.RESPONSE_MODEL)
        if model is not None:
            attrs[sc.RESPONSE_MODEL] = model
        if error is not None:
            attrs[sc.ERROR_TYPE] = error_type(error)
        self.telemetry.measure_call(seconds, self.usage, attrs)

    def _details(self, error: BaseException | None) -> None:
        """The ``gen_ai.client.inference.operation.details`` event: the span's attributes and
        the content in structured form, in the span's context."""
        try:
            attributes: dict[str, Any] = {
                k: v
                for k, v in self.span.attributes.items()  # type: ignore[attr-defined]
                if k not in _capture.JSON_KEYS
            }
        except Exception:
            attributes = {}
        attributes.update(self.response)
        if error is not None:
            attributes[sc.ERROR_TYPE] = error_type(error)
        for content in (self.input_attrs, self.answer):
            if content:  # the event carries the content as structure, not JSON strings
                attributes.update(_capture.structured(content))
        _emit(_capture.EVENT_NAME, attributes, self.span)

    def _exception(self, error: BaseException) -> None:
        """``gen_ai.client.operation.exception``: the operation failed (class name only:
        provider messages may echo the request's content)."""
        attributes: dict[str, Any] = {
            sc.ERROR_TYPE: error_type(error),
            "exception.type": error_type(error),
        }
        _emit(sc.EVENT_EXCEPTION, attributes, self.span, severity=_logs.SeverityNumber.WARN)


def _emit(
    name: str,
    attributes: dict[str, Any],
    span: Span,
    severity: _logs.SeverityNumber | None = None,
) -> None:
    try:
        logger = _logs.get_logger("aiguard")
        logger.emit(
            event_name=name,
            attributes=attributes,
            context=trace.set_span_in_context(span),
            severity_number=severity,
        )
    except Exception as exc:
        report_fault(f"emitting {name}", exc)
