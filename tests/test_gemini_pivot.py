"""Gemini on both sides of a cross-provider fallback, through the OpenAI chat shape as dicts:
``openai_chat`` answers OpenAI requests with the real google-genai SDK over the testing kit;
``to_openai_chat`` / ``from_openai_chat`` / ``from_openai_chunks`` carry a Gemini call to
another provider and its answer back in Gemini's own types."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from google import genai
from google.genai import errors, types
from tests.conftest import API_KEY

from aiguard.adapters import _gemini
from aiguard.adapters._pivot import Untranslatable

MODEL = "gemini-2.0-flash"
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CONVERSATION = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": '{"celsius": 21}'},
]


def _client(server: Any, **options: Any) -> genai.Client:
    return genai.Client(api_key=API_KEY, http_options={"base_url": server.gemini_url, **options})


# -- OpenAI requests answered by Gemini ----------------------------------------------------------


def test_an_openai_request_is_sent_as_gemini_and_answered_as_openai(server):
    server.reply(MODEL, content="Sunny.", prompt_tokens=40, completion_tokens=9, cached_tokens=8)
    answer, provider = _gemini.openai_chat(_client(server))
    request = {
        "model": MODEL,
        "messages": CONVERSATION,
        "tools": [WEATHER],
        "tool_choice": "auto",
        "max_tokens": 50,
        "temperature": 0.3,
        "stop": "END",
        "user": "u-1",  # dropped: no bearing on the answer
    }
    reply = answer(request)
    assert provider == "gcp.gen_ai" and _gemini_dropped(request) == ["user"]
    [sent] = server.requests
    body = sent.body
    assert body["systemInstruction"]["parts"] == [{"text": "Answer briefly."}]
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    call = body["contents"][1]["parts"][0]["functionCall"]
    assert (call["id"], call["name"], call["args"]) == ("c1", "weather", {"city": "Paris"})
    response = body["contents"][2]["parts"][0]["functionResponse"]
    assert (response["id"], response["name"], response["response"]) == (
        "c1",
        "weather",
        {"celsius": 21},
    )
    config = body["generationConfig"]
    assert config == {"maxOutputTokens": 50, "temperature": 0.3, "stopSequences": ["END"]}
    declaration = body["tools"][0]["functionDeclarations"][0]
    assert declaration["name"] == "weather"
    schema = declaration.get("parametersJsonSchema", declaration.get("parameters_json_schema"))
    assert schema == WEATHER["function"]["parameters"]  # (the SDK sends either spelling)
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    assert reply["object"] == "chat.completion" and reply["model"] == MODEL
    [choice] = reply["choices"]
    assert choice["message"] == {"role": "assistant", "content": "Sunny."}
    assert choice["finish_reason"] == "stop"
    assert reply["usage"] == {
        "prompt_tokens": 40,
        "completion_tokens": 9,
        "total_tokens": 49,
        "prompt_tokens_details": {"cached_tokens": 8},
    }


def _gemini_dropped(request: dict[str, Any]) -> list[str]:
    from aiguard.adapters._gemini_pivot import dropped

    return dropped(request)


def test_a_gemini_function_call_comes_back_as_openai_tool_calls(server):
    server.reply(MODEL, tool_calls=({"name": "weather", "arguments": {"city": "Paris"}},))
    answer, _ = _gemini.openai_chat(_client(server))
    reply = answer({"model": MODEL, "messages": CONVERSATION[:2], "tools": [WEATHER]})
    [choice] = reply["choices"]
    [call] = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert choice["finish_reason"] == "tool_calls"


def test_a_stream_answers_openai_chunks_with_the_usage_last(server):
    server.reply(MODEL, prompt_tokens=12, completion_tokens=5)
    answer, _ = _gemini.openai_chat(_client(server))
    request = {
        "model": MODEL,
        "messages": CONVERSATION[:2],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chunks = list(answer(request))
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == f"Hello from {MODEL}."
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]][-1] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 17


def test_the_async_callable_uses_client_aio(server):
    answer, provider = _gemini.openai_chat_async(_client(server))

    async def run() -> tuple[Any, list[Any]]:
        plain = await answer({"model": MODEL, "messages": CONVERSATION[:2]})
        stream = await answer({"model": MODEL, "messages": CONVERSATION[:2], "stream": True})
        return plain, [chunk async for chunk in stream]

    plain, chunks = asyncio.run(run())
    assert plain["choices"][0]["message"]["content"] == f"Hello from {MODEL}."
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert provider == "gcp.gen_ai" and len(server.requests) == 2


def test_geminis_errors_propagate_and_the_sdk_does_not_retry(server):
    client = _client(server, retry_options={"attempts": 4, "initial_delay": 0.001})
    server.fail(MODEL, status=503)
    answer, _ = _gemini.openai_chat(client)
    with pytest.raises(errors.ServerError):
        answer({"model": MODEL, "messages": CONVERSATION[:2]})
    assert len(server.requests) == 1  # the caller retries, not the SDK


@pytest.mark.parametrize(
    ("request_change", "named"),
    [
        ({"logprobs": True}, "logprobs"),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "input_audio"),
        ({"tools": [{"type": "web_search"}]}, "web_search"),
        ({"response_format": {"type": "grammar"}}, "grammar"),
    ],
)
def test_what_gemini_cannot_take_is_refused_before_sending(server, request_change, named):
    answer, _ = _gemini.openai_chat(_client(server))
    with pytest.raises(Untranslatable, match=named):
        answer({"model": MODEL, "messages": CONVERSATION[:2], **request_change})
    assert server.requests == []


# -- a Gemini request to another provider, and the answer back -----------------------------------


def test_a_gemini_request_as_an_openai_chat_request():
    request = {
        "model": MODEL,
        "contents": [
            "Weather in Paris?",
            types.Content(
                role="model",
                parts=[
                    types.Part(
                        function_call=types.FunctionCall(name="weather", args={"city": "Paris"})
                    )
                ],
            ),
            {
                "role": "user",
                "parts": [{"function_response": {"name": "weather", "response": {"c": 21}}}],
            },
        ],
        "config": {
            "system_instruction": "Answer briefly.",
            "max_output_tokens": 50,
            "temperature": 0.3,
            "stop_sequences": ["END"],
            "tools": [
                {
                    "function_declarations": [
                        {"name": "weather", "parameters_json_schema": {"type": "object"}}
                    ]
                }
            ],
            "tool_config": {
                "function_calling_config": {"mode": "ANY", "allowed_function_names": ["weather"]}
            },
            "response_mime_type": "application/json",
            "http_options": {"timeout": 5000},  # the client's business: not part of the request
        },
    }
    assert _gemini.to_openai_chat(request) == {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"c": 21}'},
        ],
        "max_completion_tokens": 50,
        "temperature": 0.3,
        "stop": ["END"],
        "tools": [
            {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
        ],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
        "response_format": {"type": "json_object"},
    }


@pytest.mark.parametrize(
    ("config", "contents", "named"),
    [
        ({"tools": [{"google_search": {}}]}, "Hi", "google_search"),
        (
            {
                "safety_settings": [
                    {"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"}
                ]
            },
            "Hi",
            "safety_settings",
        ),
        ({"cached_content": "cachedContents/1"}, "Hi", "cached_content"),
        ({}, [types.Part.from_bytes(data=b"RIFF", mime_type="audio/wav")], "inline_data"),
    ],
)
def test_what_openai_cannot_take_is_named(config, contents, named):
    with pytest.raises(Untranslatable, match=named):
        _gemini.to_openai_chat({"model": MODEL, "contents": contents, "config": config})


def test_an_openai_answer_comes_back_as_a_gemini_response():
    answer = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        {
                            "id": "t1",
                            "type": "function",
                            "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 30,
            "completion_tokens": 12,
            "total_tokens": 42,
            "prompt_tokens_details": {"cached_tokens": 10},
            "completion_tokens_details": {"reasoning_tokens": 4},
        },
    }
    response = _gemini.from_openai_chat(answer)
    assert isinstance(response, types.GenerateContentResponse)
    assert response.text == "Checking." and response.response_id == "chatcmpl-1"
    [call] = response.function_calls or []
    assert (call.id, call.name, call.args) == ("t1", "weather", {"city": "Paris"})
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    usage = response.usage_metadata
    assert (usage.prompt_token_count, usage.candidates_token_count) == (30, 8)
    assert (usage.thoughts_token_count, usage.cached_content_token_count) == (4, 10)
    # The adapter reads it as it reads Gemini's own answers.
    totals = _gemini.usage_of(usage)
    assert (totals.input_tokens, totals.output_tokens) == (30, 12)


def _chunk(delta: dict[str, Any], reason: str | None = None, usage: Any = None) -> dict[str, Any]:
    choices = [] if usage else [{"index": 0, "delta": delta, "finish_reason": reason}]
    out = {
        "id": "chatcmpl-2",
        "object": "chat.completion.chunk",
        "model": "gpt-4o",
        "choices": choices,
    }
    return {**out, "usage": usage} if usage else out


OPENAI_STREAM = [
    _chunk({"role": "assistant", "content": ""}),
    _chunk({"content": "Let me "}),
    _chunk({"content": "check."}),
    _chunk(
        {
            "tool_calls": [
                {"index": 0, "id": "t1", "function": {"name": "weather", "arguments": '{"ci'}}
            ]
        }
    ),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}]}),
    _chunk({}, "tool_calls"),
    _chunk({}, usage={"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27}),
]


def _check_stream(responses: list[types.GenerateContentResponse]) -> None:
    assert all(isinstance(r, types.GenerateContentResponse) for r in responses)
    assert "".join(r.text or "" for r in responses[:-1]) == "Let me check."
    last = responses[-1]
    [call] = last.function_calls or []
    assert (call.id, call.name, call.args) == ("t1", "weather", {"city": "Paris"})
    assert last.candidates[0].finish_reason == types.FinishReason.STOP
    assert last.usage_metadata.total_token_count == 27


def test_openai_chunks_come_back_as_a_gemini_stream():
    _check_stream(list(_gemini.from_openai_chunks(OPENAI_STREAM)))


def test_async_openai_chunks_come_back_as_a_gemini_stream():
    async def chunks() -> Any:
        for chunk in OPENAI_STREAM:
            yield chunk

    async def run() -> list[Any]:
        return [r async for r in _gemini.from_openai_chunks_async(chunks())]

    _check_stream(asyncio.run(run()))
