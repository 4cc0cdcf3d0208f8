"""The conventions' rule table (tests/conventions.py) catches what drifts, and the newest names."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from tests import conventions
from tests.conftest import MESSAGES

import aiguard
from aiguard.testing import Capture


def _spans(*shapes: tuple[str, SpanKind, dict, bool]) -> list:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("aiguard")
    for name, kind, attrs, failed in shapes:
        span = tracer.start_span(name, kind=kind, attributes=attrs)
        if failed:
            span.set_status(Status(StatusCode.ERROR))
        span.end()
    return list(exporter.get_finished_spans())


GOOD = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "m",
    "gen_ai.request.temperature": 0.5,
}


@pytest.mark.parametrize(
    ("name", "attrs", "failed", "broken"),
    [
        ("chat m", {**GOOD, "gen_ai.request.temperature": 1}, False, "is not a double"),
        ("chat m", {**GOOD, "gen_ai.made.up": "x"}, False, "in no table"),
        ("chat m", {**GOOD, "aiguard.attempt": 1}, False, "in no table"),
        ("chat m", {**GOOD, "gen_ai.operation.name": "talk"}, False, "is not one of"),
        ("aiguard chat m", GOOD, False, "the name must be 'chat m'"),
        ("chat m", GOOD, True, "error.type must be set exactly when"),
        ("chat m", {**GOOD, "gen_ai.request.choice.count": 1}, False, "only when not 1"),
        ("chat m", {**GOOD, "openai.request.service_tier": "auto"}, False, "only when not auto"),
        ("chat m", {**GOOD, "gen_ai.input.messages": '[{"role": "user"}]'}, False, "schema"),
        (
            "chat m",
            {**GOOD, "gen_ai.output.messages": '[{"role": "assistant", "parts": []}]'},
            False,
            "no finish_reason",
        ),
    ],
)
def test_the_rule_table_catches_what_breaks_the_conventions(name, attrs, failed, broken):
    conventions.check(_spans(("chat m", SpanKind.CLIENT, GOOD, False)), {}, [])  # the good one
    with pytest.raises(AssertionError, match=broken):
        conventions.check(_spans((name, SpanKind.CLIENT, attrs, failed)), {}, [])


def test_latest_experimental_names_on_opt_in(server, raw_client, monkeypatch):
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http,gen_ai_latest_experimental")
    server.reply("gpt-4o", prompt_tokens=20, completion_tokens=5, cached_tokens=4)
    with Capture() as telemetry:
        client = aiguard.wrap(raw_client)
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        points = telemetry.metrics()
    assert "gen_ai.client.token.usage" not in points
    [inputs] = points["gen_ai.client.inference.usage.input_tokens"]
    [outputs] = points["gen_ai.client.inference.usage.output_tokens"]
    assert (inputs.sum, outputs.sum) == (20, 5)
    [cached] = points["gen_ai.client.inference.usage.detailed.cache_read.input_tokens"]
    assert cached.value == 4 and cached.attributes["gen_ai.token.modality"] == "text"
    assert len(points["gen_ai.client.operation.duration"]) == 1
    conventions.check(telemetry.spans(), points, [])


def test_request_parameters_follow_the_conventions_types(make_client, telemetry):
    make_client().chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        temperature=1,
        top_p=1,
        service_tier="auto",
        reasoning_effort="low",
    )
    a = telemetry.span("chat gpt-4o").attributes
    assert a["gen_ai.request.temperature"] == 1.0 and isinstance(
        a["gen_ai.request.temperature"], float
    )
    assert isinstance(a["gen_ai.request.top_p"], float)
    assert "openai.request.service_tier" not in a  # auto is the default: not recorded
    assert a["gen_ai.request.reasoning.level"] == "low"


def test_a_failed_call_emits_the_operation_exception_event(make_client, server, telemetry):
    import openai

    server.fail("gpt-4o", status=400)
    with pytest.raises(openai.BadRequestError):
        make_client().chat.completions.create(model="gpt-4o", messages=MESSAGES)
    span = telemetry.span("chat gpt-4o")
    [record] = [
        r.log_record
        for r in conventions.LOGS.get_finished_logs()
        if r.log_record.event_name == "gen_ai.client.operation.exception"
    ]
    assert record.attributes["error.type"] == "openai.BadRequestError"
    assert record.span_id == span.context.span_id
    assert record.severity_number.name == "WARN"
