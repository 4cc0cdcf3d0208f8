"""Gemini contents in the neutral message form, for checks, budgets and content capture.

``contents`` may be a string, a ``Part``, a ``Content``, a dict of either, or a list mixing them
(consecutive parts make one message); the SDK's own normalisation reads them, as it does before
sending. Roles become the conventions' (``model`` is ``assistant``; a message of function
responses is ``tool``); function calls and responses are structured parts.
"""

from __future__ import annotations

from typing import Any

from google.genai import _transformers, types

from aiguard._messages import Message, Part, to_json


def plain(value: Any) -> Any:
    """An SDK object as plain JSON-ready data (its set fields only); anything else as it is."""
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    dump = getattr(value, "model_dump", None)
    return dump(mode="json", exclude_none=True) if callable(dump) else value


def _contents(contents: Any) -> list[types.Content]:
    """The SDK's own reading of ``contents``; nothing when it cannot read them (it will raise
    its own error when the request is sent)."""
    if contents is None:
        return []
    try:
        return list(_transformers.t_contents(contents))
    except Exception:
        return []


def _part(part: types.Part) -> Part:
    if part.function_call is not None:
        call = part.function_call
        return Part(
            "tool_call", to_json({"id": call.id, "name": call.name, "arguments": call.args})
        )
    if part.function_response is not None:
        answer = part.function_response
        return Part("tool_call_response", to_json(answer.response), answer.id)
    if isinstance(part.text, str):
        return Part("other" if part.thought else "text", part.text)
    blob = part.inline_data or part.file_data
    mime = getattr(blob, "mime_type", None)
    if isinstance(mime, str) and mime.startswith("image/"):
        return Part("image")
    return Part("other", to_json(plain(part)))


def _role(content: types.Content, parts: list[Part]) -> str:
    if parts and all(p.type == "tool_call_response" for p in parts):
        return "tool"
    return "assistant" if content.role == "model" else "user"


def gemini_messages(contents: Any, system_instruction: Any) -> list[Message]:
    """A request's system instruction and contents as neutral messages."""
    out: list[Message] = []
    if system_instruction is not None:
        system = _contents(
            system_instruction if isinstance(system_instruction, list) else [system_instruction]
        )
        parts = [_part(p) for content in system for p in content.parts or ()]
        if parts:
            out.append(Message("system", parts, instructions=True))
    for content in _contents(contents):
        parts = [_part(p) for p in content.parts or ()]
        out.append(Message(_role(content, parts), parts))
    return out
