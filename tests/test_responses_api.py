"""The OpenAI Responses API: ``responses.create`` (plain and streamed) and ``responses.stream``."""

from __future__ import annotations

from decimal import Decimal

import openai
import pytest
from openai.types.responses import Response

import aiguard

INPUT = "What is the capital of France?"


@pytest.fixture(autouse=True)
def _usage(server):
    server.reply(
        "gpt-4o", prompt_tokens=100, completion_tokens=50, cached_tokens=40, reasoning_tokens=10
    )


# 60 input at $2.50/M, 40 cached at $1.25/M, 50 output (reasoning included) at $10/M
COST = Decimal("0.0007")


def _failed_attempts(span):
    return [e.attributes for e in span.events if e.name == "aiguard.attempt.failed"]


def _check_span(span, stream=False):
    a = span.attributes
    assert a["openai.api.type"] == "responses"
    assert a["gen_ai.operation.name"] == "chat"
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (100, 50)
    assert a["gen_ai.usage.cache_read.input_tokens"] == 40
    assert a["gen_ai.usage.reasoning.output_tokens"] == 10
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["gen_ai.response.id"].startswith("resp_")
    assert Decimal(repr(a["aiguard.cost.usd"])) == COST
    assert a.get("gen_ai.request.stream", False) is stream


def test_create_is_guarded_and_priced(make_client, telemetry):
    reply = make_client(provider="openai").responses.create(
        model="gpt-4o", input=INPUT, max_output_tokens=64
    )
    assert isinstance(reply, Response) and reply.output_text
    span = telemetry.span("chat gpt-4o")
    _check_span(span)
    assert span.attributes["gen_ai.request.max_tokens"] == 64


def test_create_retries_and_falls_back(make_client, server, telemetry):
    server.fail("gpt-4o", status=429, headers={"retry-after-ms": "1"})
    make_client().responses.create(model="gpt-4o", input=INPUT)
    span = telemetry.span("chat gpt-4o")
    a = span.attributes
    assert (a["aiguard.attempts"], a["aiguard.retries"], a["aiguard.outcome"]) == (2, 1, "ok")
    [failed] = _failed_attempts(span)
    assert (failed["aiguard.attempt"], failed["error.type"]) == (1, "openai.RateLimitError")
    assert failed["aiguard.failure.class"] == "rate_limit"
    assert "error.type" not in a
    telemetry.clear()

    server.fail("gpt-4o", status=503, times=3)
    reply = make_client(fallback=["gpt-4o-mini"]).responses.create(model="gpt-4o", input=INPUT)
    assert reply.model == "gpt-4o-mini"
    span = telemetry.span("chat gpt-4o")
    a = span.attributes
    assert (a["aiguard.attempts"], a["aiguard.retries"]) == (4, 2)
    assert a["aiguard.fallback.used"] is True and a["aiguard.fallback.model"] == "gpt-4o-mini"
    assert a["gen_ai.request.model"] == "gpt-4o" and a["gen_ai.response.model"] == "gpt-4o-mini"
    failed = _failed_attempts(span)
    assert [f["aiguard.attempt"] for f in failed] == [1, 2, 3]
    assert {f["aiguard.failure.class"] for f in failed} == {"outage"}
    assert {f["aiguard.attempt.model"] for f in failed} == {"gpt-4o"}


def test_streamed_create(make_client, raw_client, telemetry):
    raw = [e.type for e in raw_client.responses.create(model="gpt-4o", input=INPUT, stream=True)]
    stream = make_client(provider="openai").responses.create(
        model="gpt-4o",
        input=[{"role": "user", "content": [{"type": "input_text", "text": INPUT}]}],
        stream=True,
    )
    assert isinstance(stream, openai.Stream)
    assert [e.type for e in stream] == raw
    _check_span(telemetry.span("chat gpt-4o"), stream=True)


def test_stream_helper_goes_through_the_guard(make_client, server, telemetry):
    server.fail("gpt-4o", status=500)
    client = make_client(provider="openai")
    with client.responses.stream(model="gpt-4o", input=INPUT) as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.output_text == "Hello from gpt-4o."
    span = telemetry.span("chat gpt-4o")
    _check_span(span, stream=True)
    a = span.attributes
    assert (a["aiguard.attempts"], a["aiguard.retries"], a["aiguard.outcome"]) == (2, 1, "ok")
    [failed] = _failed_attempts(span)
    assert (failed["aiguard.attempt"], failed["error.type"]) == (1, "openai.InternalServerError")
    assert "error.type" not in a


async def test_async_create_and_stream(make_async_client, telemetry):
    client = make_async_client(provider="openai")
    reply = await client.responses.create(model="gpt-4o", input=INPUT)
    assert reply.output_text
    stream = await client.responses.create(model="gpt-4o", input=INPUT, stream=True)
    events = [e.type async for e in stream]
    assert events[-1] == "response.completed"
    async with client.responses.stream(model="gpt-4o", input=INPUT) as helper:
        async for _ in helper:
            pass
        assert (await helper.get_final_response()).output_text
    spans = telemetry.spans("chat gpt-4o")
    assert len(spans) == 3
    for span in spans:
        assert Decimal(repr(span.attributes["aiguard.cost.usd"])) == COST


def test_truncated_response_stream_is_an_error(make_client, server, telemetry):
    server.fail("gpt-4o", truncate=True)
    events = list(make_client().responses.create(model="gpt-4o", input=INPUT, stream=True))
    assert events[-1].type != "response.completed"
    assert telemetry.span("chat gpt-4o").attributes["error.type"] == "aiguard.StreamTruncated"


def test_budget_reserves_max_output_tokens(make_client, server):
    budget = aiguard.Budget(usd="0.0005")  # 100 output tokens at $10/M fit, 1,000 do not
    client = make_client(provider="openai", budget=budget)
    client.responses.create(model="gpt-4o", input=INPUT, max_output_tokens=20)
    with pytest.raises(aiguard.BudgetExceeded):
        client.responses.create(model="gpt-4o", input=INPUT, max_output_tokens=1000)
    assert len(server.requests) == 1
