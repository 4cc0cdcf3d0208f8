"""The ollama adapter's side of the pivot (OpenAI chat requests and answers as dicts).

As a primary: a ``chat`` request becomes an OpenAI chat request (``options`` its sampling
fields, ``format`` its ``response_format``, tool calls with ids made up in order, since Ollama
has none), and the answer an ``ollama.ChatResponse`` or the stream of them (tool calls, whose
arguments OpenAI streams in pieces, arrive whole on the last one, as Ollama sends them).

As a fallback target: an ``ollama.Client`` answers an OpenAI chat request with ``chat`` (images
from ``data:`` URLs; tool messages name their tool), and its responses come back as
``chat.completion`` dicts or chunks.
"""

from __future__ import annotations

import inspect
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any

import ollama

from aiguard._engine.contract import Chat
from aiguard._http import server_attributes as _server
from aiguard._telemetry import Attrs
from aiguard.adapters._pivot import (
    Untranslatable,
    arguments_of,
    converted,
    converted_async,
    dropped,
    include_usage,
    split,
)

PIVOT = "OpenAI chat format"
TARGET = "ollama"


def ollama_plain(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    return dump(exclude_none=True) if callable(dump) else value


def tool_schema(tool: Any) -> Any:
    """A tool as the client sends it: a function becomes the schema of its name, docstring and
    parameters."""
    if not callable(tool):
        return ollama_plain(tool)
    params = list(inspect.signature(tool).parameters)
    return {
        "type": "function",
        "function": {
            "name": getattr(tool, "__name__", ""),
            "description": inspect.getdoc(tool) or "",
            "parameters": {
                "type": "object",
                "required": params,
                "properties": {p: {"description": "", "type": "string"} for p in params},
            },
        },
    }


# -- as a primary ---------------------------------------------------------------------------

_OPTIONS = ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty", "stop")
_KNOWN = ("model", "messages", "tools", "stream", "options", "format")
_DROPPED = ("think", "keep_alive", "logprobs", "top_logprobs")


def _chat_turn(message: Any, pending: list[str], index: int) -> dict[str, Any]:
    message = ollama_plain(message)
    if message.get("images"):
        raise Untranslatable("images in an ollama message", PIVOT)
    role = message.get("role")
    turn: dict[str, Any] = {"role": role, "content": message.get("content") or ""}
    calls: list[dict[str, Any]] = []
    for j, call in enumerate(message.get("tool_calls") or ()):
        function = ollama_plain(call).get("function") or {}
        ident = f"call_{index}_{j}"
        pending.append(ident)
        arguments = json.dumps(function.get("arguments") or {})
        made = {"name": function.get("name"), "arguments": arguments}
        calls.append({"id": ident, "type": "function", "function": made})
    if calls:
        turn["tool_calls"] = calls
    if role == "tool":
        turn["tool_call_id"] = pending.pop(0) if pending else f"call_{index}"
    return turn


def _options(options: Any, out: Chat) -> set[str]:
    """The sampling options as OpenAI fields; the names of the others (dropped)."""
    given = {k: v for k, v in (ollama_plain(options) or {}).items() if v is not None}
    for key in _OPTIONS:
        if key in given:
            out[key] = given.pop(key)
    limit = given.pop("num_predict", None)
    if isinstance(limit, int) and limit > 0:
        out["max_tokens"] = limit
    return {f"options.{key}" for key in given}


def to_openai_chat(request: dict[str, Any]) -> Chat:
    given = split(request, _KNOWN, _DROPPED, PIVOT)
    pending: list[str] = []
    messages = [_chat_turn(m, pending, i) for i, m in enumerate(given.get("messages") or ())]
    out: Chat = {"model": given["model"], "messages": messages}
    dropped(_options(given.get("options"), out), PIVOT)
    if given.get("tools"):
        out["tools"] = [tool_schema(tool) for tool in given["tools"]]
    fmt = given.get("format")
    if fmt == "json":
        out["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, Mapping):
        out["response_format"] = {"type": "json_schema"}
        out["response_format"]["json_schema"] = {"name": "output", "schema": dict(fmt)}
    elif fmt:
        raise Untranslatable(f"format={fmt!r}", PIVOT)
    if given.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


_DONE = {"stop": "stop", "length": "length", "tool_calls": "stop", "content_filter": "stop"}


def _ollama_calls(calls: Any) -> list[dict[str, Any]]:
    out = []
    for call in calls or ():
        function = call.get("function") or {}
        arguments = arguments_of(function.get("arguments"))
        out.append({"function": {"name": function.get("name") or "", "arguments": arguments}})
    return out


def _response(model: Any, message: dict[str, Any], done: bool, **more: Any) -> Any:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return ollama.ChatResponse.model_validate(
        {"model": model or "", "created_at": stamp, "message": message, "done": done, **more}
    )


def _counts(usage: Any) -> dict[str, Any]:
    usage = usage if isinstance(usage, dict) else {}
    return {
        "prompt_eval_count": usage.get("prompt_tokens"),
        "eval_count": usage.get("completion_tokens"),
    }


def from_openai_chat(answer: Chat) -> Any:
    choice = (answer.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    reply = {"role": "assistant", "content": message.get("content") or ""}
    calls = _ollama_calls(message.get("tool_calls"))
    if calls:
        reply["tool_calls"] = calls
    reason = _DONE.get(choice.get("finish_reason") or "stop", "stop")
    return _response(
        answer.get("model"), reply, True, done_reason=reason, **_counts(answer.get("usage"))
    )


class _Lines:
    """OpenAI chunk dicts as Ollama's stream of responses."""

    def __init__(self) -> None:
        self.model: Any = None
        self.calls: dict[int, dict[str, Any]] = {}
        self.reason: str | None = None
        self.usage: Any = None

    def feed(self, chunk: Chat) -> list[Any]:
        self.model = self.model or chunk.get("model")
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        out = []
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            for call in delta.get("tool_calls") or ():
                found = self.calls.setdefault(call.get("index", 0), {"name": "", "arguments": ""})
                function = call.get("function") or {}
                found["name"] += function.get("name") or ""
                found["arguments"] += function.get("arguments") or ""
            if delta.get("content"):
                message = {"role": "assistant", "content": delta["content"]}
                out.append(_response(self.model, message, False))
            if choice.get("finish_reason"):
                self.reason = choice["finish_reason"]
        return out

    def end(self) -> list[Any]:
        if self.reason is None:  # cut short: no final line
            return []
        calls = _ollama_calls({"function": c} for c in self.calls.values())
        message: dict[str, Any] = {"role": "assistant", "content": ""}
        if calls:
            message["tool_calls"] = calls
        reason = _DONE.get(self.reason, "stop")
        return [_response(self.model, message, True, done_reason=reason, **_counts(self.usage))]


def from_openai_chunks(chunks: Iterator[Chat]) -> Iterator[Any]:
    lines = _Lines()
    return converted(chunks, lines.feed, lines.end)


def from_openai_chunks_async(chunks: AsyncIterator[Chat]) -> AsyncIterator[Any]:
    lines = _Lines()
    return converted_async(chunks, lines.feed, lines.end)


# -- as a fallback target -------------------------------------------------------------------

_CHAT_OPTIONS = ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty", "stop")
_CHAT_KNOWN = frozenset(
    {"model", "messages", "tools", "tool_choice", "stream", "stream_options", "timeout", "n"}
    | {"response_format", "max_tokens", "max_completion_tokens", *_CHAT_OPTIONS}
)
_CHAT_DROPPED = frozenset(
    {"logprobs", "top_logprobs", "logit_bias", "user", "service_tier", "store", "metadata"}
    | {"reasoning_effort", "parallel_tool_calls", "prediction", "safety_identifier"}
    | {"extra_headers", "extra_query", "extra_body"}
)


def pivot_server(client: ollama.Client | ollama.AsyncClient) -> Attrs:
    # The client keeps its host as the base URL of its httpx client.
    return _server(getattr(getattr(client, "_client", None), "base_url", None))


def _text(content: Any) -> tuple[str, list[str]]:
    """A message's text and its images (base64, from ``data:`` URLs)."""
    if isinstance(content, str) or content is None:
        return content or "", []
    texts, images = [], []
    for part in map(ollama_plain, content):
        kind = part.get("type") if isinstance(part, dict) else None
        url = str((part.get("image_url") or {}).get("url") or "") if kind == "image_url" else ""
        if kind == "text":
            texts.append(str(part.get("text") or ""))
        elif url.startswith("data:") and ";base64," in url:
            images.append(url.split(";base64,", 1)[1])
        else:
            raise Untranslatable(f"a {kind!r} message part (images only as data: URLs)", TARGET)
    return "\n".join(texts), images


def _ollama_turn(message: Any, names: dict[str, str]) -> dict[str, Any]:
    message = ollama_plain(message)
    role = message.get("role")
    text, images = _text(message.get("content"))
    turn: dict[str, Any] = {"role": "system" if role == "developer" else role, "content": text}
    if images:
        turn["images"] = images
    calls = []
    for call in map(ollama_plain, message.get("tool_calls") or ()):
        function = call.get("function") or {}
        names[str(call.get("id"))] = function.get("name") or ""
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except ValueError:
            raise Untranslatable("a tool call whose arguments are not JSON", TARGET) from None
        calls.append({"function": {"name": function.get("name"), "arguments": arguments}})
    if calls:
        turn["tool_calls"] = calls
    if role == "tool" and str(message.get("tool_call_id")) in names:
        turn["tool_name"] = names[str(message.get("tool_call_id"))]
    return turn


def chat_request(pivot: Chat) -> dict[str, Any]:
    """An OpenAI chat request as an ``ollama.Client.chat`` request."""
    given = split(pivot, _CHAT_KNOWN, _CHAT_DROPPED, TARGET)
    if given.get("n", 1) != 1:
        raise Untranslatable("n= other than 1 (one answer per request)", TARGET)
    choice = given.get("tool_choice", "auto")
    if choice not in ("auto", "none"):
        raise Untranslatable(f"tool_choice={choice!r} (Ollama picks its tools itself)", TARGET)
    names: dict[str, str] = {}
    messages = [_ollama_turn(m, names) for m in given.get("messages") or ()]
    out: dict[str, Any] = {"model": given["model"], "messages": messages}
    if given.get("tools") and choice != "none":
        out["tools"] = [ollama_plain(tool) for tool in given["tools"]]
    options = {key: given[key] for key in _CHAT_OPTIONS if key in given}
    limit = given.get("max_completion_tokens", given.get("max_tokens"))
    if isinstance(limit, int):
        options["num_predict"] = limit
    if options:
        out["options"] = options
    fmt = ollama_plain(given.get("response_format")) or {}
    if fmt.get("type") == "json_object":
        out["format"] = "json"
    elif fmt.get("type") == "json_schema":
        out["format"] = (fmt.get("json_schema") or {}).get("schema") or "json"
    if given.get("stream") is True:
        out["stream"] = True
    return out


def _tool_calls(calls: Any) -> list[dict[str, Any]]:
    return [
        {
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": c.function.name, "arguments": json.dumps(c.function.arguments)},
        }
        for i, c in enumerate(calls or ())
    ]


def _finish(response: Any, calls: bool) -> str:
    if calls:
        return "tool_calls"
    return "length" if response.done_reason == "length" else "stop"


def _usage(response: Any) -> dict[str, int]:
    prompt, output = response.prompt_eval_count or 0, response.eval_count or 0
    return {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output}


def _completion(response: Any) -> Chat:
    calls = _tool_calls(response.message.tool_calls)
    message: dict[str, Any] = {"role": "assistant", "content": response.message.content or None}
    if calls:
        message["tool_calls"] = calls
    choice = {"index": 0, "message": message, "finish_reason": _finish(response, bool(calls))}
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": response.model,
        "choices": [choice],
        "usage": _usage(response),
    }


class _Chunks:
    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.frame: dict[str, Any] = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}"}
        self.frame.update(object="chat.completion.chunk", created=int(time.time()))
        self.calls = 0
        self.role = True

    def feed(self, response: Any) -> list[Chat]:
        frame = {**self.frame, "model": response.model}
        delta: dict[str, Any] = {"content": response.message.content or ""}
        if self.role:
            self.role, delta["role"] = False, "assistant"
        calls = _tool_calls(response.message.tool_calls)
        for call in calls:
            call["index"], call["id"] = self.calls, f"call_{self.calls}"
            self.calls += 1
        if calls:
            delta["tool_calls"] = calls
        finish = _finish(response, self.calls > 0) if response.done else None
        out = [{**frame, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}]
        if response.done and self.include_usage:
            out.append({**frame, "choices": [], "usage": _usage(response)})
        return out


def openai_chat(
    client: ollama.Client, timeout: float | None = None
) -> tuple[Callable[[Chat], Chat | Iterator[Chat]], str]:
    """``client`` answering OpenAI chat requests as dicts (see ``PivotTarget``)."""
    if not isinstance(client, ollama.Client):
        raise TypeError("an ollama.AsyncClient cannot answer a sync call")

    def answer(pivot: Chat) -> Chat | Iterator[Chat]:
        request = chat_request(pivot)
        result = client.chat(**request)
        if request.get("stream") is True:
            return converted(result, _Chunks(include_usage(pivot)).feed)
        return _completion(result)

    return answer, TARGET


def openai_chat_async(
    client: ollama.AsyncClient, timeout: float | None = None
) -> tuple[Callable[[Chat], Awaitable[Chat | AsyncIterator[Chat]]], str]:
    if not isinstance(client, ollama.AsyncClient):
        raise TypeError("an ollama.Client cannot answer an async call")

    async def answer(pivot: Chat) -> Chat | AsyncIterator[Chat]:
        request = chat_request(pivot)
        result = await client.chat(**request)
        if request.get("stream") is True:
            return converted_async(result, _Chunks(include_usage(pivot)).feed)
        return _completion(result)

    return answer, TARGET
