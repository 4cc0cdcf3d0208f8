"""Gemini and Bedrock as primaries of a cross-provider fallback, over the real SDKs and the
testing kit: what their requests say (system instruction, tools, tool calls and their answers)
reaches the target, and the target's tool calls come back in the primary's own types. The
plain and streamed answers of every pair are in ``tests/test_cross_fallback.py`` (``PAIRS``)."""

from __future__ import annotations

import asyncio
from typing import Any

import anthropic
import boto3
import openai
import pytest
from google import genai
from google.genai import types
from tests.conftest import API_KEY, MESSAGES

import aiguard
from aiguard.adapters._pivot import Untranslatable

FAST = aiguard.Retry(attempts=2, wait_initial=0.001, wait_max=0.01, wait_jitter=0.0)
GEMINI = "gemini-2.0-flash"
BEDROCK = "anthropic.claude-3-5-haiku-20241022-v1:0"
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}


def _gpt(server: Any, is_async: bool = False) -> Any:
    return (openai.AsyncOpenAI if is_async else openai.OpenAI)(base_url=server.url, api_key=API_KEY)


def _gemini(server: Any, fallback: Any, model: str = "gpt-x") -> Any:
    server.fail(GEMINI, status=503, times=2)
    client = genai.Client(api_key=API_KEY, http_options={"base_url": server.gemini_url})
    return aiguard.wrap(client, retry=FAST, fallback=[aiguard.Target(client=fallback, model=model)])


def _bedrock(server: Any, fallback: Any, model: str = "gpt-x") -> Any:
    server.fail(BEDROCK, status=503, times=2)
    client = boto3.client(
        "bedrock-runtime",
        endpoint_url=server.anthropic_url,
        region_name="eu-west-1",
        aws_access_key_id="AKIDAIGUARDTEST",
        aws_secret_access_key="aiguard-test-secret",
    )
    return aiguard.wrap(client, retry=FAST, fallback=[aiguard.Target(client=fallback, model=model)])


# -- Gemini -------------------------------------------------------------------------------------

GEMINI_CONVERSATION = [
    types.Content(role="user", parts=[types.Part(text="Weather in Paris?")]),
    types.Content(
        role="model",
        parts=[types.Part(function_call=types.FunctionCall(name="weather", args={"city": "Lyon"}))],
    ),
    types.Content(
        role="user",
        parts=[
            types.Part(
                function_response=types.FunctionResponse(name="weather", response={"sky": "rain"})
            )
        ],
    ),
]
GEMINI_CONFIG = types.GenerateContentConfig(
    system_instruction="Answer briefly.",
    max_output_tokens=30,
    tools=[
        types.Tool(
            function_declarations=[
                types.FunctionDeclaration(
                    name="weather", description="The weather.", parameters_json_schema=SCHEMA
                )
            ]
        )
    ],
    tool_config=types.ToolConfig(
        function_calling_config=types.FunctionCallingConfig(
            mode=types.FunctionCallingConfigMode.ANY, allowed_function_names=["weather"]
        )
    ),
)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_gemini_tools_and_system_reach_openai_and_its_tool_calls_come_back(
    is_async, server, telemetry
):
    server.reply("gpt-x", tool_calls=({"name": "weather", "arguments": {"city": "Paris"}},))
    client = _gemini(server, _gpt(server, is_async))
    ask = {"model": GEMINI, "contents": GEMINI_CONVERSATION, "config": GEMINI_CONFIG}
    if is_async:
        reply = asyncio.run(client.aio.models.generate_content(**ask))
    else:
        reply = client.models.generate_content(**ask)
    assert isinstance(reply, types.GenerateContentResponse)
    [call] = reply.function_calls or []
    assert (call.name, call.args) == ("weather", {"city": "Paris"})
    body = server.requests[-1].body
    assert body["model"] == "gpt-x" and body["max_completion_tokens"] == 30
    assert body["messages"][0] == {"role": "system", "content": "Answer briefly."}
    [asked] = body["messages"][2]["tool_calls"]
    assert asked["function"] == {"name": "weather", "arguments": '{"city": "Lyon"}'}
    assert body["messages"][3] == {
        "role": "tool",
        "tool_call_id": asked["id"],
        "content": '{"sky": "rain"}',
    }
    assert body["tools"] == [
        {
            "type": "function",
            "function": {"name": "weather", "description": "The weather.", "parameters": SCHEMA},
        }
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    a = telemetry.span(f"chat {GEMINI}").attributes
    assert a["gen_ai.provider.name"] == "openai" and a["gen_ai.response.model"] == "gpt-x"


def test_gemini_settings_of_no_meaning_elsewhere_are_dropped_with_a_span_event(server, telemetry):
    client = _gemini(server, _gpt(server))
    config = {"top_k": 5, "labels": {"team": "a"}, "temperature": 0.3}
    reply = client.models.generate_content(model=GEMINI, contents="Hello", config=config)
    assert reply.text == "Hello from gpt-x."
    assert server.requests[-1].body["temperature"] == 0.3
    [event] = [
        e
        for e in telemetry.span(f"chat {GEMINI}").events
        if e.name == "aiguard.translation.dropped"
    ]
    assert event.attributes["aiguard.translation.fields"] == ("labels", "top_k")


def test_what_a_gemini_request_means_only_to_gemini_is_refused(server, telemetry):
    client = _gemini(server, _gpt(server))
    search = {"tools": [{"google_search": {}}]}
    with pytest.raises(Untranslatable, match="google_search") as caught:
        client.models.generate_content(model=GEMINI, contents="Hello", config=search)
    assert isinstance(caught.value, aiguard.Untranslatable)
    assert [r.model for r in server.requests] == [GEMINI, GEMINI]  # nothing sent to OpenAI


def test_a_genai_client_falls_back_in_the_flavour_its_fallback_answers(server, telemetry):
    client = _gemini(server, _gpt(server))  # a sync OpenAI client: sync calls only
    assert client.models.generate_content(model=GEMINI, contents="Hi").text == "Hello from gpt-x."
    with pytest.raises(TypeError, match="async OpenAI chat requests"):
        asyncio.run(client.aio.models.generate_content(model=GEMINI, contents="Hi"))
    with pytest.raises(TypeError, match="cannot answer OpenAI chat requests"):
        _gemini(server, object())


def test_embeddings_do_not_fall_back_to_another_providers_client(server, telemetry):
    client = _gemini(server, _gpt(server))
    server.fail(GEMINI, status=503, times=5)
    with pytest.raises(genai.errors.ServerError):
        client.models.embed_content(model=GEMINI, contents="Hi")
    assert {r.model for r in server.requests} == {GEMINI}


# -- Bedrock ------------------------------------------------------------------------------------

BEDROCK_TOOLS = {
    "tools": [
        {
            "toolSpec": {
                "name": "weather",
                "description": "The weather.",
                "inputSchema": {"json": SCHEMA},
            }
        }
    ],
    "toolChoice": {"any": {}},
}
BEDROCK_CONVERSATION = [
    {"role": "user", "content": [{"text": "Weather in Paris?"}]},
    {
        "role": "assistant",
        "content": [{"toolUse": {"toolUseId": "t1", "name": "weather", "input": {"city": "Lyon"}}}],
    },
    {
        "role": "user",
        "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "Rain."}]}}],
    },
]


def _converse(client: Any, **more: Any) -> Any:
    return client.converse(
        modelId=BEDROCK,
        system=[{"text": "Answer briefly."}],
        messages=BEDROCK_CONVERSATION,
        inferenceConfig={"maxTokens": 30},
        toolConfig=BEDROCK_TOOLS,
        **more,
    )


def test_bedrock_tools_and_system_reach_openai_and_its_tool_calls_come_back(server, telemetry):
    server.reply("gpt-x", tool_calls=({"name": "weather", "arguments": {"city": "Paris"}},))
    reply = _converse(_bedrock(server, _gpt(server)))
    assert reply["stopReason"] == "tool_use"
    [block] = reply["output"]["message"]["content"]
    assert block["toolUse"]["name"] == "weather" and block["toolUse"]["input"] == {"city": "Paris"}
    body = server.requests[-1].body
    assert body["messages"][0] == {"role": "system", "content": "Answer briefly."}
    assert body["messages"][2]["tool_calls"][0]["function"] == {
        "name": "weather",
        "arguments": '{"city": "Lyon"}',
    }
    assert body["messages"][3] == {"role": "tool", "tool_call_id": "t1", "content": "Rain."}
    assert body["tools"][0]["function"]["parameters"] == SCHEMA
    assert body["tool_choice"] == "required" and body["max_tokens"] == 30
    a = telemetry.span(f"chat {BEDROCK}").attributes
    assert a["gen_ai.provider.name"] == "openai" and a["gen_ai.response.model"] == "gpt-x"
    assert a["gen_ai.response.finish_reasons"] == ("tool_use",)


def test_bedrock_tools_and_system_reach_anthropic(server, telemetry):
    claude = anthropic.Anthropic(base_url=server.anthropic_url, api_key=API_KEY)
    reply = _converse(_bedrock(server, claude, "claude-x"))
    assert reply["output"]["message"]["content"] == [{"text": "Hello from claude-x."}]
    body = server.requests[-1].body
    assert body["system"] == "Answer briefly." and body["max_tokens"] == 30
    assert body["tools"] == [
        {"name": "weather", "input_schema": SCHEMA, "description": "The weather."}
    ]
    assert body["tool_choice"] == {"type": "any"}
    assert body["messages"][1]["content"][0]["input"] == {"city": "Lyon"}
    assert body["messages"][2]["content"][0]["tool_use_id"] == "t1"


def test_bedrock_settings_of_no_meaning_elsewhere_are_dropped_and_the_rest_refused(
    server, telemetry
):
    client = _bedrock(server, _gpt(server))
    client.converse(
        modelId=BEDROCK, messages=BEDROCK_CONVERSATION[:1], requestMetadata={"team": "a"}
    )
    [event] = [
        e
        for e in telemetry.span(f"chat {BEDROCK}").events
        if e.name == "aiguard.translation.dropped"
    ]
    assert event.attributes["aiguard.translation.fields"] == ("requestMetadata",)
    server.fail(BEDROCK, status=503, times=2)
    guard = {"guardrailIdentifier": "g", "guardrailVersion": "1"}
    with pytest.raises(Untranslatable, match="guardrailConfig"):
        client.converse(modelId=BEDROCK, messages=BEDROCK_CONVERSATION[:1], guardrailConfig=guard)
    assert [r.model for r in server.requests][-2:] == [BEDROCK, BEDROCK]


def test_a_translated_bedrock_stream_closed_early_closes_the_targets(server, telemetry):
    client = _bedrock(server, ollama_client(server), "llama3")
    response = client.converse_stream(modelId=BEDROCK, messages=MESSAGES_BEDROCK)
    stream = response["stream"]
    assert next(iter(stream)) == {"messageStart": {"role": "assistant"}}
    stream.close()
    assert telemetry.span(f"chat {BEDROCK}").attributes["aiguard.stream.abandoned"] is True


def ollama_client(server: Any) -> Any:
    import ollama

    return ollama.Client(host=server.ollama_url)


MESSAGES_BEDROCK = [{"role": "user", "content": [{"text": m["content"]}]} for m in MESSAGES]


def test_a_gemini_chat_falls_back_and_keeps_the_answer_in_its_history(server, telemetry):
    chat = _gemini(server, _gpt(server)).chats.create(model=GEMINI)
    assert chat.send_message("Hello").text == "Hello from gpt-x."
    history = chat.get_history()
    assert [c.role for c in history] == ["user", "model"]
    assert history[1].parts[0].text == "Hello from gpt-x."


def test_a_translated_gemini_stream_closed_early_closes_the_local_model(server, telemetry):
    from tests.test_cross_fallback import _local_model

    llm = _local_model()
    if llm is None:
        pytest.skip("the local model needs the test-local extra")
    from aiguard.adapters._llama_lock import model_lock  # imports llama_cpp

    client = _gemini(server, llm, "smollm2")
    stream = client.models.generate_content_stream(model=GEMINI, contents="Hello")
    assert isinstance(next(iter(stream)), types.GenerateContentResponse)
    assert model_lock(llm).lock.locked()  # the local model streams for this call
    stream.close()
    assert not model_lock(llm).lock.locked()
    assert telemetry.span(f"chat {GEMINI}").attributes["aiguard.stream.abandoned"] is True
