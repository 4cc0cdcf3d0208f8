"""Gemini as a cross-provider fallback target: OpenAI chat requests answered by google-genai.

The pivot between providers is the OpenAI chat-completions shape as plain dicts (what
``aiguard.adapters._llama_cpp.openai_chat`` speaks). :func:`openai_chat` (and
:func:`openai_chat_async`) give a callable that takes such a request, asks the Gemini client,
and answers with a ``chat.completion`` dict, or for ``stream=True`` an iterator of
``chat.completion.chunk`` dicts. Gemini's own errors propagate unchanged. The other way round
(a Gemini request sent to another provider) is :mod:`aiguard.adapters._gemini_reverse`.

What the request says that Gemini cannot take raises
:class:`aiguard.adapters._pivot.Untranslatable` naming it before anything is sent; OpenAI-only
fields that change nothing of the answer (``user``, ``store``...) are dropped (:func:`dropped`
names them, and an ``aiguard.translation.dropped`` span event).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from google import genai
from google.genai import types

from aiguard._engine.state import current_deadline
from aiguard.adapters import _pivot
from aiguard.adapters._gemini_send import PROVIDER, attempt_config

# OpenAI request fields with no bearing on the answer's content: dropped.
_IGNORED = frozenset(
    {
        "user",
        "store",
        "metadata",
        "service_tier",
        "stream_options",
        "parallel_tool_calls",
        "timeout",
        "extra_headers",
        "extra_query",
        "extra_body",
        "prompt_cache_key",
        "safety_identifier",
    }
)
# Of those, what is honoured another way (the usage always streams; the deadline is read).
_HONOURED = frozenset({"stream_options", "timeout"})
# Fields translated by :func:`gemini_request`.
_KNOWN = frozenset(
    {
        "model",
        "messages",
        "stream",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "n",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "tools",
        "tool_choice",
        "response_format",
    }
)
_SAMPLING = {
    "temperature": "temperature",
    "top_p": "top_p",
    "n": "candidate_count",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}
_FILTERED = frozenset(
    {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}
)


def dropped(request: dict[str, Any]) -> list[str]:
    """The request's fields Gemini does without (dropped, the answer unchanged)."""
    return sorted(key for key in request if key in _IGNORED)


def _untranslatable(what: str) -> _pivot.Untranslatable:
    return _pivot.Untranslatable(f"{what} has no Gemini equivalent", PROVIDER)


# -- the request -------------------------------------------------------------------------------


def _text(content: Any, role: str) -> str:
    if isinstance(content, str):
        return content
    parts = _user_parts(content, role)
    if any(p.text is None for p in parts):
        raise _untranslatable(f"non-text content in a {role} message")
    return "\n".join(p.text or "" for p in parts)


def _user_parts(content: Any, role: str) -> list[types.Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [types.Part(text=content)]
    parts = []
    for block in content if isinstance(content, list) else [content]:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append(types.Part(text=block.get("text") or ""))
        elif kind == "image_url":
            parts.append(_image(block.get("image_url")))
        else:
            raise _untranslatable(f"a {kind!r} part in a {role} message")
    return parts


def _image(image: Any) -> types.Part:
    url = image.get("url") if isinstance(image, dict) else image
    if isinstance(url, str) and url.startswith("data:") and ";base64," in url:
        mime, data = url[5:].split(";base64,", 1)
        return types.Part(inline_data=types.Blob(mime_type=mime, data=base64.b64decode(data)))
    if isinstance(url, str):
        return types.Part(file_data=types.FileData(file_uri=url, mime_type="image/*"))
    raise _untranslatable("an image without a URL")


def _arguments(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(text) if isinstance(text, str) else text
    except ValueError as exc:
        raise _untranslatable("tool call arguments that are not JSON") from exc
    return value if isinstance(value, dict) else {"value": value}


def _assistant(message: dict[str, Any], names: dict[str, str]) -> types.Content:
    parts = _user_parts(message.get("content"), "assistant")
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        names[call.get("id") or ""] = function.get("name") or ""
        parts.append(
            types.Part(
                function_call=types.FunctionCall(
                    id=call.get("id"),
                    name=function.get("name"),
                    args=_arguments(function.get("arguments") or "{}"),
                )
            )
        )
    return types.Content(role="model", parts=parts)


def _tool_answer(message: dict[str, Any], names: dict[str, str]) -> types.Part:
    ident = message.get("tool_call_id")
    text = _text(message.get("content"), "tool")
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    answer = value if isinstance(value, dict) else {"result": text}
    name = names.get(ident or "", "")
    return types.Part(
        function_response=types.FunctionResponse(id=ident, name=name, response=answer)
    )


def gemini_contents(messages: Any) -> tuple[list[types.Content], str | None]:
    """OpenAI chat messages as Gemini contents and a system instruction (system and developer
    messages, joined). Consecutive tool answers make one ``user`` content, as Gemini wants."""
    if not isinstance(messages, list | tuple):
        raise _untranslatable("a request without messages=[...]")
    system: list[str] = []
    contents: list[types.Content] = []
    names: dict[str, str] = {}  # tool call id -> function name, for the answers
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(_text(message.get("content"), str(role)))
        elif role == "user":
            contents.append(types.Content(role="user", parts=_user_parts(message["content"], role)))
        elif role == "assistant":
            contents.append(_assistant(message, names))
        elif role == "tool":
            part = _tool_answer(message, names)
            last = contents[-1] if contents else None
            if last is not None and last.parts and last.parts[-1].function_response is not None:
                last.parts.append(part)
            else:
                contents.append(types.Content(role="user", parts=[part]))
        else:
            raise _untranslatable(f"a message of role {role!r}")
    return contents, "\n\n".join(system) if system else None


def _tools(request: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    declarations = []
    for tool in request.get("tools") or ():
        if tool.get("type") != "function":
            raise _untranslatable(f"a {tool.get('type')!r} tool")
        function = tool["function"]
        declaration: dict[str, Any] = {"name": function["name"]}
        if function.get("description"):
            declaration["description"] = function["description"]
        if function.get("parameters") is not None:
            declaration["parameters_json_schema"] = function["parameters"]
        declarations.append(declaration)
    if declarations:
        config["tools"] = [{"function_declarations": declarations}]
    choice = request.get("tool_choice")
    if choice is not None:
        modes = {"none": "NONE", "auto": "AUTO", "required": "ANY"}
        if isinstance(choice, str) and choice in modes:
            calling: dict[str, Any] = {"mode": modes[choice]}
        elif isinstance(choice, dict) and choice.get("type") == "function":
            calling = {"mode": "ANY", "allowed_function_names": [choice["function"]["name"]]}
        else:
            raise _untranslatable(f"tool_choice={choice!r}")
        config["tool_config"] = {"function_calling_config": calling}
    return config


def _output_format(fmt: Any) -> dict[str, Any]:
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in (None, "text"):
        return {}
    if kind == "json_object":
        return {"response_mime_type": "application/json"}
    if kind == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        return {"response_mime_type": "application/json", "response_json_schema": schema}
    raise _untranslatable(f"response_format type {kind!r}")


def gemini_request(request: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat request as ``generate_content`` keywords (``model``, ``contents``,
    ``config``); raises :class:`Untranslatable` naming what Gemini cannot take."""
    unknown = sorted(key for key in request if key not in _KNOWN and key not in _IGNORED)
    if unknown:
        raise _untranslatable(", ".join(unknown))
    _pivot.dropped((key for key in dropped(request) if key not in _HONOURED), PROVIDER)
    contents, system = gemini_contents(request.get("messages"))
    config: dict[str, Any] = {"system_instruction": system} if system else {}
    limit = request.get("max_completion_tokens", request.get("max_tokens"))
    if limit is not None:
        config["max_output_tokens"] = limit
    for key, name in _SAMPLING.items():
        if request.get(key) is not None:
            config[name] = request[key]
    stop = request.get("stop")
    if stop is not None:
        config["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    config.update(_tools(request))
    config.update(_output_format(request.get("response_format")))
    return {"model": request.get("model"), "contents": contents, "config": config}


# -- the answer --------------------------------------------------------------------------------


def _reason(candidate: Any, calls: bool) -> str | None:
    reason = getattr(candidate.finish_reason, "value", candidate.finish_reason)
    if reason is None:
        return None
    if calls:
        return "tool_calls"
    if reason == "MAX_TOKENS":
        return "length"
    return "content_filter" if reason in _FILTERED else "stop"


def _calls(parts: list[types.Part], start: int = 0) -> list[dict[str, Any]]:
    out = []
    for i, part in enumerate(p for p in parts if p.function_call is not None):
        call = part.function_call
        assert call is not None
        out.append(
            {
                "index": start + i,
                "id": call.id or f"call_{uuid.uuid4().hex[:12]}",
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.args or {})},
            }
        )
    return out


def _texts(parts: list[types.Part]) -> str | None:
    texts = [p.text for p in parts if isinstance(p.text, str) and not p.thought]
    return "".join(texts) if texts else None


def openai_usage(metadata: Any) -> dict[str, Any] | None:
    """Gemini's ``usage_metadata`` as OpenAI's usage (thoughts in the completion, as OpenAI's
    reasoning tokens are; the cached tokens within the prompt, as OpenAI's are)."""
    if metadata is None:
        return None
    prompt = (metadata.prompt_token_count or 0) + (metadata.tool_use_prompt_token_count or 0)
    thoughts = metadata.thoughts_token_count or 0
    completion = (metadata.candidates_token_count or 0) + thoughts
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if metadata.cached_content_token_count is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": metadata.cached_content_token_count}
    if metadata.thoughts_token_count is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": thoughts}
    return usage


def _head(response: Any, model: str, kind: str) -> dict[str, Any]:
    return {
        "id": response.response_id or f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": kind,
        "created": int(time.time()),
        "model": response.model_version or model,
    }


def openai_answer(response: types.GenerateContentResponse, model: str) -> dict[str, Any]:
    """A ``GenerateContentResponse`` as an OpenAI ``chat.completion`` dict."""
    choices = []
    for index, candidate in enumerate(response.candidates or ()):
        parts = list((candidate.content.parts if candidate.content else None) or ())
        calls = [{k: v for k, v in c.items() if k != "index"} for c in _calls(parts)]
        message: dict[str, Any] = {"role": "assistant", "content": _texts(parts)}
        if calls:
            message["tool_calls"] = calls
        reason = _reason(candidate, bool(calls)) or "stop"
        choices.append({"index": index, "message": message, "finish_reason": reason})
    out = {**_head(response, model, "chat.completion"), "choices": choices}
    usage = openai_usage(response.usage_metadata)
    if usage is not None:
        out["usage"] = usage
    return out


class ChunkWriter:
    """Gemini stream chunks as OpenAI ``chat.completion.chunk`` dicts (one id for the stream,
    the role in the first delta, tool calls numbered across chunks, usage last if asked)."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self.head: dict[str, Any] | None = None
        self.calls = 0
        self.usage: Any = None

    def chunks(self, response: types.GenerateContentResponse) -> list[dict[str, Any]]:
        if self.head is None:
            self.head = _head(response, self.model, "chat.completion.chunk")
            first: dict[str, Any] | None = {"role": "assistant"}
        else:
            first = None
        if response.usage_metadata is not None:
            self.usage = response.usage_metadata
        out = []
        for candidate in (response.candidates or ())[:1]:
            parts = list((candidate.content.parts if candidate.content else None) or ())
            delta: dict[str, Any] = dict(first or {})
            text = _texts(parts)
            if text is not None:
                delta["content"] = text
            calls = _calls(parts, self.calls)
            self.calls += len(calls)
            if calls:
                delta["tool_calls"] = calls
            reason = _reason(candidate, self.calls > 0)
            out.append(
                {**self.head, "choices": [{"index": 0, "delta": delta, "finish_reason": reason}]}
            )
        return out

    def last(self) -> list[dict[str, Any]]:
        usage = openai_usage(self.usage) if self.include_usage else None
        if usage is None or self.head is None:
            return []
        return [{**self.head, "choices": [], "usage": usage}]


# -- the callables ------------------------------------------------------------------------------


def _send_kwargs(request: dict[str, Any], timeout: float | None) -> dict[str, Any]:
    kwargs = gemini_request(request)
    deadline = current_deadline()
    remaining = None if deadline is None else max(deadline - time.monotonic(), 0.001)
    if timeout is not None and (remaining is None or timeout < remaining):
        remaining = timeout
    kwargs["config"] = attempt_config(kwargs["config"], False, remaining)
    return kwargs


def _include_usage(request: dict[str, Any]) -> bool:
    options = request.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _stream(models: Any, kwargs: dict[str, Any], request: dict[str, Any]) -> Iterator[Any]:
    writer = ChunkWriter(kwargs["model"], _include_usage(request))
    for response in models.generate_content_stream(**kwargs):
        yield from writer.chunks(response)
    yield from writer.last()


async def _stream_async(
    stream: AsyncIterator[Any], model: str, request: dict[str, Any]
) -> AsyncIterator[Any]:
    writer = ChunkWriter(model, _include_usage(request))
    async for response in stream:
        for chunk in writer.chunks(response):
            yield chunk
    for chunk in writer.last():
        yield chunk


def openai_chat(
    client: Any, timeout: float | None = None
) -> tuple[Callable[[dict[str, Any]], dict[str, Any] | Iterator[dict[str, Any]]], str]:
    """A callable answering OpenAI chat requests with the Gemini client (sync ``models``),
    and the provider name. ``timeout`` caps each request (seconds), as the deadline does."""

    def answer(request: dict[str, Any]) -> dict[str, Any] | Iterator[dict[str, Any]]:
        models = client.models
        kwargs = _send_kwargs(request, timeout)
        if request.get("stream") is True:
            return _stream(models, kwargs, request)
        return openai_answer(models.generate_content(**kwargs), kwargs["model"])

    return answer, PROVIDER


def openai_chat_async(
    client: Any, timeout: float | None = None
) -> tuple[
    Callable[[dict[str, Any]], Awaitable[dict[str, Any] | AsyncIterator[dict[str, Any]]]], str
]:
    """:func:`openai_chat` with the client's async models (``client.aio.models`` of a
    ``genai.Client``); a stream is an async iterator of chunk dicts."""

    async def answer(request: dict[str, Any]) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        models = client.aio.models if isinstance(client, genai.Client) else client.models
        kwargs = _send_kwargs(request, timeout)
        if request.get("stream") is True:
            stream = await models.generate_content_stream(**kwargs)
            return _stream_async(stream, kwargs["model"], request)
        return openai_answer(await models.generate_content(**kwargs), kwargs["model"])

    return answer, PROVIDER
