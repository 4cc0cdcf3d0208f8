"""OpenTelemetry plumbing: the tracer, the instruments, and calls into them that cannot fail.

Every function here swallows its own faults (logged once per kind): a broken span processor,
exporter or meter must never change what the user's call returns or raises.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import _internal as _metrics_internal
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from aiguard import _semconv as sc
from aiguard import _store
from aiguard._types import Usage
from aiguard._version import __version__

log = logging.getLogger("aiguard")

_NOOP_TRACER_PROVIDERS = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
# The API's default until an SDK is set is a private proxy class; if it moves, aiguard only
# loses the shortcut (it records into the no-op), never correctness.
_NOOP_METER_PROVIDERS: tuple[type, ...] = tuple(
    cls
    for cls in (getattr(_metrics_internal, "_ProxyMeterProvider", None), metrics.NoOpMeterProvider)
    if isinstance(cls, type)
)
_reported: set[str] = set()

Attrs = dict[str, AttributeValue]


def report_fault(where: str, exc: BaseException) -> None:
    """Log a fault inside aiguard's own machinery once per place and exception type."""
    key = f"{where}:{type(exc).__qualname__}"
    if key in _reported:
        return
    _reported.add(key)
    with contextlib.suppress(Exception):  # a broken log handler must not break the app either
        log.warning(
            "aiguard: %s failed (%s); the call goes on, telemetry may be incomplete",
            where,
            type(exc).__qualname__,
            exc_info=exc,
        )


class Telemetry:
    """The tracer and instruments aiguard records with, from one pair of providers."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self._explicit_traces = tracer_provider is not None
        self._explicit_metrics = meter_provider is not None
        self.tracer = trace.get_tracer("aiguard", __version__, tracer_provider=tracer_provider)
        meter = metrics.get_meter("aiguard", __version__, meter_provider=meter_provider)
        self.meter = meter  # for instruments made elsewhere (evaluation scores)
        # The switch OpenTelemetry instrumentations use to move to the newest GenAI names.
        opt_in = os.environ.get(sc.OPT_IN_ENV, "")
        self.latest = sc.OPT_IN_LATEST in {part.strip() for part in opt_in.split(",")}
        self.usage_metrics: tuple[Any, ...] = ()
        if self.latest:
            self.usage_metrics = _latest_usage_metrics(meter)
        self.duration = meter.create_histogram(
            sc.METRIC_DURATION,
            unit="s",
            description="Duration of GenAI operations",
            explicit_bucket_boundaries_advisory=sc.DURATION_BUCKETS,
        )
        self.tokens = meter.create_histogram(
            sc.METRIC_TOKENS,
            unit="{token}",
            description="Tokens used by GenAI operations",
            explicit_bucket_boundaries_advisory=sc.TOKEN_BUCKETS,
        )
        self.retries = meter.create_counter(
            sc.METRIC_RETRIES, unit="{retry}", description="Retries aiguard made"
        )
        self.fallbacks = meter.create_counter(
            sc.METRIC_FALLBACKS, unit="{fallback}", description="Fallbacks aiguard took"
        )
        self.breaker = meter.create_counter(
            sc.METRIC_BREAKER,
            unit="{transition}",
            description="Circuit breaker state changes",
        )
        self.first_chunk = meter.create_histogram(
            sc.METRIC_FIRST_CHUNK,
            unit="s",
            description="Time to the first chunk of a streamed GenAI response",
            explicit_bucket_boundaries_advisory=sc.CHUNK_BUCKETS,
        )
        self.chunk_time = meter.create_histogram(
            sc.METRIC_CHUNK_TIME,
            unit="s",
            description="Time between consecutive chunks of a streamed GenAI response",
            explicit_bucket_boundaries_advisory=sc.CHUNK_BUCKETS,
        )
        self.reasks = meter.create_counter(
            sc.METRIC_REASKS, unit="{reask}", description="Answers re-asked after validation failed"
        )
        self.cost = meter.create_counter(
            sc.METRIC_COST, unit="USD", description="What guarded model calls cost"
        )
        self.refusals = meter.create_counter(
            sc.METRIC_REFUSALS,
            unit="{call}",
            description="Calls aiguard refused before sending (budget, check)",
        )
        self.waits = meter.create_histogram(
            sc.METRIC_WAITS,
            unit="s",
            description="Time calls waited before sending, by kind (rate_limit)",
            explicit_bucket_boundaries_advisory=sc.DURATION_BUCKETS,
        )
        self.store_duration = meter.create_histogram(
            sc.METRIC_STORE_DURATION,
            unit="s",
            description="Duration of operations on the shared store (Redis)",
            explicit_bucket_boundaries_advisory=sc.STORE_BUCKETS,
        )
        self.store_errors = meter.create_counter(
            sc.METRIC_STORE_ERRORS,
            unit="{error}",
            description="Operations on the shared store that failed",
        )

    def tracing(self) -> bool:
        """Is anything listening for spans? False while only the API's no-op is there."""
        if self._explicit_traces:
            return True
        return not isinstance(trace.get_tracer_provider(), _NOOP_TRACER_PROVIDERS)

    def measuring(self) -> bool:
        """Is anything listening for metrics?"""
        if self._explicit_metrics:
            return True
        return not isinstance(metrics.get_meter_provider(), _NOOP_METER_PROVIDERS)

    # -- spans ---------------------------------------------------------------------------------

    def start_span(
        self,
        name: str,
        kind: SpanKind,
        attributes: Attrs,
        parent: Span | None = None,
    ) -> Span:
        try:
            context = trace.set_span_in_context(parent) if parent is not None else None
            return self.tracer.start_span(name, context, kind, attributes)
        except Exception as exc:
            report_fault("starting a span", exc)
            return trace.INVALID_SPAN

    def count(
        self, counter: Any, attributes: Mapping[str, AttributeValue], amount: float = 1
    ) -> None:
        try:
            counter.add(amount, attributes)
        except Exception as exc:
            report_fault("recording a metric", exc)

    def record(self, histogram: Any, value: float, attributes: Attrs) -> None:
        try:
            histogram.record(value, attributes)
        except Exception as exc:
            report_fault("recording a metric", exc)

    def measure_call(self, seconds: float, usage: Usage | None, attributes: Attrs) -> None:
        """One logical call's duration point and its input and output token points."""
        try:
            self.duration.record(seconds, attributes)
            if usage is not None and sc.ERROR_TYPE in attributes:
                # error.type is an attribute of the duration only (a stream cut midway).
                attributes = {k: v for k, v in attributes.items() if k != sc.ERROR_TYPE}
            if usage is not None and self.latest:
                self._latest_usage(usage, attributes)
            elif usage is not None:
                if usage.input_tokens is not None:
                    self.tokens.record(usage.input_tokens, {**attributes, sc.TOKEN_TYPE: "input"})
                if usage.output_tokens is not None:
                    self.tokens.record(usage.output_tokens, {**attributes, sc.TOKEN_TYPE: "output"})
        except Exception as exc:
            report_fault("recording a metric", exc)

    def _latest_usage(self, usage: Usage, attributes: Attrs) -> None:
        inputs, outputs, *detailed = self.usage_metrics
        if usage.input_tokens is not None:
            inputs.record(usage.input_tokens, attributes)
        if usage.output_tokens is not None:
            outputs.record(usage.output_tokens, attributes)
        text = {**attributes, sc.TOKEN_MODALITY: "text"}
        counts = (
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens,
            usage.cache_write_tokens,
            usage.reasoning_tokens,
        )
        for counter, count in zip(detailed, counts, strict=True):
            if count is not None:
                counter.add(count, text)


def _latest_usage_metrics(meter: metrics.Meter) -> tuple[Any, ...]:
    """The newest experimental usage metrics: two histograms, then five detailed counters."""
    histograms = tuple(
        meter.create_histogram(
            name,
            unit="{token}",
            description=f"{kind} tokens used per inference operation",
            explicit_bucket_boundaries_advisory=sc.TOKEN_BUCKETS,
        )
        for name, kind in ((sc.METRIC_INPUT_TOKENS, "Input"), (sc.METRIC_OUTPUT_TOKENS, "Output"))
    )
    counters = tuple(
        meter.create_counter(sc.METRIC_DETAILED + name, unit="{token}", description=description)
        for name, description in (
            ("input_tokens", "Input tokens used, cached ones included"),
            ("output_tokens", "Output tokens used, reasoning ones included"),
            ("cache_read.input_tokens", "Input tokens served from a provider's cache"),
            ("cache_write.input_tokens", "Input tokens written to a provider's cache"),
            ("reasoning.output_tokens", "Output tokens used for reasoning"),
        )
    )
    return histograms + counters


def end_span(
    span: Span, error: BaseException | None = None, attributes: Attrs | None = None
) -> None:
    """Set final attributes, the error status if any, and end the span, swallowing faults."""
    try:
        if not span.is_recording():
            span.end()
            return
        if attributes:
            span.set_attributes(attributes)
        if error is not None:
            span.set_attribute(sc.ERROR_TYPE, error_type(error))
            # The class name only: provider messages may echo request content.
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()
    except Exception as exc:
        report_fault("ending a span", exc)


def add_event(span: Span, name: str, attributes: Attrs) -> None:
    try:
        if span.is_recording():
            span.add_event(name, attributes)
    except Exception as exc:
        report_fault("adding a span event", exc)


def error_type(error: BaseException) -> str:
    """A low-cardinality name for an error: its public module path and class name."""
    cls = type(error)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    public = []
    for part in cls.__module__.split("."):
        if part.startswith("_"):
            break
        public.append(part)
    return ".".join([*public, cls.__qualname__])


def usage_attributes(usage: Usage | None, latest: bool = False) -> Attrs:
    """The span's ``gen_ai.usage.*``; ``latest``: the newest experimental names."""
    if usage is None:
        return {}
    attrs: Attrs = {}
    if usage.input_tokens is not None:
        attrs[sc.USAGE_INPUT] = usage.input_tokens
    if usage.output_tokens is not None:
        attrs[sc.USAGE_OUTPUT] = usage.output_tokens
    if usage.cache_read_tokens is not None:
        attrs[sc.USAGE_CACHE_READ] = usage.cache_read_tokens
    if usage.cache_write_tokens is not None:
        attrs[sc.USAGE_CACHE_WRITE if latest else sc.USAGE_CACHE_CREATION] = (
            usage.cache_write_tokens
        )
    if usage.reasoning_tokens is not None:
        attrs[sc.USAGE_REASONING] = usage.reasoning_tokens
    return attrs


class _Installed:
    """The telemetry in force (providers, instruments), made on first use."""

    telemetry: Telemetry | None = None


_state = _Installed()


def current() -> Telemetry:
    """The telemetry in force: set by ``configure``, else the global providers."""
    telemetry = _state.telemetry
    if telemetry is None:
        telemetry = _state.telemetry = Telemetry()
    return telemetry


def install(telemetry: Telemetry | None) -> None:
    _state.telemetry = telemetry


def _store_observed(operation: str, seconds: float, error: str | None) -> None:
    """A shared-store operation finished: its duration, and its failure, as metrics."""
    telemetry = current()
    if not telemetry.measuring():
        return
    attrs: Attrs = {sc.STORE_OPERATION: operation}
    if error is not None:
        attrs[sc.ERROR_TYPE] = error
        telemetry.count(telemetry.store_errors, attrs)
    telemetry.record(telemetry.store_duration, seconds, attrs)


_store.observer = _store_observed
