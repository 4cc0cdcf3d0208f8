"""The same behaviours for every adapter over its real SDK: a new adapter proves itself by being
added to ``PROVIDERS`` (its client, its call, a model of its own).

Each behaviour runs sync and async, against the testing kit's server speaking the provider's
wire: a retried failure, a fallback, a stream retried before its first chunk, a refusing check,
content capture. The conventions' rule table (``tests/conventions.py``) checks all they emit.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anthropic
import boto3
import ollama
import openai
import pytest
from google import genai
from tests.conftest import API_KEY, MESSAGES

import aiguard
from aiguard.testing import MockServer

FAST = aiguard.Retry(attempts=2, wait_initial=0.001, wait_max=0.01, wait_jitter=0.0)


@dataclass(frozen=True)
class Provider:
    name: str
    model: str
    other: str  # the fallback model
    client: Callable[[MockServer, bool], Any]  # (server, is_async) -> the SDK's client
    call: Callable[[Any, str, bool], Any]  # (client, model, stream) -> the answer or a stream
    has_async: bool = True  # False: the SDK has no async client (boto3)


def _openai(server: MockServer, is_async: bool) -> Any:
    cls = openai.AsyncOpenAI if is_async else openai.OpenAI
    return cls(base_url=server.url, api_key=API_KEY)


def _anthropic(server: MockServer, is_async: bool) -> Any:
    cls = anthropic.AsyncAnthropic if is_async else anthropic.Anthropic
    return cls(base_url=server.anthropic_url, api_key=API_KEY)


def _ollama(server: MockServer, is_async: bool) -> Any:
    cls = ollama.AsyncClient if is_async else ollama.Client
    return cls(host=server.ollama_url)


def _bedrock(server: MockServer, is_async: bool) -> Any:
    return boto3.client(
        "bedrock-runtime",
        endpoint_url=server.anthropic_url,  # the server's root: boto3 adds /model/...
        region_name="us-east-1",
        aws_access_key_id="AKIDAIGUARDTEST",
        aws_secret_access_key="aiguard-test-secret",
    )


def _bedrock_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"role": m["role"], "content": [{"text": m["content"]}]} for m in messages]


def _converse(client: Any, model: str, stream: bool, messages: Any = MESSAGES) -> Any:
    request = {"modelId": model, "messages": _bedrock_messages(messages)}
    return client.converse_stream(**request)["stream"] if stream else client.converse(**request)


def _gemini(server: MockServer, is_async: bool) -> Any:
    client = genai.Client(api_key=API_KEY, http_options={"base_url": server.gemini_url})
    return client.aio if is_async else client


def _gemini_call(client: Any, model: str, stream: bool, messages: list[Any] = MESSAGES) -> Any:
    contents = [{"role": m["role"], "parts": [{"text": m["content"]}]} for m in messages]
    if stream:
        return client.models.generate_content_stream(model=model, contents=contents)
    return client.models.generate_content(model=model, contents=contents)


PROVIDERS = [
    Provider(
        "openai",
        "gpt-4o",
        "gpt-4o-mini",
        _openai,
        lambda c, m, s: c.chat.completions.create(model=m, messages=MESSAGES, stream=s),
    ),
    Provider(
        "anthropic",
        "claude-3-5-haiku-latest",
        "claude-3-5-sonnet-latest",
        _anthropic,
        lambda c, m, s: c.messages.create(model=m, max_tokens=50, messages=MESSAGES, stream=s),
    ),
    Provider(
        "ollama",
        "llama3",
        "phi3",
        _ollama,
        lambda c, m, s: c.chat(model=m, messages=MESSAGES, stream=s),
    ),
    Provider(
        "bedrock",
        "anthropic.claude-3-5-haiku-20241022-v1:0",
        "us.anthropic.claude-3-5-sonnet-20240620-v1:0",
        _bedrock,
        _converse,
        has_async=False,
    ),
    Provider("gemini", "gemini-2.0-flash", "gemini-2.0-flash-lite", _gemini, _gemini_call),
]


@pytest.fixture(params=PROVIDERS, ids=[p.name for p in PROVIDERS])
def provider(request: pytest.FixtureRequest) -> Provider:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(params=[False, True], ids=["sync", "async"])
def is_async(request: pytest.FixtureRequest) -> bool:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(autouse=True)
def _applicable(provider: Provider, is_async: bool) -> None:
    if is_async and not provider.has_async:
        pytest.skip(f"{provider.name}: the SDK has no async client")


def _ask(provider: Provider, client: Any, is_async: bool, stream: bool = False) -> list[Any]:
    """Make the call and read it to the end (a stream's chunks, or [the answer])."""

    async def run_async() -> list[Any]:
        result = await provider.call(client, provider.model, stream)
        return [chunk async for chunk in result] if stream else [result]

    if is_async:
        return asyncio.run(run_async())
    result = provider.call(client, provider.model, stream)
    return list(result) if stream else [result]


def _wrap(provider: Provider, server: MockServer, is_async: bool, **policy: Any) -> Any:
    policy.setdefault("retry", FAST)
    return aiguard.wrap(provider.client(server, is_async), **policy)


def _failed(span: Any) -> list[Any]:
    return [e.attributes for e in span.events if e.name == "aiguard.attempt.failed"]


def test_a_transient_failure_is_retried_inside_one_span(provider, is_async, server, telemetry):
    server.fail(provider.model, status=503)
    assert _ask(provider, _wrap(provider, server, is_async), is_async)
    assert len(server.requests) == 2
    span = telemetry.span(f"chat {provider.model}")
    assert (span.attributes["aiguard.attempts"], span.attributes["aiguard.retries"]) == (2, 1)
    [failed] = _failed(span)
    assert failed["aiguard.failure.class"] == "outage"
    assert "error.type" not in span.attributes
    [point] = telemetry.metrics()["gen_ai.client.operation.duration"]
    assert point.count == 1


def test_a_fallback_answers_when_retries_are_spent(provider, is_async, server, telemetry):
    server.fail(provider.model, status=503, times=2)
    client = _wrap(provider, server, is_async, fallback=[provider.other])
    assert _ask(provider, client, is_async)
    assert [r.model for r in server.requests] == [provider.model] * 2 + [provider.other]
    span = telemetry.span(f"chat {provider.model}")
    assert span.attributes["gen_ai.request.model"] == provider.model
    assert span.attributes["gen_ai.response.model"] == provider.other
    assert span.attributes["aiguard.fallback.model"] == provider.other
    assert len(_failed(span)) == 2


def test_a_stream_failing_before_its_first_chunk_is_retried(provider, is_async, server, telemetry):
    server.fail(provider.model, status=503)
    chunks = _ask(provider, _wrap(provider, server, is_async), is_async, stream=True)
    assert chunks and len(server.requests) == 2
    span = telemetry.span(f"chat {provider.model}")
    assert span.attributes["aiguard.attempts"] == 2
    assert span.attributes["aiguard.outcome"] == "ok"
    assert span.attributes["aiguard.stream.chunks"] >= 1


def test_a_refusing_check_sends_nothing(provider, is_async, server, telemetry):
    client = _wrap(provider, server, is_async, checks=[aiguard.checks.NoSecrets()])
    leaked = [{"role": "user", "content": "my key: sk-proj-" + "x1" * 24}]
    with pytest.raises(aiguard.CheckFailed):
        if is_async:
            asyncio.run(_leak_async(provider, client, leaked))
        else:
            _leak(provider, client, leaked)
    assert server.requests == []
    span = telemetry.span(f"chat {provider.model}")
    assert span.attributes["aiguard.check.failed"] == "NoSecrets"
    assert span.attributes["aiguard.attempts"] == 0


def _leak(provider: Provider, client: Any, messages: list[Any]) -> Any:
    if provider.name == "openai":
        return client.chat.completions.create(model=provider.model, messages=messages)
    if provider.name == "anthropic":
        return client.messages.create(model=provider.model, max_tokens=5, messages=messages)
    if provider.name == "bedrock":
        return _converse(client, provider.model, False, messages)
    if provider.name == "gemini":
        return _gemini_call(client, provider.model, False, messages)
    return client.chat(model=provider.model, messages=messages)


async def _leak_async(provider: Provider, client: Any, messages: list[Any]) -> Any:
    return await _leak(provider, client, messages)


def test_content_capture_records_the_conversation(provider, is_async, server, telemetry):
    client = _wrap(provider, server, is_async, capture="SPAN_ONLY")
    _ask(provider, client, is_async)
    attrs = telemetry.span(f"chat {provider.model}").attributes
    [message] = json.loads(attrs["gen_ai.input.messages"])
    assert message["role"] == "user"
    assert message["parts"] == [{"type": "text", "content": MESSAGES[0]["content"]}]
    [answer] = json.loads(attrs["gen_ai.output.messages"])
    assert answer["role"] == "assistant" and answer["parts"][0]["type"] == "text"
