"""Guarded OpenAI chat streams: the SDK's own stream, usage always, one end on every path."""

from __future__ import annotations

import gc
from decimal import Decimal

import openai
import pytest
from openai.types.chat import ChatCompletionChunk
from opentelemetry.trace import StatusCode
from tests.conftest import MESSAGES

import aiguard

ABANDONED = "aiguard.stream.abandoned"
# The advised buckets of the GenAI duration, which the streaming timings share: 0.01 ... 81.92 s.
BUCKETS = [0.01 * 2**i for i in range(14)]


def _stream(client, model="gpt-4o", **kw):
    return client.chat.completions.create(model=model, messages=MESSAGES, stream=True, **kw)


def _shape(chunks):
    return [
        (c.object, [(x.index, x.delta.role, x.delta.content, x.finish_reason) for x in c.choices])
        for c in chunks
    ]


def _ended_once(telemetry, model="gpt-4o"):
    """The call's one span: every attempt, the stream and its end are recorded on it, once."""
    spans = telemetry.spans()
    assert [s.name for s in spans] == [f"chat {model}"]
    return spans[0]


def _failed_attempts(span):
    return [dict(e.attributes) for e in span.events if e.name == "aiguard.attempt.failed"]


def test_user_iterates_exactly_what_the_sdk_gives(make_client, raw_client, telemetry):
    raw = list(_stream(raw_client))
    stream = _stream(make_client())
    assert isinstance(stream, openai.Stream)
    assert stream.response.status_code == 200
    chunks = list(stream)
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert _shape(chunks) == _shape(raw)
    assert all(c.choices for c in chunks)  # the usage chunk aiguard asked for stays hidden


def test_usage_is_recorded_without_the_user_asking(make_client, server, telemetry):
    server.reply("gpt-4o", prompt_tokens=12, completion_tokens=4)
    list(_stream(make_client(provider="openai")))
    assert server.requests[0].body["stream_options"] == {"include_usage": True}
    span = _ended_once(telemetry)
    a = span.attributes
    assert a["gen_ai.request.stream"] is True
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (12, 4)
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["gen_ai.response.model"] == "gpt-4o"
    assert a["gen_ai.response.time_to_first_chunk"] > 0
    assert a["aiguard.stream.chunks"] == 5
    assert Decimal(repr(a["aiguard.cost.usd"])) == Decimal(12 * 2.5 + 4 * 10) / 1_000_000
    assert a["aiguard.outcome"] == "ok"
    assert (a["aiguard.attempts"], a["aiguard.retries"]) == (1, 0)
    assert span.status.status_code is StatusCode.UNSET and "error.type" not in a
    assert ABANDONED not in a


def test_a_user_who_asked_for_usage_gets_the_usage_chunk(make_client, server, telemetry):
    chunks = list(_stream(make_client(), stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert telemetry.span("chat gpt-4o").attributes["gen_ai.usage.output_tokens"] > 0


def test_usage_injection_can_be_switched_off(make_client, server, telemetry):
    list(_stream(make_client(stream_usage=False)))
    assert "stream_options" not in server.requests[0].body
    assert "gen_ai.usage.output_tokens" not in telemetry.span("chat gpt-4o").attributes


def test_stream_metrics_time_the_first_chunk_once_and_each_visible_chunk_after_it(
    make_client, telemetry
):
    chunks = list(_stream(make_client()))
    span = _ended_once(telemetry)
    points = telemetry.metrics()
    [first] = points["gen_ai.client.operation.time_to_first_chunk"]
    assert first.count == 1
    assert first.sum == span.attributes["gen_ai.response.time_to_first_chunk"]
    [per_chunk] = points["gen_ai.client.operation.time_per_output_chunk"]
    assert len(chunks) == 5  # the usage chunk aiguard asked for is hidden, and not timed
    assert per_chunk.count == len(chunks) - 1  # one point per chunk after the first
    [duration] = points["gen_ai.client.operation.duration"]
    assert duration.count == 1
    assert first.sum + per_chunk.sum <= duration.sum
    for point in (first, per_chunk, duration):
        assert list(point.explicit_bounds) == pytest.approx(BUCKETS)
        assert point.attributes["gen_ai.request.model"] == "gpt-4o"
        assert point.attributes["gen_ai.response.model"] == "gpt-4o"
        assert "error.type" not in point.attributes
    tokens = {
        p.attributes["gen_ai.token.type"]: p.count for p in points["gen_ai.client.token.usage"]
    }
    assert tokens == {"input": 1, "output": 1}


def test_a_usage_chunk_the_user_asked_for_is_timed_like_any_chunk(make_client, telemetry):
    chunks = list(_stream(make_client(), stream_options={"include_usage": True}))
    assert len(chunks) == 6 and chunks[-1].choices == []
    [per_chunk] = telemetry.metrics()["gen_ai.client.operation.time_per_output_chunk"]
    assert per_chunk.count == len(chunks) - 1


# -- every way a stream can end ------------------------------------------------------------------


def test_with_block_left_early_ends_once_as_abandoned(make_client, telemetry):
    with _stream(make_client()) as stream:
        next(iter(stream))
    span = _ended_once(telemetry)
    assert span.attributes[ABANDONED] is True
    assert span.attributes["aiguard.outcome"] == "abandoned"
    assert span.attributes["aiguard.stream.chunks"] == 1
    assert span.status.status_code is StatusCode.UNSET  # the user stopped: not an error
    assert stream.response.is_closed


def test_with_block_read_to_the_end_is_not_abandoned(make_client, telemetry):
    with _stream(make_client()) as stream:
        for _ in stream:
            pass
    a = _ended_once(telemetry).attributes
    assert ABANDONED not in a and a["aiguard.outcome"] == "ok"


def test_close_ends_once(make_client, telemetry):
    stream = _stream(make_client())
    next(stream)
    stream.close()
    stream.close()
    assert next(stream, None) is None  # an ended stream stops iterating
    span = _ended_once(telemetry)
    assert span.attributes[ABANDONED] is True
    assert span.attributes["aiguard.outcome"] == "abandoned"


def test_break_then_garbage_collection_ends_once(make_client, telemetry):
    stream = _stream(make_client())
    for _ in stream:
        break
    assert telemetry.spans() == []  # still open while referenced
    del stream
    gc.collect()
    span = _ended_once(telemetry)
    assert span.attributes[ABANDONED] is True


def test_an_error_while_reading_reaches_the_user_and_is_not_retried(make_client, server, telemetry):
    server.fail("gpt-4o", cut_after=3)
    received = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in _stream(make_client(fallback=["gpt-4o-mini"])):
            received.append(chunk)
    assert len(received) == 3
    assert len(server.requests) == 1  # never switched to another model mid-answer
    span = _ended_once(telemetry)
    a = span.attributes
    assert span.status.status_code is StatusCode.ERROR
    assert a["error.type"] == "openai.APIConnectionError"
    assert a["aiguard.outcome"] == "error"
    assert (a["aiguard.attempts"], a["aiguard.retries"]) == (1, 0)
    assert a["aiguard.fallback.used"] is False and a["aiguard.stream.chunks"] == 3


def test_an_error_event_mid_stream_reaches_the_user(make_client, server, telemetry):
    server.fail("gpt-4o", cut_after=2, stream_error="server_error")
    with pytest.raises(openai.APIError):
        list(_stream(make_client()))
    span = _ended_once(telemetry)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "openai.APIError"
    assert span.attributes["aiguard.attempts"] == 1


@pytest.mark.parametrize(
    ("fault", "error", "failure"),
    [
        ({"status": 500}, "openai.InternalServerError", "outage"),
        ({"status": 429, "headers": {"retry-after": "0"}}, "openai.RateLimitError", "rate_limit"),
        ({"reset": True}, "openai.APIConnectionError", "outage"),
        # headers sent, then the connection dropped before any chunk
        ({"cut_after": 0}, "openai.APIConnectionError", "outage"),
    ],
)
def test_a_stream_failing_before_its_first_chunk_is_retried(
    make_client, server, telemetry, fault, error, failure
):
    server.fail("gpt-4o", **fault)
    chunks = list(_stream(make_client()))
    assert chunks and chunks[-1].choices[0].finish_reason == "stop"
    assert len(server.requests) == 2
    span = _ended_once(telemetry)
    a = span.attributes
    assert span.status.status_code is StatusCode.UNSET and "error.type" not in a
    assert (a["aiguard.attempts"], a["aiguard.retries"], a["aiguard.outcome"]) == (2, 1, "ok")
    [failed] = _failed_attempts(span)
    assert (failed["aiguard.attempt"], failed["aiguard.attempt.model"]) == (1, "gpt-4o")
    assert (failed["error.type"], failed["aiguard.failure.class"]) == (error, failure)
    assert a["gen_ai.usage.output_tokens"] > 0 and a["aiguard.stream.chunks"] == 5


def test_a_stream_falls_back_before_its_first_chunk(make_client, server, telemetry):
    server.fail("gpt-4o", status=503, times=3)
    chunks = list(_stream(make_client(fallback=["gpt-4o-mini"])))
    assert chunks[0].model == "gpt-4o-mini"
    span = _ended_once(telemetry)
    a = span.attributes
    assert a["aiguard.fallback.used"] is True
    assert a["aiguard.fallback.model"] == "gpt-4o-mini"
    assert a["gen_ai.request.model"] == "gpt-4o"  # what the caller asked for
    assert a["gen_ai.response.model"] == "gpt-4o-mini"  # who answered
    assert (a["aiguard.attempts"], a["aiguard.retries"], a["aiguard.outcome"]) == (4, 2, "ok")
    failed = _failed_attempts(span)
    assert [f["aiguard.attempt"] for f in failed] == [1, 2, 3]
    assert {f["aiguard.attempt.model"] for f in failed} == {"gpt-4o"}
    assert {f["aiguard.failure.class"] for f in failed} == {"outage"}
    # the first chunk is timed from the start of the call, its failed attempts included
    waited = sum(f["aiguard.attempt.duration_s"] for f in failed)
    assert a["gen_ai.response.time_to_first_chunk"] > waited
    [first] = telemetry.metrics()["gen_ai.client.operation.time_to_first_chunk"]
    assert first.count == 1 and first.sum == a["gen_ai.response.time_to_first_chunk"]
    assert first.attributes["gen_ai.response.model"] == "gpt-4o-mini"


def test_a_silently_truncated_stream_is_recorded_as_an_error(make_client, server, telemetry):
    server.fail("gpt-4o", truncate=True)
    chunks = list(_stream(make_client()))
    assert chunks and all(c.choices[0].finish_reason is None for c in chunks)
    span = _ended_once(telemetry)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "aiguard.StreamTruncated"
    assert span.attributes["aiguard.outcome"] == "error"
    [duration] = telemetry.metrics()["gen_ai.client.operation.duration"]
    assert duration.count == 1 and duration.attributes["error.type"] == "aiguard.StreamTruncated"


def test_truncation_can_raise_after_the_chunks_arrived(make_client, server):
    server.fail("gpt-4o", truncate=True)
    received = []
    with pytest.raises(aiguard.StreamTruncated, match="incomplete") as caught:
        for chunk in _stream(make_client(raise_on_truncation=True)):
            received.append(chunk)
    assert received and isinstance(caught.value, aiguard.AIGuardError)


def test_a_stream_holds_its_budget_reservation_until_it_ends(make_client, server):
    server.reply("gpt-4o", prompt_tokens=10, completion_tokens=20)
    budget = aiguard.Budget(usd=1)
    stream = _stream(make_client(provider="openai", budget=budget), max_tokens=100)
    next(stream)
    assert budget.reserved > 0 and budget.spent == 0
    list(stream)
    assert budget.reserved == 0 and budget.spent == Decimal("0.000225")


def test_an_abandoned_stream_keeps_its_worst_case_on_the_budget(make_client, server):
    budget = aiguard.Budget(usd=1)
    stream = _stream(make_client(provider="openai", budget=budget), max_tokens=100)
    held = budget.reserved
    next(stream)
    stream.close()
    assert budget.reserved == 0 and budget.spent == held  # usage unknown: billed the worst case


def test_telemetry_faults_never_break_iteration(make_client, telemetry, monkeypatch):
    from aiguard.adapters import _openai

    def explode(*args, **kwargs):
        raise RuntimeError("reader bug")

    monkeypatch.setattr(_openai.ChatReader, "result", explode)
    chunks = list(_stream(make_client()))
    assert chunks[-1].choices[0].finish_reason == "stop"
    _ended_once(telemetry)
    telemetry.clear()
    monkeypatch.setattr(_openai.ChatReader, "chunk", explode)
    chunks = list(_stream(make_client(stream_usage=False)))
    assert chunks[-1].choices[0].finish_reason == "stop"
    _ended_once(telemetry)


def test_a_stream_that_asks_for_no_stream_is_a_plain_call(make_client, telemetry):
    reply = make_client().chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=False)
    assert reply.choices[0].message.content


# -- async ---------------------------------------------------------------------------------------


async def test_async_stream_iterates_like_the_sdk(make_async_client, raw_async_client, telemetry):
    raw = [c async for c in await _stream(raw_async_client)]
    stream = await _stream(make_async_client())
    assert isinstance(stream, openai.AsyncStream)
    chunks = [c async for c in stream]
    assert _shape(chunks) == _shape(raw)
    a = _ended_once(telemetry).attributes
    assert a["gen_ai.usage.output_tokens"] > 0
    assert a["aiguard.outcome"] == "ok" and a["aiguard.attempts"] == 1
    assert ABANDONED not in a and "error.type" not in a


async def test_async_with_left_early_ends_once(make_async_client, telemetry):
    async with await _stream(make_async_client()) as stream:
        async for _ in stream:
            break
    a = _ended_once(telemetry).attributes
    assert a[ABANDONED] is True and a["aiguard.outcome"] == "abandoned"


async def test_async_close_and_aclose_end_once(make_async_client, telemetry):
    stream = await _stream(make_async_client())
    await stream.__anext__()
    await stream.aclose()
    await stream.close()
    a = _ended_once(telemetry).attributes
    assert a[ABANDONED] is True and a["aiguard.outcome"] == "abandoned"


async def test_async_break_then_garbage_collection_ends_once(make_async_client, telemetry):
    stream = await _stream(make_async_client())
    async for _ in stream:
        break
    del stream
    gc.collect()
    assert _ended_once(telemetry).attributes[ABANDONED] is True


async def test_async_stream_retried_before_first_chunk_and_raises_after(
    make_async_client, server, telemetry
):
    server.fail("gpt-4o", cut_after=0)
    chunks = [c async for c in await _stream(make_async_client())]
    assert chunks[-1].choices[0].finish_reason == "stop"
    span = _ended_once(telemetry)
    assert (span.attributes["aiguard.attempts"], span.attributes["aiguard.retries"]) == (2, 1)
    [failed] = _failed_attempts(span)
    assert failed["error.type"] == "openai.APIConnectionError"
    assert "error.type" not in span.attributes
    telemetry.clear()
    server.fail("gpt-4o", cut_after=2)
    with pytest.raises(openai.APIConnectionError):
        async for _ in await _stream(make_async_client()):
            pass
    span = _ended_once(telemetry)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "openai.APIConnectionError"
    assert span.attributes["aiguard.attempts"] == 1


async def test_async_truncation(make_async_client, server, telemetry):
    server.fail("gpt-4o", truncate=True)
    with pytest.raises(aiguard.StreamTruncated):
        async for _ in await _stream(make_async_client(raise_on_truncation=True)):
            pass
    span = _ended_once(telemetry)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "aiguard.StreamTruncated"


def test_a_stream_that_ends_cleanly_before_its_first_chunk_is_retried(
    make_client, server, telemetry
):
    server.fail("gpt-4o", empty=True)
    chunks = list(
        make_client().chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    )
    assert chunks and len(server.requests) == 2
    span = telemetry.span("chat gpt-4o")
    [failed] = [e for e in span.events if e.name == "aiguard.attempt.failed"]
    assert failed.attributes["error.type"] == "aiguard.StreamTruncated"
    assert failed.attributes["aiguard.failure.class"] == "outage"


def test_a_stream_empty_on_every_attempt_raises_a_clear_error(make_client, server):
    server.fail("gpt-4o", empty=True, times=3)
    with pytest.raises(aiguard.StreamTruncated, match="before its first chunk") as caught:
        make_client().chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    assert caught.value.empty and len(server.requests) == 3


def test_a_stream_that_fails_before_its_first_chunk_is_closed_before_the_retry(
    make_client, server, monkeypatch
):
    closed = []
    real_close = openai.Stream.close

    def spy(self):
        closed.append(self)
        return real_close(self)

    monkeypatch.setattr(openai.Stream, "close", spy)
    server.fail("gpt-4o", cut_after=0)  # a reset before the first chunk
    stream = make_client().chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    assert len(server.requests) == 2
    assert len(closed) == 1 and closed[0].response.is_closed  # its connection is freed
    assert list(stream)
