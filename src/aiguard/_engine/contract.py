"""The adapter contract: everything a provider adapter gives the engine, written down.

An adapter (``aiguard/adapters/_*.py``) translates one SDK for the engine, which knows no
provider. For each guarded method it gives a :class:`Route` (how to read that method's requests,
answers and errors); for each target a call may go to, an :class:`Endpoint` (how to send the
request there); for a streamed answer, a :class:`Reader` per attempt (what the chunks say).
Besides, an adapter module has ``supports(client) -> bool`` and ``wrap(client, policy,
provider)``, and may have ``classify(error)``, ``openai_chat(client)`` (it can answer OpenAI
chat requests, so an OpenAI client can fall back to it) and ``PATCHES`` (its zero-code
instrumentation table): see ``aiguard/adapters/__init__.py``.

Every member below has a default unless it says it must be given; an adapter overrides what
its provider needs. Nothing here may raise into the user's call: the engine catches and logs a
fault in any of them and goes on with less telemetry.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import SpanKind

from aiguard import _semconv as sc
from aiguard._messages import Message, request_messages
from aiguard._policy import Failure, Retry
from aiguard._telemetry import Attrs
from aiguard._types import Usage


class Route:
    """How the engine reads one guarded method's requests, answers and errors.

    Must be given: ``operation`` (the GenAI operation name: ``chat``, ``text_completion``,
    ``embeddings``), :meth:`classify`.
    """

    operation: str = "chat"
    # CLIENT for a remote model; INTERNAL for an in-process one (or a decorated function).
    span_kind: SpanKind = SpanKind.CLIENT
    # Does an answer carry usage that has a price? False for the decorator's functions.
    priced: bool = True
    # Is the validated output what the caller gets (a decorated function), rather than the
    # SDK's own response (a client method)?
    returns_output: bool = False

    def classify(self, error: BaseException) -> tuple[Failure, float | None]:
        """The failure class of an error and the wait the server asked for (Retry-After)."""
        return Failure.FATAL, None

    def request_attributes(self, request: dict[str, Any]) -> Attrs:
        """The span's request attributes (``gen_ai.request.*``, ``openai.*``), set at start."""
        return {}

    def response_attributes(self, result: Any) -> tuple[Attrs, Usage | None]:
        """The answer's response attributes (``gen_ai.response.*``) and its usage."""
        return {}, None

    def estimate(self, request: dict[str, Any]) -> tuple[int, int | None]:
        """Upper bounds of the request's input tokens and of its output tokens (None: unset),
        for the worst case a budget reserves."""
        return 0, None

    def messages(self, request: dict[str, Any]) -> list[Message]:
        """The request's messages in the neutral form: what checks read and capture records."""
        return request_messages(request)

    def stream(
        self, request: dict[str, Any], include_usage: bool
    ) -> tuple[dict[str, Any], Callable[[], Reader]] | None:
        """For a request that asks for a stream: the request to send (``include_usage``: ask
        for the usage, e.g. OpenAI's ``stream_options``) and a maker of its chunk readers.
        None: not a stream."""
        return None


class Reader:
    """What one streamed answer's chunks say, read as the user iterates (one per attempt)."""

    # Did the stream say it was complete (a finish reason, a final event)?
    complete: bool = False
    # Chunks seen so far.
    chunks: int = 0
    # Has the answer started? Until then the engine reads on inside the guarded call, so an
    # error before the answer (Anthropic's overloaded error after ``message_start``) is retried.
    started: bool = True

    def chunk(self, item: Any) -> bool:
        """Note one chunk; False hides it from the user (a usage chunk aiguard asked for)."""
        self.chunks += 1
        return True

    def result(self) -> tuple[Attrs, Usage | None]:
        """The response attributes and usage seen so far."""
        return {}, None


@dataclass(slots=True)
class Endpoint:
    """One target a guarded call may send its request to: the primary, or a fallback."""

    invoke: Callable[[dict[str, Any]], Any]  # sends the request (a coroutine for async clients)
    model: str
    provider: str  # gen_ai.provider.name
    server: Attrs  # server.address and server.port
    retry: Retry
    breaker_key: Hashable  # one circuit per key (client and model)
    # The request keyword that takes a per-request timeout (None: the method takes none).
    timeout_param: str | None = "timeout"
    # The client's own per-request timeout, read when a deadline applies: the deadline may
    # shorten it, never widen it.
    client_timeout: Callable[[], float | None] | None = None
    # The provider whose prices apply, when not ``provider`` (an OpenAI client talking to Groq
    # reports ``openai`` in telemetry and is priced as Groq).
    pricing: str | None = None
    # The provider and server attributes, made on first use.
    _target: Attrs | None = None

    @property
    def fleet_key(self) -> str:
        """The target as every process names it (host, port and model): a shared circuit's or
        rate limit's key, where ``breaker_key`` names objects of this process."""
        address = self.server.get(sc.SERVER_ADDRESS)
        if address is None:
            return f"{self.provider}/{self.model}"
        return f"{address}:{self.server.get(sc.SERVER_PORT, '')}/{self.model}"

    @property
    def price_provider(self) -> str:
        return self.pricing or self.provider

    def target_attrs(self) -> Attrs:
        """``gen_ai.provider.name`` and ``server.*`` of this target, for an answer it gave."""
        attrs = self._target
        if attrs is None:
            attrs = self._target = {sc.PROVIDER: self.provider, **self.server}
        return attrs
