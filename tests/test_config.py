"""aiguard.configure: never replaces the application's providers; explicit ones win.

Global OpenTelemetry providers can be set once per process, so each case runs in its own.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import aiguard


def run(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_import_starts_no_thread_and_sets_no_provider():
    out = run(
        """
        import threading, socket
        def no_network(*a, **k):
            raise AssertionError("network at import")
        socket.socket.connect = no_network
        import aiguard
        from opentelemetry import trace
        print(threading.active_count(), type(trace.get_tracer_provider()).__name__)
        """
    )
    assert out == "1 ProxyTracerProvider"


def test_configure_uses_the_applications_sdk_provider_and_never_replaces_it():
    out = run(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        app = TracerProvider()
        exporter = InMemorySpanExporter()
        app.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(app)
        import aiguard
        aiguard.configure(service_name="x")
        aiguard.configure(service_name="x")
        assert trace.get_tracer_provider() is app

        @aiguard.guard
        def f():
            return 1
        f()
        print([s.name for s in exporter.get_finished_spans()])
        """
    )
    assert out == "['f']"


def test_configure_creates_and_sets_providers_when_the_app_has_none():
    out = run(
        """
        import logging
        logging.basicConfig(level=logging.INFO)
        from opentelemetry import trace, metrics
        import aiguard
        aiguard.configure(service_name="svc")
        tp = trace.get_tracer_provider()
        print(type(tp).__name__, tp.resource.attributes["service.name"],
              type(metrics.get_meter_provider()).__name__)
        """
    )
    assert out == "TracerProvider svc MeterProvider"


def test_configure_console_exporter_prints_spans():
    out = run(
        """
        import aiguard
        aiguard.configure(service_name="svc", exporter="console")
        @aiguard.guard(name="console-span")
        def f():
            return 1
        f()
        from opentelemetry import trace
        trace.get_tracer_provider().force_flush()
        """
    )
    assert '"name": "console-span"' in out


def test_explicit_providers_win_over_the_global_ones():
    out = run(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        trace.set_tracer_provider(TracerProvider())
        mine = TracerProvider()
        exporter = InMemorySpanExporter()
        mine.add_span_processor(SimpleSpanProcessor(exporter))
        import aiguard
        aiguard.configure(tracer_provider=mine)
        aiguard.guard(name="mine")(lambda: 1)()
        print(len(exporter.get_finished_spans()))
        """
    )
    assert out == "1"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"service_name": ""},
        {"service_name": 3},
        {"tracer_provider": "tp"},
        {"meter_provider": object()},
        {"exporter": 5},
    ],
)
def test_configure_refuses_wrong_types(kwargs):
    with pytest.raises(TypeError):
        aiguard.configure(**kwargs)


def test_unknown_exporter_name_is_refused():
    out = run(
        """
        import aiguard
        try:
            aiguard.configure(exporter="zipkin")
        except ValueError as e:
            print(e)
        """
    )
    assert "'otlp', 'console', 'pretty', 'jsonl:PATH'" in out


def test_missing_otlp_exporter_names_the_extra():
    out = run(
        """
        import sys
        sys.modules["opentelemetry.exporter.otlp.proto.http.trace_exporter"] = None
        import aiguard
        try:
            aiguard.configure(exporter="otlp")
        except ImportError as e:
            print(e)
        """
    )
    assert "pip install 'opentelemetry-exporter-otlp-proto-http'" in out


def test_configure_twice_with_the_same_exporter_exports_each_span_once(tmp_path):
    out = run(
        f"""
        from opentelemetry import trace
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        import aiguard
        memory = InMemorySpanExporter()
        path = {str(tmp_path / "spans.jsonl")!r}
        for _ in range(3):
            aiguard.configure(service_name="svc", exporter=memory)
            aiguard.configure(service_name="svc", exporter="jsonl:" + path)
            aiguard.configure(exporter=memory)
        aiguard.guard(name="once")(lambda: 1)()
        trace.get_tracer_provider().force_flush()
        print(len(memory.get_finished_spans()), len(open(path).read().splitlines()))
        """
    )
    assert out == "1 1"


def test_a_second_service_name_is_refused_clearly_and_the_same_one_accepted():
    out = run(
        """
        from opentelemetry import trace
        import aiguard
        aiguard.configure(service_name="first")
        aiguard.configure(service_name="first")
        aiguard.configure()
        try:
            aiguard.configure(service_name="second")
        except ValueError as e:
            print(e)
        print(trace.get_tracer_provider().resource.attributes["service.name"])
        """
    )
    message, name = out.splitlines()
    assert "service_name='second'" in message and "'first'" in message
    assert "once, at startup" in message
    assert name == "first"


@pytest.mark.parametrize(
    "bad",
    [
        'exporter="zipkin"',
        'exporter="jsonl:"',
        "service_name=3",
        "tracer_provider=1",
        "capture_pii=1",
        "capture_max_chars=2",
    ],
)
def test_a_refused_configure_changes_nothing(bad):
    out = run(
        f"""
        from opentelemetry import trace
        import aiguard
        from aiguard import _capture
        try:
            aiguard.configure(capture_content="SPAN_ONLY", {bad})
        except (TypeError, ValueError) as e:
            print(type(e).__name__)
        print(_capture.current(), type(trace.get_tracer_provider()).__name__)
        """
    )
    assert out.splitlines()[-1] == "None ProxyTracerProvider"
