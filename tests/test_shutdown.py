"""No span is lost when a served app stops: ``aiguard.flush`` / ``aiguard.shutdown``, the
example's lifespan flush, and the flush on a SIGTERM that would otherwise kill the process
before ``atexit`` runs (uvicorn re-raises SIGTERM after its own shutdown)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from tests.test_export import Collector, _free_port, _listening, _spans, _wait_for, collector

ROOT = Path(__file__).parent.parent
__all__ = ["collector"]  # the real collector fixture, shared with the export tests

# Nothing leaves the batch processor or the metric reader on its own while the app runs: every
# span the collector gets was flushed when the app stopped.
NO_TIMED_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "600000", "OTEL_METRIC_EXPORT_INTERVAL": "600000"}
REQUESTS = 12


def _serve(argv: list[str], env: dict[str, str], port: int) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        argv,
        cwd=ROOT,
        env={**os.environ, **NO_TIMED_EXPORT, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not _listening(port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the app did not start: {process.communicate()[0]}")
        time.sleep(0.05)
    return process


def _stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=30)
    return process.returncode, out


def _guard_spans(collector: Collector, service: str) -> int:
    def count(text: str) -> int:
        return sum(span.name == "chat gpt-4o" for span in _spans(text))

    text = _wait_for(collector, lambda t: count(t) >= REQUESTS, seconds=15)
    assert f"service.name: Str({service})" in text
    return count(text)


def test_an_app_served_by_uvicorn_delivers_every_span_when_sigterm_stops_it(collector, server):
    port = _free_port()
    process = _serve(
        [sys.executable, "-m", "uvicorn", "tests.apps.served_app:app", "--port", str(port)],
        {
            "OPENAI_BASE_URL": server.url,
            "OPENAI_API_KEY": "sk-served-0123456789",
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.http,
        },
        port,
    )
    for _ in range(REQUESTS):
        assert httpx.get(f"http://127.0.0.1:{port}/ask", timeout=10).json() == {"model": "gpt-4o"}
    code, out = _stop(process)
    assert code == -signal.SIGTERM, out  # uvicorn re-raised SIGTERM: atexit never ran
    assert _guard_spans(collector, "served-app") == REQUESTS


# The example under uvicorn, where SIGTERM ends the process without atexit and without
# aiguard's own SIGTERM flush (a handler is already set): only the lifespan flush can export.
_LAUNCH_EXAMPLE = """
import os, signal, sys
signal.signal(signal.SIGTERM, lambda *_: os._exit(143))
import uvicorn
sys.argv = ["uvicorn", "--factory", "examples.fastapi_service:create_app", "--port", "{port}"]
uvicorn.main()
"""


def test_the_fastapi_example_flushes_in_its_lifespan(collector, server):
    port = _free_port()
    process = _serve(
        [sys.executable, "-c", textwrap.dedent(_LAUNCH_EXAMPLE.format(port=port))],
        {
            "OPENAI_BASE_URL": server.url,
            "OPENAI_API_KEY": "sk-example-0123456789",
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.http,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        },
        port,
    )
    for n in range(REQUESTS):
        answer = httpx.post(
            f"http://127.0.0.1:{port}/summaries", json={"text": f"ticket {n}"}, timeout=10
        )
        assert answer.status_code == 200, answer.text
    code, out = _stop(process)
    assert code == 143, out
    assert _guard_spans(collector, "support-api") == REQUESTS


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, **NO_TIMED_EXPORT},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_flush_exports_what_is_pending_and_shutdown_is_idempotent():
    out = _run(
        """
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        import aiguard
        memory = InMemorySpanExporter()
        aiguard.configure(service_name="svc", exporter=memory)
        aiguard.guard(name="pending")(lambda: 1)()
        before = len(memory.get_finished_spans())
        flushed = aiguard.flush(timeout=5)
        print(before, len(memory.get_finished_spans()), flushed)
        print(aiguard.shutdown(timeout=5), aiguard.shutdown(timeout=5))
        """
    )
    assert out.splitlines() == ["0 1 True", "True True"]


def test_flush_and_shutdown_never_raise_when_export_fails():
    out = _run(
        """
        import logging
        from opentelemetry.sdk.trace.export import SpanExporter
        import aiguard

        class Broken(SpanExporter):
            def export(self, spans):
                raise RuntimeError("collector on fire")
            def force_flush(self, timeout_millis=0):
                raise RuntimeError("collector on fire")
            def shutdown(self):
                raise RuntimeError("collector on fire")

        logging.disable(logging.CRITICAL)
        aiguard.configure(service_name="svc", exporter=Broken())
        aiguard.guard(name="lost")(lambda: 1)()
        print(type(aiguard.flush(timeout=1)).__name__, type(aiguard.shutdown(timeout=1)).__name__)
        """
    )
    assert out == "bool bool"


def test_flush_without_configure_is_a_no_op():
    import aiguard

    assert aiguard.flush(timeout=0.5) is True
    with pytest.raises(TypeError, match="timeout="):
        aiguard.flush(timeout="soon")  # type: ignore[arg-type]
