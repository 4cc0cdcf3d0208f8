"""Fallback across providers: a client of any SDK answers for a client of another.

The pivot is the OpenAI chat-completions request and answer as plain dicts (see
:class:`aiguard._engine.contract.PivotTarget` and :class:`~aiguard._engine.contract.PivotPrimary`).
A primary adapter turns its chat request into the pivot, the fallback target's adapter answers it
with its own client, and the primary's adapter turns the answer (or each streamed chunk) back into
its own SDK's types, so the caller gets what the primary client returns.

This module is the one reader of the pivot members of adapter modules. A target's own errors
reach the engine unchanged and are classified by its own adapter; the answering target's
provider and server go on the call's span.

A wrapped target (``Target(client=aiguard.wrap(other, provider="groq"))``) is called unwrapped
(one span per logical call): its ``provider=`` names it in telemetry; everything else (retry,
timeout, checks, budgets, capture) is the primary's policy, as for any fallback target.
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

from opentelemetry import trace

from aiguard import _semconv as sc
from aiguard import adapters
from aiguard._engine.contract import Answer, AsyncAnswer, Chat, Endpoint
from aiguard._engine.state import in_sdk
from aiguard._errors import AIGuardError
from aiguard._policy import Failure, Policy, Target
from aiguard._telemetry import Attrs, add_event
from aiguard.adapters._proxy import GuardedProxy, unwrap

V = TypeVar("V")

Classify = Callable[[BaseException], tuple[Failure, float | None]]


class Untranslatable(AIGuardError, ValueError):
    """A request that cannot be sent to a fallback target of another provider as it means.

    Raised before anything is sent to that target, naming what has no equivalent there.
    """

    def __init__(self, what: str, target: str) -> None:
        self.what = what
        self.target = target
        super().__init__(
            f"aiguard cannot send this request to the {target} fallback: {what}. Nothing was "
            "sent to it; leave that out of the request or use a fallback of the same provider."
        )


def _fatal(error: BaseException) -> tuple[Failure, float | None]:
    return Failure.FATAL, None


def dropped(names: Iterable[str], target: str) -> None:
    """Note on the call's span what a translation for ``target`` left out (nothing if empty)."""
    fields = sorted(set(names))
    if fields:
        add_event(
            trace.get_current_span(),
            sc.TRANSLATION_DROPPED_EVENT,
            {sc.TRANSLATION_FIELDS: fields, sc.TRANSLATION_TARGET: target},
        )


def split(
    request: dict[str, Any], known: Iterable[str], droppable: Iterable[str], target: str
) -> dict[str, Any]:
    """The ``known`` fields of ``request`` (set, not None); ``droppable`` ones are dropped with
    a span event; any other field raises :class:`Untranslatable`."""
    keep = frozenset(known)
    drop = frozenset(droppable)
    out: dict[str, Any] = {}
    left: list[str] = []
    for key, value in request.items():
        if value is None or not _given(value):
            continue
        if key in keep:
            out[key] = value
        elif key in drop:
            left.append(key)
        else:
            raise Untranslatable(f"{key}= has no equivalent", target)
    dropped(left, target)
    return out


def _given(value: Any) -> bool:
    """False for the SDKs' "not given" sentinels (``openai.NOT_GIVEN``, ``omit``)."""
    return type(value).__name__ not in ("NotGiven", "Omit")


def arguments_of(text: Any) -> dict[str, Any]:
    """A tool call's JSON arguments as an object (``{"arguments": ...}`` for anything else)."""
    try:
        value = json.loads(text) if isinstance(text, str) and text else {}
    except ValueError:
        return {"arguments": text}
    return value if isinstance(value, dict) else {"arguments": value}


def include_usage(pivot: Chat) -> bool:
    """Does a streamed pivot request ask for a closing usage chunk?"""
    options = pivot.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def converted(
    source: Iterator[Any],
    feed: Callable[[Any], Iterable[V]],
    end: Callable[[], Iterable[V]] = tuple,
) -> Iterator[V]:
    """``feed(item)`` for each item of a stream, then ``end()``; closing this closes ``source``
    (an SDK stream: its connection, or a local model: its lock)."""
    try:
        for item in source:
            yield from feed(item)
        yield from end()
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


async def converted_async(
    source: AsyncIterator[Any],
    feed: Callable[[Any], Iterable[V]],
    end: Callable[[], Iterable[V]] = tuple,
) -> AsyncIterator[V]:
    """:func:`converted` for async streams."""
    try:
        async for item in source:
            for out in feed(item):
                yield out
        for out in end():
            yield out
    finally:
        close = getattr(source, "aclose", None) or getattr(source, "close", None)
        if close is not None:
            closing = close()
            if inspect.isawaitable(closing):
                await closing


@dataclass(frozen=True, slots=True)
class Primary:
    """A primary adapter's side of the pivot (see ``PivotPrimary``)."""

    to_openai_chat: Callable[[dict[str, Any]], Chat]
    from_openai_chat: Callable[[Chat], Any]
    from_openai_chunks: Callable[[Iterator[Chat]], Iterator[Any]]
    from_openai_chunks_async: Callable[[AsyncIterator[Chat]], AsyncIterator[Any]]


def primary(adapter: ModuleType) -> Primary:
    """The pivot members of a primary adapter module (all four must be there)."""
    return Primary(
        adapter.to_openai_chat,
        adapter.from_openai_chat,
        adapter.from_openai_chunks,
        adapter.from_openai_chunks_async,
    )


class Foreign:
    """A fallback client of another SDK, answering the primary's chat calls through the pivot.

    Built at wrap time: raises TypeError when the client's adapter cannot answer OpenAI chat
    requests, or not for this kind of primary (sync or async).
    """

    def __init__(self, given: Any, is_async: bool, side: Primary, stream: bool = False) -> None:
        client = unwrap(given)
        adapter = adapters.for_client(client)
        name = "openai_chat_async" if is_async else "openai_chat"
        make = getattr(adapter, name, None) if adapter is not None else None
        if make is None:
            raise TypeError(
                f"a fallback client of type {type(client).__qualname__} cannot answer OpenAI "
                f"chat requests; supported fallback clients: {adapters.supported()}"
            )
        make(client, None)  # refuses a client of the wrong kind (sync or async) now
        self.make: Callable[[Any, float | None], tuple[Any, str]] = make
        self.client = client
        self.is_async = is_async
        self.side = side
        self.stream = stream  # the primary's method always streams (Anthropic's helper)
        self.classify: Classify = getattr(adapter, "classify", None) or _fatal
        self.given_provider: str | None = (
            given._self_provider if isinstance(given, GuardedProxy) else None
        )
        # Optional facts of the target (see PivotTarget): read once, or at each call.
        server = getattr(adapter, "pivot_server", None)
        self.server: Attrs = server(client) if server is not None else {}
        pricing = getattr(adapter, "pivot_pricing", None)
        self.pricing: str | None = self.given_provider or (
            pricing(client) if pricing is not None else None
        )
        timeout = getattr(adapter, "pivot_timeout", None)
        self.client_timeout: Callable[[], float | None] | None = (
            None if timeout is None else functools.partial(timeout, client)
        )

    def streaming(self, stream: bool) -> Foreign:
        """This target for a primary method that always streams."""
        if stream == self.stream:
            return self
        other = copy.copy(self)
        other.stream = stream
        return other

    def _pivot(self, request: dict[str, Any]) -> Chat:
        if self.stream:
            request = {**request, "stream": True}
        timeout = request.pop("timeout", None) if "timeout" in request else None
        pivot = self.side.to_openai_chat(request)
        if isinstance(timeout, int | float) and not isinstance(timeout, bool):
            pivot["timeout"] = timeout  # the time left for this attempt
        return pivot

    def endpoint(self, target: Target, policy: Policy) -> Endpoint:
        answer, provider = self.make(self.client, policy.timeout)
        side = self.side
        if self.is_async:
            answer_async: AsyncAnswer = answer

            async def invoke_async(request: dict[str, Any]) -> Any:
                # While awaited, as a guarded client's own SDK call: zero-code
                # instrumentation leaves the target's call alone (one span per call).
                inside = in_sdk.set(True)
                try:
                    result = await answer_async(self._pivot(dict(request)))
                finally:
                    in_sdk.reset(inside)
                if isinstance(result, dict):
                    return side.from_openai_chat(result)
                return side.from_openai_chunks_async(result)

            invoke: Callable[[dict[str, Any]], Any] = invoke_async
        else:
            answer_sync: Answer = answer

            def invoke(request: dict[str, Any]) -> Any:
                result = answer_sync(self._pivot(dict(request)))
                if isinstance(result, dict):
                    return side.from_openai_chat(result)
                return side.from_openai_chunks(result)

        return Endpoint(
            invoke=invoke,
            model=target.model,
            provider=self.given_provider or provider,
            server=self.server,
            retry=policy.retry_for(target),
            breaker_key=(id(self.client), target.model),
            client_timeout=self.client_timeout,
            pricing=self.pricing,
            classify=self.classify,
        )


def fallback_clients(
    policy: Policy,
    same: Callable[[Any], bool],
    view: Callable[[Any], V],
    kind: str,
    is_async: bool,
    side: Primary | None,
) -> dict[int, V | Foreign]:
    """The fallback targets' clients (by id): ``view(client)`` for a client the adapter calls
    itself (``same``), a :class:`Foreign` for another SDK's client (when the adapter has a
    ``side`` of the pivot). ``kind`` names the wrapped client in errors ("Anthropic client").
    """
    found: dict[int, V | Foreign] = {}
    for target in policy.fallback:
        if target.client is None:
            continue
        other = unwrap(target.client)
        if id(other) in found:
            continue
        if same(other):
            found[id(other)] = view(other)
            continue
        why = "it is another SDK's client and this adapter has no pivot"
        if side is not None:
            try:
                found[id(other)] = Foreign(target.client, is_async, side)
                continue
            except TypeError as exc:
                why = str(exc)
        raise TypeError(
            f"fallback Target(model={target.model!r}) has a client of type "
            f"{type(other).__qualname__}; a wrapped {kind} can fall back only to another "
            f"{kind}, another model on the same client, or a client of another SDK that "
            f"answers {'async' if is_async else 'sync'} OpenAI chat requests ({why})"
        )
    return found
