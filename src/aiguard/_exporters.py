"""The exporters ``configure(exporter=...)`` names: ``otlp`` (HTTP or gRPC, by the standard
variables), ``console``, ``pretty``, ``jsonl:PATH``, a ``SpanExporter``, or a list of them; and the
metric reader that goes with them."""

from __future__ import annotations

import importlib
import logging
import os
from typing import Any

from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger("aiguard")

# Seconds an export waits for the collector.
EXPORT_TIMEOUT_S = 3.0

_EXPORTER_EXTRAS = {
    "otlp": "opentelemetry-exporter-otlp-proto-http",  # aiguard's otlp extra; the PyPI
    "grpc": "opentelemetry-exporter-otlp-proto-grpc",  # name "aiguard" is another project
}

# Whether the "no exporter configured" note was logged (once per process).
_told: list[bool] = []


def _check_exporters(exporter: object) -> None:
    """A TypeError or ValueError naming ``exporter=`` for what is not one or a list of them."""
    several = isinstance(exporter, list | tuple)
    exporters: list[Any] = list(exporter) if isinstance(exporter, list | tuple) else [exporter]
    for one in exporters:
        if (one is None and not several) or isinstance(one, SpanExporter):
            continue
        if not isinstance(one, str):
            raise TypeError(
                "exporter= must be 'otlp', 'console', 'pretty', 'jsonl:PATH', an opentelemetry "
                f"SpanExporter, a list of these, or None; got {one!r}"
            )
        _check_exporter_name(one)
    if several:
        keys = [_exporter_key(one) for one in exporters]
        if not keys:
            raise ValueError("exporter=[] names no exporter: give one, or None")
        if any(key is other or key == other for i, key in enumerate(keys) for other in keys[:i]):
            raise ValueError(f"exporter={exporter!r} names a destination twice")


def _several(exporter: Any) -> list[Any]:
    """``exporter=`` as a list (None: ``[None]``, the environment's choice)."""
    return list(exporter) if isinstance(exporter, list | tuple) else [exporter]


def _check_exporter_name(exporter: str) -> None:
    if exporter.startswith("jsonl:") and not exporter.partition(":")[2]:
        raise ValueError("exporter='jsonl:PATH' needs a file path after 'jsonl:'")
    _kind(exporter)  # raises for a name that is not known


def _kind(exporter: str | SpanExporter | None) -> str | None:
    """``console``, ``otlp``, ``jsonl`` or None (nothing to export), from the argument and env."""
    if isinstance(exporter, SpanExporter):
        return None
    if exporter is None:
        if any(os.environ.get(f"OTEL_EXPORTER_OTLP_{k}ENDPOINT") for k in ("", "TRACES_")):
            return "otlp"
        if not _told:
            _told.append(True)
            log.info(
                "aiguard: no exporter configured (no exporter= and no "
                "OTEL_EXPORTER_OTLP_ENDPOINT); spans are recorded but not exported"
            )
        return None
    if exporter in ("console", "otlp", "pretty") or exporter.startswith("jsonl:"):
        return exporter.partition(":")[0]
    raise ValueError(
        f"exporter={exporter!r} is not known: use 'otlp', 'console', 'pretty', 'jsonl:PATH', a "
        "SpanExporter, or None"
    )


def _grpc(signal: str) -> bool:
    protocol = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    return protocol.strip().lower() == "grpc"


def _otlp(signal: str) -> Any:
    """The OTLP exporter class for ``TRACES`` or ``METRICS``, by the protocol variables."""
    grpc = _grpc(signal)
    name = "trace_exporter" if signal == "TRACES" else "metric_exporter"
    cls = "OTLPSpanExporter" if signal == "TRACES" else "OTLPMetricExporter"
    module = f"opentelemetry.exporter.otlp.proto.{'grpc' if grpc else 'http'}.{name}"
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError:
        extra = _EXPORTER_EXTRAS["grpc" if grpc else "otlp"]
        raise ImportError(
            f"exporting over OTLP/{'gRPC' if grpc else 'HTTP'} needs its exporter: "
            f"pip install '{extra}'"
        ) from None


def _timeout(signal: str = "TRACES") -> dict[str, Any]:
    # An unreachable collector must not hold the app (or its exit) for long: unless the user
    # chose a timeout, each export gives up after a few seconds.
    if os.environ.get("OTEL_EXPORTER_OTLP_TIMEOUT") or os.environ.get(
        f"OTEL_EXPORTER_OTLP_{signal}_TIMEOUT"
    ):
        return {}
    return {"timeout": EXPORT_TIMEOUT_S}


def _exporter(exporter: str | SpanExporter | None) -> SpanExporter | None:
    if isinstance(exporter, SpanExporter):
        return exporter
    kind = _kind(exporter)
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if kind == "pretty":
        from aiguard._pretty import PrettySpanExporter

        return PrettySpanExporter()
    if kind == "jsonl":
        from aiguard._jsonl import JsonlSpanExporter

        assert exporter is not None
        path = exporter.partition(":")[2]
        if not path:
            raise ValueError("exporter='jsonl:PATH' needs a file path after 'jsonl:'")
        return JsonlSpanExporter(path)
    if kind == "otlp":
        return _otlp("TRACES")(**_timeout())  # type: ignore[no-any-return]
    return None


def _metric_reader(exporter: Any) -> Any:
    """A periodic reader exporting metrics the same way as spans (OTLP or console), or None."""
    if os.environ.get("OTEL_METRICS_EXPORTER", "").strip().lower() == "none":
        return None
    kinds = [_kind(one) for one in _several(exporter)]
    kind = "otlp" if "otlp" in kinds else "console" if "console" in kinds else None
    env = os.environ.get
    # Metrics go over OTLP to their own or the general endpoint, or to the default one when no
    # endpoint is set; not when only a traces endpoint is (many trace backends take no metrics).
    traces_only = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") and not env(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or (kind == "otlp" and not traces_only):
        metric_exporter = _otlp("METRICS")(**_timeout("METRICS"))
    elif kind == "console":
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        metric_exporter = ConsoleMetricExporter()
    else:
        return None  # jsonl carries spans only
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    return PeriodicExportingMetricReader(metric_exporter)


def _exporter_key(exporter: str | SpanExporter | None) -> object:
    """What makes two ``exporter=`` arguments the same destination: the name (None meaning
    the OTLP the environment selects), or the very exporter object."""
    return "otlp" if exporter is None else exporter
