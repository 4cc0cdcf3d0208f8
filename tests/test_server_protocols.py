"""The testing kit's server speaks Anthropic and Ollama too, as their real SDKs see it."""

from __future__ import annotations

import json

import httpx2
import openai
import pytest

from aiguard.testing import Fault, MockServer

anthropic = pytest.importorskip("anthropic")
ollama = pytest.importorskip("ollama")
httpx = pytest.importorskip("httpx")  # what the ollama client is built on

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
WORDS = "one two three four five six seven eight nine"


@pytest.fixture
def claude(server: MockServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.anthropic_url, api_key="sk-ant-k", max_retries=0)


@pytest.fixture
def local(server: MockServer) -> ollama.Client:
    return ollama.Client(host=server.ollama_url)


def ask(client: anthropic.Anthropic, **kwargs: object) -> object:
    return client.messages.create(model="claude-x", max_tokens=64, messages=MESSAGES, **kwargs)


# -- Anthropic Messages ------------------------------------------------------------------------


def test_anthropic_message_has_anthropics_shape(claude, server):
    message = ask(claude)
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.model == "claude-x"
    assert [(b.type, b.text) for b in message.content] == [("text", "Hello from claude-x.")]
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert [r.path for r in server.requests_for("claude-x")] == ["/v1/messages"]
    assert server.requests[0].body["max_tokens"] == 64


def test_anthropic_input_tokens_leave_out_cache_reads_and_writes(claude, server):
    server.reply(
        "claude-x",
        prompt_tokens=1200,
        cached_tokens=1000,
        cache_write_tokens=150,
        completion_tokens=7,
    )
    usage = ask(claude).usage
    assert usage.input_tokens == 50
    assert usage.cache_read_input_tokens == 1000
    assert usage.cache_creation_input_tokens == 150
    assert usage.output_tokens == 7


def test_anthropic_stop_reason_is_mapped_from_the_replys_finish_reason(claude, server):
    server.reply("claude-x", finish_reason="length")
    assert ask(claude).stop_reason == "max_tokens"


def test_anthropic_stream_sends_the_events_in_anthropics_order(claude, server):
    server.reply("claude-x", content=WORDS, prompt_tokens=40, completion_tokens=9)
    events = list(ask(claude, stream=True))
    kinds = [e.type for e in events]
    deltas = len(WORDS.split())
    assert kinds == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0].message.usage.input_tokens == 40
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == WORDS
    assert events[-2].delta.stop_reason == "end_turn"
    assert events[-2].usage.output_tokens == 9


def test_anthropic_stream_helper_builds_the_final_message_with_cache_usage(claude, server):
    server.reply("claude-x", content=WORDS, prompt_tokens=500, cached_tokens=400)
    with claude.messages.stream(model="claude-x", max_tokens=64, messages=MESSAGES) as stream:
        assert "".join(stream.text_stream) == WORDS
        final = stream.get_final_message()
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == 100 and final.usage.cache_read_input_tokens == 400


def test_anthropic_stream_on_the_wire_is_named_events_with_pings(server):
    server.reply("claude-x", content=WORDS)
    body = {"model": "claude-x", "max_tokens": 8, "messages": MESSAGES, "stream": True}
    response = httpx2.post(f"{server.anthropic_url}/v1/messages", json=body)
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["request-id"].startswith("req_")
    frames = response.text.split("\n\n")
    assert frames[-1] == ""  # every event ends with a blank line
    for frame in frames[:-1]:
        event, data = frame.split("\n")
        name = event.removeprefix("event: ")
        assert json.loads(data.removeprefix("data: "))["type"] == name
    assert response.text.count("event: ping\n") >= 2


@pytest.mark.parametrize(
    ("status", "error", "kind"),
    [
        (400, "BadRequestError", "invalid_request_error"),
        (429, "RateLimitError", "rate_limit_error"),
        (500, "InternalServerError", "api_error"),
        (529, "OverloadedError", "overloaded_error"),
    ],
)
def test_anthropic_error_status_becomes_the_sdks_exception(claude, server, status, error, kind):
    server.fail("claude-x", status=status, headers={"retry-after": "3"})
    with pytest.raises(getattr(anthropic, error)) as info:
        ask(claude)
    assert info.value.status_code == status
    assert info.value.type == kind
    assert info.value.body["type"] == "error"
    assert info.value.response.headers["retry-after"] == "3"


def test_anthropic_overloaded_is_an_internal_server_error(claude, server):
    server.fail("claude-x", status=529)
    with pytest.raises(anthropic.InternalServerError):
        ask(claude)


def test_anthropic_fault_code_names_the_error_type(claude, server):
    server.fail("claude-x", status=400, code="billing_error")
    with pytest.raises(anthropic.BadRequestError) as info:
        ask(claude)
    assert info.value.type == "billing_error"


def test_anthropic_reset_is_a_connection_error(claude, server):
    server.fail("claude-x", reset=True)
    with pytest.raises(anthropic.APIConnectionError):
        ask(claude)


def test_anthropic_stream_cut_midway_raises_while_iterating(claude, server):
    server.reply("claude-x", content=WORDS)
    server.fail("claude-x", cut_after=2)
    kinds = []
    # The SDK lets the transport's error through: not wrapped in anthropic.APIConnectionError.
    with pytest.raises(httpx2.TransportError):
        for event in ask(claude, stream=True):
            kinds.append(event.type)
    assert kinds == ["message_start", "content_block_start", *["content_block_delta"] * 2]


def test_anthropic_stream_error_event_raises_with_its_type(claude, server):
    server.fail("claude-x", stream_error="overloaded_error", cut_after=1)
    kinds = []
    with pytest.raises(anthropic.APIStatusError) as info:
        for event in ask(claude, stream=True):
            kinds.append(event.type)
    # The HTTP status was 200, so the SDK picks no status-specific class.
    assert info.value.type == "overloaded_error" and info.value.status_code == 200
    assert kinds == ["message_start", "content_block_start", "content_block_delta"]


def test_anthropic_stream_error_without_cut_after_comes_before_any_text(claude, server):
    server.fail("claude-x", stream_error="api_error")
    kinds = []
    with pytest.raises(anthropic.APIStatusError):
        for event in ask(claude, stream=True):
            kinds.append(event.type)
    assert kinds == ["message_start", "content_block_start"]


def test_anthropic_truncated_stream_ends_without_stop(claude, server):
    server.fail("claude-x", truncate=True)
    events = list(ask(claude, stream=True))
    assert events[-1].type == "content_block_stop"
    assert not {"message_delta", "message_stop"} & {e.type for e in events}


def test_anthropic_truncated_stream_helper_has_no_stop_reason(claude, server):
    server.fail("claude-x", truncate=True)
    with claude.messages.stream(model="claude-x", max_tokens=64, messages=MESSAGES) as stream:
        final = stream.get_final_message()
    assert final.stop_reason is None
    assert final.content[0].text == "Hello from claude-x."


async def test_anthropic_async_stream(server):
    client = anthropic.AsyncAnthropic(base_url=server.anthropic_url, api_key="k", max_retries=0)
    stream = await client.messages.create(
        model="claude-x", max_tokens=64, messages=MESSAGES, stream=True
    )
    kinds = [event.type async for event in stream]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"


def test_anthropic_count_tokens(claude, server):
    counted = claude.messages.count_tokens(model="claude-x", messages=MESSAGES)
    assert counted.input_tokens > 0
    assert server.requests[-1].path == "/v1/messages/count_tokens"


# -- Ollama ------------------------------------------------------------------------------------


def test_ollama_chat_has_ollamas_shape_and_counts(local, server):
    server.reply("llama3", prompt_tokens=12, completion_tokens=3)
    response = local.chat(model="llama3", messages=MESSAGES)
    assert response.model == "llama3" and response.created_at
    assert response.message.role == "assistant"
    assert response.message.content == "Hello from llama3."
    assert response.done is True and response.done_reason == "stop"
    assert (response.prompt_eval_count, response.eval_count) == (12, 3)
    durations = [
        response.total_duration,
        response.load_duration,
        response.prompt_eval_duration,
        response.eval_duration,
    ]
    assert all(isinstance(d, int) and d > 0 for d in durations)
    assert server.requests[0].path == "/api/chat"
    assert server.requests[0].body["stream"] is False  # the client always says


def test_ollama_generate(local, server):
    server.reply("llama3", content="Paris.", finish_reason="length")
    response = local.generate(model="llama3", prompt="The capital of France is")
    assert response.response == "Paris." and response.done_reason == "length"
    assert response.prompt_eval_count > 0
    assert server.requests[0].path == "/api/generate"


def test_ollama_chat_stream_ends_with_a_done_line_carrying_the_counts(local, server):
    server.reply("llama3", content=WORDS, prompt_tokens=20, completion_tokens=9)
    parts = list(local.chat(model="llama3", messages=MESSAGES, stream=True))
    assert "".join(p.message.content for p in parts) == WORDS
    assert [p.done for p in parts] == [False] * len(WORDS.split()) + [True]
    assert parts[-1].done_reason == "stop"
    assert (parts[-1].prompt_eval_count, parts[-1].eval_count) == (20, 9)
    assert parts[0].eval_count is None


def test_ollama_generate_stream(local, server):
    parts = list(local.generate(model="llama3", prompt="hi", stream=True))
    assert "".join(p.response for p in parts) == "Hello from llama3."
    assert parts[-1].done is True


def test_ollama_raw_api_streams_ndjson_unless_told_not_to(server):
    body = {"model": "llama3", "messages": MESSAGES}
    response = httpx2.post(f"{server.ollama_url}/api/chat", json=body)
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert len(lines) > 1 and lines[-1]["done"] is True
    plain = httpx2.post(f"{server.ollama_url}/api/chat", json={**body, "stream": False})
    assert plain.json()["done"] is True


def test_ollama_embed(local, server):
    response = local.embed(model="nomic", input=["a", "b"], dimensions=4)
    assert len(response.embeddings) == 2 and len(response.embeddings[0]) == 4
    assert response.prompt_eval_count > 0
    assert len(local.embeddings(model="nomic", prompt="a").embedding) > 0


@pytest.mark.parametrize("stream", [False, True])
def test_ollama_error_status_is_a_response_error(local, server, stream):
    server.fail("llama3", status=503)
    with pytest.raises(ollama.ResponseError) as info:
        result = local.chat(model="llama3", messages=MESSAGES, stream=stream)
        if stream:
            list(result)
    assert info.value.status_code == 503
    assert info.value.error == "mock error 503"


def test_ollama_stream_cut_midway_raises_while_iterating(local, server):
    server.reply("llama3", content=WORDS)
    server.fail("llama3", cut_after=2)
    got = []
    # The ollama client lets httpx's error through: not an ollama.ResponseError.
    with pytest.raises(httpx.TransportError):
        for part in local.chat(model="llama3", messages=MESSAGES, stream=True):
            got.append(part.message.content)
    assert got == ["one ", "two "]


def test_ollama_stream_error_line_raises_a_response_error(local, server):
    server.fail("llama3", stream_error="overloaded_error", cut_after=1)
    got = []
    with pytest.raises(ollama.ResponseError) as info:
        for part in local.chat(model="llama3", messages=MESSAGES, stream=True):
            got.append(part.message.content)
    assert "overloaded_error" in info.value.error and info.value.status_code == -1
    assert got == ["Hello "]


def test_ollama_truncated_stream_ends_without_a_done_line(local, server):
    server.fail("llama3", truncate=True)
    parts = list(local.chat(model="llama3", messages=MESSAGES, stream=True))
    assert parts and not any(p.done for p in parts)


# -- All protocols -----------------------------------------------------------------------------


def test_faults_are_queued_per_model_whatever_the_protocol(claude, local, server):
    server.script("*", Fault(status=429), Fault(status=500))
    with pytest.raises(anthropic.RateLimitError):
        ask(claude)
    with pytest.raises(ollama.ResponseError):
        local.chat(model="llama3", messages=MESSAGES)
    assert ask(claude).content[0].text == "Hello from claude-x."
    assert [r.model for r in server.requests] == ["claude-x", "llama3", "claude-x"]


def test_openai_stream_error_chunk_raises_the_sdks_api_error(server):
    client = openai.OpenAI(base_url=server.url, api_key="k", max_retries=0)
    server.fail("m", stream_error="server_error", code="boom", cut_after=2)
    got = []
    with pytest.raises(openai.APIError) as info:
        for chunk in client.chat.completions.create(model="m", messages=MESSAGES, stream=True):
            got.append(chunk)
    assert info.value.type == "server_error" and info.value.code == "boom"
    assert len(got) == 2


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/v1/messages", {"type": "error", "error": {"type": "invalid_request_error"}}),
        ("/api/chat", {"error": "body is not JSON"}),
    ],
)
def test_a_body_that_is_not_json_gets_the_protocols_400(server, path, error):
    response = httpx2.post(f"{server.anthropic_url}{path}", content=b"{not json")
    assert response.status_code == 400
    body = response.json()
    assert body.keys() == error.keys()
    if "type" in error:
        assert body["error"]["type"] == error["error"]["type"]
    else:
        assert body == error


def test_protocol_urls_need_a_running_server():
    with pytest.raises(RuntimeError, match="not running"):
        _ = MockServer().anthropic_url
