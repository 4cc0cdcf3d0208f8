"""``aiguard.configure``: choose the OpenTelemetry providers aiguard records with.

Until it is called aiguard records through the global API providers, which cost almost nothing
when the application set none. It never replaces providers the application set.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider as SDKMeterProvider
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from aiguard import _capture
from aiguard._telemetry import Telemetry, install

log = logging.getLogger("aiguard")
_lock = threading.Lock()
_created: dict[str, Any] = {}

_EXPORTER_EXTRAS = {
    "otlp": "aiguard[otlp]",
    "grpc": "aiguard[grpc]",
}


def configure(
    service_name: str | None = None,
    *,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
    exporter: str | SpanExporter | None = None,
    capture_content: str | bool | None = None,
    capture_pii: bool = False,
    capture_max_chars: int = 8192,
) -> None:
    """Set where aiguard's spans and metrics go. Safe to call more than once.

    - ``tracer_provider`` / ``meter_provider`` given: aiguard uses exactly these.
    - Otherwise, if the application already set SDK providers globally, aiguard uses those.
    - Otherwise aiguard creates SDK providers (with ``service_name``, else ``OTEL_SERVICE_NAME``)
      and sets them globally. ``exporter`` is ``"console"``, ``"otlp"``, a ``SpanExporter``, or
      ``None``: then ``OTEL_EXPORTER_OTLP_ENDPOINT`` selects OTLP, and with no endpoint nothing is
      exported (said once in a log line).

    ``capture_content`` records prompts and answers (off by default): ``"SPAN_ONLY"``,
    ``"EVENT_ONLY"``, ``"SPAN_AND_EVENT"``, ``"NO_CONTENT"`` or True/False, overriding
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``. Captured text is always scrubbed of
    secrets, and of PII unless ``capture_pii=True``, and cut at ``capture_max_chars``.

    Example::

        aiguard.configure(service_name="support-bot", exporter="console")
    """
    _capture.set_capture(capture_content, capture_pii, capture_max_chars)
    if service_name is not None and (not isinstance(service_name, str) or not service_name):
        raise TypeError(f"service_name= must be a non-empty string, got {service_name!r}")
    if tracer_provider is not None and not isinstance(tracer_provider, trace.TracerProvider):
        raise TypeError("tracer_provider= must be an opentelemetry TracerProvider")
    if meter_provider is not None and not isinstance(meter_provider, metrics.MeterProvider):
        raise TypeError("meter_provider= must be an opentelemetry MeterProvider")
    if exporter is not None and not isinstance(exporter, str | SpanExporter):
        raise TypeError(
            "exporter= must be 'console', 'otlp', an opentelemetry SpanExporter, or None"
        )
    with _lock:
        tracer_provider = tracer_provider or _tracer_provider(service_name, exporter)
        meter_provider = meter_provider or _meter_provider(service_name)
        install(Telemetry(tracer_provider, meter_provider))


def reset() -> None:
    """Forget what ``configure`` chose: back to the global API providers (for tests)."""
    with _lock:
        install(None)
        _capture.reset()


def _resource(service_name: str | None) -> Resource:
    name = service_name or os.environ.get("OTEL_SERVICE_NAME") or "aiguard-app"
    return Resource.create({SERVICE_NAME: name})


def _tracer_provider(service_name: str | None, exporter: str | SpanExporter | None) -> Any:
    current = trace.get_tracer_provider()
    if isinstance(current, SDKTracerProvider):
        if exporter is not None:
            _attach(current, exporter)
        return current
    if "tracer" in _created:
        return _created["tracer"]
    provider = SDKTracerProvider(resource=_resource(service_name))
    span_exporter = _exporter(exporter)
    if span_exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(provider)
    _created["tracer"] = provider
    return provider


def _attach(provider: SDKTracerProvider, exporter: str | SpanExporter) -> None:
    key = f"exporter:{id(provider)}:{exporter if isinstance(exporter, str) else id(exporter)}"
    if key in _created:
        return
    span_exporter = _exporter(exporter)
    if span_exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(span_exporter))
    _created[key] = True


def _exporter(exporter: str | SpanExporter | None) -> SpanExporter | None:
    if isinstance(exporter, SpanExporter):
        return exporter
    if exporter is None:
        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
        ):
            exporter = "otlp"
        else:
            log.info(
                "aiguard: no exporter configured (no exporter= and no "
                "OTEL_EXPORTER_OTLP_ENDPOINT); spans are recorded but not exported"
            )
            return None
    if exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if exporter == "otlp":
        grpc = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").lower() == "grpc"
        try:
            if grpc:
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                    OTLPSpanExporter,
                )
            else:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )
        except ImportError:
            extra = _EXPORTER_EXTRAS["grpc" if grpc else "otlp"]
            raise ImportError(
                f"the OTLP exporter is not installed: pip install '{extra}'"
            ) from None
        return OTLPSpanExporter()  # type: ignore[no-any-return]
    raise ValueError(
        f"exporter={exporter!r} is not known: use 'console', 'otlp', a SpanExporter, or None"
    )


def _meter_provider(service_name: str | None) -> Any:
    current = metrics.get_meter_provider()
    if isinstance(current, SDKMeterProvider):
        return current
    if "meter" in _created:
        return _created["meter"]
    provider = SDKMeterProvider(resource=_resource(service_name))
    metrics.set_meter_provider(provider)
    _created["meter"] = provider
    return provider
