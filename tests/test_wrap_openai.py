"""aiguard.wrap over the real openai SDK, real HTTP to the testing kit's server: drop-in."""

from __future__ import annotations

import openai
import pydantic
import pytest
from tests.conftest import API_KEY, MESSAGES

import aiguard


def test_wrapped_client_is_still_an_openai_client(make_client):
    client = make_client()
    assert isinstance(client, openai.OpenAI)
    assert client.api_key == API_KEY
    assert str(client.base_url).startswith("http://127.0.0.1")
    assert "aiguard.wrap" in repr(client)


def test_async_wrapped_client_is_still_an_async_openai_client(make_async_client):
    assert isinstance(make_async_client(), openai.AsyncOpenAI)


def test_create_returns_exactly_what_the_sdk_returns(make_client, raw_client, server):
    guarded = make_client().chat.completions.create(model="gpt-4o", messages=MESSAGES)
    plain = raw_client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert type(guarded) is type(plain)
    assert guarded.choices[0].message.content == plain.choices[0].message.content
    assert guarded.usage == plain.usage


def test_unguarded_resources_pass_through(make_client, server):
    client = make_client()
    models = client.models.list()
    assert [m.id for m in models.data] == ["mock"]
    assert client.chat.completions.with_raw_response is not None
    assert server.requests[-1].path == "/v1/models"


def test_with_raw_response_still_works(make_client):
    raw = make_client().chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    assert raw.http_response.status_code == 200
    assert raw.parse().choices[0].message.content == "Hello from m."


def test_embeddings_are_guarded(make_client, server, telemetry):
    server.fail("emb", status=503)
    result = make_client().embeddings.create(model="emb", input=["a", "b"], dimensions=4)
    assert len(result.data) == 2 and len(result.data[0].embedding) == 4
    assert len(server.requests_for("emb")) == 2
    [span] = telemetry.spans()
    ok = span.attributes
    assert span.name == "embeddings emb" and "error.type" not in ok
    assert (ok["aiguard.attempts"], ok["aiguard.retries"], ok["aiguard.outcome"]) == (2, 1, "ok")
    [failed] = [e.attributes for e in span.events if e.name == "aiguard.attempt.failed"]
    assert (failed["aiguard.attempt"], failed["aiguard.attempt.model"]) == (1, "emb")
    assert failed["error.type"] == "openai.InternalServerError"
    assert failed["aiguard.failure.class"] == "outage"
    assert ok["gen_ai.operation.name"] == "embeddings"
    assert ok["gen_ai.embeddings.dimension.count"] == 4
    assert ok["gen_ai.usage.input_tokens"] >= 1


class City(pydantic.BaseModel):
    name: str


def test_parse_is_guarded_and_returns_the_parsed_object(make_client, server):
    server.reply("gpt-4o", content='{"name": "Paris"}')
    server.fail("gpt-4o", status=500)
    result = make_client().chat.completions.parse(
        model="gpt-4o", messages=MESSAGES, response_format=City
    )
    assert result.choices[0].message.parsed == City(name="Paris")
    assert len(server.requests) == 2


def test_sdk_own_retries_are_off_for_guarded_calls(make_client, raw_client, server):
    server.fail("gpt-4o", status=429, headers={"retry-after": "0"}, times=5)
    client = make_client(retry=aiguard.Retry(attempts=2, wait_initial=0, wait_jitter=0))
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert len(server.requests) == 2
    # the user's client object is not changed
    assert raw_client.max_retries == openai.DEFAULT_MAX_RETRIES


def test_with_options_returns_a_guarded_client(make_client, server):
    client = make_client(retry=aiguard.Retry(attempts=2, wait_initial=0, wait_jitter=0))
    other = client.with_options(timeout=5)
    assert isinstance(other, openai.OpenAI) and "aiguard.wrap" in repr(other)
    server.fail("gpt-4o", status=429, headers={"retry-after": "0"}, times=5)
    with pytest.raises(openai.RateLimitError):
        other.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert len(server.requests) == 2


def test_wrapping_twice_does_not_guard_twice(raw_client, server):
    inner = aiguard.wrap(raw_client, retry=aiguard.Retry(attempts=5, wait_initial=0))
    client = aiguard.wrap(inner, retry=aiguard.Retry(attempts=2, wait_initial=0, wait_jitter=0))
    server.fail("gpt-4o", status=500, times=10)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert len(server.requests) == 2


@pytest.mark.parametrize("thing", [object(), "gpt-4o", None, 42, openai])
def test_wrapping_an_unsupported_object_names_what_is_supported(thing):
    with pytest.raises(TypeError, match=r"Supported clients: openai\.OpenAI"):
        aiguard.wrap(thing)


@pytest.mark.parametrize(
    ("keyword", "value", "error"),
    [
        ("retry", 3, TypeError),
        ("retry", "3", TypeError),
        ("fallback", 5, TypeError),
        ("fallback", [None], TypeError),
        ("fallback", [""], TypeError),
        ("timeout", "10", TypeError),
        ("timeout", -1, ValueError),
        ("timeout", 0, ValueError),
        ("breaker", object(), TypeError),
        ("fallback_on", ["sometimes"], ValueError),
        ("provider", "", TypeError),
        ("policy", {"retry": 3}, TypeError),
    ],
)
def test_wrong_policy_keywords_are_refused_clearly(raw_client, keyword, value, error):
    with pytest.raises(error, match=keyword if keyword != "policy" else "Policy"):
        aiguard.wrap(raw_client, **{keyword: value})


def test_positional_arguments_and_missing_model_are_the_sdks_business(make_client):
    client = make_client()
    with pytest.raises(TypeError):
        client.chat.completions.create(MESSAGES)
    with pytest.raises(TypeError):
        client.chat.completions.create(messages=MESSAGES)


def test_a_streaming_call_still_works_unguarded(make_client):
    stream = make_client().chat.completions.create(model="s", messages=MESSAGES, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Hello from s."


def test_the_provider_is_the_sdks_format_and_an_override_names_it_and_its_prices(
    raw_client, telemetry
):
    from aiguard.adapters._openai import telemetry_provider

    aiguard.wrap(raw_client).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    aiguard.wrap(raw_client, provider="groq").chat.completions.create(
        model="gpt-4o", messages=MESSAGES
    )
    detected, overridden = (s.attributes for s in telemetry.spans())
    # An unknown host: openai in telemetry, priced by the model's name (openai_compatible).
    assert detected["gen_ai.provider.name"] == "openai"
    assert detected["aiguard.cost.usd"] > 0
    # provider= names the telemetry provider and the price list: Groq has no gpt-4o price.
    assert overridden["gen_ai.provider.name"] == "groq"
    assert "aiguard.cost.usd" not in overridden

    def provider(url: str) -> str:
        return telemetry_provider(openai.OpenAI(api_key="x", base_url=url))

    for url in (
        "https://api.openai.com/v1",
        "http://localhost:11434/v1",
        "https://api.groq.com/openai/v1",
        "http://127.0.0.1:8000/v1",
    ):
        assert provider(url) == "openai", url
    assert provider("https://x.openai.azure.com/openai") == "azure.ai.openai"
    azure = openai.AzureOpenAI(
        api_key="x", azure_endpoint="https://gateway.example.com", api_version="2024-06-01"
    )
    assert telemetry_provider(azure) == "azure.ai.openai"


def test_provider_detection_for_well_known_hosts():  # the vendor whose prices apply
    from aiguard.adapters._openai import detect_provider

    def provider(url: str) -> str:
        return detect_provider(openai.OpenAI(api_key="x", base_url=url))

    assert provider("https://api.openai.com/v1") == "openai"
    assert provider("https://x.openai.azure.com/openai") == "azure.ai.openai"
    assert provider("http://localhost:11434/v1") == "ollama"
    assert provider("https://api.groq.com/openai/v1") == "groq"
    assert provider("http://127.0.0.1:8000/v1") == "openai_compatible"


def test_malformed_json_from_the_server_raises_the_sdks_error_unretried(
    make_client, server, telemetry
):
    server.fail("gpt-4o", malformed=True)
    with pytest.raises(Exception) as info:
        make_client().chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert len(server.requests) == 1
    span = telemetry.span("chat gpt-4o")
    assert span.attributes["error.type"].endswith(type(info.value).__name__)


def test_a_wrapped_client_used_as_a_context_manager_stays_guarded(raw_client, server, telemetry):
    server.fail("gpt-4o", status=500)
    with aiguard.wrap(raw_client, retry=aiguard.Retry(wait_initial=0, wait_jitter=0)) as client:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert len(server.requests) == 2
    a = telemetry.span("chat gpt-4o").attributes
    assert (a["aiguard.attempts"], a["aiguard.outcome"]) == (2, "ok")


async def test_async_context_manager_stays_guarded(raw_async_client, server, telemetry):
    server.fail("gpt-4o", status=500)
    retry = aiguard.Retry(wait_initial=0, wait_jitter=0)
    async with aiguard.wrap(raw_async_client, retry=retry) as client:
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert len(server.requests) == 2
    a = telemetry.span("chat gpt-4o").attributes
    assert (a["aiguard.attempts"], a["aiguard.outcome"]) == (2, "ok")
