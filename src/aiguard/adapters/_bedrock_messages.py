"""A Bedrock converse request's ``system`` and ``messages`` in aiguard's neutral form: what
checks read (and redact) and content capture records; and its answers' shapes: their text and
messages, a stream event's text, the re-ask (content blocks keyed by kind)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiguard._messages import Message, Part, to_json
from aiguard._output import feedback, previous_text
from aiguard.adapters import _shapes


def _block_part(block: Mapping[str, Any]) -> Part | None:
    """One content block of a converse message as a neutral part (None: nothing to read)."""
    if isinstance(block.get("text"), str):
        return Part("text", block["text"])
    if "image" in block:
        return Part("image")
    if "toolUse" in block:
        return Part("tool_call", to_json(block["toolUse"]))
    result = block.get("toolResult")
    if isinstance(result, Mapping):
        content = result.get("content") or []
        texts = [c.get("text") for c in content if isinstance(c, Mapping)]
        if texts and all(isinstance(t, str) for t in texts):
            text = "\n".join(str(t) for t in texts)
        else:
            text = to_json(content)
        tool_id = result.get("toolUseId")
        return Part("tool_call_response", text, tool_id if isinstance(tool_id, str) else None)
    guard = block.get("guardContent")
    if isinstance(guard, Mapping):
        said = (guard.get("text") or {}).get("text")
        return Part("text", said) if isinstance(said, str) else None
    reasoning = block.get("reasoningContent")
    if isinstance(reasoning, Mapping):
        thought = (reasoning.get("reasoningText") or {}).get("text")
        return Part("other", thought if isinstance(thought, str) else "")
    if "cachePoint" in block:
        return None
    return Part("other", to_json({k: v for k, v in block.items() if not _binary(v)}))


def _binary(value: Any) -> bool:
    return isinstance(value, bytes | bytearray) or (
        isinstance(value, Mapping) and any(_binary(v) for v in value.values())
    )


def _parts(blocks: Any) -> list[Part]:
    if not isinstance(blocks, list | tuple):
        return []
    found = (_block_part(b) for b in blocks if isinstance(b, Mapping))
    return [p for p in found if p is not None]


def converse_messages(request: Mapping[str, Any]) -> list[Message]:
    """A converse request's ``system`` and ``messages`` in the neutral form."""
    out: list[Message] = []
    system = _parts(request.get("system"))
    if system:
        out.append(Message("system", system, instructions=True))
    for message in request.get("messages") or ():
        if isinstance(message, Mapping):
            role = message.get("role")
            parts = _parts(message.get("content"))
            out.append(Message(role if isinstance(role, str) else "user", parts))
    return out


def _answer_blocks(result: Any) -> list[dict[str, Any]] | None:
    """The content blocks of a converse answer (a dict), or None for another shape."""
    output = result.get("output") if isinstance(result, Mapping) else None
    message = output.get("message") if isinstance(output, Mapping) else None
    content = message.get("content") if isinstance(message, Mapping) else None
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else None


def answer_text(result: Any) -> Any:
    blocks = _answer_blocks(result)
    if blocks is None:
        return result
    return "".join(b["text"] for b in blocks if isinstance(b.get("text"), str))


def answer_messages(result: Any) -> list[tuple[Message, str]]:
    blocks = _answer_blocks(result)
    if blocks is None:
        return []
    parts = _shapes.text_parts("".join(b["text"] for b in blocks if isinstance(b.get("text"), str)))
    parts += [Part("tool_call", to_json(b["toolUse"])) for b in blocks if "toolUse" in b]
    return [(Message("assistant", parts), _shapes.reason(result.get("stopReason")))]


def event_text(event: Any) -> str:
    """The text a ``converse_stream`` event carries ("" if none)."""
    try:
        return str(event["contentBlockDelta"]["delta"].get("text") or "")
    except (KeyError, TypeError, AttributeError):
        return ""


def reask(request: dict[str, Any], raw: Any, errors: list[str]) -> dict[str, Any]:
    """The request with the wrong answer and the errors appended, as content blocks."""
    if not isinstance(request.get("messages"), list | tuple):
        return request
    turn = [
        {"role": "assistant", "content": [{"text": previous_text(raw)}]},
        {"role": "user", "content": [{"text": feedback(errors)}]},
    ]
    return {**request, "messages": [*request["messages"], *turn]}


_shapes.reads(answer_text)


def tool_definitions(request: Mapping[str, Any]) -> list[Any] | None:
    """A converse request's ``toolConfig.tools`` as flat definitions (``type``, ``name``,
    ``description``, ``parameters``): each ``toolSpec``, a ``systemTool`` by its name; cache
    points are no tools."""
    config = request.get("toolConfig")
    tools = config.get("tools") if isinstance(config, Mapping) else None
    if not isinstance(tools, list | tuple):
        return None
    out: list[Any] = []
    for tool in tools:
        spec = tool.get("toolSpec") if isinstance(tool, Mapping) else None
        system = tool.get("systemTool") if isinstance(tool, Mapping) else None
        if isinstance(spec, Mapping):
            found: dict[str, Any] = {"type": "function", "name": spec.get("name")}
            if spec.get("description"):
                found["description"] = spec["description"]
            schema = spec.get("inputSchema")
            if isinstance(schema, Mapping) and schema.get("json") is not None:
                found["parameters"] = schema["json"]
            out.append(found)
        elif isinstance(system, Mapping):
            out.append({"type": "system_tool", "name": system.get("name")})
    return out or None
