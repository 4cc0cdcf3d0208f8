"""Human review: review= rules send calls to a queue (a JSONL file or a callable), with content
only when it is captured; ``aiguard review`` lists them and turns a verdict into feedback on the
call's trace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import MESSAGES

import aiguard
from aiguard import _capture, _review, _worker
from aiguard.checks import NoPII

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _fresh():
    _worker.reset()
    _capture.reset()
    yield
    _worker.drain(5)
    _capture.reset()


def _ask(client, messages=MESSAGES):
    return client.chat.completions.create(model="gpt-4o", messages=messages)


def low(messages, answer, **context):
    return 0.2


def test_a_low_score_sends_the_call_to_the_queue(make_client, tmp_path, telemetry):
    queue = tmp_path / "review.jsonl"
    client = make_client(evaluate=[low], review=aiguard.Review(queue, below=0.5), tag="bot")
    reply = _ask(client)
    _ask(make_client(evaluate=[lambda m, a, **c: 0.9], review=aiguard.Review(queue, below=0.5)))
    assert aiguard.flush(5)
    (item,) = _review.pending(str(queue))
    span = telemetry.spans()[0]
    assert item["ref"] == aiguard.call_ref(reply)
    assert (item["model"], item["tag"], item["scores"]) == ("gpt-4o", "bot", {"low": 0.2})
    assert item["reasons"] == ["low scored 0.2"]
    assert item["cost_usd"] == span.attributes["aiguard.cost.total_usd"]
    assert "messages" not in item and "answer" not in item  # content capture is off


def test_content_goes_to_review_only_when_captured_and_scrubbed(make_client, tmp_path):
    items: list[dict] = []
    secret = [{"role": "user", "content": "my mail is bob@corp.example, what now?"}]
    client = make_client(review=aiguard.Review(items.append, sample=1.0), capture="SPAN_ONLY")
    _ask(client, secret)
    assert aiguard.flush(5)
    (item,) = items
    assert item["reasons"] == ["sample"]
    text = json.dumps(item["messages"])
    assert "what now?" in text and "bob@corp.example" not in text
    assert item["answer"]["gen_ai.output.messages"][0]["role"] == "assistant"


def test_refusals_and_redactions_are_rules_too(make_client, server, tmp_path):
    items: list[dict] = []
    server.answer("gpt-4o", "I'm sorry, but I can't help with that.")
    refusing = make_client(review=aiguard.Review(items.append, refusal=True))
    _ask(refusing)
    _ask(refusing)  # answered normally: not sent
    redacting = make_client(
        checks=[NoPII(action="redact")], review=aiguard.Review(items.append, redacted=True)
    )
    _ask(redacting, [{"role": "user", "content": "mail bob@corp.example"}])
    _ask(redacting)  # nothing to redact: not sent
    assert aiguard.flush(5)
    assert [item["reasons"] for item in items] == [["refusal"], ["redacted"]]


def test_review_rules_are_checked():
    with pytest.raises(TypeError, match=r"Review\(to=\.\.\.\) must be a JSONL file path"):
        aiguard.Review(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Review\(sample=\.\.\.\) must be a fraction"):
        aiguard.Review("q.jsonl", sample=2)
    with pytest.raises(TypeError, match=r"review= must be an aiguard\.Review"):
        aiguard.Policy(review="q.jsonl")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiguard._cli", "review", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "OTEL_EXPORTER_OTLP_ENDPOINT": ""},
    )


def test_a_verdict_on_the_command_line_becomes_feedback_on_the_trace(
    make_client, tmp_path, telemetry
):
    queue, spans = tmp_path / "review.jsonl", tmp_path / "spans.jsonl"
    client = make_client(evaluate=[low], review=aiguard.Review(queue, below=0.5))
    _ask(client)
    _ask(client)
    assert aiguard.flush(5)
    listed = _cli(str(queue))
    assert listed.returncode == 0 and "2 call(s) to review" in listed.stdout
    first, second = _review.pending(str(queue))
    assert first["id"] in listed.stdout and "why: low scored 0.2" in listed.stdout
    judged = _cli(
        str(queue), first["id"], "bad", "--explanation", "wrong city", "--jsonl", str(spans)
    )
    assert judged.returncode == 0, judged.stderr
    (line,) = [json.loads(x) for x in spans.read_text().splitlines()]
    call = telemetry.spans()[0]
    evaluation = line["evaluation"]
    assert evaluation["traceId"] == f"{call.context.trace_id:032x}"
    assert evaluation["spanId"] == f"{call.context.span_id:016x}"
    attributes = {a["key"]: a["value"] for a in evaluation["attributes"]}
    assert attributes["gen_ai.evaluation.name"] == {"stringValue": "human_review"}
    assert attributes["gen_ai.evaluation.score.label"] == {"stringValue": "bad"}
    assert attributes["gen_ai.evaluation.explanation"] == {"stringValue": "wrong city"}
    assert [i["id"] for i in _review.pending(str(queue))] == [second["id"]]
    again = _cli(str(queue), first["id"], "good")
    assert again.returncode == 1 and "no pending review item" in again.stderr
    assert _cli(str(tmp_path / "missing.jsonl")).returncode == 2
