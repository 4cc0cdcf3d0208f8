"""The adapter contract: everything a provider adapter gives the engine, written down.

An adapter (``aiguard/adapters/_*.py``) translates one SDK for the engine, which knows no
provider. For each guarded method it gives a :class:`Route` (how to read that method's requests,
answers and errors); for each target a call may go to, an :class:`Endpoint` (how to send the
request there); for a streamed answer, a :class:`Reader` per attempt (what the chunks say).
Besides, an adapter module has ``supports(client) -> bool`` and ``wrap(client, policy,
provider)``, and may have ``classify(error)`` and ``PATCHES`` (its zero-code instrumentation
table): see ``aiguard/adapters/__init__.py``.

**Fallback across providers** goes through one pivot: the OpenAI chat-completions request and
answer, as plain dicts. An adapter module may provide either side or both (the members of
:class:`PivotTarget` and :class:`PivotPrimary`, all optional, read only by
``aiguard.adapters._pivot``):

- as a fallback *target*, ``openai_chat(client, timeout)`` and ``openai_chat_async(client,
  timeout)``: answer an OpenAI chat request dict with ``client``;
- as a *primary*, ``to_openai_chat(request)``, ``from_openai_chat(answer)``,
  ``from_openai_chunks(chunks)`` and ``from_openai_chunks_async(chunks)``: its chat request in
  the pivot, and the pivot's answers back in its own SDK's types.

A client of any SDK whose adapter is a target can then be the fallback of a client whose
adapter is a primary, and the caller gets the primary's own types, streams included.

Every member below has a default unless it says it must be given; an adapter overrides what
its provider needs. Nothing here may raise into the user's call: the engine catches and logs a
fault in any of them and goes on with less telemetry.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry.trace import SpanKind

from aiguard import _semconv as sc
from aiguard._messages import Message
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
        """The request's messages in the neutral form: what checks read and capture records
        (read only when a check, a budget or content capture asks)."""
        return []

    def tool_definitions(self, request: dict[str, Any]) -> list[Any] | None:
        """The request's tool definitions, recorded as ``gen_ai.tool.definitions`` with content
        capture on: dicts of OpenAI chat's shape (``{"type": "function", "function": {"name",
        "description", "parameters"}}``) or flat (``{"type", "name", "description",
        "parameters"}``; Anthropic's ``input_schema`` too). None: no tools. By default the
        request's ``tools`` (OpenAI chat and Responses, Anthropic, Ollama)."""
        tools = request.get("tools")
        return list(tools) if isinstance(tools, list | tuple) else None

    def answer_text(self, result: Any) -> Any:
        """What output validation checks in an answer: its text (or an object the SDK parsed
        already). By default the answer itself (a decorated function's return value)."""
        return result

    def answer_messages(self, result: Any) -> list[tuple[Message, str]]:
        """The answer's messages, each with its finish reason, for content capture."""
        return []

    def reask(self, request: dict[str, Any], answer: Any, errors: list[str]) -> dict[str, Any]:
        """The request asking again after an answer that failed output validation: with
        ``answer`` (what :meth:`answer_text` read) and ``aiguard._output.feedback(errors)``
        appended as the next turns. By default the request as it was (called again)."""
        return request

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

    def text(self, item: Any) -> str:
        """The answer text one chunk carries ("" if none), for content capture."""
        return ""


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
    # How this target's errors are classified, when not by the route (a fallback client of
    # another SDK: its own adapter's ``classify``).
    classify: Callable[[BaseException], tuple[Failure, float | None]] | None = None
    # The provider and server attributes, and the fleet key, made on first use.
    _target: Attrs | None = None
    _fleet: str | None = None

    @property
    def fleet_key(self) -> str:
        """The target as every process names it (host, port and model): a shared circuit's or
        rate limit's key, where ``breaker_key`` names objects of this process."""
        key = self._fleet
        if key is None:
            address = self.server.get(sc.SERVER_ADDRESS)
            if address is None:
                key = f"{self.provider}/{self.model}"
            else:
                key = f"{address}:{self.server.get(sc.SERVER_PORT, '')}/{self.model}"
            self._fleet = key
        return key

    @property
    def price_provider(self) -> str:
        return self.pricing or self.provider

    def target_attrs(self) -> Attrs:
        """``gen_ai.provider.name`` and ``server.*`` of this target, for an answer it gave."""
        attrs = self._target
        if attrs is None:
            attrs = self._target = {sc.PROVIDER: self.provider, **self.server}
        return attrs


# -- the pivot: fallback across providers --------------------------------------------------------

# An OpenAI chat request or answer (``chat.completion``) or stream chunk (``chat.completion.chunk``)
# as plain JSON-like dicts.
Chat = dict[str, Any]
# What a target answers: a ``chat.completion`` dict, or for ``stream=True`` the chunk dicts.
Answer = Callable[[Chat], Chat | Iterator[Chat]]
AsyncAnswer = Callable[[Chat], Awaitable[Chat | AsyncIterator[Chat]]]


class PivotTarget(Protocol):
    """An adapter module whose clients can answer OpenAI chat requests (a fallback target).

    ``openai_chat(client, timeout)`` returns ``(answer, provider)``: ``answer(request)`` sends
    an OpenAI chat request dict with ``client`` (a raw client, never a wrapped one) and returns
    a ``chat.completion`` dict or, for ``stream=True``, an iterator of ``chat.completion.chunk``
    dicts (closing it closes the provider's stream; a usage chunk ends it when the request asks
    with ``stream_options.include_usage``); ``provider`` is its ``gen_ai.provider.name``. The
    client's SDK errors propagate unchanged: the module's ``classify`` reads them. A request
    field it cannot honour is dropped and named in an ``aiguard.translation.dropped`` span
    event, or, when dropping it would change the answer's meaning, refused with
    ``aiguard.adapters._pivot.Untranslatable`` (nothing is sent). ``timeout`` is the guarded
    call's, for a target that waits for a local model; the request's ``timeout`` key is the
    time left for this attempt. ``openai_chat_async`` is the same for async primaries
    (``answer`` is a coroutine function; streams are async iterators). Either raises TypeError
    for a client it cannot use that way (an async client for a sync primary).

    Optional: ``pivot_server(client)`` (``server.address`` / ``server.port``, read once),
    ``pivot_pricing(client)`` (whose prices apply, when not ``provider``: an OpenAI client on
    Groq) and ``pivot_timeout(client)`` (its own per-request timeout, never widened by a
    deadline), as for an :class:`Endpoint`.
    """

    def openai_chat(self, client: Any, timeout: float | None) -> tuple[Answer, str]: ...

    def openai_chat_async(self, client: Any, timeout: float | None) -> tuple[AsyncAnswer, str]: ...


class PivotPrimary(Protocol):
    """An adapter module whose chat calls can fall back to any :class:`PivotTarget`.

    ``to_openai_chat(request)`` is its chat request (the keywords of its chat method, ``model``
    set to the target's) as an OpenAI chat request dict; what has no equivalent and may be left
    out is dropped and named in an ``aiguard.translation.dropped`` span event, anything else
    raises ``Untranslatable`` (never a wrong request). ``from_openai_chat(answer)`` is a
    ``chat.completion`` dict as its SDK's response type; ``from_openai_chunks(chunks)`` and
    ``from_openai_chunks_async(chunks)`` are chunk dicts as the chunks (events) its SDK's
    stream yields, closing ``chunks`` when closed.
    """

    def to_openai_chat(self, request: dict[str, Any]) -> Chat: ...

    def from_openai_chat(self, answer: Chat) -> Any: ...

    def from_openai_chunks(self, chunks: Iterator[Chat]) -> Iterator[Any]: ...

    def from_openai_chunks_async(self, chunks: AsyncIterator[Chat]) -> AsyncIterator[Any]: ...
