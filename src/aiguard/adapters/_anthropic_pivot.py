"""The anthropic adapter's side of the pivot (OpenAI chat requests and answers as dicts).

As a primary: a ``messages.create`` / ``messages.stream`` request becomes an OpenAI chat request
(``system`` a system message, ``tool_use`` / ``tool_result`` blocks tool calls and tool
messages, tools functions), and the answer an ``anthropic.types.Message`` or the event sequence
the SDK's stream yields (``message_start``, content blocks, ``message_delta``,
``message_stop``), so ``messages.stream(...)`` helpers accumulate it as usual.

As a fallback target: an ``Anthropic`` client answers an OpenAI chat request (system messages
become ``system``, consecutive turns merge, tool messages become ``tool_result`` blocks), one
request per attempt, and its message or events come back as ``chat.completion`` dicts or chunks.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import anthropic
from anthropic.types import (
    Message,
    RawContentBlockDeltaEvent,
    RawContentBlockStartEvent,
    RawContentBlockStopEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    RawMessageStopEvent,
)

from aiguard._engine.contract import Chat
from aiguard._http import server_attributes as _server
from aiguard._http import timeout_seconds
from aiguard._messages import DEFAULT_MAX_OUTPUT_TOKENS, plain
from aiguard._telemetry import Attrs
from aiguard.adapters import _stainless
from aiguard.adapters._anthropic_blocks import (
    anthropic_messages,
    anthropic_tool_choice,
    anthropic_tools,
    chat_messages,
    chat_tool_choice,
    chat_tools,
)
from aiguard.adapters._pivot import (
    Untranslatable,
    arguments_of,
    converted,
    converted_async,
    include_usage,
    split,
)

PIVOT = "OpenAI chat format"
TARGET = "anthropic"

# Anthropic's stop reasons as OpenAI finish reasons, and back.
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
_STOP.update(content_filter="refusal", function_call="tool_use")

# -- as a primary ---------------------------------------------------------------------------

_REQUEST = ("model", "messages", "system", "max_tokens", "temperature", "top_p", "stream")
_REQUEST_KNOWN = (*_REQUEST, "stop_sequences", "tools", "tool_choice")
_REQUEST_DROPPED = frozenset(
    {"top_k", "metadata", "thinking", "service_tier", "inference_geo", "betas"}
    | {"extra_headers", "extra_query", "extra_body"}
)


def to_openai_chat(request: dict[str, Any]) -> Chat:
    """A Messages request as an OpenAI chat request; see the module's docstring."""
    given = split(request, _REQUEST_KNOWN, _REQUEST_DROPPED, PIVOT)
    out: Chat = {key: given[key] for key in _REQUEST if key in given and key != "system"}
    out["messages"] = chat_messages(given.get("system"), given.get("messages"))
    stop = given.get("stop_sequences")
    if stop:
        out["stop"] = list(stop)
    if given.get("tools"):
        out["tools"] = chat_tools(given["tools"])
    if given.get("tool_choice"):
        out.update(chat_tool_choice(given["tool_choice"]))
    if out.get("stream") is True:
        out["stream_options"] = {"include_usage": True}
    return out


def _message_usage(usage: Any) -> dict[str, int]:
    """OpenAI usage as Anthropic's: its input count leaves the cache reads out."""
    usage = usage if isinstance(usage, dict) else {}
    prompt = usage.get("prompt_tokens") or 0
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return {
        "input_tokens": max(prompt - cached, 0),
        "output_tokens": usage.get("completion_tokens") or 0,
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    }


def from_openai_chat(answer: Chat) -> Message:
    choice = (answer.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or f"toolu_{len(content)}",
                "name": function.get("name") or "",
                "input": arguments_of(function.get("arguments")),
            }
        )
    return Message.model_validate(
        {
            "id": answer.get("id") or "msg_fallback",
            "type": "message",
            "role": "assistant",
            "model": answer.get("model") or "",
            "content": content,
            "stop_reason": _STOP.get(choice.get("finish_reason") or "stop", "end_turn"),
            "stop_sequence": None,
            "usage": _message_usage(answer.get("usage")),
        }
    )


class _Events:
    """OpenAI chunk dicts (the first choice) as the Messages stream's events."""

    def __init__(self) -> None:
        self.started = False
        self.index = -1  # the open content block's index
        self.open: Any = None  # "text" or the OpenAI index of the open tool call
        self.reason: str | None = None
        self.usage: Any = None

    def feed(self, chunk: Chat) -> list[Any]:
        out: list[Any] = []
        if not self.started:
            self.started = True
            out.append(RawMessageStartEvent.model_validate(self._start(chunk)))
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) == 0:
                self._delta(choice, out)
        return out

    @staticmethod
    def _start(chunk: Chat) -> dict[str, Any]:
        message = {"id": chunk.get("id") or "msg_fallback", "type": "message"}
        message.update(role="assistant", model=chunk.get("model") or "", content=[])
        message.update(stop_reason=None, stop_sequence=None, usage=_message_usage(None))
        return {"type": "message_start", "message": message}

    def _delta(self, choice: Chat, out: list[Any]) -> None:
        delta = choice.get("delta") or {}
        if delta.get("content"):
            if self.open != "text":
                self._open({"type": "text", "text": ""}, "text", out)
            out.append(self._block_delta({"type": "text_delta", "text": delta["content"]}))
        for call in delta.get("tool_calls") or ():
            key = ("tool", call.get("index", 0))
            function = call.get("function") or {}
            if self.open != key:
                block = {"type": "tool_use", "id": call.get("id") or f"toolu_{key[1]}"}
                block.update(name=function.get("name") or "", input={})
                self._open(block, key, out)
            if function.get("arguments"):
                json_delta = {"type": "input_json_delta", "partial_json": function["arguments"]}
                out.append(self._block_delta(json_delta))
        if choice.get("finish_reason"):
            self.reason = choice["finish_reason"]

    def _open(self, block: dict[str, Any], key: Any, out: list[Any]) -> None:
        self._close(out)
        self.index += 1
        self.open = key
        start = {"type": "content_block_start", "index": self.index, "content_block": block}
        out.append(RawContentBlockStartEvent.model_validate(start))

    def _close(self, out: list[Any]) -> None:
        if self.open is not None:
            out.append(RawContentBlockStopEvent(type="content_block_stop", index=self.index))
            self.open = None

    def _block_delta(self, delta: dict[str, Any]) -> Any:
        event = {"type": "content_block_delta", "index": self.index, "delta": delta}
        return RawContentBlockDeltaEvent.model_validate(event)

    def end(self) -> list[Any]:
        """The closing events; none when the answer never said it finished (cut short)."""
        out: list[Any] = []
        self._close(out)
        if self.reason is None:
            return out
        stop = {"stop_reason": _STOP.get(self.reason, "end_turn"), "stop_sequence": None}
        delta = {"type": "message_delta", "delta": stop, "usage": _message_usage(self.usage)}
        out.append(RawMessageDeltaEvent.model_validate(delta))
        out.append(RawMessageStopEvent(type="message_stop"))
        return out


def from_openai_chunks(chunks: Iterator[Chat]) -> Iterator[Any]:
    """Chunk dicts as the SDK's stream events; closing this closes the source."""
    events = _Events()
    return converted(chunks, events.feed, events.end)


def from_openai_chunks_async(chunks: AsyncIterator[Chat]) -> AsyncIterator[Any]:
    events = _Events()
    return converted_async(chunks, events.feed, events.end)


# -- as a fallback target -------------------------------------------------------------------

_CHAT = ("model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p")
_CHAT_KNOWN = frozenset(
    {*_CHAT, "stop", "stream", "stream_options", "tools", "tool_choice", "timeout"}
    | {"n", "response_format", "parallel_tool_calls"}
)
_CHAT_DROPPED = frozenset(
    {"seed", "frequency_penalty", "presence_penalty", "logprobs", "top_logprobs", "logit_bias"}
    | {"user", "service_tier", "store", "metadata", "reasoning_effort", "prediction"}
    | {"safety_identifier", "extra_headers", "extra_query", "extra_body"}
)


def pivot_server(client: anthropic.Anthropic | anthropic.AsyncAnthropic) -> Attrs:
    return _server(client.base_url)


def pivot_timeout(client: anthropic.Anthropic | anthropic.AsyncAnthropic) -> float | None:
    return timeout_seconds(client.timeout)


def messages_request(pivot: Chat) -> dict[str, Any]:
    """An OpenAI chat request as a ``messages.create`` request; see the module's docstring."""
    given = split(pivot, _CHAT_KNOWN, _CHAT_DROPPED, TARGET)
    if given.get("n", 1) != 1:
        raise Untranslatable("n= other than 1 (one answer per request)", TARGET)
    fmt = plain(given.get("response_format"))
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        raise Untranslatable("response_format= (JSON output)", TARGET)
    temperature = given.get("temperature")
    if isinstance(temperature, int | float) and temperature > 1:
        raise Untranslatable("temperature= above 1", TARGET)
    system, messages = anthropic_messages(given.get("messages"))
    limit = given.get("max_completion_tokens", given.get("max_tokens"))
    out: dict[str, Any] = {"model": given["model"], "messages": messages}
    out["max_tokens"] = limit if isinstance(limit, int) else DEFAULT_MAX_OUTPUT_TOKENS
    if system:
        out["system"] = system
    for key in ("temperature", "top_p", "stream", "timeout"):
        if key in given:
            out[key] = given[key]
    stop = given.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if given.get("tools"):
        out["tools"] = anthropic_tools(given["tools"])
    choice = anthropic_tool_choice(given.get("tool_choice"), given.get("parallel_tool_calls"))
    if choice is not None:
        out["tool_choice"] = choice
    return out


def _chat_usage(usage: Any) -> dict[str, Any]:
    read = getattr(usage, "cache_read_input_tokens", None) or 0
    written = getattr(usage, "cache_creation_input_tokens", None) or 0
    prompt = (getattr(usage, "input_tokens", None) or 0) + read + written
    completion = getattr(usage, "output_tokens", None) or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": read},
    }


def _completion(message: Any) -> Chat:
    text = "".join(b.text for b in message.content if b.type == "text")
    calls = [
        {
            "id": b.id,
            "type": "function",
            "function": {"name": b.name, "arguments": json.dumps(b.input)},
        }
        for b in message.content
        if b.type == "tool_use"
    ]
    reply: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        reply["tool_calls"] = calls
    choice = {"index": 0, "message": reply, "logprobs": None}
    choice["finish_reason"] = _FINISH.get(message.stop_reason or "", "stop")
    return {
        "id": message.id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.model,
        "choices": [choice],
        "usage": _chat_usage(message.usage),
    }


class _Chunks:
    """The Messages stream's events as OpenAI chunk dicts."""

    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.id = "chatcmpl-fallback"
        self.model = ""
        self.created = int(time.time())
        self.role = True  # the first chunk the user sees says the role
        self.tool = -1
        self.usage: Any = None

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> Chat:
        if self.role:
            self.role = False
            delta = {"role": "assistant", **delta}
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return self._frame([choice])

    def _frame(self, choices: list[Any]) -> Chat:
        frame = {"id": self.id, "object": "chat.completion.chunk", "created": self.created}
        frame.update(model=self.model, choices=choices)
        return frame

    def feed(self, event: Any) -> list[Chat]:
        kind = event.type
        if kind == "message_start":
            message = event.message
            self.id, self.model, self.usage = message.id, message.model, message.usage
        elif kind == "content_block_start" and event.content_block.type == "tool_use":
            self.tool += 1
            block = event.content_block
            call = {"index": self.tool, "id": block.id, "type": "function"}
            call["function"] = {"name": block.name, "arguments": ""}
            return [self._chunk({"tool_calls": [call]})]
        elif kind == "content_block_delta":
            delta = event.delta
            if delta.type == "text_delta":
                return [self._chunk({"content": delta.text})]
            if delta.type == "input_json_delta":
                call = {"index": self.tool, "function": {"arguments": delta.partial_json}}
                return [self._chunk({"tool_calls": [call]})]
        elif kind == "message_delta":
            self.usage = _Totals(self.usage, event.usage)
            if event.delta.stop_reason is not None:
                return [self._chunk({}, _FINISH.get(event.delta.stop_reason, "stop"))]
        return []

    def end(self) -> list[Chat]:
        if not self.include_usage or self.usage is None:
            return []
        return [{**self._frame([]), "usage": _chat_usage(self.usage)}]


class _Totals:
    """A message's usage updated by a ``message_delta``'s (which leaves unchanged counts out)."""

    def __init__(self, start: Any, delta: Any) -> None:
        for name in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
            value = getattr(delta, name, None)
            setattr(self, name, value if value is not None else getattr(start, name, None))
        self.output_tokens = getattr(delta, "output_tokens", None)


def openai_chat(
    client: anthropic.Anthropic, timeout: float | None = None
) -> tuple[Callable[[Chat], Chat | Iterator[Chat]], str]:
    """``client`` answering OpenAI chat requests as dicts (see ``PivotTarget``)."""
    if not isinstance(client, anthropic.Anthropic):
        raise TypeError("an async Anthropic client cannot answer a sync call")
    _stainless.hush(client)
    tries = [0]

    def answer(pivot: Chat) -> Chat | Iterator[Chat]:
        request = messages_request(pivot)
        result = _stainless.call(client, False, tries, client.messages.create, request)
        if request.get("stream") is True:
            frames = _Chunks(include_usage(pivot))
            return converted(result, frames.feed, frames.end)
        return _completion(result)

    return answer, "anthropic"


def openai_chat_async(
    client: anthropic.AsyncAnthropic, timeout: float | None = None
) -> tuple[Callable[[Chat], Awaitable[Chat | AsyncIterator[Chat]]], str]:
    if not isinstance(client, anthropic.AsyncAnthropic):
        raise TypeError("a sync Anthropic client cannot answer an async call")
    _stainless.hush(client)
    tries = [0]

    async def answer(pivot: Chat) -> Chat | AsyncIterator[Chat]:
        request = messages_request(pivot)
        method = client.messages.create
        result = await _stainless.call_async(client, False, tries, method, request)
        if request.get("stream") is True:
            frames = _Chunks(include_usage(pivot))
            return converted_async(result, frames.feed, frames.end)
        return _completion(result)

    return answer, "anthropic"
