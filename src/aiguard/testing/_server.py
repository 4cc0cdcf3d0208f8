"""A fault-injecting OpenAI-compatible HTTP server for tests (stdlib only).

It listens on 127.0.0.1 on a free port, answers chat completions (JSON and SSE streams, with usage
and cached tokens) and embeddings, plays a scripted queue of faults per model, and records every
request it receives. Point a real ``openai.OpenAI(base_url=server.url, api_key=...)`` at it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ANY_MODEL = "*"


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour, used for one request.

    - ``status``: answer with this HTTP status and an OpenAI-style error body (``code`` in it).
    - ``headers``: extra response headers, e.g. ``{"retry-after": "0.2"}``.
    - ``delay``: seconds to wait before answering (to trigger client timeouts).
    - ``reset``: drop the connection with a TCP reset instead of answering.
    - ``malformed``: answer 200 with a body that is not valid JSON.
    - ``cut_after``: for a stream, send this many chunks and then drop the connection.
    - ``truncate``: for a stream, end cleanly but with no finish reason and no ``[DONE]``.
    """

    status: int | None = None
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    reset: bool = False
    malformed: bool = False
    cut_after: int | None = None
    truncate: bool = False


@dataclass
class Reply:
    """What the server answers for a model when no fault is scripted."""

    content: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    finish_reason: str = "stop"
    response_model: str | None = None
    usage: bool = True


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
    """The testing kit's OpenAI-compatible server.

    Example::

        with aiguard.testing.MockServer() as server:
            server.fail("gpt-4o", status=429, headers={"retry-after": "0"})
            client = openai.OpenAI(base_url=server.url, api_key="test")
            client.chat.completions.create(model="gpt-4o", messages=[...])
            assert len(server.requests) == 1
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host, self._port = host, port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._faults: dict[str, deque[Fault]] = defaultdict(deque)
        self._replies: dict[str, Reply] = {}
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
        return f"http://{self._host}:{self.port}/v1"

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

    def reset(self) -> None:
        """Forget scripted faults, replies and recorded requests."""
        with self._lock:
            self._faults.clear()
            self._replies.clear()
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
            return fault, reply


class _HTTPServer(ThreadingHTTPServer):
    request_queue_size = 256  # many concurrent clients must not be refused at connect
    daemon_threads = True


def _count_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _prompt_text(body: dict[str, Any]) -> str:
    parts: list[str] = []
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p.get("text", "") for p in content if isinstance(p, dict))
    return " ".join(parts)


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
        if not isinstance(body, dict):
            self._json(400, {"error": {"message": "body is not JSON", "type": "invalid_request"}})
            return
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.reset:
                self._reset()
                return
            if fault.status is not None:
                self._error(fault)
                return
            if fault.malformed:
                self._raw(200, b'{"id": "chatcmpl-broken", "choices": [', fault.headers)
                return
        path = self.path.rstrip("/")
        if path.endswith("/chat/completions"):
            if body.get("stream"):
                self._stream(body, reply, fault)
            else:
                self._json(200, self._completion(body, reply), fault.headers if fault else None)
        elif path.endswith("/embeddings"):
            self._json(200, self._embeddings(body))
        else:
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    # -- bodies --------------------------------------------------------------------------------

    def _usage(self, body: dict[str, Any], reply: Reply, content: str) -> dict[str, Any]:
        prompt = reply.prompt_tokens
        if prompt is None:
            prompt = _count_tokens(_prompt_text(body))
        completion = reply.completion_tokens
        if completion is None:
            completion = _count_tokens(content)
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

    def _content(self, body: dict[str, Any], reply: Reply) -> str:
        if reply.content is not None:
            return reply.content
        return f"Hello from {body.get('model')}."

    def _completion(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        content = self._content(body, reply)
        out: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": reply.response_model or body.get("model"),
            "system_fingerprint": "fp_mock",
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": reply.finish_reason,
                    "logprobs": None,
                }
                for i in range(int(body.get("n") or 1))
            ],
        }
        if reply.usage:
            out["usage"] = self._usage(body, reply, content)
        return out

    def _embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        inputs = body.get("input")
        items = inputs if isinstance(inputs, list) else [inputs]
        dims = int(body.get("dimensions") or 8)
        text = " ".join(str(i) for i in items)
        return {
            "object": "list",
            "model": body.get("model"),
            "data": [
                {
                    "object": "embedding",
                    "index": i,
                    "embedding": [0.1 * (j + 1) for j in range(dims)],
                }
                for i in range(len(items))
            ],
            "usage": {"prompt_tokens": _count_tokens(text), "total_tokens": _count_tokens(text)},
        }

    def _stream(self, body: dict[str, Any], reply: Reply, fault: Fault | None) -> None:
        content = self._content(body, reply)
        words = content.split(" ")
        pieces = [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]
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

        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        frames = [chunk({"role": "assistant", "content": ""}, None)]
        frames += [chunk({"content": p}, None) for p in pieces]
        truncate = fault is not None and fault.truncate
        if not truncate:
            frames.append(chunk({}, reply.finish_reason))
        cut = fault.cut_after if fault is not None else None
        try:
            for i, frame in enumerate(frames):
                if cut is not None and i >= cut:
                    self.wfile.flush()
                    self._reset()
                    return
                self.wfile.write(frame)
                self.wfile.flush()
            if truncate:
                return
            options = body.get("stream_options") or {}
            if reply.usage and options.get("include_usage"):
                self.wfile.write(chunk({}, None, self._usage(body, reply, content)))
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except OSError:
            pass

    # -- low level -----------------------------------------------------------------------------

    def _error(self, fault: Fault) -> None:
        status = fault.status or 500
        kind = {429: "rate_limit_exceeded", 400: "invalid_request_error"}.get(
            status, "server_error"
        )
        body = {"error": {"message": f"mock error {status}", "type": kind, "code": fault.code}}
        self._json(status, body, fault.headers)

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
