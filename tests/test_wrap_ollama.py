"""aiguard.wrap over the real ollama client, real HTTP to the testing kit's server: drop-in."""

from __future__ import annotations

import asyncio
import gc
import inspect
import socket

import httpx
import ollama
import openai
import pytest
from opentelemetry.trace import SpanKind, StatusCode
from tests.conftest import FAST, MESSAGES

import aiguard
from aiguard import prices
from aiguard._messages import CALL_OVERHEAD, IMAGE_TOKENS, MESSAGE_OVERHEAD
from aiguard._policy import Failure
from aiguard.adapters import _ollama

ABANDONED = "aiguard.stream.abandoned"
DURATION = "gen_ai.client.operation.duration"


@pytest.fixture
def raw(server):
    with ollama.Client(host=server.ollama_url) as client:
        yield client


@pytest.fixture
async def raw_async(server):
    async with ollama.AsyncClient(host=server.ollama_url) as client:
        yield client


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


@pytest.fixture(autouse=True)
def _clean_prices():
    yield
    for model in ("llama3", "phi3"):
        prices.unregister(model, provider="ollama")


def _chat(client, model="llama3", **kw):
    return client.chat(model=model, messages=MESSAGES, **kw)


def _shape(parts):
    return [p.model_dump(exclude={"created_at"}) for p in parts]


def _ended_once(telemetry, name="chat llama3"):
    """The one span of the one guarded call, ended exactly once."""
    spans = telemetry.spans()
    assert [s.name for s in spans] == [name]
    return spans[0]


def _failures(span):
    """The attributes of the call's failed attempts, in order."""
    return [e.attributes for e in span.events if e.name == "aiguard.attempt.failed"]


def _closed_port_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- drop-in ---------------------------------------------------------------------------------------


def test_wrapped_client_is_still_an_ollama_client(make, raw):
    client = make()
    assert isinstance(client, ollama.Client)
    assert client._client is raw._client
    assert "aiguard.wrap" in repr(client)


async def test_wrapped_async_client_is_still_an_async_ollama_client(make_async):
    assert isinstance(make_async(), ollama.AsyncClient)


def test_chat_returns_what_the_client_returns(make, raw):
    guarded, plain = _chat(make()), _chat(raw)
    assert type(guarded) is ollama.ChatResponse
    assert _shape([guarded]) == _shape([plain])


def test_other_methods_pass_through(make, server, telemetry):
    assert make().embeddings(model="nomic", prompt="a").embedding  # deprecated: not guarded
    assert len(server.requests) == 1
    assert telemetry.spans() == []


def test_positional_calls_are_guarded_too(make, server, telemetry):
    server.fail("llama3", status=503)
    client = make()
    assert client.chat("llama3", MESSAGES).message.content
    assert client.generate("llama3", "Why is the sky blue?").response
    assert [r.body.get("prompt") for r in server.requests][-1] == "Why is the sky blue?"
    chat, generate = telemetry.spans()
    assert (chat.name, generate.name) == ("chat llama3", "text_completion llama3")
    assert chat.attributes["aiguard.attempts"] == 2
    assert [f["aiguard.failure.class"] for f in _failures(chat)] == ["outage"]
    assert generate.attributes["aiguard.attempts"] == 1 and _failures(generate) == []


def test_calls_that_do_not_bind_are_the_clients_business(make, telemetry):
    with pytest.raises(TypeError):
        make().chat("llama3", MESSAGES, "unexpected")
    assert telemetry.spans() == []


# -- what the spans say ----------------------------------------------------------------------------


def test_chat_span_follows_the_genai_conventions(make, server, telemetry):
    server.reply("llama3", prompt_tokens=12, completion_tokens=4, finish_reason="length")
    options = {"temperature": 0.2, "top_p": 0.9, "top_k": 40, "num_predict": 64, "seed": 7}
    _chat(make(), options={**options, "stop": ["\n"]}, format="json")
    span = telemetry.span("chat llama3")
    assert span.kind is SpanKind.CLIENT
    a = span.attributes
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "ollama"
    assert a["server.address"] == "127.0.0.1"
    assert a["server.port"] == server.port
    assert a["gen_ai.request.temperature"] == 0.2
    assert a["gen_ai.request.top_p"] == 0.9
    assert a["gen_ai.request.top_k"] == 40
    assert a["gen_ai.request.max_tokens"] == 64
    assert a["gen_ai.request.seed"] == 7
    assert a["gen_ai.request.stop_sequences"] == ("\n",)
    assert a["gen_ai.output.type"] == "json"
    assert "gen_ai.request.stream" not in a
    assert a["gen_ai.response.model"] == "llama3"
    assert a["gen_ai.response.finish_reasons"] == ("length",)
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (12, 4)
    tokens = telemetry.metrics()["gen_ai.client.token.usage"]
    assert {p.attributes["gen_ai.provider.name"] for p in tokens} == {"ollama"}


def test_options_may_be_an_ollama_options_object(make, telemetry):
    _chat(make(), options=ollama.Options(temperature=0.5, num_predict=-1))
    a = telemetry.span("chat llama3").attributes
    assert a["gen_ai.request.temperature"] == 0.5
    assert "gen_ai.request.max_tokens" not in a  # -1: no limit


def test_generate_is_a_text_completion(make, server, telemetry):
    server.reply("llama3", prompt_tokens=9, completion_tokens=3)
    reply = make().generate(model="llama3", prompt="Why is the sky blue?", system="Be brief.")
    assert isinstance(reply, ollama.GenerateResponse) and reply.response
    a = _ended_once(telemetry, "text_completion llama3").attributes
    assert a["gen_ai.operation.name"] == "text_completion"
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (9, 3)
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["aiguard.outcome"] == "ok"


def test_embed_is_guarded(make, server, telemetry):
    server.fail("nomic", status=503)
    result = make().embed(model="nomic", input=["a", "b"], dimensions=4)
    assert len(result.embeddings) == 2 and len(result.embeddings[0]) == 4
    span = _ended_once(telemetry, "embeddings nomic")
    assert [f["aiguard.attempt"] for f in _failures(span)] == [1]
    a = span.attributes
    assert a["aiguard.attempts"] == 2 and "error.type" not in a
    assert a["gen_ai.operation.name"] == "embeddings"
    assert a["gen_ai.embeddings.dimension.count"] == 4
    assert a["gen_ai.usage.input_tokens"] >= 1
    assert "gen_ai.usage.output_tokens" not in a


def test_no_usage_reported_records_none(make, server, telemetry):
    server.reply("llama3", usage=False)
    _chat(make())
    assert "gen_ai.usage.input_tokens" not in telemetry.span("chat llama3").attributes


# -- failures --------------------------------------------------------------------------------------


def test_503_is_retried(make, server, telemetry):
    server.fail("llama3", status=503)
    assert _chat(make()).done
    assert len(server.requests) == 2
    span = _ended_once(telemetry)
    (failed,) = _failures(span)
    assert failed["aiguard.attempt"] == 1 and failed["aiguard.attempt.model"] == "llama3"
    assert failed["error.type"] == "ollama.ResponseError"
    assert failed["aiguard.failure.class"] == "outage"
    assert "error.type" not in span.attributes
    assert span.status.status_code is StatusCode.UNSET
    assert (span.attributes["aiguard.attempts"], span.attributes["aiguard.retries"]) == (2, 1)
    (point,) = telemetry.metrics()[DURATION]
    assert point.count == 1 and "error.type" not in point.attributes


def test_500_falls_back_to_another_model(make, server, telemetry):
    server.fail("llama3", status=500, times=3)
    reply = _chat(make(fallback=["phi3"]))
    assert reply.model == "phi3"
    assert [r.model for r in server.requests] == ["llama3"] * 3 + ["phi3"]
    span = _ended_once(telemetry)
    a = span.attributes
    assert a["aiguard.fallback.used"] is True
    assert a["aiguard.fallback.model"] == "phi3"
    assert (a["gen_ai.request.model"], a["gen_ai.response.model"]) == ("llama3", "phi3")
    assert (a["aiguard.attempts"], a["aiguard.retries"]) == (4, 2)
    assert [f["aiguard.attempt.model"] for f in _failures(span)] == ["llama3"] * 3
    assert "error.type" not in a
    (point,) = telemetry.metrics()[DURATION]
    assert point.count == 1
    assert point.attributes["gen_ai.request.model"] == "llama3"
    assert point.attributes["gen_ai.response.model"] == "phi3"


def test_404_is_raised_at_once(make, server, telemetry):
    server.fail("llama3", status=404)
    with pytest.raises(ollama.ResponseError) as caught:
        _chat(make(fallback=["phi3"]))
    assert caught.value.status_code == 404
    assert len(server.requests) == 1
    span = _ended_once(telemetry)
    assert [f["aiguard.failure.class"] for f in _failures(span)] == ["fatal"]
    assert span.attributes["aiguard.attempts"] == 1
    assert span.attributes["aiguard.fallback.used"] is False
    assert span.attributes["error.type"] == "ollama.ResponseError"
    assert span.status.status_code is StatusCode.ERROR


def test_429_is_a_rate_limit(make, server, telemetry):
    server.fail("llama3", status=429)
    _chat(make())
    span = _ended_once(telemetry)
    assert [f["aiguard.failure.class"] for f in _failures(span)] == ["rate_limit"]
    assert span.attributes["aiguard.attempts"] == 2 and "error.type" not in span.attributes


def test_a_connection_reset_is_retried(make, server, telemetry):
    server.fail("llama3", reset=True)
    assert _chat(make()).done
    assert len(server.requests) == 2
    span = _ended_once(telemetry)
    (failed,) = _failures(span)
    assert failed["error.type"] == "httpx.ReadError"
    assert failed["aiguard.failure.class"] == "outage"
    assert span.attributes["aiguard.attempts"] == 2 and "error.type" not in span.attributes


@pytest.mark.parametrize("stream", [False, True])
def test_a_server_that_is_down_is_an_outage(telemetry, stream):
    # The client turns a refused connection into ConnectionError, but not for a stream.
    expected = httpx.ConnectError if stream else ConnectionError
    with ollama.Client(host=_closed_port_url()) as raw, pytest.raises(expected):
        list(_chat(aiguard.wrap(raw, retry=FAST), stream=stream))
    span = _ended_once(telemetry)
    assert [f["aiguard.failure.class"] for f in _failures(span)] == ["outage"] * 3
    assert [f["aiguard.attempt"] for f in _failures(span)] == [1, 2, 3]
    assert span.attributes["aiguard.attempts"] == 3
    assert span.attributes["error.type"] == ("httpx.ConnectError" if stream else "ConnectionError")


def test_the_policy_timeout_is_not_passed_to_the_client(make, server):
    assert _chat(make(timeout=30)).done  # the methods take no timeout= argument
    assert "timeout" not in server.requests[0].body


@pytest.mark.parametrize(
    ("error", "failure"),
    [
        (ollama.ResponseError("busy", 429), Failure.RATE_LIMIT),
        (ollama.ResponseError("boom", 502), Failure.OUTAGE),
        (ollama.ResponseError("mock stream error: overloaded"), Failure.OUTAGE),
        (ollama.ResponseError("model 'x' not found", 404), Failure.FATAL),
        (
            ollama.ResponseError("the input length exceeds the context length", 400),
            Failure.CONTEXT_WINDOW,
        ),
        (
            ollama.ResponseError("input after truncation exceeds maximum context length", 500),
            Failure.CONTEXT_WINDOW,
        ),
        (ConnectionError("Failed to connect to Ollama"), Failure.OUTAGE),
        (httpx.ReadError("reset"), Failure.OUTAGE),
        (httpx.RemoteProtocolError("cut"), Failure.OUTAGE),
        (httpx.ReadTimeout("slow"), Failure.OUTAGE),
        (httpx.UnsupportedProtocol("ftp://"), Failure.FATAL),
        (ollama.RequestError("must provide a model"), Failure.FATAL),
        (ValueError("bad json"), Failure.FATAL),
    ],
)
def test_classify(error, failure):
    assert _ollama.classify(error) == (failure, None)


def test_the_decorator_classifies_ollama_errors_too():
    from aiguard._classify import classify

    assert classify(ollama.ResponseError("x", 503)) == (Failure.OUTAGE, None)


# -- fallback targets ------------------------------------------------------------------------------


def test_fallback_to_another_ollama_client(raw, server, telemetry):
    server.fail("llama3", status=503, times=3)
    with ollama.Client(host=server.ollama_url) as other:
        target = aiguard.Target(client=aiguard.wrap(other), model="phi3")
        assert _chat(aiguard.wrap(raw, retry=FAST, fallback=[target])).model == "phi3"
    assert [r.model for r in server.requests] == ["llama3"] * 3 + ["phi3"]


def test_fallback_to_another_kind_of_client_is_refused_at_wrap_time(raw, server):
    # Another SDK's client answers chats through the pivot, if it is a sync one.
    others = [
        ollama.AsyncClient(host=server.ollama_url),
        openai.AsyncOpenAI(base_url=server.url, api_key="test"),
    ]
    for other in others:
        with pytest.raises(TypeError, match=r"ollama\.Client can fall back only"):
            aiguard.wrap(raw, fallback=[aiguard.Target(client=other, model="x")])
    asyncio.run(others[1].close())


async def test_an_async_client_falls_back_only_to_async_clients(raw, raw_async):
    with pytest.raises(TypeError, match=r"ollama\.AsyncClient can fall back only"):
        aiguard.wrap(raw_async, fallback=[aiguard.Target(client=raw, model="x")])


# -- cost and budgets ------------------------------------------------------------------------------


def test_a_registered_hourly_price_is_charged_by_compute_time(make, server, telemetry):
    prices.register_local("llama3", usd_per_hour=3600, provider="ollama")  # $1 a second
    server.fail("llama3", delay=0.1, status=None)
    _chat(make())
    a = _ended_once(telemetry).attributes
    assert a["aiguard.cost.basis"] == "compute_time"
    assert 0.1 <= a["aiguard.cost.usd"] < 5
    assert a["aiguard.cost.total_usd"] == a["aiguard.cost.usd"]


def test_an_unpriced_local_model_has_no_cost(make, telemetry):
    _chat(make())
    assert "aiguard.cost.usd" not in telemetry.span("chat llama3").attributes


def test_a_budget_refuses_a_call_whose_worst_case_does_not_fit(make, server):
    prices.register("llama3", input_per_mtok=1_000, output_per_mtok=1_000, provider="ollama")
    # The worst case: ~50 input tokens and the 1,000 num_predict allows, at $0.001 each.
    with pytest.raises(aiguard.BudgetExceeded):
        _chat(make(budget=aiguard.Budget(usd=0.5)), options={"num_predict": 1_000})
    assert server.requests == []
    assert _chat(make(budget=aiguard.Budget(usd=2)), options={"num_predict": 1_000}).done


def test_estimate_counts_text_images_tools_and_the_output_limit():
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return city

    messages = [
        {"role": "system", "content": "Be brief."},
        ollama.Message(
            role="user", content="What is this?", images=[ollama.Image(value=b"\x89PNG")]
        ),
    ]
    inputs, outputs = _ollama.ChatRoute().estimate(
        {"messages": messages, "tools": [get_weather], "options": {"num_predict": 50}}
    )
    text = len("Be brief.") + len("What is this?")
    assert inputs > CALL_OVERHEAD + 2 * MESSAGE_OVERHEAD + text + IMAGE_TOKENS
    assert inputs < CALL_OVERHEAD + 2 * MESSAGE_OVERHEAD + text + IMAGE_TOKENS + 400
    assert outputs == 50
    route = _ollama.GenerateRoute()
    inputs, outputs = route.estimate({"prompt": "abc", "system": "xy", "context": [1, 2, 3]})
    assert (inputs, outputs) == (CALL_OVERHEAD + 2 * MESSAGE_OVERHEAD + 5 + 3, None)
    assert _ollama.EmbedRoute().estimate({"input": ["ab", "cde"]}) == (5, 0)


# -- streams ---------------------------------------------------------------------------------------


def test_a_stream_yields_exactly_what_the_client_yields(make, raw, server, telemetry):
    server.reply("llama3", prompt_tokens=12, completion_tokens=4)
    plain = list(_chat(raw, stream=True))
    stream = _chat(make(), stream=True)
    assert inspect.isgenerator(stream)
    parts = list(stream)
    assert all(isinstance(p, ollama.ChatResponse) for p in parts)
    assert _shape(parts) == _shape(plain)
    assert server.requests[-1].body == server.requests[0].body  # nothing added to the request
    a = _ended_once(telemetry).attributes
    assert a["gen_ai.request.stream"] is True
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (12, 4)
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["gen_ai.response.model"] == "llama3"
    assert a["aiguard.stream.chunks"] == len(parts)
    assert a["gen_ai.response.time_to_first_chunk"] > 0
    assert ABANDONED not in a and a["aiguard.outcome"] == "ok"
    points = telemetry.metrics()
    assert [p.count for p in points["gen_ai.client.operation.time_to_first_chunk"]] == [1]
    per_chunk = points["gen_ai.client.operation.time_per_output_chunk"]
    assert sum(p.count for p in per_chunk) == len(parts) - 1


def test_a_generate_stream_is_guarded(make, telemetry):
    parts = list(make().generate(model="llama3", prompt="Hi", stream=True))
    assert parts[-1].done and "".join(p.response for p in parts) == "Hello from llama3."
    span = _ended_once(telemetry, "text_completion llama3")
    assert span.attributes["gen_ai.usage.output_tokens"] > 0


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 503},
        {"status": 429},
        {"reset": True},
        {"cut_after": 0},  # headers sent, then the connection dropped before any line
        {"stream_error": "overloaded"},  # an error line before any other
    ],
)
def test_a_stream_failing_before_its_first_chunk_is_retried(make, server, telemetry, fault):
    server.fail("llama3", **fault)
    parts = list(_chat(make(), stream=True))
    assert parts[-1].done
    assert len(server.requests) == 2
    span = _ended_once(telemetry)
    (failed,) = _failures(span)
    assert "error.type" in failed and "error.type" not in span.attributes
    assert (span.attributes["aiguard.attempts"], span.attributes["aiguard.retries"]) == (2, 1)


def test_a_stream_cut_midway_raises_to_the_user_and_is_recorded(make, server, telemetry):
    server.fail("llama3", cut_after=2)
    received = []
    with pytest.raises(httpx.TransportError):
        for part in _chat(make(fallback=["phi3"]), stream=True):
            received.append(part)
    assert len(received) == 2
    assert len(server.requests) == 1  # never switched to another model mid-answer
    span = _ended_once(telemetry)
    assert span.attributes["error.type"] == "httpx.ReadError"
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["aiguard.outcome"] == "error"
    assert span.attributes["aiguard.attempts"] == 1
    assert span.attributes["aiguard.fallback.used"] is False


def test_an_error_line_mid_stream_raises_to_the_user(make, server, telemetry):
    server.fail("llama3", cut_after=1, stream_error="overloaded")
    with pytest.raises(ollama.ResponseError):
        list(_chat(make(), stream=True))
    span = _ended_once(telemetry)
    assert span.attributes["error.type"] == "ollama.ResponseError"
    assert span.attributes["aiguard.attempts"] == 1


def test_a_stream_without_its_done_line_is_recorded_as_truncated(make, server, telemetry):
    server.fail("llama3", truncate=True)
    parts = list(_chat(make(), stream=True))
    assert parts and not any(p.done for p in parts)
    span = _ended_once(telemetry)
    assert span.attributes["error.type"].endswith("StreamTruncated")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["aiguard.outcome"] == "error"
    assert span.attributes["gen_ai.response.model"] == "llama3"


def test_truncation_can_raise_after_the_chunks_arrived(make, server):
    server.fail("llama3", truncate=True)
    received = []
    with pytest.raises(aiguard.StreamTruncated):
        for part in _chat(make(raise_on_truncation=True), stream=True):
            received.append(part)
    assert received


def test_break_then_garbage_collection_marks_the_stream_abandoned(make, telemetry):
    stream = _chat(make(), stream=True)
    for _ in stream:
        break
    assert telemetry.spans() == []  # still open while referenced
    del stream
    gc.collect()
    a = _ended_once(telemetry).attributes
    assert a[ABANDONED] is True
    assert a["aiguard.outcome"] == "abandoned"


def test_close_ends_the_stream_once(make, telemetry):
    stream = _chat(make(), stream=True)
    next(stream)
    stream.close()
    stream.close()
    with pytest.raises(StopIteration):
        next(stream)
    assert _ended_once(telemetry).attributes[ABANDONED] is True


def test_a_stream_is_charged_by_compute_time(make, telemetry):
    prices.register_local("llama3", usd_per_hour=3600, provider="ollama")
    list(_chat(make(), stream=True))
    a = _ended_once(telemetry).attributes
    assert a["aiguard.cost.basis"] == "compute_time"
    assert a["aiguard.cost.usd"] > 0


# -- async -----------------------------------------------------------------------------------------


async def test_async_calls_are_guarded(make_async, server, telemetry):
    server.fail("llama3", status=503)
    client = make_async()
    reply = await _chat(client)
    assert isinstance(reply, ollama.ChatResponse)
    assert len(server.requests) == 2
    assert (await client.generate("llama3", "Hi")).response  # positional, as often written
    assert (await client.embed(model="nomic", input="x")).embeddings
    spans = telemetry.spans()
    assert [s.name for s in spans] == ["chat llama3", "text_completion llama3", "embeddings nomic"]
    assert [s.attributes["aiguard.attempts"] for s in spans] == [2, 1, 1]
    assert [f["aiguard.failure.class"] for f in _failures(spans[0])] == ["outage"]


async def test_async_fallback_to_another_model(make_async, server):
    server.fail("llama3", status=500, times=3)
    assert (await _chat(make_async(fallback=["phi3"]))).model == "phi3"


async def test_async_stream_yields_what_the_client_yields(make_async, raw_async, telemetry):
    plain = [p async for p in await _chat(raw_async, stream=True)]
    stream = await _chat(make_async(), stream=True)
    assert inspect.isasyncgen(stream)
    parts = [p async for p in stream]
    assert _shape(parts) == _shape(plain)
    a = _ended_once(telemetry).attributes
    assert a["gen_ai.usage.output_tokens"] > 0
    assert a["aiguard.outcome"] == "ok"


async def test_async_stream_retried_before_first_chunk_and_raises_after(
    make_async, server, telemetry
):
    server.fail("llama3", reset=True)
    parts = [p async for p in await _chat(make_async(), stream=True)]
    assert parts[-1].done and len(server.requests) == 2
    span = _ended_once(telemetry)
    assert [f["error.type"] for f in _failures(span)] == ["httpx.ReadError"]
    assert span.attributes["aiguard.retries"] == 1 and "error.type" not in span.attributes
    telemetry.clear()
    server.fail("llama3", cut_after=2)
    with pytest.raises(httpx.TransportError):
        async for _ in await _chat(make_async(), stream=True):
            pass
    span = _ended_once(telemetry)
    assert span.attributes["error.type"] == "httpx.ReadError"
    assert span.attributes["aiguard.attempts"] == 1


async def test_async_truncation_is_recorded(make_async, server, telemetry):
    server.fail("llama3", truncate=True)
    parts = [p async for p in await _chat(make_async(), stream=True)]
    assert parts and not parts[-1].done
    span = _ended_once(telemetry)
    assert span.attributes["error.type"].endswith("StreamTruncated")
    assert span.status.status_code is StatusCode.ERROR


async def test_async_break_then_garbage_collection_marks_the_stream_abandoned(
    make_async, telemetry
):
    stream = await _chat(make_async(), stream=True)
    async for _ in stream:
        break
    del stream
    gc.collect()
    await asyncio.sleep(0)  # the loop closes the abandoned generator
    a = _ended_once(telemetry).attributes
    assert a[ABANDONED] is True and a["aiguard.outcome"] == "abandoned"


async def test_async_stream_aclose_ends_once(make_async, telemetry):
    stream = await _chat(make_async(), stream=True)
    await stream.__anext__()
    await stream.aclose()  # an async generator has aclose(), no close()
    await stream.close()
    assert _ended_once(telemetry).attributes[ABANDONED] is True
