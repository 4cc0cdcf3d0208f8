"""The OpenAI wire: chat completions (SSE), the Responses API (SSE events), embeddings."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from aiguard.testing._wire import (
    Fault,
    Reply,
    Wire,
    _count_tokens,
    _inputs,
    _pieces,
    _token_counts,
    _vector,
)


def error_body(status: int, message: str, fault: Fault | None) -> dict[str, Any]:
    if fault is not None:
        kind = {429: "rate_limit_exceeded", 400: "invalid_request_error"}.get(
            status, "server_error"
        )
        return {"error": {"message": message, "type": kind, "code": fault.code}}
    kind = "not_found" if status == 404 else "invalid_request"
    return {"error": {"message": message, "type": kind}}


class OpenAIWire(Wire):
    def _openai_chat(self, body: dict[str, Any], reply: Reply, fault: Fault | None) -> None:
        options = body.get("stream_options")
        if options is not None and not isinstance(options, dict):
            self._error("openai", 400, "Invalid type for 'stream_options': expected an object")
            return
        if body.get("stream"):
            self._openai_stream(body, reply, fault)
        else:
            self._json(200, self._completion(body, reply), fault.headers if fault else None)

    def _openai_embeddings(self, body: dict[str, Any], reply: Reply, fault: Fault | None) -> None:
        self._json(200, self._embeddings(body))

    def _usage(self, body: dict[str, Any], reply: Reply, content: str) -> dict[str, Any]:
        prompt, completion = _token_counts(body, reply, content)
        usage: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        if reply.cached_tokens is not None:
            usage["prompt_tokens_details"] = {"cached_tokens": reply.cached_tokens}
        if reply.reasoning_tokens is not None:
            usage["completion_tokens_details"] = {"reasoning_tokens": reply.reasoning_tokens}
        return usage

    def _completion(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        content = self._content(body, reply)
        message: dict[str, Any] = {"role": "assistant", "content": content}
        finish = reply.finish_reason
        if reply.tool_calls:
            message["content"] = reply.content  # None unless given
            message["tool_calls"] = [
                {
                    "id": f"call_{i}",
                    "type": "function",
                    "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])},
                }
                for i, call in enumerate(reply.tool_calls)
            ]
            finish = "tool_calls"
        out: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": reply.response_model or body.get("model"),
            "system_fingerprint": "fp_mock",
            "choices": [
                {
                    "index": i,
                    "message": message,
                    "finish_reason": finish,
                    "logprobs": None,
                }
                for i in range(int(body.get("n") or 1))
            ],
        }
        if reply.usage:
            out["usage"] = self._usage(body, reply, content)
        return out

    def _embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        items = _inputs(body.get("input"))
        dims = int(body.get("dimensions") or 8)
        text = " ".join(str(i) for i in items)
        return {
            "object": "list",
            "model": body.get("model"),
            "data": [
                {"object": "embedding", "index": i, "embedding": _vector(dims)}
                for i in range(len(items))
            ],
            "usage": {"prompt_tokens": _count_tokens(text), "total_tokens": _count_tokens(text)},
        }

    def _openai_stream(self, body: dict[str, Any], reply: Reply, fault: Fault | None) -> None:
        content = self._content(body, reply)
        ident = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        model = reply.response_model or body.get("model")

        def chunk(delta: dict[str, Any], finish: str | None, usage: Any = None) -> bytes:
            data: dict[str, Any] = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
                if usage is None
                else [],
            }
            if usage is not None:
                data["usage"] = usage
            return f"data: {json.dumps(data)}\n\n".encode()

        # Every chunk counts toward cut_after, the role chunk and the finish chunk included.
        frames = [(chunk({"role": "assistant", "content": ""}, None), True)]
        frames += [(chunk({"content": p}, None), True) for p in _pieces(content)]
        if not (fault and fault.truncate):
            frames.append((chunk({}, reply.finish_reason), True))
            options = body.get("stream_options") or {}
            if reply.usage and options.get("include_usage"):
                frames.append((chunk({}, None, self._usage(body, reply, content)), False))
            frames.append((b"data: [DONE]\n\n", False))
        error = None
        if fault and fault.stream_error:
            message = {"message": "mock stream error", "type": fault.stream_error}
            error = f"data: {json.dumps({'error': {**message, 'code': fault.code}})}\n\n".encode()
        self._stream("text/event-stream", frames, fault, error)

    def _response(
        self, body: dict[str, Any], reply: Reply, ident: str, status: str, content: str | None
    ) -> dict[str, Any]:
        """A Responses API ``response`` object (``content`` None: still in progress)."""
        out: dict[str, Any] = {
            "id": ident,
            "object": "response",
            "created_at": int(time.time()),
            "model": reply.response_model or body.get("model"),
            "status": status,
            "output": [],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
        }
        if status == "incomplete":
            out["incomplete_details"] = {"reason": "max_output_tokens"}
        if content is not None:
            out["output"] = [
                {
                    "type": "message",
                    "id": f"msg_{ident[5:]}",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": content, "annotations": []}],
                }
            ]
            if reply.usage:
                prompt, completion = _token_counts(body, reply, content)
                out["usage"] = {
                    "input_tokens": prompt,
                    "input_tokens_details": {"cached_tokens": reply.cached_tokens or 0},
                    "output_tokens": completion,
                    "output_tokens_details": {"reasoning_tokens": reply.reasoning_tokens or 0},
                    "total_tokens": prompt + completion,
                }
        return out

    def _openai_responses(self, body: dict[str, Any], reply: Reply, fault: Fault | None) -> None:
        content = self._content(body, reply)
        ident = f"resp_{uuid.uuid4().hex[:12]}"
        status = "completed" if reply.finish_reason == "stop" else "incomplete"
        if not body.get("stream"):
            self._json(200, self._response(body, reply, ident, status, content))
            return
        sequence = iter(range(1_000_000))

        def event(kind: str, **data: Any) -> bytes:
            payload = {"type": kind, "sequence_number": next(sequence), **data}
            return f"event: {kind}\ndata: {json.dumps(payload)}\n\n".encode()

        start = self._response(body, reply, ident, "in_progress", None)
        item_id = f"msg_{ident[5:]}"
        item = {"type": "message", "id": item_id, "status": "in_progress", "role": "assistant"}
        where = {"item_id": item_id, "output_index": 0, "content_index": 0}
        text_part = {"type": "output_text", "text": "", "annotations": []}
        frames = [
            (event("response.created", response=start), True),
            (
                event("response.output_item.added", output_index=0, item={**item, "content": []}),
                False,
            ),
            (event("response.content_part.added", part=text_part, **where), False),
        ]
        for piece in _pieces(content):
            delta = event("response.output_text.delta", delta=piece, logprobs=[], **where)
            frames.append((delta, True))
        if not (fault and fault.truncate):
            done_part = {**text_part, "text": content}
            done_item = {**item, "status": "completed", "content": [done_part]}
            frames += [
                (event("response.output_text.done", text=content, logprobs=[], **where), False),
                (event("response.content_part.done", part=done_part, **where), False),
                (event("response.output_item.done", output_index=0, item=done_item), False),
            ]
            final = self._response(body, reply, ident, status, content)
            kind = "response.completed" if status == "completed" else "response.incomplete"
            frames.append((event(kind, response=final), True))
        error = None
        if fault and fault.stream_error:
            error = event("error", code=fault.code, message="mock stream error", param=None)
        self._stream("text/event-stream", frames, fault, error)
