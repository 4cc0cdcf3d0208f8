"""The facts of a call from what it returned (``call_info``), call references that travel
(``call_ref``), and feedback that lands on the call's trace as ``gen_ai.evaluation.result``."""

from __future__ import annotations

import base64
import gc
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tests.conftest import MESSAGES
from tests.conventions import LOGS

import aiguard
from aiguard import _calls

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _clean():
    LOGS.clear()
    yield


def _evaluations():
    return [
        r.log_record
        for r in LOGS.get_finished_logs()
        if r.log_record.event_name == "gen_ai.evaluation.result"
    ]


def _ask(client, **extra):
    return client.chat.completions.create(model="gpt-4o", messages=MESSAGES, **extra)


def test_call_info_gives_the_calls_cost_trace_and_response(make_client, telemetry):
    reply = _ask(make_client(tag="support"))
    info = aiguard.call_info(reply)
    span = telemetry.span("chat gpt-4o")
    assert info is not None and info.ended
    assert info.trace_id == f"{span.context.trace_id:032x}"
    assert info.span_id == f"{span.context.span_id:016x}"
    assert info.response_id == reply.id == span.attributes["gen_ai.response.id"]
    assert info.model == span.attributes["gen_ai.response.model"]
    assert info.provider == "openai" and info.tag == "support"
    assert info.cost_usd == span.attributes["aiguard.cost.total_usd"] > 0
    assert info.ref == aiguard.call_ref(reply)


def test_a_retried_call_costs_what_its_span_says(make_client, server, telemetry):
    server.fail(status=500)
    reply = _ask(make_client())
    span = telemetry.span("chat gpt-4o")
    assert span.attributes["aiguard.attempts"] == 2
    assert aiguard.call_info(reply).cost_usd == span.attributes["aiguard.cost.total_usd"]


def test_a_stream_has_its_facts_once_read(make_client, telemetry):
    stream = _ask(make_client(), stream=True)
    early = aiguard.call_info(stream)
    assert early is not None and not early.ended and early.cost_usd is None
    assert early.trace_id is not None  # known from the start: a support ticket can cite it
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text
    info = aiguard.call_info(stream)
    span = telemetry.span("chat gpt-4o")
    assert info.ended and info.response_id == span.attributes["gen_ai.response.id"]
    assert info.cost_usd == span.attributes["aiguard.cost.total_usd"]


async def test_the_async_client_too(make_async_client, telemetry):
    reply = await make_async_client().chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert aiguard.call_info(reply).response_id == reply.id


def test_unknown_objects_have_no_facts():
    assert aiguard.call_info(object()) is None
    assert aiguard.call_info("text") is None
    with pytest.raises(ValueError, match="not returned by a guarded call"):
        aiguard.call_ref({"id": "x"})
    with pytest.raises(ValueError, match="not returned by a guarded call"):
        aiguard.feedback(object(), "thumbs", score=1.0)


def test_the_registry_is_bounded_and_holds_no_response_alive(monkeypatch):
    registry = _calls._Registry()
    monkeypatch.setattr(_calls, "STRONG_MAX", 3)
    monkeypatch.setattr(_calls, "WEAK_MAX", 5)

    class Response:
        pass

    kept = [Response() for _ in range(8)]
    for index, item in enumerate(kept):
        registry.remember(item, _calls.CallFacts(response_id=str(index)))
    assert len(registry.weak) == 5  # the oldest were dropped
    assert registry.facts(kept[0]) is None and registry.facts(kept[7]).response_id == "7"
    del kept[5:], item
    gc.collect()
    registry.facts(kept[0])  # the next use purges what was collected
    assert len(registry.weak) == 2  # collected responses leave nothing behind
    dicts = [{"id": str(i)} for i in range(5)]  # llama.cpp: no weak references
    for item in dicts:
        registry.remember(item, _calls.CallFacts(response_id=item["id"]))
    assert len(registry.strong) == 3
    assert registry.facts(dicts[4]).response_id == "4" and registry.facts(dicts[0]) is None
    assert registry.facts({"id": "4"}) is None  # an equal dict is another object
    registry.remember("same", _calls.CallFacts())  # a plain value is never registered
    assert registry.facts("same") is None


def test_a_call_reference_round_trips_and_is_validated():
    facts = _calls.CallFacts(2**100 + 5, 2**60 + 7, "chatcmpl-1", "gpt-4o", "openai", "bot")
    ref = _calls.encode(facts)
    assert ref.startswith("agref1.") and "gpt-4o" not in ref  # opaque, but no secret either
    back = _calls.parse(ref)
    assert (back.trace_id, back.span_id, back.response_id, back.model, back.tag) == (
        facts.trace_id,
        facts.span_id,
        "chatcmpl-1",
        "gpt-4o",
        "bot",
    )
    with pytest.raises(ValueError, match="not an aiguard call reference"):
        _calls.parse("hello")
    with pytest.raises(ValueError, match="version '9' is not supported"):
        _calls.parse("agref9." + ref.split(".", 1)[1])
    with pytest.raises(ValueError, match="damaged"):
        _calls.parse(ref[:-6])
    forged = base64.urlsafe_b64encode(json.dumps({"t": "zz" * 16, "s": "1" * 16}).encode())
    with pytest.raises(ValueError, match="trace id is not 32 hex digits"):
        _calls.parse("agref1." + forged.decode())
    with pytest.raises(ValueError, match="names no trace and no response"):
        _calls.parse("agref1." + base64.urlsafe_b64encode(b"{}").decode())
    with pytest.raises(TypeError, match="a call reference is a string"):
        _calls.parse(42)  # type: ignore[arg-type]


def test_feedback_on_a_response_lands_on_its_span(make_client, telemetry):
    reply = _ask(make_client(tag="support"))
    aiguard.feedback(reply, "thumbs", score=1.0, label="up", explanation="spot on")
    span = telemetry.span("chat gpt-4o")
    (event,) = _evaluations()
    assert (event.trace_id, event.span_id) == (span.context.trace_id, span.context.span_id)
    assert event.attributes == {
        "gen_ai.evaluation.name": "thumbs",
        "gen_ai.evaluation.score.value": 1.0,
        "gen_ai.evaluation.score.label": "up",
        "gen_ai.evaluation.explanation": "spot on",
        "gen_ai.response.id": reply.id,
        "aiguard.evaluation.passed": True,
    }
    points = telemetry.metrics()["aiguard.evaluation.score"]
    assert [dict(p.attributes) for p in points] == [
        {
            "gen_ai.evaluation.name": "thumbs",
            "gen_ai.response.model": "gpt-4o",
            "aiguard.tag": "support",
        }
    ]
    (counted,) = telemetry.metrics()["aiguard.evaluations"]
    assert counted.attributes["aiguard.evaluation.passed"] is True


def test_feedback_arguments_are_checked(make_client, telemetry):
    reply = _ask(make_client())
    with pytest.raises(ValueError, match="needs a score=, a label=, or both"):
        aiguard.feedback(reply, "thumbs")
    with pytest.raises(TypeError, match="name= must be a non-empty string"):
        aiguard.feedback(reply, "", score=1)
    with pytest.raises(TypeError, match="score= must be a number"):
        aiguard.feedback(reply, "thumbs", score="high")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        aiguard.feedback(reply, "thumbs", score=float("nan"))
    assert _evaluations() == []


_OTHER_PROCESS = textwrap.dedent(
    """
    import json, sys
    from opentelemetry import _logs
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
    import aiguard

    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    _logs.set_logger_provider(provider)
    aiguard.feedback(sys.argv[1], "thumbs", score=0.0, label="down")
    (record,) = [r.log_record for r in exporter.get_finished_logs()]
    print(json.dumps({"trace": record.trace_id, "span": record.span_id,
                      "event": record.event_name, "attrs": dict(record.attributes)}))
    """
)


def test_feedback_from_another_process_lands_on_the_same_trace(make_client, telemetry):
    reply = _ask(make_client())
    ref = aiguard.call_ref(reply)
    done = subprocess.run(
        [sys.executable, "-c", _OTHER_PROCESS, ref],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    span = telemetry.span("chat gpt-4o")
    assert (seen["trace"], seen["span"]) == (span.context.trace_id, span.context.span_id)
    assert seen["event"] == "gen_ai.evaluation.result"
    assert seen["attrs"]["gen_ai.response.id"] == reply.id
    assert seen["attrs"]["gen_ai.evaluation.score.label"] == "down"


def test_without_a_tracer_the_reference_carries_the_response_id(make_client, monkeypatch):
    from aiguard._telemetry import Telemetry

    monkeypatch.setattr(Telemetry, "tracing", lambda self: False)
    monkeypatch.setattr(Telemetry, "measuring", lambda self: False)
    reply = _ask(make_client(evaluate=[lambda m, a, **c: None]))
    info = aiguard.call_info(reply)
    assert info.trace_id is None and info.response_id == reply.id
    aiguard.feedback(info.ref, "thumbs", label="up")
    (event,) = _evaluations()
    assert event.span_id in (None, 0) and event.attributes["gen_ai.response.id"] == reply.id


@pytest.mark.parametrize("stream", [False, True], ids=["answer", "stream"])
def test_every_adapter_ties_what_it_returns_to_the_call(server, telemetry, stream):
    from tests.test_adapter_contract import PROVIDERS

    for provider in PROVIDERS:
        client = aiguard.wrap(provider.client(server, False), retry=None)
        returned = provider.call(client, provider.model, stream)
        if stream:
            list(returned)
        info = aiguard.call_info(returned)
        span = telemetry.spans()[-1]
        assert info is not None and info.ended, provider.name
        assert info.span_id == f"{span.context.span_id:016x}", provider.name
        assert info.provider == span.attributes["gen_ai.provider.name"], provider.name
        assert info.response_id == span.attributes.get("gen_ai.response.id"), provider.name
        assert info.cost_usd == span.attributes.get("aiguard.cost.total_usd"), provider.name


def test_a_call_nothing_links_to_has_no_reference(make_client, monkeypatch):
    from aiguard._telemetry import Telemetry

    monkeypatch.setattr(Telemetry, "tracing", lambda self: False)
    monkeypatch.setattr(Telemetry, "measuring", lambda self: False)
    reply = _ask(make_client())  # no tracer, and nothing read the response's id
    info = aiguard.call_info(reply)
    assert info is not None and info.ref is None and info.trace_id is None
    with pytest.raises(ValueError, match="nothing links to this call"):
        aiguard.call_ref(reply)
    with pytest.raises(ValueError, match="nothing links to this call"):
        aiguard.feedback(reply, "thumbs", score=1.0)
