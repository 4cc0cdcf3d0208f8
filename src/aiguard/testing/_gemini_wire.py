"""The testing kit's Gemini wire: Google's REST ``generateContent`` API, as google-genai sends it.

Paths end in ``models/{model}:{method}`` (the Gemini API's ``/v1beta/models/...`` and Vertex
AI's ``/v1beta1/projects/p/locations/l/publishers/google/models/...`` alike):

- ``:generateContent``: one ``GenerateContentResponse`` as JSON;
- ``:streamGenerateContent?alt=sse``: the same, cut into ``data: {...}`` server-sent events, the
  last carrying the finish reason and the final counts;
- ``:batchEmbedContents`` (what the SDK's ``embed_content`` sends), ``:embedContent`` and
  Vertex AI's ``:predict`` (its text embedding models).

Errors come as Google's ``{"error": {"code", "message", "status", "details"}}``; a fault's
``retry-after`` header becomes the body's ``google.rpc.RetryInfo`` ``retryDelay``, where Gemini
says how long to wait (it sends no such header). A fault's ``code`` overrides the error's
``status`` (e.g. ``"RESOURCE_EXHAUSTED"``); ``stream_error`` names the in-stream error's status
(an unknown name is sent as ``UNAVAILABLE``, 503).
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any
from urllib.parse import urlsplit

from aiguard.testing._wire import Fault, Reply, Wire, _count_tokens, _pieces

# ``.../models/{model}:{method}``: the model and the method of a Gemini path.
_PATH = re.compile(r"/models/([^/:]+):([A-Za-z]+)$")

# The google.rpc status of each HTTP status Gemini answers with.
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_CODES = {status: code for code, status in _STATUS.items()}
# OpenAI's finish reasons (what Reply says) as Gemini's.
_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY", "tool_calls": "STOP"}
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"

MALFORMED = b'{"candidates": [{"content": {"parts": ['


def parse(path: str) -> tuple[str, str] | None:
    """(model, method) of a Gemini path, or None when the path is not one."""
    found = _PATH.search(path)
    return (found.group(1), found.group(2)) if found else None


def error_body(status: int, message: str, fault: Fault | None) -> dict[str, Any]:
    """Google's error body for ``status``: a fault's ``code`` overrides its ``status`` string,
    its ``retry-after`` header is given as ``RetryInfo`` too."""
    kind = (fault.code if fault else None) or _STATUS.get(
        status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION"
    )
    details: list[dict[str, Any]] = []
    for key, value in (fault.headers if fault else {}).items():
        if key.lower() == "retry-after":
            details.append({"@type": _RETRY_INFO, "retryDelay": f"{float(value):g}s"})
    return {"error": {"code": status, "message": message, "status": kind, "details": details}}


def _prompt_text(body: dict[str, Any]) -> str:
    texts = []
    contents = [body.get("systemInstruction"), *(body.get("contents") or [])]
    for content in contents:
        if isinstance(content, dict):
            for part in content.get("parts") or []:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    texts.append(part["text"])
    return " ".join(texts)


def usage(body: dict[str, Any], reply: Any, content: str) -> dict[str, Any]:
    """``usageMetadata``: the prompt count includes the cached tokens; the candidates' count
    leaves out the thoughts (Reply's completion count, OpenAI's, includes its reasoning)."""
    prompt = (
        reply.prompt_tokens
        if reply.prompt_tokens is not None
        else _count_tokens(_prompt_text(body))
    )
    completion = reply.completion_tokens
    if completion is None:
        completion = _count_tokens(content)
    thoughts = reply.reasoning_tokens or 0
    out: dict[str, Any] = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": completion - thoughts,
        "totalTokenCount": prompt + completion,
    }
    if reply.cached_tokens is not None:
        out["cachedContentTokenCount"] = reply.cached_tokens
    if reply.reasoning_tokens is not None:
        out["thoughtsTokenCount"] = thoughts
    return out


def _parts(reply: Any, text: str) -> list[dict[str, Any]]:
    if reply.tool_calls:
        calls = [
            {"functionCall": {"name": c["name"], "args": c["arguments"]}} for c in reply.tool_calls
        ]
        return ([{"text": reply.content}] if reply.content else []) + calls
    return [{"text": text}]


def response(model: str, parts: list[dict[str, Any]], finish: str | None, ident: str) -> Any:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish is not None:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "modelVersion": model, "responseId": ident}


def content_of(model: str, reply: Any) -> str:
    return reply.content if reply.content is not None else f"Hello from {model}."


def answer(body: dict[str, Any], reply: Any, model: str) -> Any:
    """The ``generateContent`` answer."""
    text = content_of(model, reply)
    out = response(
        reply.response_model or model,
        _parts(reply, text),
        _FINISH.get(reply.finish_reason, "OTHER"),
        uuid.uuid4().hex[:16],
    )
    if reply.usage:
        out["usageMetadata"] = usage(body, reply, text)
    return out


def frames(body: dict[str, Any], reply: Any, model: str, truncate: bool) -> list[bytes]:
    """The ``streamGenerateContent`` events: text word by word, each with the prompt count;
    the last with the finish reason and every count (none of it when ``truncate``)."""
    text = content_of(model, reply)
    ident = uuid.uuid4().hex[:16]
    name = reply.response_model or model
    pieces = _pieces(text)
    counts = usage(body, reply, text)
    out = []
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1 and not truncate
        parts = _parts(reply, piece) if last else [{"text": piece}]
        event = response(
            name, parts, _FINISH.get(reply.finish_reason, "OTHER") if last else None, ident
        )
        if reply.usage:
            event["usageMetadata"] = (
                counts if last else {"promptTokenCount": counts["promptTokenCount"]}
            )
        out.append(sse(event))
    return out


def sse(data: Any) -> bytes:
    return f"data: {json.dumps(data)}\r\n\r\n".encode()


def stream_error(kind: str) -> bytes:
    """The in-stream error event for a fault's ``stream_error``."""
    status = kind if kind in _CODES else "UNAVAILABLE"
    code = _CODES[status]
    return sse({"error": {"code": code, "message": f"mock stream error: {kind}", "status": status}})


def _predictions(body: dict[str, Any]) -> Any:
    """Vertex AI's ``predict`` for text embedding models: a vector and its token count per
    instance."""
    instances = body.get("instances")
    parameters = body.get("parameters")
    dims = parameters.get("outputDimensionality") if isinstance(parameters, dict) else None
    out = []
    for item in instances if isinstance(instances, list) else []:
        text = item.get("content") if isinstance(item, dict) else None
        statistics = {"token_count": _count_tokens(str(text or "")), "truncated": False}
        values = [0.1 * (j + 1) for j in range(int(dims or 8))]
        out.append({"embeddings": {"values": values, "statistics": statistics}})
    return {"predictions": out}


def _embeddings(body: dict[str, Any], batch: bool) -> Any:
    """``batchEmbedContents`` (one vector per request) or ``embedContent`` (one vector)."""
    requests = body.get("requests") if batch else [body]
    vectors = []
    for item in requests if isinstance(requests, list) else []:
        dims = item.get("outputDimensionality") if isinstance(item, dict) else None
        vectors.append({"values": [0.1 * (j + 1) for j in range(int(dims or 8))]})
    if batch:
        return {"embeddings": vectors}
    return {"embedding": vectors[0] if vectors else {"values": []}}


class GeminiWire(Wire):
    def _gemini(self) -> tuple[str, str]:
        return parse(urlsplit(self.path).path) or ("", "")

    def _gemini_generate(self, body: dict[str, Any], reply: Reply, fault: Fault | None) -> None:
        model, method = self._gemini()
        headers = fault.headers if fault else None
        if method == "generateContent":
            self._json(200, answer(body, reply, model), headers)
            return
        events = frames(body, reply, model, bool(fault and fault.truncate))
        error = stream_error(fault.stream_error) if fault and fault.stream_error else None
        self._stream("text/event-stream", [(e, True) for e in events], fault, error, headers)

    def _gemini_embed(self, body: dict[str, Any], reply: Reply, fault: Fault | None) -> None:
        method = self._gemini()[1]
        answer = (
            _predictions(body)
            if method == "predict"
            else _embeddings(body, method != "embedContent")
        )
        self._json(200, answer, fault.headers if fault else None)

    def _gemini_route(self, method: str) -> Any:
        """The method answering a Gemini ``method`` (None: not served)."""
        return {
            "generateContent": self._gemini_generate,
            "streamGenerateContent": self._gemini_generate,
            "batchEmbedContents": self._gemini_embed,
            "embedContent": self._gemini_embed,
            "predict": self._gemini_embed,
        }.get(method)
