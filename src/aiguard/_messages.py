"""Requests in one neutral form, whatever the provider, and a conservative token estimate.

Adapters translate their request's messages into :class:`Message` (roles and typed parts, the
shape of the GenAI conventions' ``gen_ai.input.messages``), so budgets, checks and content capture
are written once. Nothing reads message text unless a budget, a check or capture asks for it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

# Tokens counted per message for the role and separators the chat templates add, and per call.
MESSAGE_OVERHEAD = 8
CALL_OVERHEAD = 16
# An image's tokens depend on its size and the model; no current model charges more than this
# for one image at its largest (OpenAI high detail, Anthropic, Gemini).
IMAGE_TOKENS = 6_500
# Output tokens assumed when the request sets no limit and the model's is unknown.
DEFAULT_MAX_OUTPUT_TOKENS = 4_096


@dataclass(slots=True)
class Part:
    """One part of a message: ``type`` is ``text``, ``image``, ``tool_call``,
    ``tool_call_response`` or ``other``; ``content`` is its text (JSON for structured parts)."""

    type: str
    content: str = ""
    # The tool call a ``tool_call_response`` answers, when the request says.
    id: str | None = None


@dataclass(slots=True)
class Message:
    """A message with its role (``system``, ``user``, ``assistant``, ``tool``) and parts.

    ``instructions``: system instructions given apart from the chat history (Anthropic's
    ``system``, the Responses API's ``instructions``), not a message of the history.
    """

    role: str
    parts: list[Part] = field(default_factory=list)
    instructions: bool = False

    @property
    def text(self) -> str:
        """The text parts joined: what a check reads."""
        return "\n".join(part.content for part in self.parts if part.type == "text")


def to_json(value: Any) -> str:
    """Structured content as compact JSON, never failing (unknown objects become their repr)."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=repr)
    except (TypeError, ValueError):
        return repr(value)


def estimate_input_tokens(messages: Iterable[Message], extra: Iterable[str] = ()) -> int:
    """An upper bound of the input tokens of a request, for ordinary text.

    Byte-level BPE tokenizers (OpenAI's, Llama's, Anthropic's) never make a token of less than one
    UTF-8 byte, so the byte count bounds the token count; per-message overhead covers the chat
    template, and each image counts as the dearest image any current model bills. ``extra`` is
    other text sent with the request (tool definitions, a JSON schema).
    """
    total = CALL_OVERHEAD
    for message in messages:
        total += MESSAGE_OVERHEAD
        for part in message.parts:
            if part.type == "image":
                total += IMAGE_TOKENS
            else:
                total += len(part.content.encode("utf-8", "surrogatepass"))
    for text in extra:
        total += len(text.encode("utf-8", "surrogatepass"))
    return total


def openai_messages(messages: Any) -> list[Message]:
    """Messages in the OpenAI chat format (dicts or SDK objects) in the neutral form.

    That format is the lingua franca of local servers and llama.cpp too, hence it lives here.
    """
    if not isinstance(messages, list | tuple):
        return []
    out = []
    for message in messages:
        get = message.get if isinstance(message, dict) else _getter(message)
        role = get("role")
        parts = _content_parts(get("content"))
        for call in get("tool_calls") or ():
            parts.append(Part("tool_call", to_json(plain(call))))
        if get("function_call"):
            parts.append(Part("tool_call", to_json(plain(get("function_call")))))
        if role == "tool":
            parts = [Part("tool_call_response", p.content) for p in parts]
        out.append(Message(role if isinstance(role, str) else "user", parts))
    return out


def _getter(obj: Any) -> Callable[[str], Any]:
    return lambda name: getattr(obj, name, None)


def plain(value: Any) -> Any:
    """An SDK object (pydantic) as plain data; anything else unchanged."""
    dump = getattr(value, "model_dump", None)
    return dump() if callable(dump) else value


def _content_parts(content: Any) -> list[Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [Part("text", content)]
    if not isinstance(content, list | tuple):
        return [Part("other", to_json(plain(content)))]
    parts = []
    for item in content:
        item = plain(item)
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "text" and isinstance(item.get("text"), str):
            parts.append(Part("text", item["text"]))
        elif kind in ("image_url", "image"):
            parts.append(Part("image"))
        else:  # audio, files, refusals: counted by their JSON size
            parts.append(Part("other", to_json(item)))
    return parts


def replace_text(value: Any, replacements: dict[str, str]) -> Any:
    """``value`` with every string equal to a key replaced, in new dicts and lists (the caller's
    objects are never changed). Used to send a check's redacted text instead of the original."""
    if isinstance(value, str):
        return replacements.get(value, value)
    if isinstance(value, dict):
        return {k: replace_text(v, replacements) for k, v in value.items()}
    if isinstance(value, list):
        return [replace_text(v, replacements) for v in value]
    if isinstance(value, tuple):
        return tuple(replace_text(v, replacements) for v in value)
    dump = getattr(value, "model_dump", None)
    if callable(dump):  # an SDK object (a message from an earlier response)
        dumped = dump()
        replaced = replace_text(dumped, replacements)
        return value if replaced == dumped else replaced
    return value
