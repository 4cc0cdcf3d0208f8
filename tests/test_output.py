"""``output=``: answers validated, wrong ones re-asked with the errors, OutputInvalid at the end."""

from __future__ import annotations

import json

import pydantic
import pytest
from tests.conftest import MESSAGES

import aiguard

RIGHT = '{"city": "Paris", "population": 2100000}'


class City(pydantic.BaseModel):
    city: str
    population: int


def test_a_valid_answer_passes_and_the_response_is_the_sdks(make_client, server, telemetry):
    server.answer("gpt-4o", RIGHT)
    reply = make_client(output=City).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert reply.choices[0].message.content == RIGHT
    assert len(server.requests) == 1
    assert "aiguard.reasks" not in telemetry.span("chat gpt-4o").attributes


def test_a_wrong_answer_is_reasked_with_the_errors(make_client, server, telemetry):
    server.answer("gpt-4o", "Paris, about two million", '{"city": "Paris"}', RIGHT)
    reply = make_client(output=City).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert reply.choices[0].message.content == RIGHT
    assert len(server.requests) == 3
    second = server.requests[1].body["messages"]
    assert second[:-2] == MESSAGES
    assert second[-2] == {"role": "assistant", "content": "Paris, about two million"}
    assert "did not match the required format" in second[-1]["content"]
    third = server.requests[2].body["messages"][-1]["content"]
    assert "population: Field required" in third
    guard = telemetry.span("chat gpt-4o")
    assert guard.attributes["aiguard.reasks"] == 2
    assert [e.name for e in guard.events].count("aiguard.output.invalid") == 2
    assert guard.attributes["aiguard.attempts"] == 3  # each re-ask is an attempt, priced too
    # The logical call used the tokens of all three answers.
    [point] = [
        p
        for p in telemetry.metrics()["gen_ai.client.token.usage"]
        if p.attributes["gen_ai.token.type"] == "output"
    ]
    assert point.count == 1
    assert sum(p.value for p in telemetry.metrics()["aiguard.reasks"]) == 2


def test_reasks_run_out_into_output_invalid(make_client, server, telemetry):
    server.answer("gpt-4o", "no", "still no", "never")
    client = make_client(output=City, reasks=1)
    with pytest.raises(aiguard.OutputInvalid) as caught:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    refusal = caught.value
    assert refusal.raw == "still no" and refusal.asks == 2
    assert refusal.errors and "still no" not in str(refusal)
    assert isinstance(refusal, aiguard.AIGuardError)
    assert len(server.requests) == 2
    assert telemetry.span("chat gpt-4o").attributes["error.type"] == "aiguard.OutputInvalid"


def test_a_validating_callable(make_client, server):
    def short(text: str) -> str:
        if len(text) > 10:
            raise ValueError(f"answer is {len(text)} characters; at most 10")
        return text

    server.answer("gpt-4o", "a very long answer indeed", "Paris.")
    reply = make_client(output=short).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert reply.choices[0].message.content == "Paris."
    assert "at most 10" in server.requests[1].body["messages"][-1]["content"]


async def test_async_client_reasks(make_async_client, server):
    server.answer("gpt-4o", "nope", RIGHT)
    client = make_async_client(output=City)
    reply = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert reply.choices[0].message.content == RIGHT and len(server.requests) == 2


def test_responses_api_reask_appends_to_the_input(make_client, server):
    server.answer("gpt-4o", "nope", RIGHT)
    reply = make_client(output=City).responses.create(model="gpt-4o", input="Capital of France?")
    assert reply.output_text == RIGHT
    sent = server.requests[1].body["input"]
    assert sent[0] == {"role": "user", "content": "Capital of France?"}
    assert sent[1] == {"role": "assistant", "content": "nope"}


def test_the_decorator_returns_the_validated_model_and_calls_again():
    answers = iter(["not json", {"city": "Paris", "population": "2100000"}])
    calls = []

    @aiguard.guard(output=City)
    def ask(question: str) -> object:
        calls.append(question)
        return next(answers)

    city = ask("Capital of France?")
    assert city == City(city="Paris", population=2100000)
    assert calls == ["Capital of France?"] * 2


async def test_the_async_decorator_validates_json_strings():
    @aiguard.guard(output=City, reasks=0)
    async def ask() -> str:
        return json.dumps({"city": "Paris"})

    with pytest.raises(aiguard.OutputInvalid, match="population"):
        await ask()


def test_bad_output_specs_are_refused(make_client):
    with pytest.raises(TypeError, match="output="):
        make_client(output=object())
    with pytest.raises(TypeError, match="reasks="):
        make_client(output=City, reasks=-1)
