"""Anthropic's messages read for the engine: requests, answers and stream events.

The request's ``system`` and ``messages`` in the neutral form (checks, capture, budgets'
estimates), an answer's text and messages, the usage (cache reads and writes counted in the
input), the stream's events, and the re-ask (the wrong answer and the feedback appended to
``messages``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiguard import _semconv as sc
from aiguard._engine.contract import Reader
from aiguard._messages import Message, Part, plain, to_json
from aiguard._telemetry import Attrs
from aiguard._types import Usage
from aiguard.adapters import _shapes


def _message_attributes(message_id: Any, model: Any, stop_reason: Any) -> Attrs:
    attrs: Attrs = {}
    if isinstance(message_id, str):
        attrs[sc.RESPONSE_ID] = message_id
    if isinstance(model, str):
        attrs[sc.RESPONSE_MODEL] = model
    if isinstance(stop_reason, str):
        attrs[sc.RESPONSE_FINISH_REASONS] = [stop_reason]
    return attrs


def message_usage(usage: Any, delta: Any = None) -> Usage | None:
    """Usage from a message's ``usage``, updated by a stream's ``message_delta`` usage.

    Anthropic's ``input_tokens`` leaves out the tokens read from and written to the cache; the
    conventions' input total includes them, so they are added up. A ``message_delta`` carries
    cumulative totals, and leaves out the input counts that did not change.
    """
    if usage is None:
        return None

    def count(name: str) -> int | None:
        value = getattr(delta, name, None)
        if value is None:
            value = getattr(usage, name, None)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    read = count("cache_read_input_tokens")
    written = count("cache_creation_input_tokens")
    out = Usage(
        output_tokens=count("output_tokens"), cache_read_tokens=read, cache_write_tokens=written
    )
    plain = count("input_tokens")
    if plain is not None:
        out.input_tokens = plain + (read or 0) + (written or 0)
    details = getattr(delta, "output_tokens_details", None) or getattr(
        usage, "output_tokens_details", None
    )
    thinking = getattr(details, "thinking_tokens", None)
    if isinstance(thinking, int):
        out.reasoning_tokens = thinking
    return out


def anthropic_messages(system: Any, messages: Any) -> list[Message]:
    """A Messages request's ``system`` and ``messages`` in the neutral form (dicts or SDK objects).

    Only lists are read: any other iterable could be consumed before the SDK sends it.
    """
    out = []
    if isinstance(system, str | list | tuple):
        out.append(Message("system", _content_parts(system)))
    if not isinstance(messages, list | tuple):
        return out
    for message in messages:
        message = _plain(message)
        get = message.get if isinstance(message, dict) else _getter(message)
        role = get("role")
        parts = _content_parts(get("content"))
        out.append(Message(role if isinstance(role, str) else "user", parts))
    return out


def _getter(obj: Any) -> Callable[[str], Any]:
    return lambda name: getattr(obj, name, None)


def _plain(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    dump = getattr(value, "model_dump", None)
    return dump() if callable(dump) else value


def _content_parts(content: Any, tool_result: bool = False) -> list[Part]:
    if content is None:
        return []
    text = "tool_call_response" if tool_result else "text"
    if isinstance(content, str):
        return [Part(text, content)]
    if not isinstance(content, list | tuple):
        return [Part("other", to_json(_plain(content)))]
    parts = []
    for block in content:
        block = _plain(block)
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append(Part(text, block["text"]))
        elif kind == "image":
            parts.append(Part("image"))
        elif kind in ("tool_use", "server_tool_use"):
            parts.append(Part("tool_call", to_json(block)))
        elif kind == "tool_result":
            # Its content may hold images: count them as images, not by their JSON size.
            rest = {key: value for key, value in block.items() if key != "content"}
            parts.append(Part("tool_call_response", to_json(rest)))
            parts.extend(_content_parts(block.get("content"), tool_result=True))
        else:  # documents, thinking, search results: counted by their JSON size
            parts.append(Part("other", to_json(block)))
    return parts


_ANSWER_EVENTS = frozenset({"content_block_delta", "message_delta", "message_stop"})


class MessagesReader(Reader):
    """Reads a Messages event stream: the message's id, model and usage, its stop reason."""

    __slots__ = ("chunks", "complete", "delta", "id", "model", "reason", "started", "usage")

    def __init__(self) -> None:
        self.chunks = 0
        self.complete = False
        # The answer starts with its first delta: an overloaded error sent before then (after
        # message_start, as Anthropic does) is retried, since the user has seen nothing yet
        # (see aiguard._engine.stream.first_chunk).
        self.started = False
        self.id: Any = None
        self.model: Any = None
        self.reason: Any = None
        self.usage: Any = None  # message_start's: the input counts
        self.delta: Any = None  # the last message_delta's: the final output count

    def chunk(self, item: Any) -> bool:
        self.chunks += 1
        kind = item.type
        if kind in _ANSWER_EVENTS:
            self.started = True
        if kind == "message_start":
            message = item.message
            self.id = message.id
            self.model = message.model
            self.usage = message.usage
        elif kind == "message_delta":
            self.delta = item.usage
            reason = item.delta.stop_reason
            if reason is not None:
                self.reason = reason
                self.complete = True
        elif kind == "message_stop":
            self.complete = True
        return True

    def result(self) -> tuple[Attrs, Usage | None]:
        attrs = _message_attributes(self.id, self.model, self.reason)
        # Before message_delta the output count is message_start's placeholder: leave the usage
        # unknown, so budgets keep the worst case for an answer cut short.
        if self.delta is None:
            return attrs, None
        return attrs, message_usage(self.usage, self.delta)

    def text(self, item: Any) -> str:
        if item.type == "content_block_delta":
            return getattr(item.delta, "text", None) or ""
        return ""


def answer_text(result: Any) -> Any:
    """The text blocks of a message, joined."""
    content = getattr(result, "content", None)
    if not isinstance(content, list):
        return result
    return "".join(getattr(b, "text", "") for b in content if getattr(b, "type", "") == "text")


def answer_messages(result: Any) -> list[tuple[Message, str]]:
    """A message's text and tool calls, with its stop reason."""
    content = getattr(result, "content", None)
    if not isinstance(content, list):
        return []
    parts = []
    for block in map(plain, content):
        if block.get("type") == "text":
            parts.append(Part("text", block.get("text") or ""))
        elif block.get("type") == "tool_use":
            parts.append(Part("tool_call", to_json(block)))
    return [(Message("assistant", parts), _shapes.reason(getattr(result, "stop_reason", None)))]


_shapes.reads(answer_text)
