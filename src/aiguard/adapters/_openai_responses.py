"""The openai adapter's Responses route: ``responses.create`` (and ``responses.stream``).

Its requests (``instructions`` and ``input`` items), its answers (``output`` items and
``output_text``), its stream events (the final one carries the whole response) and its re-ask
(the wrong answer and the feedback appended to ``input``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiguard import _semconv as sc
from aiguard._engine.contract import Reader
from aiguard._messages import Message, Part, estimate_input_tokens, openai_messages, plain, to_json
from aiguard._output import feedback, previous_text
from aiguard._telemetry import Attrs
from aiguard._types import Usage
from aiguard.adapters import _shapes
from aiguard.adapters._openai_chat import _SAMPLING, _number, _numbers, _Route, _service_tier


class ResponsesRoute(_Route):
    """``responses.create`` (streams too) and, through it, ``responses.stream``."""

    def __init__(self) -> None:
        super().__init__("chat")

    def request_attributes(self, request: dict[str, Any]) -> Attrs:
        attrs: Attrs = {sc.OPENAI_API_TYPE: "responses"}
        limit = request.get("max_output_tokens")
        if _number(limit):
            attrs[sc.REQUEST_MAX_TOKENS] = limit
        _numbers(request, attrs, _SAMPLING[:2])
        _service_tier(request, attrs)
        reasoning = request.get("reasoning")
        effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
        if isinstance(effort, str):
            attrs[sc.REQUEST_REASONING_LEVEL] = effort
        previous = request.get("previous_response_id")
        if isinstance(previous, str):
            attrs[sc.PREVIOUS_RESPONSE_ID] = previous
        conversation = request.get("conversation")
        if isinstance(conversation, dict):
            conversation = conversation.get("id")
        if isinstance(conversation, str):
            attrs[sc.CONVERSATION_ID] = conversation
        if request.get("stream") is True:
            attrs[sc.REQUEST_STREAM] = True
        return attrs

    def response_attributes(self, result: Any) -> tuple[Attrs, Usage | None]:
        attrs: Attrs = {}
        for key, name in (("id", sc.RESPONSE_ID), ("model", sc.RESPONSE_MODEL)):
            value = getattr(result, key, None)
            if isinstance(value, str):
                attrs[name] = value
        status = getattr(result, "status", None)
        if status == "completed":
            attrs[sc.RESPONSE_FINISH_REASONS] = ["stop"]
        elif isinstance(status, str):
            reason = getattr(getattr(result, "incomplete_details", None), "reason", None)
            attrs[sc.RESPONSE_FINISH_REASONS] = [reason if isinstance(reason, str) else status]
        tier = getattr(result, "service_tier", None)
        if isinstance(tier, str):
            attrs[sc.OPENAI_RESPONSE_SERVICE_TIER] = tier
        return attrs, responses_usage(getattr(result, "usage", None))

    def estimate(self, request: dict[str, Any]) -> tuple[int, int | None]:
        given = request.get("input")
        if isinstance(given, str):
            messages = [Message("user", [Part("text", given)])]
        else:
            messages = openai_messages(
                [_response_item(item) for item in given] if isinstance(given, list) else None
            )
        extra = [to_json(request[k]) for k in ("tools", "text") if request.get(k) is not None]
        if isinstance(request.get("instructions"), str):
            extra.append(request["instructions"])
        limit = request.get("max_output_tokens")
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            return estimate_input_tokens(messages, extra), limit
        return estimate_input_tokens(messages, extra), None

    def answer_text(self, result: Any) -> Any:
        text = getattr(result, "output_text", None)
        return text if isinstance(text, str) else result

    def answer_messages(self, result: Any) -> list[tuple[Message, str]]:
        return output_messages(result)

    def reask(self, request: dict[str, Any], answer: Any, errors: list[str]) -> dict[str, Any]:
        turn = [
            {"role": "assistant", "content": previous_text(answer)},
            {"role": "user", "content": feedback(errors)},
        ]
        given = request.get("input")
        if isinstance(given, str):
            return {**request, "input": [{"role": "user", "content": given}, *turn]}
        if isinstance(given, list | tuple):
            return {**request, "input": [*given, *turn]}
        return request

    def stream(
        self, request: dict[str, Any], include_usage: bool
    ) -> tuple[dict[str, Any], Callable[[], Reader]] | None:
        # The final event carries the whole response with its usage: nothing to ask for.
        return (request, ResponsesReader) if request.get("stream") is True else None


def _response_item(item: Any) -> Any:
    """A Responses input item as a chat message: its parts' types differ (``input_text``)."""
    item = plain(item)
    if not isinstance(item, dict):
        return item
    content = item.get("content")
    if isinstance(content, list):
        parts = []
        for part in content:
            part = plain(part)
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in ("input_text", "output_text") and isinstance(part.get("text"), str):
                parts.append({"type": "text", "text": part["text"]})
            elif kind == "input_image":
                parts.append({"type": "image"})
            else:
                parts.append(part)
        return {**item, "content": parts}
    if "role" not in item:  # a function call, its output, a reasoning item: counted as JSON
        return {"role": "tool", "content": to_json(item)}
    return item


class ResponsesReader(Reader):
    """Reads Responses stream events: the final event carries the whole response."""

    __slots__ = ("chunks", "complete", "response")

    def __init__(self) -> None:
        self.chunks = 0
        self.complete = False
        self.response: Any = None

    def chunk(self, item: Any) -> bool:
        self.chunks += 1
        kind = item.type
        if kind in _FINAL_EVENTS:
            self.response = item.response
            self.complete = True
        elif kind == "response.created":
            self.response = item.response
        return True

    def result(self) -> tuple[Attrs, Usage | None]:
        if self.response is None:
            return {}, None
        return _RESPONSES.response_attributes(self.response)

    def text(self, item: Any) -> str:
        return str(item.delta) if item.type == "response.output_text.delta" else ""


_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def responses_usage(usage: Any) -> Usage | None:
    if usage is None:
        return None
    out = Usage()
    inputs, outputs = getattr(usage, "input_tokens", None), getattr(usage, "output_tokens", None)
    if isinstance(inputs, int):
        out.input_tokens = inputs
    if isinstance(outputs, int):
        out.output_tokens = outputs
    cached = getattr(getattr(usage, "input_tokens_details", None), "cached_tokens", None)
    if isinstance(cached, int):
        out.cache_read_tokens = cached
    reasoning = getattr(getattr(usage, "output_tokens_details", None), "reasoning_tokens", None)
    if isinstance(reasoning, int):
        out.reasoning_tokens = reasoning
    return out


def output_messages(result: Any) -> list[tuple[Message, str]]:
    """A response's ``output`` as one assistant message: its text and its function calls."""
    output = getattr(result, "output", None)
    if not isinstance(output, list):
        return []
    parts = []
    for item in map(plain, output):
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "message":
            for block in item.get("content") or ():
                if isinstance(block, dict) and isinstance(block.get("text"), str):
                    parts.append(Part("text", block["text"]))
        elif kind == "function_call":
            parts.append(Part("tool_call", to_json(item)))
    status = getattr(result, "status", None)
    reason = "stop" if status == "completed" else _shapes.reason(status)
    return [(Message("assistant", parts), reason)]


_RESPONSES = ResponsesRoute()
_shapes.reads(_RESPONSES.answer_text)
