"""Bedrock as the primary of a cross-provider fallback: a converse request sent as an OpenAI chat
request (plain dicts), and the OpenAI answer (plain or streamed) made what ``converse`` /
``converse_stream`` return. What cannot be translated faithfully raises a ``ValueError`` naming
it: never a different request.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from aiguard.adapters._bedrock_openai import STOP_REASONS, tool_use_block, untranslatable

# -- a converse request, sent as OpenAI's; OpenAI's answer, as Bedrock's -----------------------


def _openai_content(blocks: Iterable[Mapping[str, Any]]) -> Any:
    parts: list[dict[str, Any]] = []
    for block in blocks:
        if "text" in block:
            parts.append({"type": "text", "text": block["text"]})
        elif "image" in block:
            image = block["image"]
            data = base64.b64encode(image["source"]["bytes"]).decode()
            url = f"data:image/{image['format']};base64,{data}"
            parts.append({"type": "image_url", "image_url": {"url": url}})
        elif "cachePoint" not in block:  # a cache hint changes nothing in the answer
            raise untranslatable(f"a content block {sorted(block)}")
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _openai_messages(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    blocks = message.get("content") or []
    out: list[dict[str, Any]] = []
    for block in blocks:
        result = block.get("toolResult")
        if result is not None:
            text = _openai_content(result.get("content") or [])
            if not isinstance(text, str):
                raise untranslatable("a tool result that is not text")
            out.append({"role": "tool", "tool_call_id": result["toolUseId"], "content": text})
    plain = [b for b in blocks if "toolResult" not in b and "toolUse" not in b]
    uses = [b["toolUse"] for b in blocks if "toolUse" in b]
    if plain or uses or not out:
        said: dict[str, Any] = {"role": message["role"], "content": _openai_content(plain)}
        if uses:
            said["tool_calls"] = [
                {
                    "id": u["toolUseId"],
                    "type": "function",
                    "function": {"name": u["name"], "arguments": json.dumps(u.get("input", {}))},
                }
                for u in uses
            ]
        out.append(said)
    return out


_CONVERSE_KNOWN = {"modelId", "messages", "system", "inferenceConfig", "toolConfig"}


def to_openai_chat(request: Mapping[str, Any], stream: bool = False) -> dict[str, Any]:
    """A ``converse`` request (its keyword arguments) as an OpenAI chat request dict."""
    extra = sorted(k for k in request if k not in _CONVERSE_KNOWN)
    if extra:
        raise untranslatable(f"the converse parameter(s) {', '.join(extra)}")
    messages: list[dict[str, Any]] = []
    system = _openai_content(request.get("system") or [])
    if system:
        messages.append({"role": "system", "content": system})
    for message in request.get("messages") or []:
        messages += _openai_messages(message)
    chat: dict[str, Any] = {"model": request["modelId"], "messages": messages}
    config = request.get("inferenceConfig") or {}
    for key, name in (("maxTokens", "max_tokens"), ("temperature", "temperature")):
        if key in config:
            chat[name] = config[key]
    if "topP" in config:
        chat["top_p"] = config["topP"]
    if "stopSequences" in config:
        chat["stop"] = list(config["stopSequences"])
    _openai_tools(request.get("toolConfig"), chat)
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def _openai_tools(config: Any, chat: dict[str, Any]) -> None:
    if not config:
        return
    tools = []
    for tool in config.get("tools") or []:
        if "toolSpec" not in tool:
            raise untranslatable(f"a tool entry {sorted(tool)}")
        spec = tool["toolSpec"]
        function = {"name": spec["name"], "parameters": spec["inputSchema"]["json"]}
        if "description" in spec:
            function["description"] = spec["description"]
        tools.append({"type": "function", "function": function})
    chat["tools"] = tools
    choice = config.get("toolChoice") or {}
    if "any" in choice:
        chat["tool_choice"] = "required"
    elif "tool" in choice:
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["tool"]["name"]}}
    elif "auto" in choice:
        chat["tool_choice"] = "auto"


def _bedrock_usage(usage: Any) -> dict[str, int]:
    prompt = usage.get("prompt_tokens") or 0
    read = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    output = usage.get("completion_tokens") or 0
    counted = {"inputTokens": prompt - read, "outputTokens": output, "totalTokens": prompt + output}
    if read:
        counted["cacheReadInputTokens"] = read
    return counted


def _metadata(request_id: str) -> dict[str, Any]:
    return {"RequestId": request_id, "HTTPStatusCode": 200, "HTTPHeaders": {}, "RetryAttempts": 0}


def from_openai_chat(answer: Mapping[str, Any]) -> dict[str, Any]:
    """A ``chat.completion`` dict as a ``converse`` response dict."""
    choice = answer["choices"][0]
    message = choice.get("message") or {}
    blocks: list[dict[str, Any]] = []
    if message.get("content"):
        blocks.append({"text": message["content"]})
    blocks += [tool_use_block(call) for call in message.get("tool_calls") or ()]
    response: dict[str, Any] = {
        "ResponseMetadata": _metadata(str(answer.get("id") or "")),
        "output": {"message": {"role": "assistant", "content": blocks}},
        "stopReason": STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
    }
    if answer.get("usage"):
        response["usage"] = _bedrock_usage(answer["usage"])
    response["metrics"] = {"latencyMs": 0}
    return response


def from_openai_chunks(chunks: Iterable[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
    """``chat.completion.chunk`` dicts as ``converse_stream`` events, as botocore yields them:
    ``messageStart``, the blocks' starts, deltas and stops, ``messageStop``, ``metadata``."""
    started = False
    text: int | None = None  # the text block's index
    tools: dict[int, int] = {}  # OpenAI tool call index -> block index
    stop: str | None = None
    usage: dict[str, int] | None = None
    for chunk in chunks:
        if chunk.get("usage"):
            usage = _bedrock_usage(chunk["usage"])
        for choice in chunk.get("choices") or []:
            if not started:
                started = True
                yield {"messageStart": {"role": "assistant"}}
            delta = choice.get("delta") or {}
            if delta.get("content"):
                if text is None:
                    text = len(tools)
                yield {"contentBlockDelta": {"delta": {"text": delta["content"]}, **_at(text)}}
            for call in delta.get("tool_calls") or []:
                yield from _tool_events(call, tools, text)
            if choice.get("finish_reason"):
                stop = STOP_REASONS.get(choice["finish_reason"], "end_turn")
    if stop is None:
        return  # cut short: no end, as a cut Bedrock stream would have none
    for index in sorted({*tools.values(), *([text] if text is not None else [])}):
        yield {"contentBlockStop": _at(index)}
    yield {"messageStop": {"stopReason": stop}}
    metadata: dict[str, Any] = {"metrics": {"latencyMs": 0}}
    if usage is not None:
        metadata["usage"] = usage
    yield {"metadata": metadata}


def _at(index: int) -> dict[str, int]:
    return {"contentBlockIndex": index}


def _tool_events(
    call: Mapping[str, Any], tools: dict[int, int], text: int | None
) -> Iterator[dict[str, Any]]:
    function = call.get("function") or {}
    index = call.get("index", 0)
    if index not in tools:
        tools[index] = len(tools) + (1 if text is not None else 0)
        use = {"toolUseId": call.get("id") or "", "name": function.get("name") or ""}
        yield {"contentBlockStart": {"start": {"toolUse": use}, **_at(tools[index])}}
    arguments = function.get("arguments")
    if arguments:
        yield {
            "contentBlockDelta": {"delta": {"toolUse": {"input": arguments}}, **_at(tools[index])}
        }
