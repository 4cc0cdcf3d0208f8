"""What every wire of the testing kit shares: the scripted faults and replies, the token
counts, and the low-level writing of JSON, streams, errors and resets."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour, used for one request, whichever protocol it speaks.

    - ``status``: answer with this HTTP status and the protocol's error body.
    - ``code``: OpenAI: the error's ``code``; Anthropic: the error's ``type`` (by default
      derived from the status: 429 ``rate_limit_error``, 529 ``overloaded_error``...); Bedrock:
      the exception's name (by default 429 ``ThrottlingException``, 503
      ``ServiceUnavailableException``...); Gemini: the error's ``status`` (by default 429
      ``RESOURCE_EXHAUSTED``, 503 ``UNAVAILABLE``...).
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


_Dialect = str  # the protocol a path speaks: "openai", "anthropic", "ollama", ...
_Route = Callable[[dict[str, Any], Reply, Fault | None], None]
_ErrorBody = Callable[[int, str, "Fault | None"], dict[str, Any]]


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


class Wire(BaseHTTPRequestHandler):
    """The handler base each wire (one provider's protocol) extends."""

    # Each dialect's error body, set by the handler that combines the wires.
    error_bodies: ClassVar[dict[str, _ErrorBody]] = {}

    @staticmethod
    def _content(body: dict[str, Any], reply: Reply) -> str:
        if reply.content is not None:
            return reply.content
        return f"Hello from {body.get('model')}."

    # -- shared --------------------------------------------------------------------------------

    def _error(
        self, dialect: _Dialect, status: int, message: str, fault: Fault | None = None
    ) -> None:
        """Answer ``status`` with ``dialect``'s error body."""
        body = self.error_bodies[dialect](status, message, fault)
        self._json(status, body, fault.headers if fault else None)

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
