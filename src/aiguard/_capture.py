"""Opt-in capture of prompts and answers in telemetry, scrubbed of secrets and PII.

Off by default: with capture off no code path reads message text for telemetry. The mode comes
from ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` (``NO_CONTENT``, ``SPAN_ONLY``,
``EVENT_ONLY``, ``SPAN_AND_EVENT``; case-insensitive; ``true`` means ``SPAN_ONLY``) unless
``aiguard.configure(capture_content=...)`` sets it. Captured text always has secrets replaced,
PII too unless ``capture_pii=True``, and is cut to ``capture_max_chars`` with a marker.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from aiguard._messages import Message, plain
from aiguard._policy import parse_mode
from aiguard._telemetry import Attrs, report_fault

ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
EVENT_NAME = "gen_ai.client.inference.operation.details"
INPUT = "gen_ai.input.messages"
OUTPUT = "gen_ai.output.messages"
SYSTEM = "gen_ai.system_instructions"
TOOL_DEFINITIONS = "gen_ai.tool.definitions"
# Content attributes: JSON strings on spans, structured values in events.
JSON_KEYS = (INPUT, OUTPUT, SYSTEM, TOOL_DEFINITIONS)
TRUNCATED = "…[truncated by aiguard]"


@dataclass(frozen=True, slots=True)
class CaptureSettings:
    """What content capture records for a call: on the span, in a log event, with personal
    data kept or scrubbed, each value cut at ``max_chars``."""

    span: bool
    event: bool
    keep_pii: bool = False
    max_chars: int = 8192


class _Configured:
    """The settings ``configure()`` gave, and those read once from the environment."""

    explicit: CaptureSettings | None = None
    from_env: CaptureSettings | bool | None = False  # False: not read yet


_state = _Configured()


def set_capture(mode: object, keep_pii: bool, max_chars: int) -> None:
    """``configure(capture_content=...)``: overrides the environment; None goes back to it."""
    if not isinstance(keep_pii, bool):
        raise TypeError("capture_pii= must be True or False")
    if not isinstance(max_chars, int) or isinstance(max_chars, bool) or max_chars < 16:
        raise TypeError("capture_max_chars= must be a whole number of at least 16")
    if mode is None:
        _state.explicit = None
        return
    span, event = parse_mode(mode)
    _state.explicit = CaptureSettings(span, event, keep_pii, max_chars)


def reset() -> None:
    _state.explicit = None
    _state.from_env = False


def current(override: str | bool | None = None) -> CaptureSettings | None:
    """The capture in force (a policy's ``override`` first), or None when nothing is captured."""
    if override is not None:
        span, event = parse_mode(override)
        process = _state.explicit
        keep_pii = process.keep_pii if process is not None else False
        max_chars = process.max_chars if process is not None else 8192
        return CaptureSettings(span, event, keep_pii, max_chars) if span or event else None
    chosen = _state.explicit
    if chosen is None:
        found = _state.from_env
        if found is False:
            found = _state.from_env = _from_env()
        chosen = found if isinstance(found, CaptureSettings) else None
    if chosen is None or not (chosen.span or chosen.event):
        return None
    return chosen


def _from_env() -> CaptureSettings | None:
    try:
        span, event = parse_mode(os.environ.get(ENV, ""))
    except ValueError:
        report_fault(f"reading {ENV}", ValueError(os.environ.get(ENV)))
        return None
    return CaptureSettings(span, event)


def _clean(text: str, capture: CaptureSettings) -> str:
    from aiguard.checks import scrub

    cleaned = scrub(text, pii=not capture.keep_pii)
    if len(cleaned) > capture.max_chars:
        cleaned = cleaned[: capture.max_chars] + TRUNCATED
    return cleaned


def _parts(message: Message, capture: CaptureSettings) -> list[dict[str, Any]]:
    """A message's parts in the conventions' schema (text, tool_call, tool_call_response,
    blob, or a generic part), its text scrubbed."""
    parts: list[dict[str, Any]] = []
    for part in message.parts:
        if part.type == "text":
            parts.append({"type": "text", "content": _clean(part.content, capture)})
        elif part.type == "tool_call":
            parts.append(_tool_call(part.content, capture))
        elif part.type == "tool_call_response":
            parts.append(
                {
                    "type": "tool_call_response",
                    "id": part.id,
                    "response": _scrubbed(_parsed(part.content), capture),
                }
            )
        elif part.type == "image":
            # The image itself is never captured: its bytes or URL may be private.
            parts.append({"type": "blob", "modality": "image", "content": ""})
        else:
            parts.append({"type": part.type, "content": _clean(part.content, capture)})
    return parts


def _tool_call(content: str, capture: CaptureSettings) -> dict[str, Any]:
    """A provider's tool call (OpenAI, Responses, Anthropic, Ollama JSON) as a schema part."""
    call = _parsed(content)
    if not isinstance(call, dict):
        return {"type": "tool_call", "id": None, "name": "", "arguments": None}
    given = call.get("function")
    function: dict[str, Any] = given if isinstance(given, dict) else {}
    name = call.get("name") or function.get("name") or ""
    arguments = call.get("arguments", call.get("input", function.get("arguments")))
    return {
        "type": "tool_call",
        "id": call.get("id") or call.get("call_id"),
        "name": str(name),
        "arguments": _scrubbed(_parsed(arguments), capture),
    }


def _parsed(value: Any) -> Any:
    """JSON text as its value; anything else as it is."""
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            pass
    return value


def _scrubbed(value: Any, capture: CaptureSettings) -> Any:
    if isinstance(value, str):
        return _clean(value, capture)
    if isinstance(value, dict):
        return {k: _scrubbed(v, capture) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrubbed(v, capture) for v in value]
    return value


def input_attributes(messages: list[Message], capture: CaptureSettings) -> Attrs:
    """``gen_ai.input.messages`` (the chat history in the order sent, system messages included)
    and ``gen_ai.system_instructions`` (instructions given apart from it), as JSON strings."""
    system = [p for m in messages if m.instructions for p in _parts(m, capture)]
    chat = [{"role": m.role, "parts": _parts(m, capture)} for m in messages if not m.instructions]
    attrs: Attrs = {INPUT: json.dumps(chat, ensure_ascii=False)}
    if system:
        attrs[SYSTEM] = json.dumps(system, ensure_ascii=False)
    return attrs


def tool_definitions(tools: Any) -> Attrs:
    """``gen_ai.tool.definitions`` from a request's ``tools`` (OpenAI chat and Responses,
    Anthropic, Ollama shapes): ``[{"type", "name", "description", "parameters"}]``.

    Definitions are the developer's, not the user's: recorded as they are, with capture on.
    """
    if not isinstance(tools, list | tuple) or not tools:
        return {}
    out = []
    for tool in tools:
        tool = plain(tool)
        if not isinstance(tool, dict):
            continue
        inner = tool.get("function")
        function: dict[str, Any] = inner if isinstance(inner, dict) else tool
        definition: dict[str, Any] = {
            "type": "function"
            if "function" in tool or tool.get("type") == "function"
            else str(tool.get("type") or "function"),
            "name": function.get("name"),
        }
        if function.get("description") is not None:
            definition["description"] = function.get("description")
        parameters = function.get("parameters", function.get("input_schema"))
        if parameters is not None:
            definition["parameters"] = parameters
        out.append(definition)
    return {TOOL_DEFINITIONS: json.dumps(out, ensure_ascii=False, default=repr)} if out else {}


def output_attributes(answers: list[tuple[Message, str]], capture: CaptureSettings) -> Attrs:
    """``gen_ai.output.messages``: one message per choice, with its finish reason."""
    if not answers:
        return {}
    messages = [
        {"role": m.role, "parts": _parts(m, capture), "finish_reason": reason}
        for m, reason in answers
    ]
    return {OUTPUT: json.dumps(messages, ensure_ascii=False)}


def _json(value: Any) -> str:
    dump = getattr(value, "model_dump_json", None)
    if callable(dump):
        return str(dump())
    return json.dumps(value, ensure_ascii=False, default=repr)


def structured(attributes: Attrs) -> dict[str, Any]:
    """Content attributes with their JSON strings parsed, for the details event."""
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        if key in JSON_KEYS and isinstance(value, str):
            try:
                out[key] = json.loads(value)
            except ValueError:
                out[key] = value
        else:
            out[key] = value
    return out
