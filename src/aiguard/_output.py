"""Output validation: check what a model answered, and re-ask it with the errors when it is wrong.

``output=`` on ``wrap`` / ``guard`` is a pydantic model (or any type pydantic can validate) or a
callable that returns the validated value and raises when the value is wrong. For a wrapped
client the text of the answer is validated (JSON for a model); the caller still gets the SDK's
own response. For a decorated function its return value is validated (a JSON string or a dict
becomes the model), and the validated value is returned.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pydantic

# pydantic is imported where an ``output=`` is compiled or checked, not with aiguard: a wrapped
# client that validates nothing never loads it.

from aiguard._messages import Message, Part, plain, to_json


class OutputSpec:
    """A compiled ``output=``: validates a value, or raises :class:`InvalidOutput`."""

    def __init__(self, output: Any) -> None:
        import pydantic

        self.output = output
        self.adapter: pydantic.TypeAdapter[Any] | None = None
        self.function: Callable[[Any], Any] | None = None
        if isinstance(output, type) or not callable(output):
            try:
                self.adapter = pydantic.TypeAdapter(output)
            except Exception as exc:
                raise TypeError(
                    f"output= must be a pydantic model, a type pydantic can validate, or a "
                    f"callable that validates; got {output!r} ({exc})"
                ) from None
        else:
            self.function = output
        self.name = getattr(output, "__qualname__", None) or repr(output)

    def validate(self, value: Any) -> Any:
        """The validated value; raises :class:`InvalidOutput` listing what is wrong."""
        import pydantic

        if self.function is not None:
            try:
                return self.function(value)
            except Exception as exc:
                raise InvalidOutput([str(exc) or type(exc).__name__]) from exc
        assert self.adapter is not None
        try:
            if isinstance(value, str | bytes):
                try:
                    return self.adapter.validate_json(value)
                except pydantic.ValidationError as exc:
                    if _json_failed(exc):
                        return self.adapter.validate_python(value)
                    raise
            return self.adapter.validate_python(value)
        except pydantic.ValidationError as exc:
            raise InvalidOutput(_describe(exc)) from None


class InvalidOutput(Exception):
    """An answer that did not validate, with what was wrong (never the answer itself)."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def _json_failed(error: pydantic.ValidationError) -> bool:
    # The text was not JSON at all: a plain-text output (output=str) validates as it is.
    return any(e["type"] == "json_invalid" for e in error.errors())


def _describe(error: pydantic.ValidationError) -> list[str]:
    # Locations and messages only: the model's answer is not repeated into logs.
    out = []
    for item in error.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "answer"
        out.append(f"{where}: {item['msg']}")
    return out


def answer_text(result: Any) -> Any:
    """The answer in a provider response: its text (or ``.parsed`` object), else the value.

    Knows the shapes of OpenAI chat completions and Responses, Anthropic messages, Ollama and
    llama.cpp answers; anything else (a decorated function's return value) is itself.
    """
    if isinstance(result, dict):  # llama.cpp: OpenAI's format as dicts
        choices = result.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            message = choices[0].get("message")
            if isinstance(message, dict):
                return message.get("content")
            return choices[0].get("text")
        bedrock = _bedrock_message(result)
        if bedrock is not None:  # Bedrock converse
            return "".join(b["text"] for b in bedrock if isinstance(b.get("text"), str))
        return result
    choices = getattr(result, "choices", None)
    if isinstance(choices, list) and choices:  # OpenAI chat completion
        message = getattr(choices[0], "message", None)
        parsed = getattr(message, "parsed", None)
        return parsed if parsed is not None else getattr(message, "content", None)
    text = getattr(result, "output_text", None)  # OpenAI Responses
    if isinstance(text, str):
        return text
    content = getattr(result, "content", None)
    if isinstance(content, list) and getattr(result, "role", None) == "assistant":  # Anthropic
        return "".join(getattr(b, "text", "") for b in content if getattr(b, "type", "") == "text")
    message = getattr(result, "message", None)  # Ollama chat
    if message is not None and isinstance(getattr(message, "content", None), str):
        return message.content
    response = getattr(result, "response", None)  # Ollama generate
    if isinstance(response, str):
        return response
    candidates = getattr(result, "candidates", None)  # Gemini
    if isinstance(candidates, list) and candidates:
        parsed = getattr(result, "parsed", None)
        return parsed if parsed is not None else "".join(_gemini_texts(candidates[0]))
    return result


def answer_messages(result: Any) -> list[tuple[Message, str]]:
    """The answer's messages with their finish reasons, one per choice, for content capture.

    Knows the shapes :func:`answer_text` knows; tool calls become ``tool_call`` parts (their
    provider JSON). An embeddings response has no message: nothing is captured from it.
    """
    get = _get_of(result)
    choices = get("choices")
    if isinstance(choices, list):  # OpenAI chat and completions, llama.cpp (dicts)
        out = []
        for choice in choices:
            at = _get_of(choice)
            message = at("message")
            if message is None:
                parts = _text_parts(at("text"))
            else:
                m = _get_of(message)
                parts = _text_parts(m("content"))
                parts += [Part("tool_call", to_json(plain(c))) for c in m("tool_calls") or ()]
            out.append((Message("assistant", parts), _reason(at("finish_reason"))))
        return out
    bedrock = _bedrock_message(result)
    if bedrock is not None:  # Bedrock converse
        parts = _text_parts("".join(b["text"] for b in bedrock if isinstance(b.get("text"), str)))
        parts += [Part("tool_call", to_json(b["toolUse"])) for b in bedrock if "toolUse" in b]
        return [(Message("assistant", parts), _reason(get("stopReason")))]
    output = get("output")
    if isinstance(output, list):  # OpenAI Responses
        parts = []
        for item in output:
            item = plain(item)
            kind = item.get("type") if isinstance(item, dict) else None
            if kind == "message":
                for block in item.get("content") or ():
                    if isinstance(block, dict) and isinstance(block.get("text"), str):
                        parts.append(Part("text", block["text"]))
            elif kind == "function_call":
                parts.append(Part("tool_call", to_json(item)))
        reason = "stop" if get("status") == "completed" else _reason(get("status"))
        return [(Message("assistant", parts), reason)]
    content = get("content")
    if isinstance(content, list) and get("role") == "assistant":  # Anthropic
        parts = []
        for block in content:
            block = plain(block)
            if block.get("type") == "text":
                parts.append(Part("text", block.get("text") or ""))
            elif block.get("type") == "tool_use":
                parts.append(Part("tool_call", to_json(block)))
        return [(Message("assistant", parts), _reason(get("stop_reason")))]
    message = get("message")
    if message is not None:  # Ollama chat
        m = _get_of(message)
        parts = _text_parts(m("content"))
        parts += [Part("tool_call", to_json(plain(c))) for c in m("tool_calls") or ()]
        return [(Message("assistant", parts), _reason(get("done_reason")))]
    if isinstance(get("response"), str):  # Ollama generate
        return [(Message("assistant", _text_parts(get("response"))), _reason(get("done_reason")))]
    candidates = get("candidates")
    if isinstance(candidates, list):  # Gemini: parts of text and function calls
        return [_gemini_answer(candidate) for candidate in candidates]
    return []


def _bedrock_message(result: Any) -> list[dict[str, Any]] | None:
    """The content blocks of a Bedrock converse answer (a dict), or None for another shape."""
    output = result.get("output") if isinstance(result, dict) else None
    message = output.get("message") if isinstance(output, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else None


def _gemini_parts(candidate: Any) -> list[Any]:
    content = getattr(candidate, "content", None)
    return list(getattr(content, "parts", None) or ())


def _gemini_texts(candidate: Any) -> list[str]:
    """A Gemini candidate's answer text (its thoughts left out)."""
    return [
        p.text
        for p in _gemini_parts(candidate)
        if isinstance(getattr(p, "text", None), str) and not getattr(p, "thought", None)
    ]


def _gemini_answer(candidate: Any) -> tuple[Message, str]:
    parts = _text_parts("".join(_gemini_texts(candidate)))
    for part in _gemini_parts(candidate):
        call = getattr(part, "function_call", None)
        if call is not None:
            data = {"id": call.id, "name": call.name, "arguments": call.args}
            parts.append(Part("tool_call", to_json(data)))
    reason = getattr(candidate, "finish_reason", None)
    name = getattr(reason, "name", reason)
    return Message("assistant", parts), name.lower() if isinstance(name, str) else ""


def _get_of(value: Any) -> Callable[[str], Any]:
    if isinstance(value, dict):
        return value.get
    return lambda name: getattr(value, name, None)


def _text_parts(text: Any) -> list[Part]:
    return [Part("text", text)] if isinstance(text, str) and text else []


def _reason(value: Any) -> str:
    return value if isinstance(value, str) else ""


def chunk_text(chunk: Any) -> str:
    """The answer text one stream chunk carries, for any provider's chunk shape ("" if none)."""
    try:
        if isinstance(chunk, dict) and "contentBlockDelta" in chunk:  # Bedrock converse_stream
            return str(chunk["contentBlockDelta"]["delta"].get("text") or "")
        if isinstance(chunk, dict):  # llama.cpp
            choice = (chunk.get("choices") or [{}])[0]
            return str((choice.get("delta") or {}).get("content") or choice.get("text") or "")
        choices = getattr(chunk, "choices", None)
        if choices:  # OpenAI chat
            return getattr(choices[0].delta, "content", None) or ""
        kind = getattr(chunk, "type", None)
        if kind == "response.output_text.delta":  # OpenAI Responses
            return str(chunk.delta)
        if kind == "content_block_delta":  # Anthropic
            return getattr(chunk.delta, "text", None) or ""
        message = getattr(chunk, "message", None)  # Ollama chat, then generate
        if message is not None:
            return getattr(message, "content", None) or ""
        response = getattr(chunk, "response", None)
        if isinstance(response, str):
            return response
        candidates = getattr(chunk, "candidates", None)  # Gemini
        return "".join(_gemini_texts(candidates[0])) if candidates else ""
    except (AttributeError, IndexError, TypeError):
        return ""


def feedback(errors: list[str]) -> str:
    """What a re-ask tells the model."""
    listed = "\n".join(f"- {e}" for e in errors)
    return (
        "Your previous answer did not match the required format:\n"
        f"{listed}\n"
        "Answer again, in the required format only."
    )


def reask_request(request: dict[str, Any], raw: Any, errors: list[str]) -> dict[str, Any]:
    """The request with the wrong answer and the errors appended, for any chat-style API."""
    previous = raw if isinstance(raw, str) else _to_json(raw)
    turn: list[dict[str, Any]] = [
        {"role": "assistant", "content": previous},
        {"role": "user", "content": feedback(errors)},
    ]
    if isinstance(request.get("messages"), list | tuple):
        if _in_blocks(request["messages"]):  # Bedrock converse: content is a list of blocks
            turn = [{**m, "content": [{"text": m["content"]}]} for m in turn]
        return {**request, "messages": [*request["messages"], *turn]}
    given = request.get("input")
    if isinstance(given, str):
        return {**request, "input": [{"role": "user", "content": given}, *turn]}
    if isinstance(given, list | tuple):
        return {**request, "input": [*given, *turn]}
    if "contents" in request and "model" in request:  # Gemini: the turns as its contents
        return {**request, "contents": _gemini_turns(request["contents"], previous, errors)}
    if isinstance(request.get("prompt"), str):  # completions: the feedback goes into the prompt
        return {**request, "prompt": f"{request['prompt']}{previous}\n\n{feedback(errors)}\n"}
    return request  # a function: called again as it is


def _in_blocks(messages: Any) -> bool:
    """Are the messages Bedrock's (content blocks keyed by kind, with no ``type``)?"""
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and content and isinstance(content[0], dict):
            return "type" not in content[0]
    return False


def _gemini_turns(contents: Any, previous: str, errors: list[str]) -> list[Any]:
    """Gemini ``contents`` with the wrong answer and the errors after them. A string or a
    single part or content is one user turn; a list of parts is too (the SDK sends consecutive
    parts as one user content)."""
    given = contents if isinstance(contents, list) else [contents]
    if not all(_is_content(item) for item in given):
        given = [{"role": "user", "parts": [_gemini_part(item) for item in given]}]
    turn = [
        {"role": "model", "parts": [{"text": previous}]},
        {"role": "user", "parts": [{"text": feedback(errors)}]},
    ]
    return [*given, *turn]


def _is_content(item: Any) -> bool:
    if isinstance(item, dict):
        return "role" in item or "parts" in item
    return hasattr(item, "parts") and hasattr(item, "role")


def _gemini_part(item: Any) -> Any:
    return {"text": item} if isinstance(item, str) else item


def _to_json(value: Any) -> str:
    dump = getattr(value, "model_dump_json", None)
    if callable(dump):
        return str(dump())
    try:
        return json.dumps(value, default=repr)
    except (TypeError, ValueError):
        return repr(value)
