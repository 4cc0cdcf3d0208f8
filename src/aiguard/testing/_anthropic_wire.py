"""The Anthropic Messages wire: messages (SSE with named events) and count_tokens."""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiguard.testing._wire import (
    Fault,
    Reply,
    Wire,
    _count_tokens,
    _pieces,
    _prompt_text,
    _token_counts,
)

# Anthropic's error type for each status; others: api_error (5xx) or invalid_request_error.
_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_ANTHROPIC_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}


def _event(name: str, **data: Any) -> bytes:
    """One Anthropic server-sent event: its data repeats the event's name as ``type``."""
    return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()


def _anthropic_error(kind: str, message: str) -> dict[str, Any]:
    return {"type": kind, "message": message}


def error_body(status: int, message: str, fault: Fault | None) -> dict[str, Any]:
    kind = (fault.code if fault else None) or _ANTHROPIC_ERRORS.get(
        status, "api_error" if status >= 500 else "invalid_request_error"
    )
    return {"type": "error", "error": _anthropic_error(kind, message)}


class AnthropicWire(Wire):
    def _anthropic_usage(self, body: dict[str, Any], reply: Reply, content: str) -> dict[str, Any]:
        prompt, completion = _token_counts(body, reply, content)
        read, written = reply.cached_tokens or 0, reply.cache_write_tokens or 0
        return {
            # Anthropic's input_tokens leaves out what was read from or written to the cache.
            "input_tokens": max(0, prompt - read - written),
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read,
            "output_tokens": completion,
        }

    def _anthropic_message(
        self, body: dict[str, Any], reply: Reply, content: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return {
            "id": f"msg_mock{uuid.uuid4().hex[:20]}",
            "type": "message",
            "role": "assistant",
            "model": reply.response_model or body.get("model"),
            "content": content,
            "stop_reason": None,
            "stop_sequence": None,
        }

    def _anthropic_messages(self, body: dict[str, Any], reply: Reply, fault: Fault | None) -> None:
        content = self._content(body, reply)
        usage = self._anthropic_usage(body, reply, content)
        stop = _ANTHROPIC_STOP.get(reply.finish_reason, reply.finish_reason)
        headers = {"request-id": f"req_mock{uuid.uuid4().hex[:16]}"}
        headers.update(fault.headers if fault else {})
        if body.get("stream"):
            self._anthropic_stream(body, reply, fault, content, usage, stop, headers)
            return
        message = self._anthropic_message(body, reply, [{"type": "text", "text": content}])
        self._json(200, {**message, "stop_reason": stop, "usage": usage}, headers)

    def _anthropic_stream(
        self,
        body: dict[str, Any],
        reply: Reply,
        fault: Fault | None,
        content: str,
        usage: dict[str, Any],
        stop: str,
        headers: dict[str, str],
    ) -> None:
        start = {**self._anthropic_message(body, reply, []), "usage": {**usage, "output_tokens": 1}}
        ping = _event("ping")
        # The message's and the block's starts go out whatever the fault; what follows counts.
        block = {"type": "text", "text": ""}
        frames = [
            (_event("message_start", message=start), False),
            (_event("content_block_start", index=0, content_block=block), False),
            (ping, False),
        ]
        for i, piece in enumerate(_pieces(content)):
            if i and i % 4 == 0:
                frames.append((ping, False))
            text = {"type": "text_delta", "text": piece}
            frames.append((_event("content_block_delta", index=0, delta=text), True))
        frames.append((_event("content_block_stop", index=0), True))
        if not (fault and fault.truncate):
            stopped = {"stop_reason": stop, "stop_sequence": None}
            output = {"output_tokens": usage["output_tokens"]}
            frames.append((_event("message_delta", delta=stopped, usage=output), True))
            frames.append((_event("message_stop"), True))
        error = None
        if fault and fault.stream_error:
            error = _event("error", error=_anthropic_error(fault.stream_error, "mock stream error"))
        self._stream("text/event-stream", frames, fault, error, headers)

    def _anthropic_count_tokens(
        self, body: dict[str, Any], reply: Reply, fault: Fault | None
    ) -> None:
        self._json(200, {"input_tokens": _count_tokens(_prompt_text(body))})
