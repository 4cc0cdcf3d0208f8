"""Bedrock in the OpenAI chat-completions shape (plain dicts): the pivot of cross-provider fallback.

This way: :func:`openai_chat` answers an OpenAI chat request with a Bedrock client (Bedrock as a
fallback target). The other way (Bedrock as the primary) is in
:mod:`aiguard.adapters._bedrock_from_openai`. What cannot be translated faithfully raises
:class:`aiguard.adapters._pivot.Untranslatable` naming it: never a different request. What
changes nothing of the answer's meaning (``user``, ``seed``...) is dropped and named in an
``aiguard.translation.dropped`` span event.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from aiguard.adapters._pivot import Untranslatable, dropped

PROVIDER = "aws.bedrock"
PIVOT = "OpenAI chat format"

# Bedrock's stop reason -> OpenAI's finish reason, and back.
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
}
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "content_filtered",
}
# OpenAI request fields that change nothing in the answer (or that the caller handles).
_IGNORED = {
    "model", "messages", "stream", "stream_options", "user", "store", "metadata", "seed",
    "service_tier", "timeout", "parallel_tool_calls", "extra_headers", "extra_query", "n",
    "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "tools",
    "tool_choice", "logprobs",
}  # fmt: skip
_IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}


# Of those, what Bedrock does without (named in the span event when set).
_DROPPED = ("user", "store", "metadata", "seed", "service_tier", "parallel_tool_calls")


def untranslatable(what: str, target: str = PROVIDER) -> Untranslatable:
    """``what`` has no equivalent at ``target`` (Bedrock; or the pivot, Bedrock the primary)."""
    return Untranslatable(f"{what} has no equivalent between OpenAI chat and Bedrock", target)


# -- an OpenAI chat request, sent to Bedrock ---------------------------------------------------


def _image_block(part: Mapping[str, Any]) -> dict[str, Any]:
    url = str((part.get("image_url") or {}).get("url") or "")
    head, _, data = url.partition(";base64,")
    kind = _IMAGE_FORMATS.get(head.removeprefix("data:"))
    if kind is None or not data:
        raise untranslatable("an image given by URL (Bedrock takes the image's bytes)")
    try:
        raw = base64.b64decode(data, validate=True)
    except binascii.Error as exc:
        raise untranslatable("an image whose data URL is not base64") from exc
    return {"image": {"format": kind, "source": {"bytes": raw}}}


def _content_blocks(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    blocks = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            blocks.append({"text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image_block(part))
        else:
            raise untranslatable(f"a message part of type {kind!r}")
    return blocks


def tool_use_block(call: Mapping[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    arguments = function.get("arguments") or "{}"
    try:
        given = json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError as exc:
        raise untranslatable("tool call arguments that are not JSON") from exc
    return {"toolUse": {"toolUseId": call["id"], "name": function["name"], "input": given}}


def _message_blocks(message: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    role = message.get("role")
    if role == "tool":
        text = "".join(b.get("text", "") for b in _content_blocks(message.get("content")))
        result = {"toolUseId": message["tool_call_id"], "content": [{"text": text}]}
        return "user", [{"toolResult": result}]
    if role not in ("user", "assistant"):
        raise untranslatable(f"a message of role {role!r}")
    blocks = _content_blocks(message.get("content"))
    blocks += [tool_use_block(call) for call in message.get("tool_calls") or ()]
    return str(role), blocks


def _inference_config(request: Mapping[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    limit = request.get("max_completion_tokens", request.get("max_tokens"))
    if limit is not None:
        config["maxTokens"] = limit
    if request.get("temperature") is not None:
        config["temperature"] = request["temperature"]
    if request.get("top_p") is not None:
        config["topP"] = request["top_p"]
    stop = request.get("stop")
    if stop is not None:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    return config


def _tool_config(request: Mapping[str, Any]) -> dict[str, Any] | None:
    tools = request.get("tools")
    if not tools:
        return None
    specs = []
    for tool in tools:
        if tool.get("type") != "function":
            raise untranslatable(f"a tool of type {tool.get('type')!r}")
        function = tool["function"]
        spec = {"name": function["name"], "inputSchema": {"json": function.get("parameters", {})}}
        if function.get("description"):
            spec["description"] = function["description"]
        specs.append({"toolSpec": spec})
    config: dict[str, Any] = {"tools": specs}
    choice = request.get("tool_choice")
    if choice == "none":
        raise untranslatable("tool_choice='none' (Bedrock cannot forbid calling a given tool)")
    if choice == "required":
        config["toolChoice"] = {"any": {}}
    elif isinstance(choice, Mapping):
        config["toolChoice"] = {"tool": {"name": choice["function"]["name"]}}
    elif choice == "auto":
        config["toolChoice"] = {"auto": {}}
    return config


def converse_request(request: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI chat request as ``converse`` keyword arguments (``modelId`` from ``model``)."""
    extra = sorted(k for k, v in request.items() if k not in _IGNORED and v is not None)
    if extra:
        raise untranslatable(f"the parameter(s) {', '.join(extra)}")
    if (request.get("n") or 1) != 1 or request.get("logprobs"):
        raise untranslatable("n > 1 or logprobs")
    dropped((k for k in _DROPPED if request.get(k) is not None), PROVIDER)
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for message in request["messages"]:
        if message.get("role") in ("system", "developer"):
            system += _content_blocks(message.get("content"))
            continue
        role, blocks = _message_blocks(message)
        if messages and messages[-1]["role"] == role:  # Bedrock wants the roles to alternate
            messages[-1]["content"] += blocks
        else:
            messages.append({"role": role, "content": blocks})
    kwargs: dict[str, Any] = {"modelId": request["model"], "messages": messages}
    if system:
        kwargs["system"] = system
    config = _inference_config(request)
    if config:
        kwargs["inferenceConfig"] = config
    tools = _tool_config(request)
    if tools is not None:
        kwargs["toolConfig"] = tools
    return kwargs


# -- Bedrock's answer, as OpenAI's -------------------------------------------------------------


def _openai_usage(usage: Any) -> dict[str, Any] | None:
    if not isinstance(usage, Mapping):
        return None
    read = usage.get("cacheReadInputTokens") or 0
    prompt = (usage.get("inputTokens") or 0) + read + (usage.get("cacheWriteInputTokens") or 0)
    output = usage.get("outputTokens") or 0
    counted: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
    }
    if read:
        counted["prompt_tokens_details"] = {"cached_tokens": read}
    return counted


def _head(model: str) -> dict[str, Any]:
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model}


def chat_completion(response: Mapping[str, Any], model: str) -> dict[str, Any]:
    """A ``converse`` response as a ``chat.completion`` dict."""
    blocks = response["output"]["message"]["content"]
    text = "".join(b["text"] for b in blocks if "text" in b)
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    calls = [b["toolUse"] for b in blocks if "toolUse" in b]
    if calls:
        message["tool_calls"] = [
            {
                "id": c["toolUseId"],
                "type": "function",
                "function": {"name": c["name"], "arguments": json.dumps(c.get("input", {}))},
            }
            for c in calls
        ]
    finish = _FINISH.get(response.get("stopReason", ""), "stop")
    choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
    answer = {**_head(model), "object": "chat.completion", "choices": [choice]}
    usage = _openai_usage(response.get("usage"))
    if usage is not None:
        answer["usage"] = usage
    return answer


def _chunk_of(head: dict[str, Any], delta: dict[str, Any], finish: Any = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
    return {**head, "object": "chat.completion.chunk", "choices": [choice]}


def _event_chunk(event: Mapping[str, Any], head: dict[str, Any], tools: dict[int, int]) -> Any:
    """One ``converse_stream`` event as a chunk dict (None: nothing to say)."""
    if "messageStart" in event:
        return _chunk_of(head, {"role": "assistant", "content": ""})
    if "contentBlockStart" in event:
        start = event["contentBlockStart"]
        use = (start.get("start") or {}).get("toolUse")
        if use is None:
            return None
        tools[start["contentBlockIndex"]] = index = len(tools)
        call = {"index": index, "id": use["toolUseId"], "type": "function"}
        call["function"] = {"name": use["name"], "arguments": ""}
        return _chunk_of(head, {"tool_calls": [call]})
    if "contentBlockDelta" in event:
        body = event["contentBlockDelta"]
        delta = body.get("delta") or {}
        if "text" in delta:
            return _chunk_of(head, {"content": delta["text"]})
        if "toolUse" in delta:
            index = tools.get(body["contentBlockIndex"], 0)
            call = {"index": index, "function": {"arguments": delta["toolUse"].get("input", "")}}
            return _chunk_of(head, {"tool_calls": [call]})
        return None
    if "messageStop" in event:
        return _chunk_of(head, {}, _FINISH.get(event["messageStop"].get("stopReason"), "stop"))
    return None


def chat_chunks(stream: Any, model: str, include_usage: bool) -> Iterator[dict[str, Any]]:
    """A ``converse_stream`` answer's events as ``chat.completion.chunk`` dicts; closing this
    closes the event stream."""
    head = _head(model)
    tools: dict[int, int] = {}
    try:
        for event in stream:
            chunk = _event_chunk(event, head, tools)
            if chunk is not None:
                yield chunk
            usage = _openai_usage((event.get("metadata") or {}).get("usage"))
            if usage is not None and include_usage:
                yield {**head, "object": "chat.completion.chunk", "choices": [], "usage": usage}
    finally:
        stream.close()


def openai_chat(
    client: Any, timeout: float | None = None
) -> tuple[Callable[[dict[str, Any]], dict[str, Any] | Iterator[dict[str, Any]]], str]:
    """A callable answering an OpenAI chat request with the Bedrock ``client`` (as dicts).

    ``stream=True`` answers an iterator of chunk dicts (the usage in a last chunk when
    ``stream_options.include_usage``). Bedrock's own errors (``ClientError``...) propagate as
    they are; a request that cannot be translated raises ``Untranslatable`` before anything is sent.
    ``timeout`` is not used: a boto3 client's timeouts are its configuration.
    """

    def answer(request: dict[str, Any]) -> dict[str, Any] | Iterator[dict[str, Any]]:
        kwargs = converse_request(request)
        model = kwargs["modelId"]
        if not request.get("stream"):
            return chat_completion(client.converse(**kwargs), model)
        usage = bool((request.get("stream_options") or {}).get("include_usage"))
        return chat_chunks(client.converse_stream(**kwargs)["stream"], model, usage)

    return answer, PROVIDER


def openai_chat_async(
    client: Any, timeout: float | None = None
) -> tuple[Callable[[dict[str, Any]], Awaitable[Any]], str]:
    """:func:`openai_chat` for async callers: boto3 is sync, so each call (and each event of a
    stream) runs in a worker thread."""
    import asyncio

    answer, provider = openai_chat(client, timeout)

    async def invoke(request: dict[str, Any]) -> Any:
        result = await asyncio.to_thread(answer, request)
        return result if isinstance(result, dict) else _async_chunks(result)

    return invoke, provider


async def _async_chunks(chunks: Iterator[dict[str, Any]]) -> Any:
    import asyncio

    done = object()
    try:
        while (chunk := await asyncio.to_thread(next, chunks, done)) is not done:
            yield chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
