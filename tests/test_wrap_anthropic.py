"""aiguard.wrap over the real anthropic SDK, real HTTP to the testing kit's server: drop-in."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import httpx2
import openai
import pydantic
import pytest
from tests.conftest import FAST, MESSAGES

import aiguard
from aiguard import Failure, prices
from aiguard._messages import IMAGE_TOKENS, estimate_input_tokens

anthropic = pytest.importorskip("anthropic")

from aiguard.adapters._anthropic import _CREATE, anthropic_messages, classify  # noqa: E402

API_KEY = "sk-ant-api03-TESTKEY0123456789abcdefSECRET"
MODEL = "claude-3-5-haiku-latest"  # priced by genai-prices
OTHER = "claude-b"
WORDS = "one two three four five six seven eight nine"


@pytest.fixture
def raw(server):
    return anthropic.Anthropic(base_url=server.anthropic_url, api_key=API_KEY)


@pytest.fixture
async def raw_async(server):
    client = anthropic.AsyncAnthropic(base_url=server.anthropic_url, api_key=API_KEY)
    yield client
    await client.close()  # its connections belong to this test's event loop


@pytest.fixture
def make(raw):
    def make(**policy):
        policy.setdefault("retry", FAST)
        return aiguard.wrap(raw, **policy)

    return make


@pytest.fixture
def make_async(raw_async):
    def make(**policy):
        policy.setdefault("retry", FAST)
        return aiguard.wrap(raw_async, **policy)

    return make


def ask(client, model=MODEL, **kwargs):
    return client.messages.create(model=model, max_tokens=64, messages=MESSAGES, **kwargs)


def helper(client, model=MODEL, **kwargs):
    return client.messages.stream(model=model, max_tokens=64, messages=MESSAGES, **kwargs)


def the_call(telemetry, name=f"chat {MODEL}"):
    """The one span of the one guarded call, ended exactly once."""
    spans = telemetry.spans()
    assert [s.name for s in spans] == [name]
    return spans[0]


def failures(span):
    """The attributes of the call's failed attempts, in order."""
    return [e.attributes for e in span.events if e.name == "aiguard.attempt.failed"]


def _comparable(event):
    data = event.to_dict()
    data.get("message", {}).pop("id", None)  # the server makes a new id per request
    return data


# -- drop-in -----------------------------------------------------------------------------------


def test_wrapped_clients_are_still_anthropic_clients(make, make_async):
    client = make()
    assert isinstance(client, anthropic.Anthropic)
    assert client.api_key == API_KEY
    assert "aiguard.wrap" in repr(client)
    assert isinstance(make_async(), anthropic.AsyncAnthropic)


def test_create_returns_exactly_what_the_sdk_returns(make, raw, server):
    guarded = ask(make())
    plain = ask(raw)
    assert type(guarded) is type(plain)
    assert guarded.content == plain.content and guarded.usage == plain.usage


def test_unguarded_methods_pass_through(make, server, telemetry):
    client = make()
    assert client.messages.count_tokens(model=MODEL, messages=MESSAGES).input_tokens > 0
    assert telemetry.spans() == []
    raw_reply = client.messages.with_raw_response.create(  # guarded too (test_drop_in.py)
        model=MODEL, max_tokens=8, messages=MESSAGES
    )
    assert raw_reply.http_response.status_code == 200
    assert len(telemetry.spans(f"chat {MODEL}")) == 1


def test_calls_the_core_cannot_guard_are_the_sdks_business(make, telemetry):
    client = make()
    with pytest.raises(TypeError):
        client.messages.create(max_tokens=8, messages=MESSAGES)
    with pytest.raises(TypeError):
        client.messages.stream(max_tokens=8, messages=MESSAGES)
    assert telemetry.spans() == []


def test_sdk_own_retries_are_off_and_the_users_client_is_untouched(make, raw, server):
    server.fail(MODEL, status=429, headers={"retry-after": "0"}, times=5)
    with pytest.raises(anthropic.RateLimitError):
        ask(make(retry=aiguard.Retry(attempts=2, wait_initial=0, wait_jitter=0)))
    assert len(server.requests) == 2
    # aiguard's retry, numbered as the SDK numbers its own
    assert [r.headers["x-stainless-retry-count"] for r in server.requests] == ["0", "1"]
    assert raw.max_retries == anthropic.DEFAULT_MAX_RETRIES


def test_with_options_and_copy_return_guarded_clients(make, server):
    client = make(retry=aiguard.Retry(attempts=2, wait_initial=0, wait_jitter=0))
    for other in (client.with_options(timeout=5), client.copy(timeout=5)):
        assert isinstance(other, anthropic.Anthropic) and "aiguard.wrap" in repr(other)
    server.fail(MODEL, status=529, times=5)
    with pytest.raises(anthropic.OverloadedError):
        ask(client.with_options(timeout=5))
    assert len(server.requests) == 2


def test_fallback_to_a_client_of_another_kind_is_refused_at_wrap_time(raw, server):
    raw_async = anthropic.AsyncAnthropic(base_url=server.anthropic_url, api_key=API_KEY)
    # Another SDK's client answers through the pivot, but only of the same kind (sync here).
    gpt = openai.AsyncOpenAI(base_url=server.url, api_key="k")
    for target, kind in ((raw_async, "Anthropic"), (gpt, "Anthropic")):
        with pytest.raises(TypeError, match=f"only to another {kind} client"):
            aiguard.wrap(raw, fallback=[aiguard.Target(model="x", client=target)])
    with pytest.raises(TypeError, match="only to another AsyncAnthropic client"):
        aiguard.wrap(raw_async, fallback=[aiguard.Target(model="x", client=raw)])


# -- what a call records -----------------------------------------------------------------------


def test_span_follows_the_genai_conventions_with_cache_usage_and_cost(make, server, telemetry):
    server.reply(
        MODEL, prompt_tokens=1200, cached_tokens=1000, cache_write_tokens=150, completion_tokens=7
    )
    reply = ask(
        make(),
        stop_sequences=["END"],
        extra_body={"temperature": 0.2, "top_p": 0.9, "top_k": 5},
    )
    span = telemetry.span(f"chat {MODEL}")
    attrs = span.attributes
    assert span.kind.name == "CLIENT"
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "anthropic"
    assert attrs["gen_ai.request.model"] == MODEL
    assert attrs["server.address"] == "127.0.0.1" and attrs["server.port"] == server.port
    assert attrs["gen_ai.request.max_tokens"] == 64
    assert attrs["gen_ai.request.temperature"] == 0.2
    assert attrs["gen_ai.request.top_p"] == 0.9 and attrs["gen_ai.request.top_k"] == 5
    assert attrs["gen_ai.request.stop_sequences"] == ("END",)
    assert "gen_ai.request.stream" not in attrs
    assert attrs["gen_ai.response.id"] == reply.id
    assert attrs["gen_ai.response.model"] == MODEL
    assert attrs["gen_ai.response.finish_reasons"] == ("end_turn",)
    # Anthropic reports 50 uncached input tokens; the conventions' total includes the cache.
    assert reply.usage.input_tokens == 50
    assert attrs["gen_ai.usage.input_tokens"] == 1200
    assert attrs["gen_ai.usage.output_tokens"] == 7
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 1000
    assert attrs["gen_ai.usage.cache_creation.input_tokens"] == 150
    usage = aiguard.Usage(
        input_tokens=1200, output_tokens=7, cache_read_tokens=1000, cache_write_tokens=150
    )
    expected = prices.cost(MODEL, usage, provider="anthropic")
    assert expected is not None and expected > 0
    assert attrs["aiguard.cost.usd"] == float(expected)
    tokens = telemetry.metrics()["gen_ai.client.token.usage"]
    by_type = {p.attributes["gen_ai.token.type"]: p.sum for p in tokens}
    assert by_type == {"input": 1200, "output": 7}


def test_the_api_key_never_reaches_telemetry(make, server, telemetry):
    client = make(fallback=[OTHER])
    server.fail(MODEL, status=401)
    with pytest.raises(anthropic.AuthenticationError):
        ask(client)
    server.fail(MODEL, status=529, times=3)
    list(ask(client, stream=True))
    with helper(client) as stream:
        stream.until_done()
    spans = telemetry.spans()
    assert [s.name for s in spans] == [f"chat {MODEL}"] * 3
    assert [len(failures(s)) for s in spans] == [1, 3, 0]
    assert [len(s.events) for s in spans] == [1, 6, 0]  # + 2 retries and the fallback
    for span in telemetry.spans():
        values = [*span.attributes.values()]
        values += [v for event in span.events for v in event.attributes.values()]
        assert not any(API_KEY in str(v) or "TESTKEY" in str(v) for v in values), span.name


# -- failures ----------------------------------------------------------------------------------


def test_429_waits_for_retry_after_then_retries(make, server, telemetry):
    server.fail(MODEL, status=429, headers={"retry-after": "0.05"})
    started = time.perf_counter()
    ask(make())
    assert time.perf_counter() - started >= 0.05
    assert len(server.requests) == 2
    span = the_call(telemetry)
    failed, event = span.events
    assert failed.name == "aiguard.attempt.failed"
    assert failed.attributes["aiguard.failure.class"] == "rate_limit"
    assert event.name == "aiguard.retry" and event.attributes["aiguard.retry.wait_s"] == 0.05
    assert (span.attributes["aiguard.attempts"], span.attributes["aiguard.retries"]) == (2, 1)
    assert "error.type" not in span.attributes


def test_529_overloaded_is_retried(make, server, telemetry):
    server.fail(MODEL, status=529)
    ask(make())
    assert len(server.requests) == 2
    span = the_call(telemetry)
    (failed,) = failures(span)
    assert failed["aiguard.attempt"] == 1 and failed["aiguard.attempt.model"] == MODEL
    assert failed["error.type"] == "anthropic.OverloadedError"
    assert failed["aiguard.failure.class"] == "outage"
    assert "error.type" not in span.attributes
    assert span.status.status_code.name == "UNSET"
    assert (span.attributes["aiguard.attempts"], span.attributes["aiguard.retries"]) == (2, 1)
    (point,) = telemetry.metrics()["gen_ai.client.operation.duration"]
    assert point.count == 1 and "error.type" not in point.attributes


def test_500_falls_back_to_another_model_once_retries_are_spent(make, server, telemetry):
    server.fail(MODEL, status=500, times=3)
    reply = ask(make(fallback=[OTHER]))
    assert reply.content[0].text == f"Hello from {OTHER}."
    assert [r.model for r in server.requests] == [MODEL] * 3 + [OTHER]
    span = the_call(telemetry)
    attrs = span.attributes
    assert attrs["aiguard.fallback.used"] is True and attrs["aiguard.fallback.model"] == OTHER
    assert (attrs["gen_ai.request.model"], attrs["gen_ai.response.model"]) == (MODEL, OTHER)
    assert (attrs["aiguard.attempts"], attrs["aiguard.retries"]) == (4, 2)
    assert [f["aiguard.attempt.model"] for f in failures(span)] == [MODEL] * 3
    assert {f["aiguard.failure.class"] for f in failures(span)} == {"outage"}
    assert "error.type" not in attrs
    (point,) = telemetry.metrics()["gen_ai.client.operation.duration"]
    assert point.count == 1
    assert point.attributes["gen_ai.request.model"] == MODEL
    assert point.attributes["gen_ai.response.model"] == OTHER


def test_fallback_to_another_anthropic_client(make, server):
    other = anthropic.Anthropic(base_url=server.anthropic_url, api_key="other")
    server.fail(MODEL, status=503, times=3)
    reply = ask(make(fallback=[aiguard.Target(model=OTHER, client=other)]))
    assert reply.model == OTHER
    assert server.requests[-1].headers["authorization"] == "Bearer other"


def test_400_is_raised_at_once(make, server, telemetry):
    server.fail(MODEL, status=400)
    with pytest.raises(anthropic.BadRequestError):
        ask(make(fallback=[OTHER]))
    assert len(server.requests) == 1
    span = the_call(telemetry)
    assert [f["aiguard.failure.class"] for f in failures(span)] == ["fatal"]
    assert span.attributes["aiguard.attempts"] == 1
    assert span.attributes["aiguard.fallback.used"] is False
    assert span.attributes["error.type"] == "anthropic.BadRequestError"
    assert span.status.status_code.name == "ERROR"


def test_connection_reset_is_retried(make, server):
    server.fail(MODEL, reset=True)
    assert ask(make()).content[0].text == f"Hello from {MODEL}."
    assert len(server.requests) == 2


def test_timeout_is_retried(server):
    client = anthropic.Anthropic(base_url=server.anthropic_url, api_key=API_KEY, timeout=0.2)
    server.fail(MODEL, delay=0.6)
    ask(aiguard.wrap(client, retry=FAST))
    assert len(server.requests) == 2


def _status_error(status, body, headers=None):
    request = httpx2.Request("POST", "https://api.anthropic.com/v1/messages")
    response = httpx2.Response(status, json=body, headers=headers, request=request)
    return anthropic.APIStatusError(str(body), response=response, body=body)


def _error_body(kind, message="mock"):
    return {"type": "error", "error": {"type": kind, "message": message}}


@pytest.mark.parametrize(
    ("status", "kind", "message", "headers", "expected"),
    [
        (429, "rate_limit_error", "", {"retry-after": "7"}, (Failure.RATE_LIMIT, 7.0)),
        (529, "overloaded_error", "", {}, (Failure.OUTAGE, None)),
        (408, "timeout_error", "", {}, (Failure.OUTAGE, None)),
        (409, "conflict_error", "", {}, (Failure.OUTAGE, None)),
        (504, "timeout_error", "", {}, (Failure.OUTAGE, None)),
        (400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum", {},
         (Failure.CONTEXT_WINDOW, None)),
        (400, "invalid_request_error", "max_tokens: field required", {}, (Failure.FATAL, None)),
        (401, "authentication_error", "", {}, (Failure.FATAL, None)),
        (400, "invalid_request_error", "", {"x-should-retry": "true"}, (Failure.OUTAGE, None)),
        # SSE error events come on a 200 response: their type says what failed.
        (200, "overloaded_error", "", {}, (Failure.OUTAGE, None)),
        (200, "api_error", "", {}, (Failure.OUTAGE, None)),
        (200, "rate_limit_error", "", {}, (Failure.RATE_LIMIT, None)),
        (200, "invalid_request_error", "", {}, (Failure.FATAL, None)),
    ],
)  # fmt: skip
def test_errors_are_classified(status, kind, message, headers, expected):
    assert classify(_status_error(status, _error_body(kind, message), headers)) == expected


def test_transport_errors_are_outages_and_others_fatal():
    request = httpx2.Request("POST", "https://api.anthropic.com/v1/messages")
    assert classify(httpx2.ReadError("cut", request=request)) == (Failure.OUTAGE, None)
    assert classify(httpx2.RemoteProtocolError("x", request=request)) == (Failure.OUTAGE, None)
    assert classify(anthropic.APITimeoutError(request)) == (Failure.OUTAGE, None)
    assert classify(ValueError("bug")) == (Failure.FATAL, None)


def test_a_prompt_too_long_goes_straight_to_the_fallback(telemetry):
    # The testing kit's server has no prompt-too-long message: the SDK over a mock transport.
    def handler(request: httpx2.Request) -> httpx2.Response:
        model = json.loads(request.content)["model"]
        if model == MODEL:
            too_long = "prompt is too long: 210000 tokens > 200000 maximum"
            return httpx2.Response(400, json=_error_body("invalid_request_error", too_long))
        usage = {"input_tokens": 3, "output_tokens": 2}
        message = {"id": "msg_1", "type": "message", "role": "assistant", "model": model,
                   "content": [], "stop_reason": "end_turn", "usage": usage}  # fmt: skip
        return httpx2.Response(200, json=message)

    http = httpx2.Client(transport=httpx2.MockTransport(handler))
    raw = anthropic.Anthropic(api_key=API_KEY, http_client=http)
    reply = ask(aiguard.wrap(raw, retry=FAST, fallback=[OTHER]))
    assert reply.model == OTHER
    span = the_call(telemetry)
    (failed,) = failures(span)
    assert failed["aiguard.failure.class"] == "context_window"
    assert failed["aiguard.attempt.model"] == MODEL
    attrs = span.attributes
    assert (attrs["aiguard.attempts"], attrs["aiguard.retries"]) == (2, 0)  # no retry
    assert attrs["aiguard.fallback.used"] is True and attrs["aiguard.fallback.model"] == OTHER
    assert attrs["server.address"] == "api.anthropic.com"
    assert attrs["server.port"] == 443


def test_the_decorator_classifies_anthropic_errors_through_the_registry(raw, server):
    server.fail(MODEL, status=529, times=2)
    quiet = raw.with_options(max_retries=0)

    @aiguard.guard(retry=FAST)
    def answer(question: str, model: str = MODEL) -> str:
        reply = quiet.messages.create(model=model, max_tokens=8, messages=MESSAGES)
        return str(reply.content[0].text)

    assert answer("q") == f"Hello from {MODEL}."
    assert len(server.requests) == 3


# -- async -------------------------------------------------------------------------------------


async def test_async_retry_fallback_and_span(make_async, server, telemetry):
    server.fail(MODEL, status=529, times=3)
    reply = await ask(make_async(fallback=[OTHER]))
    assert reply.model == OTHER
    assert len(server.requests) == 4
    span = the_call(telemetry)
    attrs = span.attributes
    assert attrs["gen_ai.response.model"] == OTHER and attrs["aiguard.fallback.used"] is True
    assert (attrs["aiguard.attempts"], attrs["aiguard.retries"]) == (4, 2)
    assert [f["error.type"] for f in failures(span)] == ["anthropic.OverloadedError"] * 3
    assert attrs["gen_ai.usage.output_tokens"] >= 1


async def test_async_400_is_raised_at_once(make_async, server):
    server.fail(MODEL, status=400)
    with pytest.raises(anthropic.BadRequestError):
        await ask(make_async())
    assert len(server.requests) == 1


async def test_async_stream_via_create(make_async, raw_async, server, telemetry):
    server.reply(MODEL, content=WORDS, prompt_tokens=40, completion_tokens=9)
    server.fail(MODEL, status=529)
    stream = await ask(make_async(), stream=True)
    events = [event async for event in stream]
    plain = [event async for event in await ask(raw_async, stream=True)]
    assert [_comparable(e) for e in events] == [_comparable(e) for e in plain]
    guarded = the_call(telemetry)  # the plain client's stream is not recorded
    ok = guarded.attributes
    assert guarded.attributes["aiguard.attempts"] == 2 and len(failures(guarded)) == 1
    assert ok["gen_ai.usage.input_tokens"] == 40 and ok["gen_ai.usage.output_tokens"] == 9
    assert ok["gen_ai.request.stream"] is True


async def test_async_stream_helper(make_async, server, telemetry):
    server.reply(MODEL, content=WORDS, prompt_tokens=40, completion_tokens=9)
    server.fail(MODEL, status=503)
    async with helper(make_async()) as stream:
        assert isinstance(stream, anthropic.lib.streaming.AsyncMessageStream)
        assert "".join([text async for text in stream.text_stream]) == WORDS
        final = await stream.get_final_message()
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 9
    assert len(server.requests) == 2
    span = the_call(telemetry)
    assert span.attributes["aiguard.attempts"] == 2 and len(failures(span)) == 1
    assert span.attributes["gen_ai.usage.input_tokens"] == 40
    assert span.attributes["aiguard.outcome"] == "ok"


# -- streams through create(stream=True) -------------------------------------------------------


def test_stream_chunks_are_the_sdks_and_the_span_ends_once_with_usage(make, raw, server, telemetry):
    server.reply(MODEL, content=WORDS, prompt_tokens=500, cached_tokens=400, completion_tokens=9)
    stream = ask(make(), stream=True)
    assert telemetry.spans() == []  # the call is open while the user reads
    events = list(stream)
    plain = list(ask(raw, stream=True))
    assert [_comparable(e) for e in events] == [_comparable(e) for e in plain]
    assert [type(e) for e in events] == [type(e) for e in plain]
    stream.close()  # after the end: nothing more is recorded
    span = the_call(telemetry)
    attrs = span.attributes
    assert attrs["gen_ai.request.stream"] is True
    assert attrs["gen_ai.response.id"] == events[0].message.id
    assert attrs["gen_ai.response.finish_reasons"] == ("end_turn",)
    assert attrs["gen_ai.usage.input_tokens"] == 500
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 400
    assert attrs["gen_ai.usage.output_tokens"] == 9
    assert attrs["aiguard.stream.chunks"] == len(events)
    usage = aiguard.Usage(
        input_tokens=500, output_tokens=9, cache_read_tokens=400, cache_write_tokens=0
    )
    assert attrs["aiguard.cost.usd"] == float(prices.cost(MODEL, usage, provider="anthropic"))
    assert "error.type" not in attrs
    assert attrs["aiguard.outcome"] == "ok"


def test_stream_failing_before_its_first_event_is_retried(make, server, telemetry):
    server.fail(MODEL, status=529)
    events = list(ask(make(), stream=True))
    assert events[-1].type == "message_stop"
    assert len(server.requests) == 2
    span = the_call(telemetry)
    assert [f["aiguard.failure.class"] for f in failures(span)] == ["outage"]
    assert span.attributes["aiguard.attempts"] == 2 and "error.type" not in span.attributes
    assert span.attributes["gen_ai.usage.output_tokens"] >= 1


def test_a_stream_cut_midway_raises_to_the_user_and_records_the_error(make, server, telemetry):
    server.reply(MODEL, content=WORDS)
    server.fail(MODEL, cut_after=2)
    kinds = []
    with pytest.raises(httpx2.TransportError) as info:
        for event in ask(make(), stream=True):
            kinds.append(event.type)
    assert kinds == ["message_start", "content_block_start", *["content_block_delta"] * 2]
    assert len(server.requests) == 1  # the user saw events: not retried
    span = the_call(telemetry)
    attrs = span.attributes
    assert attrs["error.type"].endswith(type(info.value).__name__)
    assert span.status.status_code.name == "ERROR"
    assert attrs["gen_ai.response.id"].startswith("msg_")
    assert "gen_ai.usage.output_tokens" not in attrs  # the final count never came
    assert attrs["aiguard.outcome"] == "error" and attrs["aiguard.attempts"] == 1


def test_an_sse_error_event_raises_and_is_classified_transient(make, server, telemetry):
    server.fail(MODEL, stream_error="overloaded_error", cut_after=1)
    with pytest.raises(anthropic.APIStatusError) as info:
        list(ask(make(), stream=True))
    assert info.value.status_code == 200 and info.value.type == "overloaded_error"
    assert classify(info.value) == (Failure.OUTAGE, None)
    attrs = telemetry.span(f"chat {MODEL}").attributes
    assert attrs["error.type"] == "anthropic.APIStatusError"


def test_a_truncated_stream_is_recorded_as_an_error(make, server, telemetry):
    server.fail(MODEL, truncate=True)
    events = list(ask(make(), stream=True))  # the SDK does not notice
    assert events[-1].type == "content_block_stop"
    attrs = telemetry.span(f"chat {MODEL}").attributes
    assert attrs["error.type"].endswith("StreamTruncated")
    assert "gen_ai.response.finish_reasons" not in attrs


def test_a_truncated_stream_raises_when_asked(make, server):
    server.fail(MODEL, truncate=True)
    with pytest.raises(aiguard.StreamTruncated):
        list(ask(make(raise_on_truncation=True), stream=True))


def test_break_and_close_end_the_call_as_abandoned(make, server, telemetry):
    server.reply(MODEL, content=WORDS)
    stream = ask(make(), stream=True)
    for i, _ in enumerate(stream):
        if i == 2:
            break
    stream.close()
    stream.close()
    attrs = the_call(telemetry).attributes
    assert attrs["aiguard.stream.abandoned"] is True and attrs["aiguard.stream.chunks"] == 3
    assert "error.type" not in attrs
    assert attrs["aiguard.outcome"] == "abandoned"


# -- the messages.stream(...) helper -----------------------------------------------------------


def test_stream_helper_is_guarded_and_behaves_as_the_sdks(make, server, telemetry):
    server.reply(MODEL, content=WORDS, prompt_tokens=500, cached_tokens=400, completion_tokens=9)
    server.fail(MODEL, status=529)
    manager = helper(make())
    assert isinstance(manager, anthropic.lib.streaming.MessageStreamManager)
    assert server.requests == []  # sent on entering, as the SDK does
    with manager as stream:
        assert "".join(stream.text_stream) == WORDS
        final = stream.get_final_message()
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == 100 and final.usage.cache_read_input_tokens == 400
    assert len(server.requests) == 2
    assert server.requests[-1].headers["x-stainless-helper-method"] == "stream"
    span = the_call(telemetry)
    assert [f["aiguard.failure.class"] for f in failures(span)] == ["outage"]
    attrs = span.attributes
    assert attrs["gen_ai.request.stream"] is True
    assert attrs["gen_ai.response.id"] == final.id
    assert attrs["gen_ai.usage.input_tokens"] == 500 and attrs["gen_ai.usage.output_tokens"] == 9
    assert attrs["aiguard.cost.usd"] > 0 and "aiguard.stream.abandoned" not in attrs
    assert "error.type" not in attrs
    assert (attrs["aiguard.attempts"], attrs["aiguard.retries"]) == (2, 1)


def test_stream_helper_falls_back_and_parses_output_format(make, server, telemetry):
    class City(pydantic.BaseModel):
        name: str

    server.reply(OTHER, content='{"name": "Paris"}')
    server.fail(MODEL, status=500, times=3)
    with helper(make(fallback=[OTHER]), output_format=City) as stream:
        final = stream.get_final_message()
    assert final.parsed_output == City(name="Paris")
    assert server.requests[-1].body["output_config"]["format"]["type"] == "json_schema"
    attrs = the_call(telemetry).attributes
    assert attrs["gen_ai.response.model"] == OTHER and attrs["aiguard.fallback.model"] == OTHER
    assert attrs["aiguard.attempts"] == 4
    assert attrs["gen_ai.output.type"] == "json"


def test_stream_helper_left_early_is_abandoned(make, server, telemetry):
    server.reply(MODEL, content=WORDS)
    with helper(make()) as stream:
        for _ in stream.text_stream:
            break
    attrs = telemetry.span(f"chat {MODEL}").attributes
    assert attrs["aiguard.stream.abandoned"] is True


def test_stream_helper_cut_midway_raises_and_records(make, server, telemetry):
    server.reply(MODEL, content=WORDS)
    server.fail(MODEL, cut_after=3)
    with pytest.raises(httpx2.TransportError), helper(make()) as stream:
        stream.until_done()
    assert "error.type" in telemetry.span(f"chat {MODEL}").attributes
    assert len(server.requests) == 1


# -- budgets -----------------------------------------------------------------------------------

# "What is the capital of France?": 30 bytes + 8 per message + 16 per call; max_tokens=64.
INPUT_BOUND = 54


def _worst() -> Decimal:
    price = prices.lookup("anthropic", MODEL)
    assert price is not None
    return price.worst_case(INPUT_BOUND, 64)


def test_a_budget_refusal_sends_nothing(make, server, telemetry):
    budget = aiguard.Budget(usd=_worst() - Decimal("0.000001"))
    client = make(budget=budget)
    with pytest.raises(aiguard.BudgetExceeded):
        ask(client)
    with pytest.raises(aiguard.BudgetExceeded), helper(client):
        pass
    assert server.requests == []
    spans = telemetry.spans()
    assert [s.name for s in spans] == [f"chat {MODEL}"] * 2
    for span in spans:  # refused before any attempt: no request, no usage
        assert span.attributes["aiguard.attempts"] == 0 and failures(span) == []
        assert [e.name for e in span.events] == ["aiguard.budget.refused"]
        assert span.attributes["error.type"] == "aiguard.BudgetExceeded"
        assert not any(k.startswith(("gen_ai.usage.", "gen_ai.response.")) for k in span.attributes)


def test_a_budget_is_settled_to_the_real_cost(make, server):
    server.reply(MODEL, prompt_tokens=10, completion_tokens=20)
    budget = aiguard.Budget(usd=1)
    client = make(budget=budget)
    ask(client)
    with helper(client) as stream:
        stream.until_done()
    usage = aiguard.Usage(input_tokens=10, output_tokens=20)
    real = prices.cost(MODEL, usage, provider="anthropic")
    assert real is not None and real < _worst()
    assert budget.spent == 2 * real and budget.reserved == 0


def test_a_stream_cut_before_its_final_usage_keeps_the_worst_case(make, server):
    server.reply(MODEL, content=WORDS)
    server.fail(MODEL, cut_after=1)
    budget = aiguard.Budget(usd=1)
    with pytest.raises(httpx2.TransportError):
        list(ask(make(budget=budget), stream=True))
    assert budget.spent == _worst() and budget.reserved == 0


def test_the_estimate_reads_system_blocks_images_and_tools():
    tool = {"name": "weather", "input_schema": {"type": "object"}}
    request = {
        "model": MODEL,
        "max_tokens": 100,
        "system": [{"type": "text", "text": "Be brief."}],
        "tools": [tool],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                ],
            },
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "weather", "input": {}}],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [{"type": "image", "source": {"type": "url", "url": "u"}}],
                    }
                ],
            },
        ],
    }
    messages = anthropic_messages(request["system"], request["messages"])
    assert [m.role for m in messages] == ["system", "user", "assistant", "user"]
    assert [p.type for p in messages[1].parts] == ["text", "image"]
    assert [p.type for p in messages[2].parts] == ["tool_call"]
    assert [p.type for p in messages[3].parts] == ["tool_call_response", "image"]
    inputs, outputs = _CREATE.estimate(request)
    assert outputs == 100
    assert inputs >= 2 * IMAGE_TOKENS + len("Be brief.") + len("What is this?")
    assert inputs == estimate_input_tokens(messages, ['[{"name":"weather","input_schema":'
                                                      '{"type":"object"}}]'])  # fmt: skip
    assert anthropic_messages(None, iter(request["messages"])) == []  # never consumed


def test_an_overloaded_error_before_the_answer_starts_is_retried(make, server, telemetry):
    # Anthropic sends message_start, then an error event when it is overloaded.
    server.fail(MODEL, stream_error="overloaded_error")
    events = [event.type for event in ask(make(), stream=True)]
    assert events[0] == "message_start" and events.count("message_start") == 1
    assert events[-1] == "message_stop"
    assert len(server.requests) == 2  # retried: the user had seen nothing of the answer
    span = the_call(telemetry)
    assert [f["error.type"] for f in failures(span)] == ["anthropic.APIStatusError"]
    assert (span.attributes["aiguard.attempts"], span.attributes["aiguard.retries"]) == (2, 1)
    assert "error.type" not in span.attributes


async def test_async_overloaded_error_before_the_answer_is_retried(make_async, server):
    server.fail(MODEL, stream_error="overloaded_error")
    stream = await make_async().messages.create(
        model=MODEL, max_tokens=20, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    events = [event.type async for event in stream]
    assert events[-1] == "message_stop" and len(server.requests) == 2
