"""End to end over OTLP: a call's span and the feedback given on its reference reach a real
collector (rotel) linked by trace and span id."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time

import pytest
from tests.test_export import AGENT, _free_port, _listening, _spans

APP = textwrap.dedent(
    """
    import json, openai, aiguard
    from opentelemetry import _logs
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from aiguard.testing import MockServer

    logs = LoggerProvider()  # the application's logs pipeline: evaluation events go there
    logs.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
    _logs.set_logger_provider(logs)
    aiguard.configure(service_name="quality-e2e", exporter="otlp")
    with MockServer() as server:
        client = aiguard.wrap(openai.OpenAI(base_url=server.url, api_key="k"),
                              evaluate=[aiguard.evaluators.Refusal()])
        reply = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        info = aiguard.call_info(reply)
        aiguard.feedback(info.ref, "thumbs", score=1.0)
        assert aiguard.flush(5)
    print(json.dumps({"trace_id": info.trace_id, "span_id": info.span_id}))
    """
)


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
            "--debug-log", "traces", "--debug-log", "logs",
            "--debug-log-verbosity", "detailed",
        ],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 15
    while not (_listening(http_port) and _listening(grpc_port)):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the rotel collector did not start: {log.read_text()}")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{http_port}", log
    process.terminate()
    process.wait(timeout=10)


def test_feedback_reaches_the_collector_on_the_calls_trace(collector):
    endpoint, log = collector
    done = subprocess.run(
        [sys.executable, "-c", APP],
        env={**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    app = json.loads(done.stdout.strip().splitlines()[-1])
    deadline = time.monotonic() + 10
    while log.read_text().count("EventName: gen_ai.evaluation.result") < 2:
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    text = log.read_text()
    records = text.split("LogRecord #")[1:]
    found = {}
    for record in records:
        name = re.search(r"gen_ai\.evaluation\.name: Str\((\w+)\)", record)
        trace = re.search(r"Trace ID\s*: (\w+)", record)
        span = re.search(r"Span ID\s*: (\w+)", record)
        assert name and trace and span, record
        found[name.group(1)] = (trace.group(1), span.group(1))
    linked = (app["trace_id"], app["span_id"])
    assert found == {"thumbs": linked, "refusal": linked}
    spans = [(s.trace_id, s.span_id, s.name) for s in _spans(text)]
    assert (*linked, "chat gpt-4o") in spans  # the evaluated call's own span


def test_a_reviewers_verdict_reaches_the_collector_on_the_calls_trace(collector, tmp_path):
    from aiguard import _calls, _review

    endpoint, log = collector
    facts = _calls.CallFacts(0xABC, 0xDEF, "chatcmpl-9", "gpt-4o")
    queue = tmp_path / "review.jsonl"
    _review.append(str(queue), {"kind": "item", "id": "it1", "ref": _calls.encode(facts)})
    done = subprocess.run(
        [sys.executable, "-m", "aiguard._cli", "review", str(queue), "it1", "good"],
        env={**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 10
    while "human_review" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    (record,) = [r for r in log.read_text().split("LogRecord #")[1:] if "human_review" in r]
    assert re.search(rf"Trace ID\s*: {0xABC:032x}", record)
    assert re.search(rf"Span ID\s*: {0xDEF:016x}", record)
    assert "gen_ai.evaluation.score.label: Str(good)" in record
    assert _review.pending(str(queue)) == []
