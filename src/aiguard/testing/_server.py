"""A fault-injecting HTTP server for tests that speaks OpenAI, Anthropic and Ollama (stdlib only).

It listens on 127.0.0.1 on a free port, plays a scripted queue of faults per model, and records
every request it receives. It answers three wire protocols, each in its own shape, with usage
and cached tokens, as JSON or as a stream:

- OpenAI: ``POST /v1/chat/completions`` (SSE), ``/v1/responses`` (SSE events) and
  ``/v1/embeddings``. Point
  ``openai.OpenAI(base_url=server.url, api_key=...)`` at it.
- Anthropic Messages: ``POST /v1/messages`` (SSE with named events) and
  ``/v1/messages/count_tokens``. Point ``anthropic.Anthropic(base_url=server.anthropic_url,
  api_key=...)`` at it: the SDK adds ``/v1/messages`` itself.
- Ollama: ``POST /api/chat`` and ``/api/generate`` (NDJSON streams, streaming unless the body
  says ``"stream": false``), ``/api/embed`` and ``/api/embeddings``. Point
  ``ollama.Client(host=server.ollama_url)`` at it.

A :class:`Fault` applies to whichever protocol the request speaks; errors come in that
protocol's body shape.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import struct
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import urlsplit

ANY_MODEL = "*"


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour, used for one request, whichever protocol it speaks.

    - ``status``: answer with this HTTP status and the protocol's error body.
    - ``code``: OpenAI: the error's ``code``; Anthropic: the error's ``type`` (by default
      derived from the status: 429 ``rate_limit_error``, 529 ``overloaded_error``...).
    - ``headers``: extra response headers, e.g. ``{"retry-after": "0.2"}``.
    - ``delay``: seconds to wait before answering (to trigger client timeouts).
    - ``reset``: drop the connection with a TCP reset instead of answering.
    - ``malformed``: answer 200 with a body that is not valid JSON.
    - ``cut_after``: for a stream, send this many chunks (Anthropic: text deltas; Ollama:
      lines) and then drop the connection.
    - ``truncate``: for a stream, end cleanly but with no finish reason and no end marker
      (OpenAI ``[DONE]``, Anthropic ``message_delta``/``message_stop``, Ollama ``done: true``).
    - ``empty``: for a stream, answer 200 and end cleanly before the first chunk.
    - ``stream_error``: for a stream, send an in-stream error of this type (e.g.
      ``"overloaded_error"``) after ``cut_after`` chunks (default: before the first), then end.

    Example::

        server.script("claude-x", Fault(status=529), Fault(cut_after=2))
        server.fail("llama3", stream_error="overloaded_error")
    """

    status: int | None = None
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    reset: bool = False
    malformed: bool = False
    cut_after: int | None = None
    truncate: bool = False
    stream_error: str | None = None
    empty: bool = False


@dataclass
class Reply:
    """What the server answers for a model when no fault is scripted.

    Token counts default to about one per four characters. ``prompt_tokens`` is the whole
    prompt, cached or not: OpenAI reports it as is, Anthropic splits it into ``input_tokens``
    (what is left), ``cache_read_input_tokens`` (``cached_tokens``) and
    ``cache_creation_input_tokens`` (``cache_write_tokens``), Ollama as
    ``prompt_eval_count``. ``finish_reason`` is OpenAI's (``"stop"``, ``"length"``...);
    Anthropic gets it mapped (``"end_turn"``, ``"max_tokens"``...). ``usage=False`` leaves the
    usage out (OpenAI, Ollama: Anthropic always reports it). ``tool_calls`` (OpenAI chat, not
    streamed): ``{"name": ..., "arguments": {...}}`` calls the answer makes instead of text.

    Example::

        server.reply("claude-x", content="Paris.", prompt_tokens=1200, cached_tokens=1024)
    """

    content: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    finish_reason: str = "stop"
    response_model: str | None = None
    usage: bool = True
    cache_write_tokens: int | None = None
    tool_calls: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Recorded:
    """A request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    model: str | None
    at: float


class MockServer:
    """The testing kit's server: OpenAI, Anthropic and Ollama on one port.

    Example::

        with aiguard.testing.MockServer() as server:
            server.fail("gpt-4o", status=429, headers={"retry-after": "0"})
            client = openai.OpenAI(base_url=server.url, api_key="test")
            client.chat.completions.create(model="gpt-4o", messages=[...])
            assert len(server.requests) == 1

            claude = anthropic.Anthropic(base_url=server.anthropic_url, api_key="test")
            local = ollama.Client(host=server.ollama_url)
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host, self._port = host, port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._faults: dict[str, deque[Fault]] = defaultdict(deque)
        self._replies: dict[str, Reply] = {}
        self._answers: defaultdict[str, deque[str]] = defaultdict(deque)
        self.requests: list[Recorded] = []

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> MockServer:
        if self._httpd is not None:
            return self
        handler = type("Handler", (_Handler,), {"server_state": self})
        self._httpd = _HTTPServer((self._host, self._port), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="aiguard-mock-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> MockServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("MockServer is not running: call start() or use it in a with block")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The base URL to give an OpenAI client (ends in ``/v1``)."""
        return f"{self._root}/v1"

    @property
    def anthropic_url(self) -> str:
        """The base URL to give an Anthropic client (no ``/v1``: the SDK adds it).

        Example::

            anthropic.Anthropic(base_url=server.anthropic_url, api_key="test", max_retries=0)
        """
        return self._root

    @property
    def ollama_url(self) -> str:
        """The host to give an Ollama client (the SDK adds ``/api/...``).

        Example::

            ollama.Client(host=server.ollama_url)
        """
        return self._root

    @property
    def _root(self) -> str:
        return f"http://{self._host}:{self.port}"

    # -- scripting -----------------------------------------------------------------------------

    def fail(self, model: str = ANY_MODEL, times: int = 1, **fault: Any) -> None:
        """Queue ``times`` faults for ``model`` (``"*"``: any model); see :class:`Fault`."""
        self.script(model, *([Fault(**fault)] * times))

    def script(self, model: str, *faults: Fault) -> None:
        with self._lock:
            self._faults[model].extend(faults)

    def reply(self, model: str = ANY_MODEL, **reply: Any) -> None:
        """Set what ``model`` answers when no fault is queued; see :class:`Reply`."""
        with self._lock:
            self._replies[model] = Reply(**reply)

    def answer(self, model: str, *contents: str) -> None:
        """Queue answer texts for ``model``, one per request, before its usual reply.

        Example::

            server.answer("gpt-4o", "not json", '{"city": "Paris"}')   # wrong, then right
        """
        with self._lock:
            self._answers[model].extend(contents)

    def reset(self) -> None:
        """Forget scripted faults, replies and recorded requests."""
        with self._lock:
            self._faults.clear()
            self._replies.clear()
            self._answers.clear()
            self.requests.clear()

    def requests_for(self, model: str) -> list[Recorded]:
        return [r for r in self.requests if r.model == model]

    # -- used by the handler -------------------------------------------------------------------

    def _take(self, model: str | None, recorded: Recorded) -> tuple[Fault | None, Reply]:
        with self._lock:
            self.requests.append(recorded)
            fault = None
            for key in (model or "", ANY_MODEL):
                queue = self._faults.get(key)
                if queue:
                    fault = queue.popleft()
                    break
            reply = self._replies.get(model or "") or self._replies.get(ANY_MODEL) or Reply()
            queued = self._answers.get(model or "")
            if queued and fault is None:
                reply = dataclasses.replace(reply, content=queued.popleft())
            return fault, reply


class _HTTPServer(ThreadingHTTPServer):
    request_queue_size = 256  # many concurrent clients must not be refused at connect
    daemon_threads = True


_Dialect = Literal["openai", "anthropic", "ollama"]
_Route = Callable[[dict[str, Any], Reply, Fault | None], None]

_MALFORMED: dict[_Dialect, bytes] = {
    "openai": b'{"id": "chatcmpl-broken", "choices": [',
    "anthropic": b'{"id": "msg_broken", "type": "message", "content": [',
    "ollama": b'{"model": "broken", "message": {',
}

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


def _count_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _text_of(content: Any) -> list[str]:
    """The text in a message's content: a string, or a list of parts (OpenAI, Anthropic)."""
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [p.get("text", "") for p in content if isinstance(p, dict)]
    return []


def _prompt_text(body: dict[str, Any]) -> str:
    # Anthropic has a top-level ``system``, Ollama's generate a ``system`` and a ``prompt``,
    # OpenAI's Responses ``instructions`` and ``input``.
    parts = _text_of(body.get("system")) + _text_of(body.get("prompt"))
    parts += _text_of(body.get("instructions")) + _text_of(body.get("input"))
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            parts.extend(_text_of(message.get("content")))
    return " ".join(parts)


def _token_counts(body: dict[str, Any], reply: Reply, content: str) -> tuple[int, int]:
    """(prompt, completion) tokens: the reply's, or counted from the text."""
    prompt = reply.prompt_tokens
    if prompt is None:
        prompt = _count_tokens(_prompt_text(body))
    completion = reply.completion_tokens
    if completion is None:
        completion = _count_tokens(content)
    return prompt, completion


def _pieces(content: str) -> list[str]:
    """The content cut at spaces, as a model streams it word by word."""
    words = content.split(" ")
    return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]


def _inputs(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _vector(dims: int) -> list[float]:
    return [0.1 * (j + 1) for j in range(dims)]


def _event(name: str, **data: Any) -> bytes:
    """One Anthropic server-sent event: its data repeats the event's name as ``type``."""
    return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()


def _anthropic_error(kind: str, message: str) -> dict[str, Any]:
    return {"type": kind, "message": message}


def _ndjson(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode() + b"\n"


class _Handler(BaseHTTPRequestHandler):
    server_state: MockServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without this, delayed ACKs add ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        recorded = Recorded(
            "GET",
            self.path,
            {k.lower(): v for k, v in self.headers.items()},
            None,
            None,
            time.time(),
        )
        self.server_state._take(None, recorded)
        if self.path.rstrip("/").endswith("/models"):
            self._json(200, {"object": "list", "data": [{"id": "mock", "object": "model"}]})
        else:
            self._json(404, {"error": {"message": "not found", "type": "not_found"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        model = body.get("model") if isinstance(body, dict) else None
        recorded = Recorded(
            "POST",
            self.path,
            {k.lower(): v for k, v in self.headers.items()},
            body,
            model if isinstance(model, str) else None,
            time.time(),
        )
        fault, reply = self.server_state._take(recorded.model, recorded)
        dialect, route = self._route(urlsplit(self.path).path.rstrip("/"))
        if not isinstance(body, dict):
            self._error(dialect, 400, "body is not JSON")
            return
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.reset:
                self._reset()
                return
            if fault.status is not None:
                self._error(dialect, fault.status, f"mock error {fault.status}", fault)
                return
            if fault.malformed:
                self._raw(200, _MALFORMED[dialect], fault.headers)
                return
        if route is None:
            self._error(dialect, 404, f"no route {self.path}")
        else:
            route(body, reply, fault)

    def _route(self, path: str) -> tuple[_Dialect, _Route | None]:
        """Which protocol a path speaks, and the method answering it (None: no such route)."""
        if path.startswith("/api/"):
            ollama: dict[str, _Route] = {
                "/api/chat": self._ollama_chat,
                "/api/generate": self._ollama_generate,
                "/api/embed": self._ollama_embed,
                "/api/embeddings": self._ollama_embeddings,
            }
            return "ollama", ollama.get(path)
        if path.endswith("/v1/messages"):
            return "anthropic", self._anthropic_messages
        if path.endswith("/v1/messages/count_tokens"):
            return "anthropic", self._anthropic_count_tokens
        if path.endswith("/chat/completions"):
            return "openai", self._openai_chat
        if path.endswith("/v1/responses"):
            return "openai", self._openai_responses
        if path.endswith("/embeddings"):
            return "openai", self._openai_embeddings
        return "openai", None

    @staticmethod
    def _content(body: dict[str, Any], reply: Reply) -> str:
        if reply.content is not None:
            return reply.content
        return f"Hello from {body.get('model')}."

    # -- OpenAI --------------------------------------------------------------------------------

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

    # -- Anthropic -----------------------------------------------------------------------------

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

    # -- Ollama --------------------------------------------------------------------------------

    def _ollama_chat(self, body: dict[str, Any], reply: Reply, fault: Fault | None) -> None:
        self._ollama_answer(
            body, reply, fault, lambda text: {"message": {"role": "assistant", "content": text}}
        )

    def _ollama_generate(self, body: dict[str, Any], reply: Reply, fault: Fault | None) -> None:
        self._ollama_answer(body, reply, fault, lambda text: {"response": text})

    def _ollama_answer(
        self,
        body: dict[str, Any],
        reply: Reply,
        fault: Fault | None,
        payload: Callable[[str], dict[str, Any]],
    ) -> None:
        content = self._content(body, reply)
        model = reply.response_model or body.get("model")

        def line(text: str) -> dict[str, Any]:
            created = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            return {"model": model, "created_at": created, **payload(text), "done": False}

        prompt, completion = _token_counts(body, reply, content)
        done: dict[str, Any] = {"done": True, "done_reason": reply.finish_reason}
        # Plausible nanosecond timings: 1 ms to load, 0.1 ms a prompt token, 10 ms an output one.
        timings = {"load": 1_000_000, "prompt": prompt * 100_000, "eval": completion * 10_000_000}
        done["total_duration"] = sum(timings.values())
        done["load_duration"] = timings["load"]
        if reply.usage:
            done["prompt_eval_count"] = prompt
            done["eval_count"] = completion
        done["prompt_eval_duration"] = timings["prompt"]
        done["eval_duration"] = timings["eval"]
        headers = fault.headers if fault else None
        # The raw API streams unless told not to (the Python client always says which).
        if not body.get("stream", True):
            self._json(200, {**line(content), **done}, headers)
            return
        frames = [(_ndjson(line(p)), True) for p in _pieces(content)]
        if not (fault and fault.truncate):
            frames.append((_ndjson({**line(""), **done}), True))
        error = None
        if fault and fault.stream_error:
            error = _ndjson({"error": f"mock stream error: {fault.stream_error}"})
        self._stream("application/x-ndjson", frames, fault, error, headers)

    def _ollama_embed(self, body: dict[str, Any], reply: Reply, fault: Fault | None) -> None:
        items = _inputs(body.get("input"))
        dims = int(body.get("dimensions") or 8)
        text = " ".join(str(i) for i in items)
        answer = {
            "model": reply.response_model or body.get("model"),
            "embeddings": [_vector(dims) for _ in items],
            "total_duration": 2_000_000,
            "load_duration": 1_000_000,
            "prompt_eval_count": _count_tokens(text),
        }
        self._json(200, answer, fault.headers if fault else None)

    def _ollama_embeddings(self, body: dict[str, Any], reply: Reply, fault: Fault | None) -> None:
        """The older single-prompt embeddings endpoint."""
        self._json(200, {"embedding": _vector(8)}, fault.headers if fault else None)

    # -- shared --------------------------------------------------------------------------------

    def _error(
        self, dialect: _Dialect, status: int, message: str, fault: Fault | None = None
    ) -> None:
        """Answer ``status`` with ``dialect``'s error body."""
        headers = fault.headers if fault else None
        body: dict[str, Any]
        if dialect == "anthropic":
            kind = (fault.code if fault else None) or _ANTHROPIC_ERRORS.get(
                status, "api_error" if status >= 500 else "invalid_request_error"
            )
            body = {"type": "error", "error": _anthropic_error(kind, message)}
        elif dialect == "ollama":
            body = {"error": message}
        elif fault is not None:
            kind = {429: "rate_limit_exceeded", 400: "invalid_request_error"}.get(
                status, "server_error"
            )
            body = {"error": {"message": message, "type": kind, "code": fault.code}}
        else:
            kind = "not_found" if status == 404 else "invalid_request"
            body = {"error": {"message": message, "type": kind}}
        self._json(status, body, headers)

    def _stream(
        self,
        content_type: str,
        frames: Iterable[tuple[bytes, bool]],
        fault: Fault | None,
        error: bytes | None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Send a stream whose body ends when the connection closes, playing the fault.

        Each frame says whether it counts toward ``cut_after``: once that many have gone out,
        the next counting frame is replaced by the in-stream ``error`` (then a clean end) or,
        without one, by a TCP reset.
        """
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("connection", "close")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.close_connection = True
        if fault is not None and fault.empty:
            return  # headers, then a clean end: not one chunk
        limit = fault.cut_after if fault is not None else None
        if error is not None and limit is None:
            limit = 0
        sent = 0
        try:
            for frame, counts in frames:
                if counts and limit is not None and sent >= limit:
                    if error is not None:
                        self.wfile.write(error)
                        self.wfile.flush()
                        return
                    self.wfile.flush()
                    self._reset()
                    return
                self.wfile.write(frame)
                self.wfile.flush()
                sent += counts
        except OSError:
            pass

    # -- low level -----------------------------------------------------------------------------

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self._raw(status, json.dumps(body).encode(), headers)

    def _raw(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.send_header("x-request-id", f"req_{uuid.uuid4().hex[:8]}")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True

    def _reset(self) -> None:
        """Close with RST (SO_LINGER 0), as a crashed upstream or a proxy would."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
