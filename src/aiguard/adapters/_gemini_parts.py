"""Gemini contents in the neutral message form, for checks, budgets and content capture; and
the shapes of its answers: their text and messages, a chunk's text, the re-ask (its contents).

``contents`` may be a string, a ``Part``, a ``Content``, a dict of either, or a list mixing them
(consecutive parts make one message); the SDK's own normalisation reads them, as it does before
sending. Roles become the conventions' (``model`` is ``assistant``; a message of function
responses is ``tool``); function calls and responses are structured parts.
"""

from __future__ import annotations

from typing import Any

from google.genai import _transformers, types

from aiguard._messages import Message, Part, to_json
from aiguard._output import feedback, previous_text
from aiguard.adapters import _shapes


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


# -- answers -------------------------------------------------------------------------------


def _parts_of(candidate: Any) -> list[Any]:
    content = getattr(candidate, "content", None)
    return list(getattr(content, "parts", None) or ())


def _texts(candidate: Any) -> list[str]:
    """A candidate's answer text (its thoughts left out)."""
    return [
        p.text
        for p in _parts_of(candidate)
        if isinstance(getattr(p, "text", None), str) and not getattr(p, "thought", None)
    ]


def answer_text(result: Any) -> Any:
    """The first candidate's text, or what the SDK parsed (``response_schema``)."""
    candidates = getattr(result, "candidates", None)
    if not isinstance(candidates, list) or not candidates:
        return result
    parsed = getattr(result, "parsed", None)
    return parsed if parsed is not None else "".join(_texts(candidates[0]))


def _answer(candidate: Any) -> tuple[Message, str]:
    parts = _shapes.text_parts("".join(_texts(candidate)))
    for part in _parts_of(candidate):
        call = getattr(part, "function_call", None)
        if call is not None:
            data = {"id": call.id, "name": call.name, "arguments": call.args}
            parts.append(Part("tool_call", to_json(data)))
    reason = getattr(candidate, "finish_reason", None)
    name = getattr(reason, "name", reason)
    return Message("assistant", parts), name.lower() if isinstance(name, str) else ""


def answer_messages(result: Any) -> list[tuple[Message, str]]:
    """One message per candidate: text and function calls, with its finish reason."""
    candidates = getattr(result, "candidates", None)
    return [_answer(c) for c in candidates] if isinstance(candidates, list) else []


def chunk_text(chunk: Any) -> str:
    try:
        candidates = getattr(chunk, "candidates", None)
        return "".join(_texts(candidates[0])) if candidates else ""
    except (AttributeError, IndexError, TypeError):
        return ""


def reask(request: dict[str, Any], raw: Any, errors: list[str]) -> dict[str, Any]:
    """Gemini ``contents`` with the wrong answer and the errors after them. A string or a
    single part or content is one user turn; a list of parts is too (the SDK sends consecutive
    parts as one user content)."""
    if "contents" not in request:
        return request
    contents = request["contents"]
    given = contents if isinstance(contents, list) else [contents]
    if not all(_is_content(item) for item in given):
        given = [{"role": "user", "parts": [_part_of(item) for item in given]}]
    turn = [
        {"role": "model", "parts": [{"text": previous_text(raw)}]},
        {"role": "user", "parts": [{"text": feedback(errors)}]},
    ]
    return {**request, "contents": [*given, *turn]}


def _is_content(item: Any) -> bool:
    if isinstance(item, dict):
        return "role" in item or "parts" in item
    return hasattr(item, "parts") and hasattr(item, "role")


def _part_of(item: Any) -> Any:
    return {"text": item} if isinstance(item, str) else item


_shapes.reads(answer_text)


def tool_definitions(config: Any) -> list[Any] | None:
    """A request's ``config.tools`` as flat definitions (``type``, ``name``, ``description``,
    ``parameters``): each function declaration, a Python function by its name and docstring, a
    built-in tool (``google_search``, ``code_execution``...) named by its kind."""
    tools = config.get("tools") if isinstance(config, dict) else getattr(config, "tools", None)
    if not isinstance(tools, list | tuple):
        return None
    out: list[Any] = []
    for tool in tools:
        if callable(tool) and not isinstance(tool, types.Tool | dict):
            described = {"description": tool.__doc__} if tool.__doc__ else {}
            out.append({"type": "function", "name": getattr(tool, "__name__", ""), **described})
            continue
        given = plain(tool)
        if not isinstance(given, dict):
            continue
        for declaration in given.get("function_declarations") or ():
            out.append(_declaration(declaration))
        out += [{"type": k, "name": k} for k in given if k != "function_declarations"]
    return out or None


def _declaration(declaration: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "function", "name": declaration.get("name")}
    if declaration.get("description"):
        out["description"] = declaration["description"]
    schema = declaration.get("parameters_json_schema")
    if schema is None and declaration.get("parameters") is not None:
        schema = lower_types(declaration["parameters"])  # a types.Schema, dumped
    if schema is not None:
        out["parameters"] = schema
    return out


def lower_types(node: Any) -> Any:
    """A dumped ``types.Schema`` as JSON Schema: its types (``OBJECT``...) in lower case."""
    if isinstance(node, dict):
        return {
            k: (v.lower() if k == "type" and isinstance(v, str) else lower_types(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [lower_types(v) for v in node]
    return node
