"""Bedrock as the primary of a cross-provider fallback: a converse request sent as an OpenAI chat
request (plain dicts), and the OpenAI answer (plain or streamed) made what ``converse`` /
``converse_stream`` return (the stream's events; the adapter puts them in the response's
``stream``). What cannot be translated faithfully raises
:class:`aiguard.adapters._pivot.Untranslatable` naming it: never a different request; settings
that change nothing of the answer's meaning are dropped and named in an
``aiguard.translation.dropped`` span event.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any

from aiguard.adapters._bedrock_openai import PIVOT, STOP_REASONS, tool_use_block
from aiguard.adapters._bedrock_openai import untranslatable as _untranslatable
from aiguard.adapters._pivot import Untranslatable, converted, converted_async, dropped


def untranslatable(what: str) -> Untranslatable:
    return _untranslatable(what, PIVOT)


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


# ``model`` is the engine's name of ``modelId``; ``stream`` is set for ``converse_stream``.
_CONVERSE_KNOWN = {"modelId", "model", "messages", "system", "inferenceConfig", "toolConfig"}
_CONVERSE_DROPPED = {"requestMetadata", "performanceConfig", "additionalModelResponseFieldPaths"}


def to_openai_chat(request: Mapping[str, Any]) -> dict[str, Any]:
    """A ``converse`` request (its keyword arguments; ``stream=True`` for ``converse_stream``)
    as an OpenAI chat request dict."""
    stream = request.get("stream") is True
    given = {k: v for k, v in request.items() if k != "stream" and v is not None}
    extra = sorted(k for k in given if k not in _CONVERSE_KNOWN | _CONVERSE_DROPPED)
    if extra:
        raise untranslatable(f"the converse parameter(s) {', '.join(extra)}")
    dropped(set(given) & _CONVERSE_DROPPED, PIVOT)
    request = given
    messages: list[dict[str, Any]] = []
    system = _openai_content(request.get("system") or [])
    if system:
        messages.append({"role": "system", "content": system})
    for message in request.get("messages") or []:
        messages += _openai_messages(message)
    chat: dict[str, Any] = {
        "model": request.get("model", request.get("modelId")),
        "messages": messages,
    }
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


def metadata(request_id: str) -> dict[str, Any]:
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
        "ResponseMetadata": metadata(str(answer.get("id") or "")),
        "output": {"message": {"role": "assistant", "content": blocks}},
        "stopReason": STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
    }
    if answer.get("usage"):
        response["usage"] = _bedrock_usage(answer["usage"])
    response["metrics"] = {"latencyMs": 0}
    return response


class _Events:
    """``chat.completion.chunk`` dicts as ``converse_stream`` events, as botocore yields them:
    ``messageStart``, the blocks' starts, deltas and stops, ``messageStop``, ``metadata``."""

    def __init__(self) -> None:
        self.started = False
        self.text: int | None = None  # the text block's index
        self.tools: dict[int, int] = {}  # OpenAI tool call index -> block index
        self.stop: str | None = None
        self.usage: dict[str, int] | None = None

    def feed(self, chunk: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        if chunk.get("usage"):
            self.usage = _bedrock_usage(chunk["usage"])
        for choice in chunk.get("choices") or []:
            if not self.started:
                self.started = True
                yield {"messageStart": {"role": "assistant"}}
            delta = choice.get("delta") or {}
            if delta.get("content"):
                if self.text is None:
                    self.text = len(self.tools)
                yield {"contentBlockDelta": {"delta": {"text": delta["content"]}, **_at(self.text)}}
            for call in delta.get("tool_calls") or []:
                yield from _tool_events(call, self.tools, self.text)
            if choice.get("finish_reason"):
                self.stop = STOP_REASONS.get(choice["finish_reason"], "end_turn")

    def end(self) -> Iterator[dict[str, Any]]:
        if self.stop is None:
            return  # cut short: no end, as a cut Bedrock stream would have none
        text = [self.text] if self.text is not None else []
        for index in sorted({*self.tools.values(), *text}):
            yield {"contentBlockStop": _at(index)}
        yield {"messageStop": {"stopReason": self.stop}}
        meta: dict[str, Any] = {"metrics": {"latencyMs": 0}}
        if self.usage is not None:
            meta["usage"] = self.usage
        yield {"metadata": meta}


def from_openai_chunks(chunks: Iterator[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
    """``chat.completion.chunk`` dicts as the events of a ``converse_stream`` response's
    ``stream``; closing it closes ``chunks``."""
    events = _Events()
    return converted(chunks, events.feed, events.end)


def from_openai_chunks_async(
    chunks: AsyncIterator[Mapping[str, Any]],
) -> AsyncIterator[dict[str, Any]]:
    """:func:`from_openai_chunks` for an async iterator of chunk dicts."""
    events = _Events()
    return converted_async(chunks, events.feed, events.end)


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
