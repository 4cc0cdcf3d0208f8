"""Anthropic's messages, tools and tool choice in OpenAI's chat format, and back (the pivot).

Text, images (base64 or URL), tool calls and tool results translate both ways; thinking blocks
are left out (named in a span event); anything else (documents, server tools, search results)
raises :class:`~aiguard.adapters._pivot.Untranslatable`.
"""

from __future__ import annotations

import json
from typing import Any

from aiguard._messages import plain
from aiguard.adapters._pivot import Untranslatable, dropped

PIVOT = "OpenAI chat format"
TARGET = "anthropic"

# -- Anthropic -> OpenAI chat -----------------------------------------------------------------


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    texts = []
    for block in plain(system) or ():
        if not isinstance(block, dict) or block.get("type") != "text":
            raise Untranslatable("a system block that is not text", PIVOT)
        texts.append(str(block.get("text") or ""))
    return "\n\n".join(texts)


def chat_messages(system: Any, messages: Any) -> list[dict[str, Any]]:
    """A Messages request's ``system`` and ``messages`` as OpenAI chat messages."""
    out: list[dict[str, Any]] = []
    if system:
        out.append({"role": "system", "content": _system_text(system)})
    lost: set[str] = set()
    for message in messages or ():
        message = plain(message)
        role, content = message.get("role"), plain(message.get("content"))
        if isinstance(content, str):
            out.append({"role": role, "content": content})
        elif role == "assistant":
            out.append(_assistant_turn(content, lost))
        else:
            out.extend(_user_turn(content or ()))
    dropped(lost, PIVOT)
    return out


def _image_url(source: dict[str, Any]) -> dict[str, Any]:
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
    elif source.get("type") == "url":
        url = str(source.get("url"))
    else:
        raise Untranslatable(f"an image from a {source.get('type')!r} source", PIVOT)
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_text(content: Any) -> str:
    if isinstance(content, str) or content is None:
        return content or ""
    texts = []
    for block in plain(content):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise Untranslatable("a tool result that is not text", PIVOT)
        texts.append(str(block.get("text") or ""))
    return "\n".join(texts)


def _user_turn(content: Any) -> list[dict[str, Any]]:
    """Tool results become tool messages (first: they answer the last turn's calls)."""
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in map(plain, content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": block.get("text") or ""})
        elif kind == "image":
            parts.append(_image_url(plain(block.get("source")) or {}))
        elif kind == "tool_result":
            text = _tool_text(block.get("content"))
            tools.append({"role": "tool", "tool_call_id": block.get("tool_use_id")})
            tools[-1]["content"] = text
        else:
            raise Untranslatable(f"a {kind!r} content block", PIVOT)
    if len(parts) == 1 and parts[0]["type"] == "text":
        return [*tools, {"role": "user", "content": parts[0]["text"]}]
    return [*tools, {"role": "user", "content": parts}] if parts else tools


def _assistant_turn(content: Any, lost: set[str]) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in map(plain, content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            function = {"name": block.get("name"), "arguments": json.dumps(block.get("input"))}
            calls.append({"id": block.get("id"), "type": "function", "function": function})
        elif kind in ("thinking", "redacted_thinking"):
            lost.add(kind)
        else:
            raise Untranslatable(f"a {kind!r} content block", PIVOT)
    turn: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        turn["tool_calls"] = calls
    return turn


def chat_tools(tools: Any) -> list[dict[str, Any]]:
    out = []
    for tool in map(plain, tools):
        if not isinstance(tool, dict) or tool.get("type") not in (None, "custom"):
            kind = tool.get("type") if isinstance(tool, dict) else type(tool).__name__
            raise Untranslatable(f"the server tool {kind!r}", PIVOT)
        function = {"name": tool.get("name"), "parameters": tool.get("input_schema")}
        if tool.get("description"):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def chat_tool_choice(choice: Any) -> dict[str, Any]:
    """``tool_choice`` (and ``parallel_tool_calls``) of an OpenAI request."""
    choice = plain(choice)
    kind = choice.get("type") if isinstance(choice, dict) else None
    named = {"type": "function", "function": {"name": choice.get("name")}} if kind else None
    picked = {"auto": "auto", "any": "required", "none": "none", "tool": named}.get(str(kind))
    if picked is None:
        raise Untranslatable(f"tool_choice={choice!r}", PIVOT)
    out: dict[str, Any] = {"tool_choice": picked}
    if choice.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False
    return out


# -- OpenAI chat -> Anthropic -----------------------------------------------------------------


def _text_of(content: Any) -> str:
    if isinstance(content, str) or content is None:
        return content or ""
    texts = []
    for part in map(plain, content):
        if not isinstance(part, dict) or part.get("type") != "text":
            raise Untranslatable("a system or tool message part that is not text", TARGET)
        texts.append(str(part.get("text") or ""))
    return "\n".join(texts)


def _image_block(part: dict[str, Any]) -> dict[str, Any]:
    url = str((part.get("image_url") or {}).get("url") or "")
    if url.startswith("data:") and ";base64," in url:
        media, data = url[5:].split(";base64,", 1)
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise Untranslatable("an image that is neither a data: URL nor an http(s) URL", TARGET)


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    out = []
    for part in map(plain, content or ()):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            out.append({"type": "text", "text": part.get("text") or ""})
        elif kind == "image_url":
            out.append(_image_block(part))
        else:
            raise Untranslatable(f"a {kind!r} message part", TARGET)
    return out


def _turn(message: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    role = message.get("role")
    if role == "tool":
        result = {"type": "tool_result", "tool_use_id": message.get("tool_call_id")}
        result["content"] = _text_of(message.get("content"))
        return "user", [result]
    blocks = _blocks(message.get("content"))
    if role == "assistant":
        for call in message.get("tool_calls") or ():
            call = plain(call)
            function = call.get("function") or {}
            arguments = function.get("arguments") or "{}"
            try:
                given = json.loads(arguments)
            except ValueError:
                raise Untranslatable("a tool call whose arguments are not JSON", TARGET) from None
            use = {"type": "tool_use", "id": call.get("id"), "name": function.get("name")}
            blocks.append({**use, "input": given})
        return "assistant", blocks
    if role == "user":
        return "user", blocks
    raise Untranslatable(f"a message of role {role!r}", TARGET)


def anthropic_messages(messages: Any) -> tuple[str, list[dict[str, Any]]]:
    """OpenAI chat messages as Anthropic's ``system`` and ``messages`` (turns merged)."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for message in map(plain, messages or ()):
        if not isinstance(message, dict):
            raise Untranslatable("a message that is not an object", TARGET)
        if message.get("role") in ("system", "developer"):
            system.append(_text_of(message.get("content")))
            continue
        role, blocks = _turn(message)
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return "\n\n".join(system), out


def anthropic_tools(tools: Any) -> list[dict[str, Any]]:
    out = []
    for tool in map(plain, tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise Untranslatable("a tool that is not a function", TARGET)
        function = tool.get("function") or {}
        schema = function.get("parameters") or {"type": "object", "properties": {}}
        made = {"name": function.get("name"), "input_schema": schema}
        if function.get("description"):
            made["description"] = function["description"]
        out.append(made)
    return out


def anthropic_tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    choice = plain(choice)
    if choice is None:
        made: dict[str, Any] | None = {"type": "auto"} if parallel is False else None
    elif isinstance(choice, dict):
        made = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    elif choice in ("auto", "required", "none"):
        made = {"type": {"auto": "auto", "required": "any", "none": "none"}[choice]}
    else:
        raise Untranslatable(f"tool_choice={choice!r}", TARGET)
    if made is not None and parallel is False and made["type"] != "none":
        made["disable_parallel_tool_use"] = True
    return made
