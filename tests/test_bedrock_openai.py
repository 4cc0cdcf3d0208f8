"""Bedrock in the OpenAI chat shape, the pivot of cross-provider fallback: both directions, the
Bedrock side over real boto3 and HTTP to the testing kit."""

from __future__ import annotations

import asyncio
import json

import boto3
import botocore.exceptions
import openai
import pytest
from tests.conftest import API_KEY, FAST

import aiguard
from aiguard.adapters import _bedrock
from aiguard.adapters._bedrock_openai import converse_request

MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "The weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
CHAT = {
    "model": MODEL,
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "rain"},
        {"role": "user", "content": "And tomorrow?"},
    ],
    "tools": TOOLS,
    "tool_choice": "auto",
    "max_completion_tokens": 50,
    "temperature": 0.5,
    "top_p": 0.9,
    "stop": "END",
}


@pytest.fixture
def bedrock(server):
    client = boto3.client(
        "bedrock-runtime",
        endpoint_url=server.anthropic_url,
        region_name="us-west-2",
        aws_access_key_id="AKIDAIGUARDTEST",
        aws_secret_access_key="aiguard-test-secret",
    )
    yield client
    client.close()


def test_an_openai_request_becomes_a_converse_request():
    converse = converse_request(CHAT)
    assert converse["modelId"] == MODEL
    assert converse["system"] == [{"text": "Be brief."}]
    assert [m["role"] for m in converse["messages"]] == ["user", "assistant", "user"]
    [use] = converse["messages"][1]["content"]
    assert use == {"toolUse": {"toolUseId": "call_1", "name": "weather", "input": {"city": "Oslo"}}}
    result, question = converse["messages"][2]["content"]  # tool result and next turn merged
    assert result == {"toolResult": {"toolUseId": "call_1", "content": [{"text": "rain"}]}}
    assert question == {"text": "And tomorrow?"}
    assert converse["inferenceConfig"] == {
        "maxTokens": 50,
        "temperature": 0.5,
        "topP": 0.9,
        "stopSequences": ["END"],
    }
    [spec] = converse["toolConfig"]["tools"]
    assert spec["toolSpec"]["inputSchema"]["json"] == TOOLS[0]["function"]["parameters"]
    assert converse["toolConfig"]["toolChoice"] == {"auto": {}}


def test_a_converse_request_round_trips_through_openai():
    converse = converse_request(CHAT)
    back = _bedrock.to_openai_chat(converse)
    assert converse_request(back) == converse
    assert back["messages"][0] == {"role": "system", "content": "Be brief."}
    assert back["messages"][3] == {"role": "tool", "tool_call_id": "call_1", "content": "rain"}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"n": 2}, "n > 1"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"tool_choice": "none"}, "tool_choice='none'"),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "input_audio"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}],
                    }
                ]
            },
            "image given by URL",
        ),
    ],
)
def test_what_cannot_be_translated_is_named(change, named):
    with pytest.raises(ValueError, match=named.replace("(", r"\(")):
        converse_request({**CHAT, **change})


def test_a_converse_only_parameter_is_named():
    with pytest.raises(ValueError, match="guardrailConfig"):
        _bedrock.to_openai_chat({"modelId": MODEL, "messages": [], "guardrailConfig": {}})


def test_an_image_travels_as_bytes_one_way_and_a_data_url_the_other():
    url = "data:image/png;base64,iVBORw0KGgo="
    part = {"type": "image_url", "image_url": {"url": url}}
    converse = converse_request({"model": MODEL, "messages": [{"role": "user", "content": [part]}]})
    [block] = converse["messages"][0]["content"]
    assert block["image"]["format"] == "png" and block["image"]["source"]["bytes"][:4] == b"\x89PNG"
    assert _bedrock.to_openai_chat(converse)["messages"][0]["content"] == [part]


def test_openai_chat_answers_with_bedrock(bedrock, server):
    answer, provider = _bedrock.openai_chat(bedrock)
    assert provider == "aws.bedrock"
    completion = answer({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]})
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"]["content"] == f"Hello from {MODEL}."
    assert completion["choices"][0]["finish_reason"] == "stop"
    assert completion["usage"]["completion_tokens"] > 0
    assert server.requests[-1].path.endswith("/converse")
    openai.types.chat.ChatCompletion.model_validate(completion)  # the SDK's own type takes it


def test_openai_chat_streams_with_bedrock(bedrock, server):
    answer, _ = _bedrock.openai_chat(bedrock)
    request = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    chunks = list(answer({**request, "stream_options": {"include_usage": True}}))
    for chunk in chunks:
        openai.types.chat.ChatCompletionChunk.model_validate(chunk)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == f"Hello from {MODEL}."
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


def test_openai_chat_streams_a_tool_call(bedrock, server):
    server.reply(MODEL, tool_calls=({"name": "weather", "arguments": {"city": "Oslo"}},))
    answer, _ = _bedrock.openai_chat(bedrock)
    request = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    calls = [
        call
        for chunk in answer({**request, "tools": TOOLS})
        for call in chunk["choices"][0]["delta"].get("tool_calls") or ()
    ]
    assert calls[0]["function"]["name"] == "weather" and calls[0]["id"] == "tooluse_0"
    assert json.loads("".join(c["function"]["arguments"] for c in calls)) == {"city": "Oslo"}


def test_openai_chat_lets_bedrock_errors_through(bedrock, server):
    server.fail(MODEL, status=400)
    answer, _ = _bedrock.openai_chat(bedrock)
    with pytest.raises(botocore.exceptions.ClientError):
        answer({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]})


def test_openai_chat_async_runs_in_a_worker_thread(bedrock, server):
    answer, _ = _bedrock.openai_chat_async(bedrock)
    request = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}

    async def run():
        plain = await answer(request)
        chunks = [c async for c in await answer({**request, "stream": True})]
        return plain, chunks

    plain, chunks = asyncio.run(run())
    assert plain["choices"][0]["message"]["content"] == f"Hello from {MODEL}."
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_an_openai_answer_becomes_a_converse_response(bedrock, server):
    completion = _bedrock.openai_chat(bedrock)[0](
        {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
    )
    bare = bedrock.converse(modelId=MODEL, messages=[{"role": "user", "content": [{"text": "Hi"}]}])
    response = _bedrock.from_openai_chat(completion)
    assert response["output"] == bare["output"] and response["stopReason"] == "end_turn"
    assert response["usage"] == bare["usage"]


def test_openai_chunks_become_the_events_botocore_yields(bedrock, server):
    events = [{"role": "user", "content": [{"text": "Hi"}]}]
    bare = list(bedrock.converse_stream(modelId=MODEL, messages=events)["stream"])
    answer, _ = _bedrock.openai_chat(bedrock)
    request = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    chunks = answer({**request, "stream_options": {"include_usage": True}})
    made = list(_bedrock.from_openai_chunks(chunks))
    strip = [{k: v for k, v in e.items() if k != "metadata"} for e in bare]
    assert [{k: v for k, v in e.items() if k != "metadata"} for e in made] == strip
    assert made[-1]["metadata"]["usage"] == bare[-1]["metadata"]["usage"]


def test_openai_tool_call_chunks_become_tool_use_events():
    chunks = [
        {"choices": [{"delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
        {
            "choices": [
                {
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "c1",
                                "function": {"name": "weather", "arguments": ""},
                            }
                        ]
                    },
                    "finish_reason": None,
                }
            ]
        },
        {
            "choices": [
                {
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]},
                    "finish_reason": "tool_calls",
                }
            ]
        },
    ]
    events = list(_bedrock.from_openai_chunks(chunks))
    assert events == [
        {"messageStart": {"role": "assistant"}},
        {
            "contentBlockStart": {
                "start": {"toolUse": {"toolUseId": "c1", "name": "weather"}},
                "contentBlockIndex": 0,
            }
        },
        {"contentBlockDelta": {"delta": {"toolUse": {"input": "{}"}}, "contentBlockIndex": 0}},
        {"contentBlockStop": {"contentBlockIndex": 0}},
        {"messageStop": {"stopReason": "tool_use"}},
        {"metadata": {"metrics": {"latencyMs": 0}}},
    ]


def test_chunks_cut_short_have_no_end():
    chunks = [{"choices": [{"delta": {"content": "Hel"}, "finish_reason": None}]}]
    events = list(_bedrock.from_openai_chunks(chunks))
    assert not any("messageStop" in e for e in events)


def test_an_openai_client_falls_back_to_bedrock(bedrock, server, telemetry):
    primary = openai.OpenAI(base_url=server.url, api_key=API_KEY, max_retries=0)
    client = aiguard.wrap(primary, retry=FAST, fallback=[aiguard.Target(MODEL, client=bedrock)])
    server.fail("gpt-4o", status=503, times=3)
    completion = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hi"}]
    )
    assert isinstance(completion, openai.types.chat.ChatCompletion)
    assert completion.choices[0].message.content == f"Hello from {MODEL}."
    attrs = telemetry.span("chat gpt-4o").attributes
    assert attrs["aiguard.fallback.model"] == MODEL
