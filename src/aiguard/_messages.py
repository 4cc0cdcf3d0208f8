"""Requests in one neutral form, whatever the provider, and a conservative token estimate.

Adapters translate their request's messages into :class:`Message` (roles and typed parts, the
shape of the GenAI conventions' ``gen_ai.input.messages``), so budgets, checks and content capture
are written once. Nothing reads message text unless a budget, a check or capture asks for it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
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


@dataclass(slots=True)
class Message:
    """A message with its role (``system``, ``user``, ``assistant``, ``tool``) and parts."""

    role: str
    parts: list[Part] = field(default_factory=list)

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
