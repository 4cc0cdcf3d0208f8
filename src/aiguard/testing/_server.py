"""A fault-injecting HTTP server for tests that speaks every provider's wire (stdlib only).

It listens on 127.0.0.1 on a free port, plays a scripted queue of faults per model, and records
every request it receives. It answers each wire protocol in its own shape, with usage and cached
tokens, as JSON or as a stream:

- OpenAI: ``POST /v1/chat/completions`` (SSE), ``/v1/responses`` (SSE events) and
  ``/v1/embeddings``. Point
  ``openai.OpenAI(base_url=server.url, api_key=...)`` at it.
- Anthropic Messages: ``POST /v1/messages`` (SSE with named events) and
  ``/v1/messages/count_tokens``. Point ``anthropic.Anthropic(base_url=server.anthropic_url,
  api_key=...)`` at it: the SDK adds ``/v1/messages`` itself.
- Ollama: ``POST /api/chat`` and ``/api/generate`` (NDJSON streams, streaming unless the body
  says ``"stream": false``), ``/api/embed`` and ``/api/embeddings``. Point
  ``ollama.Client(host=server.ollama_url)`` at it.
- AWS Bedrock: ``POST /model/{modelId}/converse`` (JSON) and ``/converse-stream`` (AWS
  event-stream binary frames). Point ``boto3.client("bedrock-runtime",
  endpoint_url=server.anthropic_url, region_name=..., aws_access_key_id=...,
  aws_secret_access_key=...)`` at it (any credentials).
- Gemini (google-genai): ``POST .../models/{model}:generateContent``,
  ``:streamGenerateContent?alt=sse`` (SSE), ``:batchEmbedContents``, ``:embedContent`` and
  ``:predict``, the model taken from the path. Point ``genai.Client(api_key=...,
  http_options={"base_url": server.gemini_url})`` at it (Vertex AI clients too).

A :class:`Fault` applies to whichever protocol the request speaks; errors come in that
protocol's body shape.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
from collections import defaultdict, deque
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from aiguard.testing._anthropic_wire import AnthropicWire
from aiguard.testing._anthropic_wire import error_body as anthropic_error
from aiguard.testing._bedrock_wire import MALFORMED as BEDROCK_MALFORMED
from aiguard.testing._bedrock_wire import BedrockWire
from aiguard.testing._bedrock_wire import error_body as bedrock_error
from aiguard.testing._bedrock_wire import route as bedrock_route
from aiguard.testing._gemini_wire import MALFORMED as GEMINI_MALFORMED
from aiguard.testing._gemini_wire import GeminiWire
from aiguard.testing._gemini_wire import error_body as gemini_error
from aiguard.testing._gemini_wire import parse as gemini_path
from aiguard.testing._ollama_wire import OllamaWire
from aiguard.testing._ollama_wire import error_body as ollama_error
from aiguard.testing._openai_wire import OpenAIWire
from aiguard.testing._openai_wire import error_body as openai_error
from aiguard.testing._wire import Fault, Recorded, Reply, _Dialect, _Route

__all__ = ["ANY_MODEL", "Fault", "MockServer", "Recorded", "Reply"]

ANY_MODEL = "*"


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
    def gemini_url(self) -> str:
        """The base URL to give a google-genai client (the SDK adds ``/{version}/models/...``).

        Example::

            genai.Client(api_key="test", http_options={"base_url": server.gemini_url})
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


_MALFORMED: dict[_Dialect, bytes] = {
    "openai": b'{"id": "chatcmpl-broken", "choices": [',
    "anthropic": b'{"id": "msg_broken", "type": "message", "content": [',
    "ollama": b'{"model": "broken", "message": {',
    "bedrock": BEDROCK_MALFORMED,
    "gemini": GEMINI_MALFORMED,
}


class _Handler(OpenAIWire, AnthropicWire, OllamaWire, BedrockWire, GeminiWire):
    """The request handler: one class combining every wire (a provider's protocol, each in its
    own module on :class:`aiguard.testing._wire.Wire`). A new wire adds its mixin here, its
    paths in :meth:`_route`, its error body and its malformed answer."""

    error_bodies = {
        "openai": openai_error,
        "anthropic": anthropic_error,
        "ollama": ollama_error,
        "bedrock": bedrock_error,
        "gemini": gemini_error,
    }
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
        aws = bedrock_route(urlsplit(self.path).path)
        if aws is not None:  # Bedrock names the model in the path
            model = aws[0]
        gemini = gemini_path(urlsplit(self.path).path)  # so does Gemini
        if gemini is not None:
            model = gemini[0]
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
        aws = bedrock_route(path)
        if aws is not None:
            model, streams = aws
            return "bedrock", lambda b, r, f: self._bedrock(model, streams, b, r, f)
        gemini = gemini_path(path)
        if gemini is not None:
            return "gemini", self._gemini_route(gemini[1])
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
