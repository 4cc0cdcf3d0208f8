"""The async path: AsyncOpenAI over real HTTP takes the same decisions as the sync path."""

from __future__ import annotations

import asyncio
import time

import openai
import pytest
from opentelemetry import trace
from tests.conftest import MESSAGES

import aiguard

NO_WAIT = aiguard.Retry(attempts=3, wait_initial=0, wait_jitter=0)


async def ask(client, model="gpt-4o", **kwargs):
    return await client.chat.completions.create(model=model, messages=MESSAGES, **kwargs)


async def test_async_retry_then_success(make_async_client, server):
    server.fail("gpt-4o", status=429, headers={"retry-after-ms": "100"})
    reply = await ask(make_async_client(retry=NO_WAIT))
    assert isinstance(reply, openai.types.chat.ChatCompletion)
    assert len(server.requests) == 2
    assert server.requests[1].at - server.requests[0].at >= 0.09


async def test_async_exactly_attempts_requests(make_async_client, server):
    server.fail("gpt-4o", status=429, times=9)
    with pytest.raises(openai.RateLimitError):
        await ask(make_async_client(retry=aiguard.Retry(attempts=2, wait_initial=0)))
    assert len(server.requests) == 2


async def test_async_fallback_and_embeddings(make_async_client, server):
    server.fail("gpt-4o", status=503, times=3)
    client = make_async_client(retry=NO_WAIT, fallback=["mini"])
    assert (await ask(client)).model == "mini"
    emb = await client.embeddings.create(model="e", input="x")
    assert emb.data[0].embedding


async def test_async_breaker_and_deadline(make_async_client, server):
    client = make_async_client(
        retry=aiguard.Retry(attempts=1), breaker=aiguard.Breaker(failures=1, reset_after=60)
    )
    server.fail("gpt-4o", status=500)
    with pytest.raises(openai.InternalServerError):
        await ask(client)
    with pytest.raises(aiguard.CircuitOpen):
        await ask(client)
    server.fail("slow", delay=1.0)
    started = time.monotonic()
    with pytest.raises((aiguard.DeadlineExceeded, openai.APITimeoutError)):
        await ask(make_async_client(retry=NO_WAIT, timeout=0.3), model="slow")
    assert time.monotonic() - started < 0.9


async def test_concurrent_calls_keep_each_span_under_its_callers_span(
    make_async_client, server, telemetry
):
    client = make_async_client(retry=NO_WAIT)
    tracer = telemetry.tracer_provider.get_tracer("app")

    async def one(i: int) -> None:
        with tracer.start_as_current_span(f"request {i}"):
            await asyncio.sleep(0.001 * (i % 3))
            await ask(client, model=f"m{i}")

    await asyncio.gather(*(one(i) for i in range(20)))
    by_id = {s.context.span_id: s for s in telemetry.spans()}
    for i in range(20):
        inference = telemetry.span(f"chat m{i}")
        caller = by_id[inference.parent.span_id]
        assert caller.name == f"request {i}"
        assert inference.context.trace_id == caller.context.trace_id


async def test_cancellation_ends_the_span_as_cancelled_and_is_not_retried(
    make_async_client, server, telemetry
):
    server.fail("gpt-4o", delay=1.0)
    task = asyncio.ensure_future(ask(make_async_client(retry=NO_WAIT)))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(server.requests) == 1
    span = telemetry.span("chat gpt-4o")
    assert span.end_time is not None
    # The caller cancelled: not a failure of the provider, so no error and no duration point.
    assert span.attributes["aiguard.outcome"] == "cancelled"
    assert "error.type" not in span.attributes
    assert span.status.status_code is trace.StatusCode.UNSET
    assert "gen_ai.client.operation.duration" not in telemetry.metrics()
    assert trace.get_current_span() is trace.INVALID_SPAN
