"""What the adapters share about their requests' and answers' shapes (all of them JSON-like).

The engine and ``aiguard._output`` know no provider: each adapter's :class:`Route` and
:class:`Reader` read their own shapes (the request's neutral messages, an answer's text and
messages, a chunk's text, the re-ask request), most of them through the helpers here: requests
in any of the chat-style shapes, and the OpenAI chat-completions answer the openai SDK returns as
objects and llama.cpp as dicts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiguard import _output
from aiguard._messages import Message, Part, plain, to_json
from aiguard._output import feedback, previous_text

# -- any chat-style request, for checks and capture ---------------------------------------------

# Block types that carry text, across OpenAI chat and Responses, Anthropic, Ollama and llama.cpp.
_TEXT_BLOCKS = frozenset({"text", "input_text", "output_text"})
_IMAGE_BLOCKS = frozenset({"image", "image_url", "input_image"})


def request_messages(request: dict[str, Any]) -> list[Message]:
    """The text a request sends to the model, as neutral messages, whatever the provider.

    Every adapter's request is JSON in one of a few shapes: ``messages`` with string or block
    content (OpenAI, Anthropic, Ollama, llama.cpp), a ``system`` prompt (Anthropic, Ollama),
    ``instructions`` and ``input`` (OpenAI Responses, embeddings), ``prompt`` and ``suffix``
    (completions). Images become image parts; tool calls and results their JSON.
    """
    out: list[Message] = []
    for key in ("system", "instructions"):
        parts = _parts(request.get(key))
        if parts:
            out.append(Message("system", parts, instructions=True))
    messages = request.get("messages")
    if isinstance(messages, list | tuple):
        out.extend(_message(item) for item in messages)
    given = request.get("input")
    if isinstance(given, list | tuple) and any(
        isinstance(plain(i), dict) and ("role" in plain(i) or "type" in plain(i)) for i in given
    ):
        out.extend(_message(item) for item in given)
    elif given is not None:
        out.append(Message("user", _parts(given)))
    prompt = [p for key in ("prompt", "suffix") for p in _parts(request.get(key))]
    if prompt:
        out.append(Message("user", prompt))
    return out


def _message(item: Any) -> Message:
    item = plain(item)
    if not isinstance(item, dict):
        return Message("user", _parts(item))
    role = item.get("role")
    parts = _parts(item.get("content"))
    for call in item.get("tool_calls") or ():
        parts.append(Part("tool_call", to_json(plain(call))))
    if "role" not in item and "type" in item:  # a Responses item: a call, its output, reasoning
        kind = item["type"]
        if kind == "function_call_output":
            return Message("tool", _tool_response(item.get("output"), item.get("call_id")))
        return Message(
            "assistant", [Part("tool_call" if "call" in kind else "other", to_json(item))]
        )
    if role == "tool":
        parts = _tool_response(parts, item.get("tool_call_id"))
    return Message(role if isinstance(role, str) else "user", parts)


def _parts(content: Any) -> list[Part]:
    content = plain(content)
    if content is None:
        return []
    if isinstance(content, str):
        return [Part("text", content)]
    if not isinstance(content, list | tuple):
        return [Part("other", to_json(content))]
    parts = []
    for block in content:
        block = plain(block)
        if isinstance(block, str):
            parts.append(Part("text", block))
            continue
        kind = block.get("type") if isinstance(block, dict) else None
        if kind in _TEXT_BLOCKS and isinstance(block.get("text"), str):
            parts.append(Part("text", block["text"]))
        elif kind in _IMAGE_BLOCKS:
            parts.append(Part("image"))
        elif kind in ("tool_use", "function_call"):
            parts.append(Part("tool_call", to_json(block)))
        elif kind == "tool_result":
            parts.extend(_tool_response(block.get("content"), block.get("tool_use_id")))
        elif kind == "function_call_output":
            parts.extend(_tool_response(block.get("output"), block.get("call_id")))
        else:
            parts.append(Part("other", to_json(block)))
    return parts


def _tool_response(content: Any, call_id: Any) -> list[Part]:
    """What a tool answered (text, or parts), as ``tool_call_response`` parts naming its call."""
    call = call_id if isinstance(call_id, str) else None
    parts = (
        content if isinstance(content, list) and all(isinstance(p, Part) for p in content) else None
    )
    if parts is None:
        parts = _parts(content) or [Part("text", "")]
    return [
        Part("tool_call_response", p.content, call) if p.type in ("text", "other") else p
        for p in parts
    ]


def reads(answer_text: Callable[[Any], Any]) -> None:
    """Register an adapter's ``answer_text`` (which returns an answer not of its provider
    unchanged) for :func:`aiguard._output.answer_text`."""

    def read(result: Any) -> Any:
        text = answer_text(result)
        return None if text is result else text

    _output.ANSWER_READERS.append(read)


# -- OpenAI chat-completions answers (the openai SDK's objects, llama.cpp's dicts) -------------


def _get_of(value: Any) -> Callable[[str], Any]:
    if isinstance(value, dict):
        return value.get
    return lambda name: getattr(value, name, None)


def text_parts(text: Any) -> list[Part]:
    return [Part("text", text)] if isinstance(text, str) and text else []


def reason(value: Any) -> str:
    return value if isinstance(value, str) else ""


def answer_text(result: Any) -> Any:
    """The first choice's text (or ``.parsed`` object; a completion's ``text``)."""
    if isinstance(result, dict):
        choices = result.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            message = choices[0].get("message")
            if isinstance(message, dict):
                return message.get("content")
            return choices[0].get("text")
        return result
    choices = getattr(result, "choices", None)
    if isinstance(choices, list) and choices:
        message = getattr(choices[0], "message", None)
        parsed = getattr(message, "parsed", None)
        return parsed if parsed is not None else getattr(message, "content", None)
    return result


def answer_messages(result: Any) -> list[tuple[Message, str]]:
    """One message per choice with its finish reason; tool calls as ``tool_call`` parts."""
    choices = _get_of(result)("choices")
    if not isinstance(choices, list):
        return []
    out = []
    for choice in choices:
        at = _get_of(choice)
        message = at("message")
        if message is None:
            parts = text_parts(at("text"))
        else:
            m = _get_of(message)
            parts = text_parts(m("content"))
            parts += [Part("tool_call", to_json(plain(c))) for c in m("tool_calls") or ()]
        out.append((Message("assistant", parts), reason(at("finish_reason"))))
    return out


def chunk_text(chunk: Any) -> str:
    """The text one chat-completions chunk carries ("" if none)."""
    try:
        if isinstance(chunk, dict):
            choice = (chunk.get("choices") or [{}])[0]
            return str((choice.get("delta") or {}).get("content") or choice.get("text") or "")
        choices = getattr(chunk, "choices", None)
        return (getattr(choices[0].delta, "content", None) or "") if choices else ""
    except (AttributeError, IndexError, TypeError):
        return ""


# -- asking again after an answer that failed output validation -----------------------------


def reask_messages(request: dict[str, Any], raw: Any, errors: list[str]) -> dict[str, Any]:
    """The request with the wrong answer and the errors appended to its ``messages``."""
    if not isinstance(request.get("messages"), list | tuple):
        return request
    turn = [
        {"role": "assistant", "content": previous_text(raw)},
        {"role": "user", "content": feedback(errors)},
    ]
    return {**request, "messages": [*request["messages"], *turn]}


def reask_prompt(request: dict[str, Any], raw: Any, errors: list[str]) -> dict[str, Any]:
    """A completion request with the wrong answer and the errors appended to its prompt."""
    if not isinstance(request.get("prompt"), str):
        return request
    prompt = f"{request['prompt']}{previous_text(raw)}\n\n{feedback(errors)}\n"
    return {**request, "prompt": prompt}


reads(answer_text)  # the openai SDK's chat completions and llama.cpp's dicts
