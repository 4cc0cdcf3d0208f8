"""Export end to end: a real collector (rotel) receives aiguard's spans and metrics over OTLP/HTTP
and OTLP/gRPC; with the collector down, calls run at normal speed and the exit stays bounded."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

APP = Path(__file__).parent / "apps" / "export_app.py"

if os.environ.get("CI"):  # CI installs the collector: these tests must run there, not skip
    import rotel
else:
    rotel = pytest.importorskip("rotel")

AGENT = Path(rotel.__file__).parent / "rotel-agent"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Collector:
    http: str
    grpc: str
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def collector(tmp_path):
    http_port, grpc_port = _free_port(), _free_port()
    log = tmp_path / "rotel.log"
    process = subprocess.Popen(
        [
            str(AGENT), "start",
            "--otlp-http-endpoint", f"127.0.0.1:{http_port}",
            "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}",
            "--exporter", "blackhole",
            "--debug-log", "traces", "--debug-log", "metrics",
            "--debug-log-verbosity", "detailed",
        ],
        stdout=log.open("w"),  # in the foreground rotel logs what it receives to stdout
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 15
    while not (_listening(http_port) and _listening(grpc_port)):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(
                f"the rotel collector did not start: {log.read_text() if log.exists() else ''}"
            )
        time.sleep(0.05)
    yield Collector(f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{grpc_port}", log)
    process.terminate()
    process.wait(timeout=10)


def _run_app(env: dict[str, str]) -> tuple[dict, float]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(APP)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), seconds


@dataclass
class Span:
    trace_id: str
    parent_id: str
    span_id: str
    name: str
    attributes: dict[str, str] = field(default_factory=dict)


_VALUE = re.compile(r"^\w+\((.*)\)$")


def _spans(text: str) -> list[Span]:
    """Spans from rotel's detailed debug log."""
    spans: list[Span] = []
    current: Span | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if line.startswith("Span #"):
            current = Span("", "", "", "")
            spans.append(current)
        elif current is None:
            continue
        elif stripped.startswith("Trace ID"):
            current.trace_id = stripped.split(":", 1)[1].strip()
        elif stripped.startswith("Parent ID"):
            current.parent_id = stripped.split(":", 1)[1].strip()
        elif stripped.startswith("ID "):
            current.span_id = stripped.split(":", 1)[1].strip()
        elif stripped.startswith("Name"):
            current.name = stripped.split(":", 1)[1].strip()
        elif stripped.startswith("-> ") and ": " in stripped:
            key, raw = stripped[3:].split(": ", 1)
            match = _VALUE.match(raw)
            current.attributes[key] = match.group(1) if match else raw
        elif line.startswith(("ResourceSpans", "ResourceMetrics", "ScopeSpans")):
            current = None
    return spans


def _wait_for(collector: Collector, predicate, seconds: float = 10.0) -> str:
    deadline = time.monotonic() + seconds
    while True:
        text = collector.text()
        if predicate(text) or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def _check_received(collector: Collector, app: dict) -> None:
    text = _wait_for(
        collector,
        lambda t: "gen_ai.client.operation.duration" in t and t.count("chat gpt-4o") >= 2,
    )
    spans = [s for s in _spans(text) if s.trace_id == app["trace_id"]]
    by_name: dict[str, list[Span]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    # Two logical calls, one inference span each: 429 + ok; 503, 503, then the fallback.
    assert set(by_name) == {"handle request", "chat gpt-4o"}
    calls = by_name["chat gpt-4o"]
    assert len(calls) == 2 and all(c.parent_id == app["root_id"] for c in calls)
    retried, fell_back = sorted(calls, key=lambda c: c.attributes["aiguard.retries"] == "0")
    assert retried.attributes["aiguard.retries"] == "1"
    assert retried.attributes["aiguard.attempts"] == "2"
    assert fell_back.attributes["aiguard.fallback.model"] == "gpt-4o-mini"
    assert fell_back.attributes["gen_ai.response.model"] == "gpt-4o-mini"
    assert fell_back.attributes["aiguard.attempts"] == "3"
    assert text.count("aiguard.attempt.failed") == 3
    assert {c.attributes["aiguard.outcome"] for c in calls} == {"ok"}
    assert {c.attributes["gen_ai.provider.name"] for c in calls} == {"openai"}
    assert any(c.attributes.get("aiguard.cost.usd") == "0.0075" for c in calls)
    assert all("gen_ai.usage.input_tokens" in c.attributes for c in calls)
    assert "service.name: Str(aiguard-e2e)" in text
    for metric in (
        "gen_ai.client.token.usage",
        "aiguard.retries",
        "aiguard.fallbacks",
        "aiguard.cost",
    ):
        assert f"Name: {metric}" in text, metric
    assert "sk-e2e-SECRET" not in text  # the API key never reaches the collector


def test_spans_and_metrics_reach_a_real_collector_over_http(collector):
    app, _ = _run_app({"OTEL_EXPORTER_OTLP_ENDPOINT": collector.http})
    assert app["answered"] == ["gpt-4o", "gpt-4o-mini"]
    _check_received(collector, app)


def test_spans_and_metrics_reach_a_real_collector_over_grpc(collector):
    app, _ = _run_app(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.grpc, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    )
    _check_received(collector, app)


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_a_collector_that_is_down_costs_the_app_nothing_and_exit_stays_bounded(protocol):
    closed = _free_port()  # nothing listens there
    app, seconds = _run_app(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        }
    )
    assert app["answered"] == ["gpt-4o", "gpt-4o-mini"]
    assert app["calls_seconds"] < 5  # the calls themselves never wait for the collector
    assert seconds < 15  # start-up + calls + a bounded exit flush


def test_rotel_agent_is_shipped_in_the_wheel():
    assert AGENT.exists() or shutil.which("rotel-agent")


def test_the_demo_exports_when_an_endpoint_is_set(collector):
    done = subprocess.run(
        [sys.executable, "-m", "aiguard._cli", "demo"],
        env={**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": collector.http},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    text = _wait_for(collector, lambda t: "aiguard.budget.refused" in t)
    names = {span.name for span in _spans(text)}
    assert "chat gpt-4o" in names
