"""Drop-in to the letter: a wrapped client behaves as the SDK's own in what programs and tests see.

Real SDKs over real HTTP to the testing kit's server; mocks only where a user's test would use
them (on the SDK's methods).
"""

from __future__ import annotations

import inspect
from unittest import mock

import openai
import pytest
from openai.resources.chat.completions import AsyncCompletions, Completions
from tests.conftest import API_KEY, FAST, MESSAGES

import aiguard
from aiguard.testing import MockServer

anthropic = pytest.importorskip("anthropic")

ANTHROPIC_KEY = "sk-ant-api03-TESTKEY0123456789abcdefSECRET"
RATE_LIMITED = {"status": 429, "headers": {"retry-after": "0"}}


def ask(client, model="gpt-4o", **kwargs):
    return client.chat.completions.create(model=model, messages=MESSAGES, **kwargs)


def canned(content="from the mock"):
    return openai.types.chat.ChatCompletion.model_validate(
        {
            "id": "c-1",
            "object": "chat.completion",
            "created": 0,
            "model": "gpt-4o",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": content},
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        }
    )


# -- 1. mocks on a wrapped client are called ---------------------------------------------------


@pytest.mark.parametrize("first_call", [False, True], ids=["before", "after-first-call"])
def test_instance_mock_is_called(make_client, server, first_call):
    client = make_client()
    if first_call:
        ask(client)
    sent = len(server.requests)
    with mock.patch.object(client.chat.completions, "create", return_value=canned()) as fake:
        reply = ask(client)
    assert fake.call_count == 1
    assert fake.call_args.kwargs == {"model": "gpt-4o", "messages": MESSAGES}
    assert reply.choices[0].message.content == "from the mock"
    assert len(server.requests) == sent  # nothing reached the API
    ask(client)  # the patch is gone: the real method again
    assert len(server.requests) == sent + 1


@pytest.mark.parametrize("first_call", [False, True], ids=["before", "after-first-call"])
def test_class_mock_is_called_and_removed(make_client, server, first_call):
    client = make_client()
    if first_call:
        ask(client)
    with mock.patch.object(Completions, "create", return_value=canned()) as fake:
        assert ask(client).choices[0].message.content == "from the mock"
    assert fake.call_count == 1
    sent = len(server.requests)
    assert ask(client).choices[0].message.content != "from the mock"  # not kept afterwards
    assert len(server.requests) == sent + 1


def test_assigned_method_is_called_and_still_inspectable(make_client, server):
    client = make_client()
    ask(client)
    client.chat.completions.create = mock.Mock(return_value=canned())
    assert ask(client).choices[0].message.content == "from the mock"
    client.chat.completions.create.assert_called_once_with(model="gpt-4o", messages=MESSAGES)
    del client.chat.completions.create
    ask(client)
    assert len(server.requests) == 2


def test_mocked_call_is_still_guarded(make_client, telemetry):
    client = make_client()
    failure = openai.RateLimitError(
        "slow down",
        response=openai._base_client.httpx2.Response(
            429, request=openai._base_client.httpx2.Request("POST", "http://x")
        ),
        body=None,
    )
    with mock.patch.object(
        client.chat.completions, "create", side_effect=[failure, canned()]
    ) as fake:
        assert ask(client).choices[0].message.content == "from the mock"
    assert fake.call_count == 2  # retried by aiguard
    assert telemetry.span("chat gpt-4o").attributes["aiguard.attempts"] == 2


async def test_async_instance_and_class_mocks_are_called(make_async_client, server):
    client = make_async_client()
    fake = mock.AsyncMock(return_value=canned())
    with mock.patch.object(client.chat.completions, "create", fake):
        assert (await ask(client)).choices[0].message.content == "from the mock"
    on_class = mock.AsyncMock(return_value=canned("class"))
    with mock.patch.object(AsyncCompletions, "create", on_class):
        assert (await ask(client)).choices[0].message.content == "class"
    assert fake.await_count == 1 and on_class.await_count == 1
    assert server.requests == []


def test_with_options_patched_to_return_the_client_does_not_recurse(make_client, server):
    client = make_client()
    with mock.patch.object(client, "with_options", return_value=client):
        same = client.with_options(timeout=5)
        assert same is client
        ask(same)
    assert len(server.requests) == 1


def test_anthropic_instance_mock_is_called(server):
    client = aiguard.wrap(anthropic.Anthropic(base_url=server.anthropic_url, api_key="k"))
    with mock.patch.object(client.messages, "create", return_value="mocked") as fake:
        assert client.messages.create(model="m", max_tokens=5, messages=MESSAGES) == "mocked"
    assert fake.call_count == 1 and server.requests == []


# -- 2. changes to the client after wrapping apply ---------------------------------------------


def test_rotated_api_key_is_used(make_client, server):
    client = make_client()
    ask(client)
    client.api_key = "sk-rotated"
    ask(client)
    keys = [r.headers["authorization"] for r in server.requests]
    assert keys == [f"Bearer {API_KEY}", "Bearer sk-rotated"]


def test_new_base_url_is_used_and_recorded(make_client, server, telemetry):
    client = make_client()
    ask(client)
    with MockServer() as other:
        client.base_url = other.url
        ask(client)
        assert len(other.requests) == 1
        other_port = other.port
    assert len(server.requests) == 1
    ports = [s.attributes["server.port"] for s in telemetry.spans("chat gpt-4o")]
    assert ports == [server.port, other_port]


def test_anthropic_rotated_key_is_used_as_the_sdk_uses_it(server):
    sent = []
    for client in (
        anthropic.Anthropic(base_url=server.anthropic_url, api_key="old"),
        aiguard.wrap(anthropic.Anthropic(base_url=server.anthropic_url, api_key="old")),
    ):
        client.api_key = "new"
        client.messages.create(model="m", max_tokens=5, messages=MESSAGES)
        headers = server.requests[-1].headers
        sent.append({k: v for k, v in headers.items() if k in ("x-api-key", "authorization")})
    assert sent[0] == sent[1]
    assert "new" in str(sent[1])


# -- 3. the client's own retry setting, applied by aiguard -------------------------------------


def test_without_retry_the_sdk_default_of_two_retries_applies(server):
    client = aiguard.wrap(openai.OpenAI(base_url=server.url, api_key=API_KEY))
    server.fail("gpt-4o", times=5, **RATE_LIMITED)
    with pytest.raises(openai.RateLimitError):
        ask(client)
    assert len(server.requests) == 3  # 2 retries, made by aiguard: the SDK's are off


def test_max_retries_zero_means_one_request(server, telemetry):
    client = aiguard.wrap(openai.OpenAI(base_url=server.url, api_key=API_KEY, max_retries=0))
    server.fail("gpt-4o", times=5, **RATE_LIMITED)
    with pytest.raises(openai.RateLimitError):
        ask(client)
    assert len(server.requests) == 1
    assert telemetry.spans("chat gpt-4o")[0].attributes["aiguard.attempts"] == 1


def test_with_options_max_retries_is_followed(server):
    client = aiguard.wrap(openai.OpenAI(base_url=server.url, api_key=API_KEY))
    server.fail("gpt-4o", times=9, **RATE_LIMITED)
    with pytest.raises(openai.RateLimitError):
        ask(client.with_options(max_retries=0))
    assert len(server.requests) == 1
    with pytest.raises(openai.RateLimitError):
        ask(client.copy(max_retries=1))
    assert len(server.requests) == 3
    client.max_retries = 3  # set on the client itself
    with pytest.raises(openai.RateLimitError):
        ask(client)
    assert len(server.requests) == 7


def test_explicit_retry_wins_but_with_options_max_retries_is_more_specific(server):
    client = aiguard.wrap(
        openai.OpenAI(base_url=server.url, api_key=API_KEY, max_retries=0), retry=FAST
    )
    server.fail("gpt-4o", times=9, status=503)
    with pytest.raises(openai.InternalServerError):
        ask(client)
    assert len(server.requests) == 3
    with pytest.raises(openai.InternalServerError):
        ask(client.with_options(max_retries=0))  # the tool runner's "must not repeat"
    assert len(server.requests) == 4


def test_sdk_retries_stay_off_for_explicit_retry(server):
    raw = openai.OpenAI(base_url=server.url, api_key=API_KEY, max_retries=5)
    client = aiguard.wrap(raw, retry=aiguard.Retry(attempts=2, wait_initial=0, wait_jitter=0))
    server.fail("gpt-4o", times=9, **RATE_LIMITED)
    with pytest.raises(openai.RateLimitError):
        ask(client)
    assert len(server.requests) == 2
    with pytest.raises(openai.RateLimitError):
        ask(raw)  # the bare client keeps its own retries
    assert len(server.requests) == 2 + 6


async def test_async_max_retries_zero_means_one_request(server):
    raw = openai.AsyncOpenAI(base_url=server.url, api_key=API_KEY, max_retries=0)
    server.fail("gpt-4o", times=5, **RATE_LIMITED)
    with pytest.raises(openai.RateLimitError):
        await ask(aiguard.wrap(raw))
    assert len(server.requests) == 1
    await raw.close()


def test_anthropic_max_retries_is_followed(server):
    raw = anthropic.Anthropic(base_url=server.anthropic_url, api_key="k", max_retries=1)
    server.fail("m", times=5, **RATE_LIMITED)
    with pytest.raises(anthropic.RateLimitError):
        aiguard.wrap(raw).messages.create(model="m", max_tokens=5, messages=MESSAGES)
    assert len(server.requests) == 2
    with pytest.raises(anthropic.RateLimitError):
        aiguard.wrap(raw).with_options(max_retries=0).messages.create(
            model="m", max_tokens=5, messages=MESSAGES
        )
    assert len(server.requests) == 3


# -- 10, 11. any client wraps; signatures and docstrings are the SDK's -------------------------


def test_a_client_that_cannot_be_copied_is_wrapped(server):
    class Tenant(openai.OpenAI):  # copy() would call Tenant(api_key=..., ...): a TypeError
        def __init__(self, tenant: str) -> None:
            super().__init__(api_key=f"key-{tenant}", base_url=server.url)

    client = aiguard.wrap(Tenant("acme"))
    ask(client)
    assert server.requests[0].headers["authorization"] == "Bearer key-acme"


GUARDED = [
    ("chat", "completions", "create"),
    ("chat", "completions", "parse"),
    ("chat", "completions", "stream"),
    ("beta", "chat", "completions", "parse"),
    ("embeddings", "create"),
    ("responses", "create"),
    ("responses", "stream"),
    ("with_options",),
    ("copy",),
]


def _get(obj, path):
    for name in path:
        obj = getattr(obj, name)
    return obj


@pytest.mark.parametrize("path", GUARDED, ids=".".join)
@pytest.mark.parametrize("cls", [openai.OpenAI, openai.AsyncOpenAI])
def test_signatures_and_docstrings_are_the_sdks(cls, path):
    raw = cls(api_key="k", base_url="http://127.0.0.1:9")
    bare, guarded = _get(raw, path), _get(aiguard.wrap(raw), path)
    assert guarded is not bare
    assert inspect.signature(guarded) == inspect.signature(bare)
    assert guarded.__doc__ == bare.__doc__
    assert guarded.__name__ == bare.__name__


@pytest.mark.parametrize("path", [("messages", "create"), ("messages", "stream"), ("copy",)])
def test_anthropic_signatures_are_the_sdks(path):
    raw = anthropic.Anthropic(api_key="k", base_url="http://127.0.0.1:9")
    bare, guarded = _get(raw, path), _get(aiguard.wrap(raw), path)
    assert inspect.signature(guarded) == inspect.signature(bare)
    assert guarded.__doc__ == bare.__doc__


# -- issue 13, point 10: wrapping a wrapped client ---------------------------------------------


def test_wrapping_a_wrapped_client_keeps_its_policy_and_overrides_the_keywords(make_client, server):
    inner = make_client(fallback=["gpt-4o-mini"])
    outer = aiguard.wrap(inner, timeout=30)
    assert outer.__wrapped__ is inner.__wrapped__  # one guard, not two stacked
    server.fail("gpt-4o", status=400, code="context_length_exceeded")
    assert ask(outer).model == "gpt-4o-mini"  # the inner fallback still applies
    assert [r.model for r in server.requests] == ["gpt-4o", "gpt-4o-mini"]


def test_wrapping_a_wrapped_client_with_a_new_policy_is_refused(make_client):
    with pytest.raises(TypeError, match="already wrapped"):
        aiguard.wrap(make_client(), policy=aiguard.Policy())


# -- issue 13, point 14: what aiguard does not understand goes through untouched --------------


@pytest.mark.parametrize("wrapped", [False, True], ids=["bare", "wrapped"])
def test_stream_options_aiguard_cannot_read_reach_the_server(raw_client, server, wrapped):
    client = aiguard.wrap(raw_client, retry=FAST) if wrapped else raw_client
    with pytest.raises(openai.BadRequestError, match="stream_options"):
        ask(client, stream=True, stream_options=42)
    assert server.requests[0].body["stream_options"] == 42


# -- 4. an anthropic token provider refreshes after a 401, as the SDK does ---------------------


def _token_client(server, **options):
    from anthropic.lib.credentials import AccessToken

    tokens = iter(f"token-{n}" for n in range(10))
    return anthropic.Anthropic(
        base_url=server.anthropic_url,
        credentials=lambda *, force_refresh=False: AccessToken(next(tokens)),
        **options,
    )


def _bearers(server):
    return [r.headers.get("authorization") for r in server.requests]


@pytest.mark.parametrize("max_retries", [2, 0])
def test_anthropic_401_refreshes_the_token_as_the_sdk_does(server, max_retries):
    seen = []
    for wrapped in (False, True):
        server.reset()
        server.fail("m", status=401)
        client = _token_client(server, max_retries=max_retries)
        if wrapped:
            client = aiguard.wrap(client)
        try:
            client.messages.create(model="m", max_tokens=5, messages=MESSAGES)
            outcome = "answered"
        except anthropic.AuthenticationError:
            outcome = "401"
        seen.append((outcome, _bearers(server)))
    assert seen[1] == seen[0]
    expected = ["Bearer token-0", "Bearer token-1"] if max_retries else ["Bearer token-0"]
    assert seen[1][1] == expected


# -- 7. a wrapped anthropic call makes one inference span --------------------------------------


def test_anthropic_sdk_spans_are_off_for_guarded_calls(server, telemetry):
    raw = anthropic.Anthropic(
        base_url=server.anthropic_url,
        api_key="k",
        open_telemetry={"tracer_provider": telemetry.tracer_provider},
    )

    def sdk_spans():
        return [s for s in telemetry.spans() if s.instrumentation_scope.name != "aiguard"]

    server.fail("m", times=2, **RATE_LIMITED)
    aiguard.wrap(raw).messages.create(model="m", max_tokens=5, messages=MESSAGES)
    assert len(server.requests) == 3
    assert sdk_spans() == []  # the SDK made none: the call's telemetry is aiguard's alone
    raw.messages.create(model="m", max_tokens=5, messages=MESSAGES)
    assert len(sdk_spans()) == 1  # the bare client keeps its own


# -- 8. trio -------------------------------------------------------------------------------------


def test_async_client_retries_under_trio(server):
    trio = pytest.importorskip("trio")
    server.fail("gpt-4o", status=503)

    async def main():
        async with openai.AsyncOpenAI(base_url=server.url, api_key=API_KEY) as raw:
            return await ask(aiguard.wrap(raw, retry=FAST))

    assert trio.run(main).model == "gpt-4o"
    assert len(server.requests) == 2


# -- 6. instrument() and an app's own async wrapper around create ------------------------------


async def test_app_async_wrapper_under_instrument_makes_one_guarded_call(server, telemetry):
    raw = openai.AsyncOpenAI(base_url=server.url, api_key=API_KEY)
    aiguard.instrument()  # at start-up, before the app wraps create
    calls = []

    async def logged(*args, **kwargs):
        calls.append(kwargs["model"])
        return await original(*args, **kwargs)

    original = raw.chat.completions.create
    raw.chat.completions.create = logged
    try:
        reply = await ask(raw)
    finally:
        aiguard.uninstrument()
        await raw.close()
    assert reply.model == "gpt-4o"
    assert calls == ["gpt-4o"]
    assert len(server.requests) == 1
    assert len([s for s in telemetry.spans() if s.name == "chat gpt-4o"]) == 1


# -- 12. anthropic messages.stream() checks its arguments up front -----------------------------


def test_anthropic_stream_helper_checks_arguments_at_the_call(server):
    client = aiguard.wrap(anthropic.Anthropic(base_url=server.anthropic_url, api_key="k"))
    with pytest.raises(TypeError, match="output_format"):
        client.messages.stream(
            model="m", max_tokens=5, messages=MESSAGES, output_format={"type": "json"}
        )
    assert server.requests == []
    with client.messages.stream(model="m", max_tokens=5, messages=MESSAGES) as stream:
        assert stream.get_final_text()
    assert len(server.requests) == 1


# -- bypasses: the raw and streaming-response variants, the helpers ----------------------------

TINY = dict(usd=0.000001)


def _cost(telemetry, model="gpt-4o"):
    return telemetry.spans(f"chat {model}")[-1].attributes.get("aiguard.cost.total_usd")


def test_with_raw_response_is_guarded_priced_and_budgeted(make_client, server, telemetry):
    client = make_client()
    server.fail("gpt-4o", status=503)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    assert raw.http_response.status_code == 200
    assert raw.parse().choices[0].message.content == "Hello from gpt-4o."
    assert len(server.requests) == 2  # retried
    assert _cost(telemetry) > 0
    with pytest.raises(aiguard.BudgetExceeded):
        make_client(budget=aiguard.Budget(**TINY)).chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES
        )
    assert len(server.requests) == 2


def test_with_raw_response_stream_is_guarded(make_client, server, telemetry):
    raw = make_client().chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text == "Hello from gpt-4o."
    assert _cost(telemetry) > 0


def test_with_streaming_response_is_guarded_and_budgeted(make_client, server, telemetry):
    client = make_client()
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o", messages=MESSAGES, stream=True
    ) as response:
        chunks = list(response.parse())
    assert chunks and _cost(telemetry) > 0
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o", messages=MESSAGES
    ) as response:
        assert response.parse().choices[0].message.content == "Hello from gpt-4o."
    with pytest.raises(aiguard.BudgetExceeded):  # noqa: SIM117
        with make_client(
            budget=aiguard.Budget(**TINY)
        ).chat.completions.with_streaming_response.create(model="gpt-4o", messages=MESSAGES):
            pass
    assert len(server.requests) == 2


async def test_async_raw_variants_are_guarded(make_async_client, server, telemetry):
    client = make_async_client()
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, stream=True
    )
    assert [c async for c in raw.parse()]
    async with client.chat.completions.with_streaming_response.create(
        model="gpt-4o", messages=MESSAGES
    ) as response:
        assert (await response.parse()).model == "gpt-4o"
    assert len(telemetry.spans("chat gpt-4o")) == 2


def test_raw_variants_under_instrument_are_guarded(raw_client, server, telemetry):
    aiguard.instrument()
    try:
        raw = raw_client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES, stream=True
        )
        assert list(raw.parse())
        with raw_client.chat.completions.with_streaming_response.create(
            model="gpt-4o", messages=MESSAGES, stream=True
        ) as response:
            assert list(response.parse())
    finally:
        aiguard.uninstrument()
    assert len(telemetry.spans("chat gpt-4o")) == 2


def test_chat_stream_helper_and_beta_parse_are_guarded(make_client, server, telemetry):
    client = make_client(budget=aiguard.Budget(usd=1))
    server.fail("gpt-4o", status=503)
    with client.chat.completions.stream(model="gpt-4o", messages=MESSAGES) as stream:
        assert stream.get_final_completion().choices[0].message.content == "Hello from gpt-4o."
    server.reply("gpt-4o", content="{}")
    client.beta.chat.completions.parse(model="gpt-4o", messages=MESSAGES)
    assert len(server.requests) == 3
    assert len(telemetry.spans("chat gpt-4o")) == 2
    with pytest.raises(aiguard.BudgetExceeded):
        make_client(budget=aiguard.Budget(**TINY)).beta.chat.completions.parse(
            model="gpt-4o", messages=MESSAGES
        )


def test_anthropic_raw_variants_are_guarded_and_budgeted(server, telemetry):
    model = "claude-3-5-haiku-latest"
    client = aiguard.wrap(anthropic.Anthropic(base_url=server.anthropic_url, api_key="k"))
    raw = client.messages.with_raw_response.create(model=model, max_tokens=5, messages=MESSAGES)
    assert raw.parse().content[0].text
    with client.messages.with_streaming_response.create(
        model=model, max_tokens=5, messages=MESSAGES, stream=True
    ) as response:
        assert list(response.parse())
    assert len(telemetry.spans(f"chat {model}")) == 2
    tight = aiguard.wrap(client, budget=aiguard.Budget(**TINY))
    with pytest.raises(aiguard.BudgetExceeded):
        tight.messages.with_raw_response.create(model=model, max_tokens=5, messages=MESSAGES)
    assert len(server.requests) == 2


def test_responses_without_model_are_guarded_or_refused_under_a_budget(
    make_client, server, telemetry
):
    client = make_client()
    server.fail(status=503)
    reply = client.responses.create(input="Hi", prompt={"id": "pmpt_1"})
    assert reply.output_text
    assert len(server.requests) == 2  # retried: guarded
    assert "model" not in server.requests[-1].body  # nothing added
    assert len(telemetry.spans("chat")) == 1
    with pytest.raises(aiguard.AIGuardError, match="model="):
        make_client(budget=aiguard.Budget(usd=5)).responses.create(
            input="Hi", prompt={"id": "pmpt_1"}
        )
    assert len(server.requests) == 2


# -- 9. a stream's raw bytes, after the guard read its first event ------------------------------


def _sse_lines(lines):
    return [line for line in lines if line.startswith("data:")]


def test_stream_raw_bytes_are_whole_after_the_guard_read_ahead(raw_client, server):
    options = {"stream": True, "stream_options": {"include_usage": True}}
    bare = ask(raw_client, **options)
    expected = _sse_lines(bare.response.iter_lines())
    stream = ask(aiguard.wrap(raw_client, retry=FAST), **options)
    got = _sse_lines(stream.response.iter_lines())
    assert len(got) == len(expected) > 3
    assert got[-1] == "data: [DONE]"
    assert '"role":"assistant"' in got[0].replace(" ", "")  # the event the guard read


def test_stream_chunks_still_read_normally(make_client, server):
    stream = ask(make_client(), stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream) == "Hello from gpt-4o."


async def test_async_stream_raw_bytes_are_whole(raw_async_client, server):
    stream = await ask(aiguard.wrap(raw_async_client, retry=FAST), stream=True)
    lines = _sse_lines([line async for line in stream.response.aiter_lines()])
    assert lines[-1] == "data: [DONE]" and '"role":"assistant"' in lines[0].replace(" ", "")


def test_retries_are_reported_as_the_sdk_reports_its_own(make_client, server):
    server.fail("gpt-4o", times=2, status=503)
    raw = make_client().chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    assert raw.retries_taken == 2
    assert [r.headers["x-stainless-retry-count"] for r in server.requests] == ["0", "1", "2"]


def test_init_signature_is_the_clients(raw_client):
    client = aiguard.wrap(raw_client)
    assert inspect.signature(client.__init__) == inspect.signature(raw_client.__init__)


def test_a_raw_response_that_does_not_parse_is_returned_as_the_sdk_returns_it():
    with MockServer() as other:
        client = aiguard.wrap(anthropic.Anthropic(base_url=other.anthropic_url, api_key="k"))
        other.fail("m", malformed=True)
        raw = client.messages.with_raw_response.create(model="m", max_tokens=5, messages=MESSAGES)
        assert raw.http_response.status_code == 200
        with pytest.raises(ValueError):  # the SDK's own error, when the caller parses
            raw.parse()


def test_a_copy_keeps_the_same_attributes_as_its_original(raw_client):
    client = aiguard.wrap(raw_client)
    copied = client.copy()
    assert vars(copied.__wrapped__).keys() == vars(raw_client).keys()
    assert copied.request == raw_client.request  # aiguard's per-attempt hook, alike on both
    assert inspect.signature(raw_client.request) == inspect.signature(
        type(raw_client).request.__get__(raw_client)
    )


def test_anthropic_sdk_spans_stay_when_aiguard_records_none(server, telemetry, monkeypatch):
    raw = anthropic.Anthropic(
        base_url=server.anthropic_url,
        api_key="k",
        open_telemetry={"tracer_provider": telemetry.tracer_provider},
    )
    silent = mock.Mock(tracing=mock.Mock(return_value=False))
    monkeypatch.setattr("aiguard.adapters._stainless.current", lambda: silent)
    aiguard.wrap(raw).messages.create(model="m", max_tokens=5, messages=MESSAGES)
    sdk = [s for s in telemetry.spans() if s.instrumentation_scope.name != "aiguard"]
    assert len(sdk) == 1  # the only record of the call: kept
