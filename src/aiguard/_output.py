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
    return result


def chunk_text(chunk: Any) -> str:
    """The answer text one stream chunk carries, for any provider's chunk shape ("" if none)."""
    try:
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
        return response if isinstance(response, str) else ""
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
    turn = [
        {"role": "assistant", "content": previous},
        {"role": "user", "content": feedback(errors)},
    ]
    if isinstance(request.get("messages"), list | tuple):
        return {**request, "messages": [*request["messages"], *turn]}
    given = request.get("input")
    if isinstance(given, str):
        return {**request, "input": [{"role": "user", "content": given}, *turn]}
    if isinstance(given, list | tuple):
        return {**request, "input": [*given, *turn]}
    if isinstance(request.get("prompt"), str):  # completions: the feedback goes into the prompt
        return {**request, "prompt": f"{request['prompt']}{previous}\n\n{feedback(errors)}\n"}
    return request  # a function: called again as it is


def _to_json(value: Any) -> str:
    dump = getattr(value, "model_dump_json", None)
    if callable(dump):
        return str(dump())
    try:
        return json.dumps(value, default=repr)
    except (TypeError, ValueError):
        return repr(value)
