"""OpenAI adapter: translates the openai SDK's requests, responses and errors for the core.

Guards ``chat.completions.create`` / ``parse`` and ``embeddings.create`` on ``OpenAI`` and
``AsyncOpenAI``; everything else passes through. Works for any OpenAI-compatible server.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import openai

from aiguard import _budget
from aiguard._engine.contract import Endpoint
from aiguard._errors import AIGuardError
from aiguard._http import server_attributes as url_server
from aiguard._http import timeout_seconds
from aiguard._policy import DEFAULT_RETRY, Policy, Target
from aiguard._telemetry import Attrs
from aiguard.adapters import _openai_pivot, _pivot, _stainless
from aiguard.adapters._openai_chat import ChatReader, ChatRoute, EmbeddingsRoute, classify
from aiguard.adapters._openai_pivot import (
    detect_provider,
    from_openai_chat,
    from_openai_chunks,
    from_openai_chunks_async,
    openai_chat,
    openai_chat_async,
    pivot_pricing,
    pivot_server,
    pivot_timeout,
    telemetry_provider,
    to_openai_chat,
)
from aiguard.adapters._openai_responses import _RESPONSES, ResponsesRoute
from aiguard.adapters._proxy import (
    SDK_VIEW,
    Guard,
    GuardedProxy,
    Patch,
    guarded_method,
    is_wrapped,
    rebound,
    resource_class,
    unwrap,
)

_CHAT = ChatRoute()
_EMBEDDINGS = EmbeddingsRoute()
_CREATE = ("chat", "completions", "create")

# Guarded methods by path, with their route. ``beta.chat`` is the same resource as ``chat``.
_METHODS: list[tuple[tuple[str, ...], ChatRoute | ResponsesRoute | EmbeddingsRoute]] = [
    (_CREATE, _CHAT),
    (("chat", "completions", "parse"), _CHAT),
    (("beta", "chat", "completions", "create"), _CHAT),
    (("beta", "chat", "completions", "parse"), _CHAT),
    (("embeddings", "create"), _EMBEDDINGS),
    (("responses", "create"), _RESPONSES),
]
# SDK helpers that send their requests through the guarded ``self.create``.
_HELPERS = [
    ("chat", "completions", "stream"),
    ("beta", "chat", "completions", "stream"),
    ("responses", "stream"),
]


def _method(client: Any, path: tuple[str, ...]) -> Any:
    obj = client
    for name in path:
        obj = getattr(obj, name)
    return obj


class _Client:
    """One client's view for the core: read from the client at each call, never copied."""

    def __init__(
        self, client: openai.OpenAI | openai.AsyncOpenAI, provider: str | None, policy: Policy
    ) -> None:
        self.client = client
        self.given_provider = provider
        # The SDK's own retries are off for guarded attempts: aiguard retries (unless told to
        # keep them, as zero-code instrumentation without a retry policy does).
        self.keep_retries = policy.sdk_retries
        _stainless.hush(client)
        self.call: Callable[..., Any] = (
            _stainless.call_async if isinstance(client, openai.AsyncOpenAI) else _stainless.call
        )
        self.url: Any = None
        self.provider = self.pricing = ""
        self.server: Attrs = {}

    def _where(self) -> None:
        # base_url may be changed on the client at any time.
        url = self.client.base_url
        if url is not self.url:
            # An explicit provider= names both; else telemetry says openai, prices follow the
            # host.
            self.provider = self.given_provider or telemetry_provider(self.client)
            self.pricing = self.given_provider or detect_provider(self.client)
            self.server = url_server(url)
            self.url = url

    def endpoint(
        self, method: Callable[..., Any], model: str, policy: Policy, target: Target | None = None
    ) -> Endpoint:
        if self.client.base_url is not self.url:
            self._where()
        client = self.client
        invoke = functools.partial(self.call, client, self.keep_retries, [0], method)
        return Endpoint(
            invoke=invoke,
            model=model,
            provider=self.provider,
            server=self.server,
            retry=_stainless.retry(client, policy, target),
            breaker_key=(id(client), model),
            client_timeout=lambda: timeout_seconds(client.timeout),
            pricing=self.pricing,
        )


def wrap(client: openai.OpenAI | openai.AsyncOpenAI, policy: Policy, provider: str | None) -> Any:
    is_async = isinstance(client, openai.AsyncOpenAI)
    primary = _Client(client, provider, policy)
    kind = "AsyncOpenAI client" if is_async else "OpenAI client"
    others = _pivot.fallback_clients(
        policy,
        lambda other: supports(other) and isinstance(other, openai.AsyncOpenAI) == is_async,
        lambda other: _Client(other, None, policy),
        kind,
        is_async,
        _PIVOT,
    )

    tree: dict[str, Any] = {}

    def place(path: tuple[str, ...], node: Any) -> None:
        branch = tree
        for name in path[:-1]:
            branch = branch.setdefault(name, {})
        branch[path[-1]] = node

    for path, route in _METHODS:
        endpoints = _endpoints(path, primary, others, policy)
        if route is _RESPONSES:  # a stored prompt may name the model: the answer tells it
            guard = _budgeted(guarded_method(route, policy, endpoints, is_async, default_model=""))
        else:
            guard = guarded_method(route, policy, endpoints, is_async)
        place(path, _stainless.raw_responses(guard, is_async))
        # The SDK's raw and streaming-response views, around the guarded resource.
        place((*path[:-1], "with_raw_response"), SDK_VIEW)
        place((*path[:-1], "with_streaming_response"), SDK_VIEW)
    for path in _HELPERS:
        place(path, rebound)

    def with_options(
        proxy: Any, method: Callable[..., Any], instance: Any, args: Any, kwargs: Any
    ) -> Any:
        return _rewrap(proxy, method(*args, **kwargs), kwargs, policy, provider)

    tree["with_options"] = tree["copy"] = with_options
    return GuardedProxy(client, tree, policy, provider)


def supports(client: object) -> bool:
    return isinstance(client, openai.OpenAI | openai.AsyncOpenAI)


_PIVOT = _pivot.primary(_openai_pivot)

__all__ = [
    "ChatReader",
    "classify",
    "detect_provider",
    "from_openai_chat",
    "from_openai_chunks",
    "from_openai_chunks_async",
    "openai_chat",
    "openai_chat_async",
    "pivot_pricing",
    "pivot_server",
    "pivot_timeout",
    "to_openai_chat",
]


def _budgeted(guard: Guard) -> Guard:
    """Refuse a call without ``model=`` while a budget is in force: its cost cannot be held.

    Without a budget it is guarded as any call, priced by the model its answer names.
    """

    def guarded(proxy: Any, method: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if not args and "model" not in kwargs:
            policy: Policy = proxy._self_policy
            if policy.budget is not None or _budget.active.get():
                raise AIGuardError(
                    "a budget is in force and this call names no model, so its worst-case "
                    "cost cannot be reserved: pass model= (the one the stored prompt uses)"
                )
        return guard(proxy, method, instance, args, kwargs)

    return guarded


def _endpoints(
    path: tuple[str, ...],
    primary: _Client,
    others: dict[int, _Client | _pivot.Foreign],
    policy: Policy,
) -> Callable[[Callable[..., Any], str], list[Endpoint]]:
    """The targets of one call of the method at ``path``: the method called, then fallbacks.

    A client of another SDK answers ``chat.completions.create`` only (through the pivot)."""
    fallbacks: list[tuple[Target, _Client | _pivot.Foreign]] = []
    for t in policy.fallback:
        owner = others[id(unwrap(t.client))] if t.client is not None else primary
        if not isinstance(owner, _pivot.Foreign) or path == _CREATE:
            fallbacks.append((t, owner))

    if not fallbacks:
        return lambda method, model: [primary.endpoint(method, model, policy)]

    def endpoints(method: Callable[..., Any], model: str) -> list[Endpoint]:
        found = [primary.endpoint(method, model, policy)]
        for target, owner in fallbacks:
            if isinstance(owner, _pivot.Foreign):
                found.append(owner.endpoint(target, policy))
            elif owner is primary:  # another model through the same method
                found.append(primary.endpoint(method, target.model, policy, target))
            else:
                other = _method(owner.client, path)
                found.append(owner.endpoint(other, target.model, policy, target))
        return found

    return endpoints


def _rewrap(
    proxy: Any, result: Any, options: dict[str, Any], policy: Policy, provider: str | None
) -> Any:
    """What ``with_options``/``copy`` return on a wrapped client: the copy, wrapped alike.

    ``max_retries=`` given there is the more specific choice: the copy follows it (the openai
    tool runner sends calls that must not repeat with ``max_retries=0``).
    """
    if is_wrapped(result):
        return result
    if result is proxy.__wrapped__:
        return proxy
    if not supports(result):
        return result
    if "max_retries" in options and policy.retry is not DEFAULT_RETRY:
        policy = dataclasses.replace(policy, retry=DEFAULT_RETRY)
    return wrap(result, policy, provider)


# Zero-code instrumentation (``aiguard.instrument()``): the SDK methods it patches.
PATCHES = tuple(
    Patch(resource_class(client_cls, path), methods, path, "_client")
    for client_cls in (openai.OpenAI, openai.AsyncOpenAI)
    for path, methods in (
        (("chat", "completions"), ("create", "parse")),
        (("embeddings",), ("create",)),
        (("responses",), ("create",)),
    )
)
