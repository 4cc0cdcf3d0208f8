"""What only the Gemini adapter has, over the real google-genai SDK and the testing kit's wire.

The behaviours every adapter shares (retry, fallback, a stream retried, checks, capture) are in
``tests/test_adapter_contract.py``'s ``gemini`` row.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from typing import Any

import pydantic
import pytest
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price
from google import genai
from google.genai import errors, types
from opentelemetry.trace import StatusCode
from tests.conftest import API_KEY

import aiguard
from aiguard._policy import Failure
from aiguard.adapters import _gemini, _gemini_send
from aiguard.adapters._gemini_parts import gemini_messages
from aiguard.testing import MockServer

MODEL = "gemini-2.0-flash"
FAST = aiguard.Retry(attempts=2, wait_initial=0.001, wait_max=0.01, wait_jitter=0.0)
HELLO = [{"role": "user", "parts": [{"text": "Hello?"}]}]


def _client(server: MockServer, **options: Any) -> genai.Client:
    return genai.Client(api_key=API_KEY, http_options={"base_url": server.gemini_url, **options})


def _failed(span: Any) -> list[Any]:
    return [e.attributes for e in span.events if e.name == "aiguard.attempt.failed"]


# -- the wrapped client is the client -----------------------------------------------------------


def test_the_wrapped_client_looks_and_behaves_like_the_client(server):
    raw = _client(server)
    client = aiguard.wrap(raw, retry=FAST)
    assert isinstance(client, genai.Client)
    assert isinstance(client.aio, genai.client.AsyncClient)
    assert client.vertexai is False and client.files is raw.files  # passed through
    for name in ("generate_content", "generate_content_stream", "embed_content"):
        ours, theirs = getattr(client.models, name), getattr(raw.models, name)
        assert inspect.signature(ours) == inspect.signature(theirs)
        assert inspect.iscoroutinefunction(getattr(client.aio.models, name))
    answer = client.models.generate_content(model=MODEL, contents="Hello?")
    assert isinstance(answer, types.GenerateContentResponse)
    assert answer.text == f"Hello from {MODEL}."


def test_chat_sessions_send_guarded_calls(server, telemetry):
    def converse(chat: Any) -> list[Any]:
        assert chat.send_message("Hello?").text == f"Hello from {MODEL}."
        assert all(chunk.text for chunk in chat.send_message_stream("Again?"))
        return [content.model_dump() for content in chat.get_history()]

    raw = _client(server)  # kept: a collected client closes its connections
    unguarded = converse(raw.chats.create(model=MODEL))
    server.reset()
    client = aiguard.wrap(_client(server), retry=FAST)
    server.fail(MODEL, status=503)
    chat = client.chats.create(model=MODEL)
    assert isinstance(chat, genai.chats.Chat)
    assert converse(chat) == unguarded  # the SDK's own history, as without aiguard

    async def run() -> Any:
        session = client.aio.chats.create(model=MODEL)
        return (await session.send_message("Hello?")).text

    assert asyncio.run(run()) == f"Hello from {MODEL}."
    spans = telemetry.spans(f"chat {MODEL}")
    assert [s.attributes["aiguard.attempts"] for s in spans] == [2, 1, 1]


def test_the_sdk_error_reaches_the_caller_unchanged(server, telemetry):
    server.fail(MODEL, status=400)
    with pytest.raises(errors.ClientError) as caught:
        aiguard.wrap(_client(server), retry=FAST).models.generate_content(
            model=MODEL, contents=HELLO
        )
    assert caught.value.code == 400 and caught.value.status == "INVALID_ARGUMENT"
    assert len(server.requests) == 1  # a bad request is never retried
    span = telemetry.span(f"chat {MODEL}")
    assert span.attributes["error.type"] == "google.genai.errors.ClientError"


# -- errors -------------------------------------------------------------------------------------


def test_resource_exhausted_waits_the_retry_delay_gemini_gives(server, telemetry):
    server.fail(MODEL, status=429, headers={"retry-after": "0.05"})  # sent as RetryInfo
    aiguard.wrap(_client(server), retry=FAST).models.generate_content(model=MODEL, contents=HELLO)
    span = telemetry.span(f"chat {MODEL}")
    [failed] = _failed(span)
    assert failed["aiguard.failure.class"] == "rate_limit"
    [wait] = [e.attributes for e in span.events if e.name == "aiguard.retry"]
    assert wait["aiguard.retry.wait_s"] == pytest.approx(0.05)
    gap = server.requests[1].at - server.requests[0].at
    assert gap >= 0.05


@pytest.mark.parametrize(
    ("code", "status", "message", "expected"),
    [
        (429, "RESOURCE_EXHAUSTED", "Quota exceeded", Failure.RATE_LIMIT),
        (503, "UNAVAILABLE", "The model is overloaded", Failure.OUTAGE),
        (500, "INTERNAL", "An internal error has occurred", Failure.OUTAGE),
        (504, "DEADLINE_EXCEEDED", "Deadline exceeded", Failure.OUTAGE),
        (
            400,
            "INVALID_ARGUMENT",
            "The input token count (1048577) exceeds the maximum number of tokens allowed "
            "(1048576).",
            Failure.CONTEXT_WINDOW,
        ),
        (
            400,
            "INVALID_ARGUMENT",
            "Unable to submit request because the input token count is 40000 but model only "
            "supports up to 32768.",
            Failure.CONTEXT_WINDOW,
        ),
        (400, "INVALID_ARGUMENT", "Invalid JSON payload", Failure.FATAL),
        (403, "PERMISSION_DENIED", "API key not valid", Failure.FATAL),
    ],
)
def test_errors_are_classified(code, status, message, expected):
    body = {"error": {"code": code, "message": message, "status": status}}
    kind = errors.ClientError if code < 500 else errors.ServerError
    assert _gemini.classify(kind(code, body)) == (expected, None)


def test_the_retry_delay_is_read_from_retry_info():
    details = [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"},
    ]
    body = {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}
    body["error"]["details"] = details
    assert _gemini.classify(errors.ClientError(429, body)) == (Failure.RATE_LIMIT, 37.0)
    assert _gemini.retry_delay({"error": {"details": [{"@type": "x", "retryDelay": "1s"}]}}) is None
    assert (
        _gemini.retry_delay({"error": {"details": [{**details[1], "retryDelay": "soon"}]}}) is None
    )


def test_a_decorated_function_retries_geminis_transient_errors(server):
    client = _client(server)
    server.fail(MODEL, status=503)

    @aiguard.guard(retry=FAST)
    def ask() -> str | None:
        return client.models.generate_content(model=MODEL, contents=HELLO).text

    assert ask() == f"Hello from {MODEL}."
    assert len(server.requests) == 2


# -- the SDK's own retries -----------------------------------------------------------------------


def test_the_sdk_never_retries_a_guarded_attempt(server, telemetry):
    retrying = {"retry_options": {"attempts": 5, "initial_delay": 0.001, "max_delay": 0.001}}
    client = aiguard.wrap(_client(server, **retrying), retry=FAST)
    server.fail(MODEL, status=503, times=2)
    with pytest.raises(errors.ServerError):
        client.models.generate_content(model=MODEL, contents=HELLO)
    assert len(server.requests) == 2  # aiguard's two attempts, one request each


def test_without_a_retry_policy_the_clients_retry_options_apply(server, telemetry):
    retrying = {"attempts": 3, "initial_delay": 0.001, "max_delay": 0.002, "jitter": 0}
    client = aiguard.wrap(_client(server, retry_options=retrying))
    server.fail(MODEL, status=503, times=3)
    with pytest.raises(errors.ServerError):
        client.models.generate_content(model=MODEL, contents=HELLO)
    assert len(server.requests) == 3
    assert telemetry.span(f"chat {MODEL}").attributes["aiguard.attempts"] == 3


def test_without_a_retry_policy_the_requests_retry_options_apply(server, telemetry):
    client = aiguard.wrap(_client(server, retry_options={"attempts": 5}))
    retrying = {"attempts": 2, "initial_delay": 0.001, "max_delay": 0.002, "jitter": 0}
    config = types.GenerateContentConfig(
        http_options=types.HttpOptions(retry_options=types.HttpRetryOptions(**retrying))
    )
    server.fail(MODEL, status=503, times=3)
    with pytest.raises(errors.ServerError):
        client.models.generate_content(model=MODEL, contents=HELLO, config=config)
    assert len(server.requests) == 2


def test_a_request_goes_as_written_when_the_sdk_would_not_retry_it(server):
    # No retry_options anywhere and no deadline: no config to convert (it costs the SDK more
    # than the rest of the call).
    view = _gemini_send._Client(_client(server), aiguard.Policy(), None)
    request = {"model": MODEL, "contents": HELLO}
    assert _gemini_send._prepared(view, dict(request)) == request
    retrying = _gemini_send._Client(
        _client(server, retry_options={"attempts": 3}), aiguard.Policy(), None
    )
    config = _gemini_send._prepared(retrying, dict(request))["config"]
    assert config["http_options"].retry_options.attempts == 1


def test_the_callers_config_and_http_options_are_kept_and_never_changed(server):
    config = types.GenerateContentConfig(
        temperature=0.2,
        http_options=types.HttpOptions(headers={"x-team": "search"}, timeout=30_000),
    )
    before = config.model_dump()
    as_dict = {"max_output_tokens": 7, "http_options": {"headers": {"x-team": "ads"}}}
    client = aiguard.wrap(_client(server), retry=FAST, timeout=5.0)
    client.models.generate_content(model=MODEL, contents=HELLO, config=config)
    client.models.generate_content(model=MODEL, contents=HELLO, config=as_dict)
    assert config.model_dump() == before
    assert as_dict == {"max_output_tokens": 7, "http_options": {"headers": {"x-team": "ads"}}}
    first, second = server.requests
    assert first.headers["x-team"] == "search" and second.headers["x-team"] == "ads"
    assert first.body["generationConfig"] == {"temperature": 0.2}
    assert second.body["generationConfig"] == {"maxOutputTokens": 7}
    # The SDK tells the server how long it will wait: the deadline's 5 s, not the caller's 30 s.
    assert float(first.headers["x-server-timeout"]) <= 5


def test_a_deadline_cuts_a_slow_answer(server):
    server.fail(MODEL, delay=2.0)
    client = aiguard.wrap(_client(server), retry=FAST, timeout=0.3, fallback=["backup"])
    started = time.monotonic()
    with pytest.raises(aiguard.DeadlineExceeded) as caught:
        client.models.generate_content(model=MODEL, contents=HELLO)
    assert time.monotonic() - started < 1.5  # the attempt's own timeout was the time left
    assert type(caught.value.__cause__).__name__ == "ReadTimeout"
    assert [r.model for r in server.requests] == [MODEL]


# -- usage, cost, attributes --------------------------------------------------------------------


def test_cached_and_thinking_tokens_are_counted_in_the_totals_and_priced(server, telemetry):
    server.reply(
        MODEL, prompt_tokens=1200, cached_tokens=1000, completion_tokens=50, reasoning_tokens=30
    )
    config = {"temperature": 0.5, "top_p": 0.9, "max_output_tokens": 100, "stop_sequences": ["."]}
    aiguard.wrap(_client(server)).models.generate_content(
        model=MODEL, contents=HELLO, config=config
    )
    a = telemetry.span(f"chat {MODEL}").attributes
    assert a["gen_ai.usage.input_tokens"] == 1200  # Gemini's prompt count includes the cache
    assert a["gen_ai.usage.cache_read.input_tokens"] == 1000
    assert a["gen_ai.usage.output_tokens"] == 50  # 20 candidates' tokens + 30 thoughts
    assert a["gen_ai.usage.reasoning.output_tokens"] == 30
    price = calc_price(
        PriceUsage(input_tokens=1200, cache_read_tokens=1000, output_tokens=50),
        model_ref=MODEL,
        provider_id="google",
    ).total_price
    assert a["aiguard.cost.usd"] == pytest.approx(float(price))
    assert a["gen_ai.provider.name"] == "gcp.gen_ai"
    assert a["gen_ai.request.temperature"] == 0.5 and a["gen_ai.request.top_p"] == 0.9
    assert a["gen_ai.request.max_tokens"] == 100
    assert list(a["gen_ai.request.stop_sequences"]) == ["."]
    assert list(a["gen_ai.response.finish_reasons"]) == ["stop"]
    assert a["gen_ai.response.model"] == MODEL and a["gen_ai.response.id"]


def test_usage_metadata_is_read_whole():
    metadata = types.GenerateContentResponseUsageMetadata(
        prompt_token_count=100,
        cached_content_token_count=60,
        tool_use_prompt_token_count=7,
        candidates_token_count=20,
        thoughts_token_count=12,
    )
    usage = _gemini.usage_of(metadata)
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens) == (107, 32)
    assert (usage.cache_read_tokens, usage.reasoning_tokens) == (60, 12)
    assert _gemini.usage_of(None) is None


def test_a_blocked_prompt_says_why_and_ends_a_stream():
    blocked = types.GenerateContentResponse(
        prompt_feedback=types.GenerateContentResponsePromptFeedback(
            block_reason=types.BlockedReason.SAFETY
        )
    )
    assert _gemini.response_attributes(blocked)["gen_ai.response.finish_reasons"] == ["safety"]
    reader = _gemini.StreamReader()
    reader.chunk(blocked)
    assert reader.complete


def test_a_vertex_ai_client_is_gcp_vertex_ai(server, telemetry):
    raw = genai.Client(vertexai=True, api_key=API_KEY, http_options={"base_url": server.gemini_url})
    aiguard.wrap(raw).models.generate_content(model=MODEL, contents=HELLO)
    a = telemetry.span(f"chat {MODEL}").attributes
    assert a["gen_ai.provider.name"] == "gcp.vertex_ai"
    assert a["aiguard.cost.usd"] > 0


def test_embeddings(server, telemetry):
    client = aiguard.wrap(_client(server))
    answer = client.models.embed_content(
        model="text-embedding-004", contents=["a", "b"], config={"output_dimensionality": 4}
    )
    assert [len(e.values or ()) for e in answer.embeddings or ()] == [4, 4]
    a = telemetry.span("embeddings text-embedding-004").attributes
    assert a["gen_ai.embeddings.dimension.count"] == 4
    assert a["gen_ai.provider.name"] == "gcp.gen_ai"


def test_vertex_ai_embeddings_count_their_tokens(server, telemetry):
    raw = genai.Client(vertexai=True, api_key=API_KEY, http_options={"base_url": server.gemini_url})
    answer = aiguard.wrap(raw).models.embed_content(
        model="text-embedding-005", contents=["sixteen chars..", "and eight"]
    )
    assert len(answer.embeddings or ()) == 2
    assert server.requests[0].path.endswith("text-embedding-005:predict")
    a = telemetry.span("embeddings text-embedding-005").attributes
    assert a["gen_ai.provider.name"] == "gcp.vertex_ai"
    assert a["gen_ai.usage.input_tokens"] == 3 + 2  # the kit's count: a token per 4 characters


# -- streams: every way one ends ----------------------------------------------------------------


def _stream(client: Any, **kwargs: Any) -> Any:
    return client.models.generate_content_stream(model=MODEL, contents=HELLO, **kwargs)


def test_a_stream_read_to_the_end(server, telemetry):
    server.reply(MODEL, prompt_tokens=10, completion_tokens=6)
    chunks = list(_stream(aiguard.wrap(_client(server))))
    assert "".join(c.text or "" for c in chunks) == f"Hello from {MODEL}."
    a = telemetry.span(f"chat {MODEL}").attributes
    assert a["aiguard.outcome"] == "ok" and a["aiguard.stream.chunks"] == 3
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (10, 6)
    assert list(a["gen_ai.response.finish_reasons"]) == ["stop"]


def test_a_stream_cut_mid_answer_reaches_the_user_and_is_not_retried(server, telemetry):
    server.fail(MODEL, cut_after=1)
    received = []
    with pytest.raises(Exception) as caught:
        for chunk in _stream(aiguard.wrap(_client(server), retry=FAST, fallback=["other"])):
            received.append(chunk)
    assert type(caught.value).__name__ == "ReadError"  # the SDK's HTTP library's, as unwrapped
    assert len(received) == 1 and len(server.requests) == 1
    span = telemetry.span(f"chat {MODEL}")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["aiguard.outcome"] == "error"


def test_an_error_event_mid_stream_reaches_the_user(server, telemetry):
    server.fail(MODEL, cut_after=1, stream_error="UNAVAILABLE")
    with pytest.raises(errors.ServerError):
        list(_stream(aiguard.wrap(_client(server), retry=FAST)))
    span = telemetry.span(f"chat {MODEL}")
    assert span.attributes["error.type"] == "google.genai.errors.ServerError"
    assert span.attributes["aiguard.attempts"] == 1


def test_an_error_event_before_the_first_chunk_is_retried(server, telemetry):
    server.fail(MODEL, stream_error="RESOURCE_EXHAUSTED")
    assert list(_stream(aiguard.wrap(_client(server), retry=FAST)))
    [failed] = _failed(telemetry.span(f"chat {MODEL}"))
    assert failed["aiguard.failure.class"] == "rate_limit"


def test_a_truncated_stream_is_an_error(server, telemetry):
    server.fail(MODEL, truncate=True)
    with pytest.raises(aiguard.StreamTruncated):
        list(_stream(aiguard.wrap(_client(server), raise_on_truncation=True)))
    span = telemetry.span(f"chat {MODEL}")
    assert span.attributes["error.type"] == "aiguard.StreamTruncated"
    assert "gen_ai.usage.output_tokens" not in span.attributes  # never said


def test_an_empty_stream_is_retried(server, telemetry):
    server.fail(MODEL, empty=True)
    assert list(_stream(aiguard.wrap(_client(server), retry=FAST)))
    [failed] = _failed(telemetry.span(f"chat {MODEL}"))
    assert failed["error.type"] == "aiguard.StreamTruncated"


def test_a_stream_closed_early_is_abandoned(server, telemetry):
    stream = _stream(aiguard.wrap(_client(server)))
    next(stream)
    stream.close()
    assert telemetry.span(f"chat {MODEL}").attributes["aiguard.outcome"] == "abandoned"


def test_an_async_stream_through_client_aio(server, telemetry):
    client = aiguard.wrap(_client(server), retry=FAST)
    server.fail(MODEL, status=503)

    async def run() -> list[Any]:
        stream = await client.aio.models.generate_content_stream(model=MODEL, contents=HELLO)
        return [chunk async for chunk in stream]

    assert len(asyncio.run(run())) == 3
    a = telemetry.span(f"chat {MODEL}").attributes
    assert (a["aiguard.attempts"], a["aiguard.outcome"]) == (2, "ok")


# -- output validation ---------------------------------------------------------------------------


class City(pydantic.BaseModel):
    city: str


@pytest.mark.parametrize("contents", ["Capital of France?", HELLO, [types.Part(text="Hi")]])
def test_a_wrong_answer_is_reasked_in_geminis_contents(server, contents):
    server.answer(MODEL, "Paris, I think", '{"city": "Paris"}')
    client = aiguard.wrap(_client(server), output=City)
    reply = client.models.generate_content(model=MODEL, contents=contents)
    assert reply.text == '{"city": "Paris"}'
    again = server.requests[1].body["contents"]
    assert again[-2] == {"role": "model", "parts": [{"text": "Paris, I think"}]}
    assert again[-1]["role"] == "user"
    assert "did not match the required format" in again[-1]["parts"][0]["text"]
    assert again[:-2] == server.requests[0].body["contents"]


# -- messages, for checks and capture -----------------------------------------------------------


def test_system_instruction_and_tool_calls_are_structured_messages():
    contents = [
        "What is the weather in Paris?",
        types.Content(
            role="model",
            parts=[
                types.Part(
                    function_call=types.FunctionCall(
                        id="c1", name="weather", args={"city": "Paris"}
                    )
                )
            ],
        ),
        {
            "role": "user",
            "parts": [
                {"function_response": {"id": "c1", "name": "weather", "response": {"t": 21}}}
            ],
        },
    ]
    messages = gemini_messages(contents, "Answer briefly.")
    assert [(m.role, m.instructions) for m in messages] == [
        ("system", True),
        ("user", False),
        ("assistant", False),
        ("tool", False),
    ]
    call = json.loads(messages[2].parts[0].content)
    assert call == {"id": "c1", "name": "weather", "arguments": {"city": "Paris"}}
    [answer] = messages[3].parts
    assert (answer.type, answer.id, json.loads(answer.content)) == (
        "tool_call_response",
        "c1",
        {"t": 21},
    )


def test_a_refusing_check_reads_the_system_instruction(server):
    client = aiguard.wrap(_client(server), checks=[aiguard.checks.NoSecrets()])
    leaked = {"system_instruction": "the key is sk-proj-" + "x1" * 24}
    with pytest.raises(aiguard.CheckFailed):
        client.models.generate_content(model=MODEL, contents=HELLO, config=leaked)
    assert server.requests == []


# -- zero-code instrumentation -------------------------------------------------------------------


@pytest.fixture
def instrumented():
    yield aiguard.instrument
    aiguard.uninstrument()


def test_instrument_guards_gemini_clients(server, telemetry, instrumented):
    instrumented(aiguard.Policy(retry=FAST))
    client = _client(server)
    server.fail(MODEL, status=503)
    client.models.generate_content(model=MODEL, contents=HELLO)

    async def run() -> Any:
        return await client.aio.models.embed_content(model="text-embedding-004", contents="a")

    asyncio.run(run())
    a = telemetry.span(f"chat {MODEL}").attributes
    assert (a["aiguard.attempts"], a["gen_ai.provider.name"]) == (2, "gcp.gen_ai")
    assert telemetry.span("embeddings text-embedding-004")
    aiguard.uninstrument()
    assert not hasattr(genai.models.Models.generate_content, "__wrapped__")
