"""``aiguard.configure``: choose the OpenTelemetry providers aiguard records with.

Until it is called aiguard records through the global API providers, which cost almost nothing
when the application set none. It never replaces providers the application set.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from opentelemetry import _logs, metrics, trace
from opentelemetry.sdk.metrics import MeterProvider as SDKMeterProvider
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from aiguard import _capture, _store
from aiguard._exporters import (
    _check_exporters,
    _exporter,
    _exporter_key,
    _metric_reader,
    _several,
)
from aiguard._policy import parse_mode
from aiguard._telemetry import Telemetry, install, report_fault

log = logging.getLogger("aiguard")
_lock = threading.Lock()
_created: dict[str, Any] = {}

# Seconds the exit waits for the last export.
EXIT_FLUSH_S = 4.0


def configure(
    service_name: str | None = None,
    *,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
    exporter: str | SpanExporter | list[str | SpanExporter] | None = None,
    capture_content: str | bool | None = None,
    capture_pii: bool = False,
    capture_max_chars: int = 8192,
    store: Any = ...,
) -> None:
    """Set where aiguard's spans and metrics go. Safe to call more than once.

    - ``tracer_provider`` / ``meter_provider`` given: aiguard uses exactly these.
    - Otherwise, if the application already set SDK providers globally, aiguard uses those.
    - Otherwise aiguard creates SDK providers (with ``service_name``, else ``OTEL_SERVICE_NAME``)
      and sets them globally. ``exporter`` is ``"otlp"`` (HTTP/protobuf; gRPC with
      ``OTEL_EXPORTER_OTLP_PROTOCOL=grpc``), ``"pretty"`` (a readable tree per call on stderr),
      ``"console"`` (raw JSON), ``"jsonl:PATH"`` (one OTLP-JSON span
      per line, for ``aiguard report``), a ``SpanExporter``, a list of these (each gets every
      span; metrics go over OTLP if one is ``"otlp"``, else to the console), or ``None``: then
      ``OTEL_EXPORTER_OTLP_ENDPOINT`` selects OTLP, and with no endpoint nothing is exported
      (said once in a log line). Metrics go the same way (OTLP or console). The standard
      ``OTEL_*`` variables apply (service name, resource attributes, endpoints, headers).
    - Providers aiguard creates flush at exit, bounded to a few seconds even when the collector
      is unreachable. Calling ``configure`` again never adds a second exporter.

    ``capture_content`` records prompts and answers (off by default): ``"SPAN_ONLY"``,
    ``"EVENT_ONLY"``, ``"SPAN_AND_EVENT"``, ``"NO_CONTENT"`` or True/False, overriding
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``. Captured text is always scrubbed of
    secrets, and of PII unless ``capture_pii=True``, and cut at ``capture_max_chars``.

    ``store`` sets the default store of every *named* budget, breaker and rate limit made
    without ``store=``: a ``redis://`` URL, a ``redis.Redis`` / ``redis.asyncio.Redis``, or None
    (in-process; the default, unless ``AIGUARD_STORE`` names one). See ``docs/fleet.md``.
    ``configure(store=...)`` alone leaves the telemetry as it is.

    Example::

        aiguard.configure(service_name="support-bot", exporter="console")
        aiguard.configure(store="redis://cache:6379/0")
    """
    # Everything is checked before anything changes: a refused call leaves aiguard as it was.
    if service_name is not None and (not isinstance(service_name, str) or not service_name):
        raise TypeError(f"service_name= must be a non-empty string, got {service_name!r}")
    if tracer_provider is not None and not isinstance(tracer_provider, trace.TracerProvider):
        raise TypeError("tracer_provider= must be an opentelemetry TracerProvider")
    if meter_provider is not None and not isinstance(meter_provider, metrics.MeterProvider):
        raise TypeError("meter_provider= must be an opentelemetry MeterProvider")
    _check_exporters(exporter)
    if not isinstance(capture_pii, bool):
        raise TypeError(f"capture_pii= must be True or False, got {capture_pii!r}")
    if (
        not isinstance(capture_max_chars, int)
        or isinstance(capture_max_chars, bool)
        or capture_max_chars < 16
    ):
        raise TypeError(
            f"capture_max_chars= must be a whole number of at least 16, got {capture_max_chars!r}"
        )
    if capture_content is not None:
        parse_mode(capture_content)  # a ValueError naming the modes
    if store is not ...:
        _store.resolve(store, "configure(store=...)")  # refused before anything changes
        _store.configure(store)
        given = (service_name, tracer_provider, meter_provider, exporter, capture_content)
        if all(value is None for value in given) and not capture_pii and capture_max_chars == 8192:
            return  # the store alone
    with _lock:
        if tracer_provider is None:
            _check_service_name(service_name)
            tracer_provider = _tracer_provider(service_name, exporter)
            meter_provider = meter_provider or _meter_provider(service_name, exporter)
        _capture.set_capture(capture_content, capture_pii, capture_max_chars)
        # Given a tracer provider alone, aiguard records metrics through the global API provider
        # and creates none of its own.
        install(Telemetry(tracer_provider, meter_provider))
        _created["in_use"] = (tracer_provider, meter_provider)


def _check_service_name(service_name: str | None) -> None:
    """A service's name is fixed once its providers exist: a different one is refused, not
    silently dropped. The application's own providers keep their name (said in a log line)."""
    if service_name is None:
        return
    current = trace.get_tracer_provider()
    if not isinstance(current, SDKTracerProvider):
        return
    named = current.resource.attributes.get(SERVICE_NAME)
    if named == service_name:
        return
    if current is _created.get("tracer"):
        raise ValueError(
            f"service_name={service_name!r}: aiguard already exports as service {named!r}, "
            "set by the first configure() (OpenTelemetry providers are set once per process). "
            "Call configure(service_name=...) once, at startup, or leave service_name out of "
            "later calls"
        )
    if f"service_name:{service_name}" not in _created:
        _created[f"service_name:{service_name}"] = True
        log.warning(
            "aiguard: configure(service_name=%r) is not applied: the application's own "
            "TracerProvider names the service %r, and aiguard never changes it",
            service_name,
            named,
        )


def reset() -> None:
    """Forget what ``configure`` chose: back to the global API providers (for tests)."""
    with _lock:
        install(None)
        _created.pop("in_use", None)
        _capture.reset()


def _resource(service_name: str | None) -> Resource:
    # Resource.create merges OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME; an explicit
    # service_name wins, and a process that names itself nowhere is "aiguard-app".
    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    if service_name is not None:
        return Resource.create({SERVICE_NAME: service_name})
    return Resource.create({} if named else {SERVICE_NAME: "aiguard-app"})


def _tracer_provider(service_name: str | None, exporter: Any) -> Any:
    current = trace.get_tracer_provider()
    if isinstance(current, SDKTracerProvider):
        if exporter is not None:
            _attach(current, _several(exporter))
        return current
    if "tracer" in _created:
        return _created["tracer"]
    # First: a missing extra raises before anything is set.
    made = [(one, _exporter(one)) for one in _several(exporter)]
    provider = SDKTracerProvider(resource=_resource(service_name), shutdown_on_exit=False)
    for one, span_exporter in made:
        if span_exporter is not None:
            provider.add_span_processor(_processor(span_exporter))
            _attached(provider).append(_exporter_key(one))
    trace.set_tracer_provider(provider)
    _created["tracer"] = provider
    _flush_at_exit()
    return provider


def _attached(provider: SDKTracerProvider) -> list[object]:
    """The exporters aiguard added to ``provider`` (objects kept: an id could be reused)."""
    found: list[object] = _created.setdefault(f"exporters:{id(provider)}", [])
    return found


def _attach(provider: SDKTracerProvider, exporters: list[str | SpanExporter]) -> None:
    """Add each exporter to ``provider`` once, however often configure() names it (all are
    made before any is added: a missing extra changes nothing)."""
    attached = _attached(provider)
    new = [
        one
        for one in exporters
        if not any(
            (key := _exporter_key(one)) is seen or (isinstance(key, str) and key == seen)
            for seen in attached
        )
    ]
    for one, span_exporter in [(one, _exporter(one)) for one in new]:
        if span_exporter is not None:
            provider.add_span_processor(_processor(span_exporter))
            attached.append(_exporter_key(one))


def _processor(span_exporter: SpanExporter) -> BatchSpanProcessor:
    # An exporter may ask for a shorter batch delay (the console view prints within 0.2 s).
    delay = getattr(span_exporter, "schedule_delay_millis", None)
    return BatchSpanProcessor(span_exporter, schedule_delay_millis=delay)


def _meter_provider(service_name: str | None, exporter: Any) -> Any:
    current = metrics.get_meter_provider()
    if isinstance(current, SDKMeterProvider):
        return current
    if "meter" in _created:
        return _created["meter"]
    reader = _metric_reader(exporter)
    provider = SDKMeterProvider(
        resource=_resource(service_name),
        metric_readers=[reader] if reader is not None else [],
        shutdown_on_exit=False,
    )
    metrics.set_meter_provider(provider)
    _created["meter"] = provider
    _flush_at_exit()
    return provider


def _flush_at_exit() -> None:
    """Export what is pending when the process ends, bounded: an unreachable collector costs
    the exit at most a few seconds and never raises. A SIGTERM that would kill the process
    outright (no handler set) flushes first too: servers such as uvicorn re-raise SIGTERM after
    their own shutdown, which ends the process without running ``atexit``."""
    if "atexit" in _created:
        return
    _created["atexit"] = True
    atexit.register(shutdown, EXIT_FLUSH_S)
    _flush_on_sigterm()


def _flush_on_sigterm() -> None:
    # Only where nothing handles SIGTERM yet (the default action kills): the application's
    # handlers are never replaced, and a handler set later replaces this one.
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError, AttributeError):  # no signals here (an embedded interpreter)
        return


def _on_sigterm(signum: int, frame: object) -> None:
    # The handler interrupts the main thread anywhere, perhaps holding a lock the flush needs:
    # the flush runs in its own thread, and the process dies on time even if it is stuck.
    worker = threading.Thread(
        target=shutdown, args=(EXIT_FLUSH_S,), name="aiguard-sigterm", daemon=True
    )
    worker.start()
    worker.join(EXIT_FLUSH_S + 1.0)
    # Then die of SIGTERM as the default action would: same exit status for the supervisor.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.raise_signal(signal.SIGTERM)


def _in_use() -> list[Any]:
    """The providers aiguard records with (configure's choice, else the global ones), and the
    global logger provider its captured-content events go to; each once."""
    tracer, meter = _created.get("in_use") or (
        trace.get_tracer_provider(),
        metrics.get_meter_provider(),
    )
    found: list[Any] = []
    for provider in (
        tracer,
        _created.get("tracer"),
        meter,
        _created.get("meter"),
        _logs.get_logger_provider(),
    ):
        if provider is not None and all(provider is not seen for seen in found):
            found.append(provider)
    return found


def _check_timeout(timeout: object) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"timeout= must be a number of seconds, got {timeout!r}")
    if not timeout >= 0:  # NaN too
        raise ValueError(f"timeout= must be a number of seconds >= 0, got {timeout!r}")
    return float(min(timeout, 3600.0))


def flush(timeout: float = EXIT_FLUSH_S) -> bool:
    """Export the spans, metrics and events aiguard recorded and has not exported yet; wait at
    most ``timeout`` seconds. An exporter's fault never raises (it is logged once); only a
    ``timeout`` that is not a number of seconds does. Returns True when everything went out in
    time.

    Flushes the providers aiguard records with: the ones ``configure`` created or chose (yours
    included, which are flushed but never shut down), else the global ones. Call it where a
    process stops serving, e.g. at the end of a web app's lifespan: servers that re-raise
    SIGTERM end the process without running ``atexit``.

    Example::

        @contextlib.asynccontextmanager
        async def lifespan(app):
            yield
            aiguard.flush(timeout=5)
    """
    deadline = time.monotonic() + _check_timeout(timeout)
    # Evaluations still queued go first, within half the time: their events and metrics too.
    evaluations = sys.modules.get("aiguard._worker")
    done = evaluations is None or evaluations.drain(_check_timeout(timeout) / 2)
    for provider in _in_use():
        force_flush = getattr(provider, "force_flush", None)
        if force_flush is None:  # the API's no-op providers
            continue
        left_ms = max(int((deadline - time.monotonic()) * 1000), 1)
        try:
            done = force_flush(left_ms) is not False and done
        except Exception as exc:
            report_fault("flushing telemetry", exc)
            done = False
    return done


def shutdown(timeout: float = EXIT_FLUSH_S) -> bool:
    """Flush (see :func:`flush`), then shut down the providers aiguard created, within
    ``timeout`` seconds in all. Providers the application set are flushed, never shut down.
    Safe to call more than once; an exporter's fault never raises. aiguard calls it at exit by
    itself; call it yourself where the process may end without ``atexit`` running.

    Example::

        aiguard.shutdown(timeout=5)
    """
    deadline = time.monotonic() + _check_timeout(timeout)
    with _lock:
        if _created.get("shut down"):
            return True
        _created["shut down"] = True
    done = flush(max(deadline - time.monotonic(), 0.0))
    return _shutdown_in_background(deadline) and done


def _shutdown_in_background(deadline: float) -> bool:
    # Shutting exporters down may wait on the network; a daemon thread keeps the caller (and
    # the exit) bounded.
    def shut() -> None:
        for key in ("tracer", "meter"):
            provider = _created.get(key)
            try:
                if provider is not None:
                    provider.shutdown()
            except Exception as exc:
                report_fault("shutting telemetry down", exc)

    worker = threading.Thread(target=shut, name="aiguard-shutdown", daemon=True)
    worker.start()
    worker.join(max(deadline - time.monotonic(), 0.1))
    return not worker.is_alive()
