"""@aiguard.guard on sync and async functions, generators and async generators."""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any

import openai
import pydantic
import pytest
from tests.conftest import API_KEY, MESSAGES

import aiguard

NO_WAIT = aiguard.Retry(attempts=3, wait_initial=0, wait_jitter=0)


@pytest.fixture
def openai_client(server):
    return openai.OpenAI(base_url=server.url, api_key=API_KEY, max_retries=0)


def test_bare_decorator_keeps_metadata_and_signature():
    @aiguard.guard
    def answer(question: str, model: str = "gpt-4o") -> str:
        """Answer it."""
        return question

    assert answer.__name__ == "answer" and answer.__doc__ == "Answer it."
    assert list(inspect.signature(answer).parameters) == ["question", "model"]
    assert answer("hi") == "hi"


def test_function_is_retried_on_transient_provider_errors(server, openai_client, telemetry):
    server.fail("gpt-4o", status=503, times=2)

    @aiguard.guard(retry=NO_WAIT)
    def answer(question: str, model: str = "gpt-4o") -> str:
        reply = openai_client.chat.completions.create(model=model, messages=MESSAGES)
        return reply.choices[0].message.content or ""

    assert answer("q") == "Hello from gpt-4o."
    assert len(server.requests) == 3
    span = telemetry.span("test_function_is_retried_on_transient_provider_errors.<locals>.answer")
    assert span.attributes["aiguard.attempts"] == 3
    assert [e.name for e in span.events] == ["aiguard.retry", "aiguard.retry"]


def test_fallback_recalls_with_the_next_model(server, openai_client):
    server.fail("gpt-4o", status=429, times=5)
    seen: list[str] = []

    @aiguard.guard(retry=aiguard.Retry(attempts=2, wait_initial=0), fallback=["gpt-4o-mini"])
    def answer(question: str, model: str = "gpt-4o") -> str:
        seen.append(model)
        return openai_client.chat.completions.create(model=model, messages=MESSAGES).model

    assert answer("q") == "gpt-4o-mini"
    assert seen == ["gpt-4o", "gpt-4o", "gpt-4o-mini"]


def test_user_errors_are_not_retried():
    calls = []

    @aiguard.guard(retry=NO_WAIT)
    def broken() -> None:
        calls.append(1)
        raise KeyError("bug")

    with pytest.raises(KeyError):
        broken()
    assert len(calls) == 1


def test_builtin_connection_and_timeout_errors_are_transient():
    calls = []

    @aiguard.guard(retry=NO_WAIT)
    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("reset")
        return "ok"

    assert flaky() == "ok" and len(calls) == 3


class Ticket(pydantic.BaseModel):
    id: int
    text: str


def test_arguments_are_validated_from_type_hints():
    @aiguard.guard
    def handle(ticket: Ticket, priority: int = 1) -> tuple[Ticket, int]:
        return ticket, priority

    ticket, priority = handle({"id": "7", "text": "hi"}, priority="2")  # type: ignore[arg-type]
    assert ticket == Ticket(id=7, text="hi") and priority == 2
    with pytest.raises(aiguard.CheckFailed) as info:
        handle({"id": "seven", "text": "SECRET-VALUE"})  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    assert "ticket.id" in str(info.value)
    assert "seven" not in str(info.value) and "SECRET-VALUE" not in str(info.value)


def test_validation_can_be_turned_off_and_arbitrary_types_pass():
    @aiguard.guard(validate_args=False)
    def loose(n: int) -> Any:
        return n

    assert loose("x") == "x"  # type: ignore[arg-type]

    @aiguard.guard
    def with_client(client: openai.OpenAI, n: int) -> int:
        return n

    assert with_client(openai.OpenAI(api_key="x"), 3) == 3


def test_validation_failure_sends_nothing(server, openai_client):
    @aiguard.guard
    def answer(question: str, model: str = "gpt-4o") -> str:
        openai_client.chat.completions.create(model=model, messages=MESSAGES)
        return "x"

    with pytest.raises(aiguard.CheckFailed):
        answer(["not", "a", "string"])  # type: ignore[arg-type]
    assert server.requests == []


def test_nested_guards_do_not_multiply_retries(server, raw_client):
    client = aiguard.wrap(raw_client, retry=aiguard.Retry(attempts=2, wait_initial=0))
    server.fail("gpt-4o", status=429, times=20)

    @aiguard.guard(retry=aiguard.Retry(attempts=3, wait_initial=0))
    def outer(model: str = "gpt-4o") -> None:
        inner(model=model)

    @aiguard.guard(retry=aiguard.Retry(attempts=3, wait_initial=0))
    def inner(model: str = "gpt-4o") -> None:
        client.chat.completions.create(model=model, messages=MESSAGES)

    with pytest.raises(openai.RateLimitError):
        outer()
    assert len(server.requests) == 2  # the wrapped client's two, nothing more


def test_outer_guard_may_still_fall_back_after_an_inner_guard_gave_up(server, raw_client):
    client = aiguard.wrap(raw_client, retry=aiguard.Retry(attempts=2, wait_initial=0))
    server.fail("gpt-4o", status=429, times=20)

    @aiguard.guard(retry=aiguard.Retry(attempts=3, wait_initial=0), fallback=["mini"])
    def answer(model: str = "gpt-4o") -> str:
        return client.chat.completions.create(model=model, messages=MESSAGES).model

    assert answer() == "mini"
    assert [r.model for r in server.requests] == ["gpt-4o", "gpt-4o", "mini"]


def test_fallback_without_a_model_parameter_is_refused_at_decoration():
    with pytest.raises(TypeError, match="model"):

        @aiguard.guard(fallback=["x"])
        def no_model() -> None: ...


@pytest.mark.parametrize("bad", [{"name": ""}, {"validate_args": "yes"}, {"retry": 2}])
def test_bad_decorator_keywords_are_refused(bad):
    with pytest.raises(TypeError):
        aiguard.guard(**bad)


def test_decorating_a_non_callable_is_refused():
    with pytest.raises(TypeError, match="decorates functions"):
        aiguard.guard()(42)  # type: ignore[call-overload]


def test_span_name_can_be_overridden_and_inner_calls_nest_under_it(server, raw_client, telemetry):
    client = aiguard.wrap(raw_client)

    @aiguard.guard(name="summarise")
    def work() -> None:
        client.chat.completions.create(model="m", messages=MESSAGES)

    work()
    outer = telemetry.span("summarise")
    inference = telemetry.span("chat m")
    assert inference.parent.span_id == outer.context.span_id
    assert outer.attributes["aiguard.function"] == "summarise"
    assert "gen_ai.operation.name" not in outer.attributes  # not a generation of its own


async def test_async_function_retry_and_fallback(server, raw_async_client):
    client = aiguard.wrap(raw_async_client, retry=None)
    server.fail("gpt-4o", status=500, times=2)

    @aiguard.guard(retry=aiguard.Retry(attempts=2, wait_initial=0), fallback=["mini"])
    async def answer(model: str = "gpt-4o") -> str:
        return (await client.chat.completions.create(model=model, messages=MESSAGES)).model

    assert await answer() == "mini"
    assert inspect.iscoroutinefunction(answer)


async def test_async_function_deadline_cancels_the_body():
    @aiguard.guard(timeout=0.2)
    async def slow() -> None:
        await asyncio.sleep(5)

    started = time.monotonic()
    with pytest.raises(aiguard.DeadlineExceeded):
        await slow()
    assert time.monotonic() - started < 1


def test_generator_is_retried_only_before_its_first_item(telemetry):
    calls = []

    @aiguard.guard(retry=NO_WAIT)
    def tokens():
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("before first")
        yield "a"
        yield "b"
        raise ConnectionError("after first")

    got = []
    with pytest.raises(ConnectionError, match="after first"):
        for item in tokens():
            got.append(item)
    assert got == ["a", "b"] and len(calls) == 2
    span = telemetry.spans()[-1]
    assert span.attributes["error.type"] == "ConnectionError"


def test_generator_closed_early_ends_its_span_without_error(telemetry):
    @aiguard.guard
    def numbers():
        yield from range(10)

    gen = numbers()
    assert next(gen) == 0
    gen.close()
    span = telemetry.spans()[-1]
    assert span.end_time is not None and "error.type" not in span.attributes


async def test_async_generator_retry_before_first_item(telemetry):
    calls = []

    @aiguard.guard(retry=NO_WAIT)
    async def tokens():
        calls.append(1)
        if len(calls) < 3:
            raise TimeoutError("slow")
        for t in ("x", "y"):
            yield t

    assert [t async for t in tokens()] == ["x", "y"]
    assert len(calls) == 3
    assert telemetry.spans()[-1].attributes["aiguard.attempts"] == 3


def test_raw_transport_errors_are_outages_that_retry():
    import httpx2

    calls = []

    @aiguard.guard(retry=aiguard.Retry(attempts=2, wait_initial=0, wait_jitter=0))
    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise httpx2.ReadError("stream cut")  # what some SDKs let through from a cut stream
        return "ok"

    assert flaky() == "ok" and len(calls) == 2


def test_a_tool_and_an_agent_get_the_conventions_agent_spans(server, raw_client, telemetry):
    client = aiguard.wrap(raw_client)

    @aiguard.guard(kind="tool")
    def weather(city: str) -> str:
        return f"sunny in {city}"

    @aiguard.guard(kind="agent", name="planner")
    def plan() -> str:
        client.chat.completions.create(model="m", messages=MESSAGES)
        return weather("Paris")

    plan()
    agent = telemetry.span("invoke_agent planner")
    tool = telemetry.span("execute_tool weather")
    inference = telemetry.span("chat m")
    assert agent.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert agent.attributes["gen_ai.agent.name"] == "planner"
    assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
    assert tool.attributes["gen_ai.tool.name"] == "weather"
    assert tool.parent.span_id == inference.parent.span_id == agent.context.span_id
    with pytest.raises(ValueError, match="kind"):
        aiguard.guard(kind="robot")
