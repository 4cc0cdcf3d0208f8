"""A Gemini call answered by another provider: its request as an OpenAI chat request, and the
OpenAI answer (a ``chat.completion`` dict, or ``chat.completion.chunk`` dicts) back as the
SDK's own ``GenerateContentResponse`` objects, so a Gemini caller gets Gemini's types.

What a Gemini request says that an OpenAI chat request cannot (built-in tools such as Google
Search, audio or video parts, cached contents, safety settings...) raises
:class:`aiguard.adapters._pivot.Untranslatable` naming it: nothing is sent, never a wrong request.
Settings that change nothing of the answer's meaning (``top_k``, ``thinking_config``,
``labels``...) are dropped and named in an ``aiguard.translation.dropped`` span event.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

from google.genai import _transformers, types

from aiguard.adapters._gemini_parts import lower_types
from aiguard.adapters._pivot import Untranslatable, converted, converted_async, dropped

# Config fields with no effect on the request the model sees (client-side settings).
_CLIENT_SIDE = frozenset(
    {"http_options", "automatic_function_calling", "should_return_http_response"}
)
_SAMPLING = {
    "temperature": "temperature",
    "top_p": "top_p",
    "candidate_count": "n",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "max_output_tokens": "max_completion_tokens",
}
_TRANSLATED = frozenset(
    {*_SAMPLING, "system_instruction", "stop_sequences", "tools", "tool_config"}
    | {"response_mime_type", "response_schema", "response_json_schema"}
)
# Config fields that shape how the model works, not what the answer means: dropped.
_DROPPED = frozenset(
    {"top_k", "thinking_config", "labels", "media_resolution"}
    | {"model_selection_config", "routing_config"}
)
# The request's keywords (``generate_content``'s), besides those the engine may add.
_REQUEST_KEYS = frozenset({"model", "contents", "config", "stream"})
PIVOT = "OpenAI chat format"
_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY", "tool_calls": "STOP"}


def _cannot(what: str) -> Untranslatable:
    return Untranslatable(f"a Gemini request with {what} has no equivalent", PIVOT)


def _config(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if isinstance(config, dict):
        config = types.GenerateContentConfig.model_validate(config)
    return {key: value for key, value in config if value is not None and key not in _CLIENT_SIDE}


def _part_block(part: types.Part) -> dict[str, Any]:
    if isinstance(part.text, str) and not part.thought:
        return {"type": "text", "text": part.text}
    blob = part.inline_data
    if blob is not None and (blob.mime_type or "").startswith("image/") and blob.data:
        data = base64.b64encode(blob.data).decode()
        return {"type": "image_url", "image_url": {"url": f"data:{blob.mime_type};base64,{data}"}}
    link = part.file_data
    if link is not None and (link.mime_type or "").startswith("image/") and link.file_uri:
        return {"type": "image_url", "image_url": {"url": link.file_uri}}
    kinds = [k for k, v in part if v is not None]
    raise _cannot(f"a part of {', '.join(kinds) or 'nothing'}")


def _content_of(blocks: list[dict[str, Any]]) -> Any:
    if all(b["type"] == "text" for b in blocks):
        return "".join(b["text"] for b in blocks)
    return blocks


class _Ids:
    """Tool call ids: Gemini's own, or made up and matched to the answers by function name."""

    def __init__(self) -> None:
        self.pending: dict[str, list[str]] = {}
        self.count = 0

    def call(self, call: types.FunctionCall) -> str:
        self.count += 1
        ident = call.id or f"call_{self.count}"
        self.pending.setdefault(call.name or "", []).append(ident)
        return ident

    def answer(self, answer: types.FunctionResponse) -> str:
        if answer.id:
            return answer.id
        waiting = self.pending.get(answer.name or "")
        return waiting.pop(0) if waiting else f"call_{answer.name}"


def _messages(content: types.Content, ids: _Ids) -> list[dict[str, Any]]:
    parts = list(content.parts or ())
    answers = [p.function_response for p in parts if p.function_response is not None]
    calls = [p.function_call for p in parts if p.function_call is not None]
    rest = [p for p in parts if p.function_response is None and p.function_call is None]
    blocks = [_part_block(p) for p in rest if not p.thought]
    out: list[dict[str, Any]] = [
        {"role": "tool", "tool_call_id": ids.answer(a), "content": json.dumps(a.response or {})}
        for a in answers
    ]
    if content.role == "model":
        message: dict[str, Any] = {"role": "assistant", "content": _content_of(blocks) or None}
        if calls:
            message["tool_calls"] = [
                {
                    "id": ids.call(c),
                    "type": "function",
                    "function": {"name": c.name, "arguments": json.dumps(c.args or {})},
                }
                for c in calls
            ]
        out.append(message)
    elif blocks:
        out.append({"role": "user", "content": _content_of(blocks)})
    return out


def _schema(value: Any) -> Any:
    """A ``types.Schema`` as JSON Schema (its types in lower case); a dict as it is."""
    if isinstance(value, dict) or value is None:
        return value
    return lower_types(value.model_dump(mode="json", exclude_none=True))


def _tools(config: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    functions = []
    for tool in config.get("tools") or ():
        if not isinstance(tool, types.Tool):
            raise _cannot("a Python function as a tool (automatic function calling)")
        others = [k for k, v in tool if v is not None and k != "function_declarations"]
        if others:
            raise _cannot(f"the {', '.join(others)} tool")
        for d in tool.function_declarations or ():
            function: dict[str, Any] = {"name": d.name}
            if d.description:
                function["description"] = d.description
            parameters = d.parameters_json_schema or _schema(d.parameters)
            if parameters is not None:
                function["parameters"] = parameters
            functions.append({"type": "function", "function": function})
    if functions:
        out["tools"] = functions
    calling = getattr(config.get("tool_config"), "function_calling_config", None)
    mode = getattr(getattr(calling, "mode", None), "value", None)
    if mode is not None:
        names = calling.allowed_function_names if calling is not None else None
        if mode == "ANY" and names and len(names) == 1:
            out["tool_choice"] = {"type": "function", "function": {"name": names[0]}}
        else:
            out["tool_choice"] = {"NONE": "none", "ANY": "required"}.get(mode, "auto")
    return out


def _output(config: dict[str, Any]) -> dict[str, Any]:
    schema = config.get("response_json_schema") or _schema(config.get("response_schema"))
    if schema is not None:
        return {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": schema},
            }
        }
    if config.get("response_mime_type") == "application/json":
        return {"response_format": {"type": "json_object"}}
    return {}


def to_openai_chat(request: dict[str, Any]) -> dict[str, Any]:
    """A ``generate_content`` request (``model``, ``contents``, ``config``) as an OpenAI chat
    request dict (``stream=True`` asks for the usage too); raises :class:`Untranslatable`
    naming what cannot be translated, drops (with a span event) what changes no meaning."""
    unknown = sorted(key for key in request if key not in _REQUEST_KEYS)
    if unknown:
        raise _cannot(", ".join(f"{key}=" for key in unknown))
    config = _config(request.get("config"))
    left = sorted(set(config) - _TRANSLATED - _DROPPED)
    if left:
        raise _cannot(", ".join(left))
    dropped(set(config) & _DROPPED, PIVOT)
    messages: list[dict[str, Any]] = []
    system = config.get("system_instruction")
    if system is not None:
        content = _transformers.t_content(system)
        text = "".join(_part_block(p)["text"] for p in content.parts or () if p.text is not None)
        messages.append({"role": "system", "content": text})
    ids = _Ids()
    for content in _transformers.t_contents(request.get("contents")):
        messages.extend(_messages(content, ids))
    out: dict[str, Any] = {"model": request.get("model"), "messages": messages}
    for key, name in _SAMPLING.items():
        if key in config:
            out[name] = config[key]
    if "stop_sequences" in config:
        out["stop"] = list(config["stop_sequences"])
    out.update(_tools(config))
    out.update(_output(config))
    if request.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


# -- the answer back as Gemini's types --------------------------------------------------------


def _usage(usage: Any) -> dict[str, Any] | None:
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens") or 0
    completion = usage.get("completion_tokens") or 0
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens")
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    out = {
        "prompt_token_count": prompt,
        "candidates_token_count": completion - (reasoning or 0),
        "total_token_count": prompt + completion,
    }
    if cached is not None:
        out["cached_content_token_count"] = cached
    if reasoning is not None:
        out["thoughts_token_count"] = reasoning
    return out


def _call_part(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    try:
        args = json.loads(function.get("arguments") or "{}")
    except ValueError:
        args = {"arguments": function.get("arguments")}
    return {"function_call": {"id": call.get("id"), "name": function.get("name"), "args": args}}


def _candidate(message: dict[str, Any], reason: Any, index: int) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if message.get("content"):
        parts.append({"text": message["content"]})
    parts += [_call_part(c) for c in message.get("tool_calls") or ()]
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": index}
    if reason is not None:
        candidate["finish_reason"] = _FINISH.get(reason, "OTHER")
    return candidate


def _response(answer: dict[str, Any], candidates: list[dict[str, Any]]) -> Any:
    data: dict[str, Any] = {
        "candidates": candidates,
        "response_id": answer.get("id"),
        "model_version": answer.get("model"),
    }
    usage = _usage(answer.get("usage"))
    if usage is not None:
        data["usage_metadata"] = usage
    return types.GenerateContentResponse.model_validate(data)


def from_openai_chat(answer: dict[str, Any]) -> types.GenerateContentResponse:
    """An OpenAI ``chat.completion`` dict as a ``GenerateContentResponse``."""
    candidates = [
        _candidate(c.get("message") or {}, c.get("finish_reason"), c.get("index", i))
        for i, c in enumerate(answer.get("choices") or ())
    ]
    response: types.GenerateContentResponse = _response(answer, candidates)
    return response


class _Chunks:
    """OpenAI chunks to Gemini chunks: text as it comes; tool calls (whose arguments arrive in
    pieces) whole with the finish reason; the usage chunk's counts on the last Gemini chunk."""

    def __init__(self) -> None:
        self.calls: dict[int, dict[str, Any]] = {}
        self.held: dict[str, Any] | None = None  # the finishing chunk, until the usage comes

    def take(self, chunk: dict[str, Any]) -> list[Any]:
        out = []
        if self.held is not None and not chunk.get("choices") and chunk.get("usage"):
            self.held["usage"] = chunk["usage"]
            return self.flush()
        out += self.flush()
        for choice in (chunk.get("choices") or ())[:1]:
            delta = choice.get("delta") or {}
            for call in delta.get("tool_calls") or ():
                found = self.calls.setdefault(call.get("index", 0), {"function": {"arguments": ""}})
                found["id"] = call.get("id") or found.get("id")
                function = call.get("function") or {}
                if function.get("name"):
                    found["function"]["name"] = function["name"]
                found["function"]["arguments"] += function.get("arguments") or ""
            reason = choice.get("finish_reason")
            if reason is not None:
                message = {"content": delta.get("content"), "tool_calls": list(self.calls.values())}
                self.held = {**chunk, "message": message, "reason": reason}
            elif delta.get("content"):
                out.append(_response(chunk, [_candidate({"content": delta["content"]}, None, 0)]))
        return out

    def flush(self) -> list[Any]:
        held, self.held = self.held, None
        if held is None:
            return []
        return [_response(held, [_candidate(held["message"], held["reason"], 0)])]


def from_openai_chunks(chunks: Iterator[dict[str, Any]]) -> Iterator[types.GenerateContentResponse]:
    """OpenAI ``chat.completion.chunk`` dicts as a stream of ``GenerateContentResponse``;
    closing it closes ``chunks``."""
    reader = _Chunks()
    return converted(chunks, reader.take, reader.flush)


def from_openai_chunks_async(
    chunks: AsyncIterator[dict[str, Any]],
) -> AsyncIterator[types.GenerateContentResponse]:
    """:func:`from_openai_chunks` for an async iterator of chunk dicts."""
    reader = _Chunks()
    return converted_async(chunks, reader.take, reader.flush)
