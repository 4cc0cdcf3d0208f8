"""``aiguard.wrap``: a drop-in proxy whose model-calling methods run the guarded-call core.

A provider adapter describes which methods to guard (a tree of attribute names ending in guarded
callables); everything else on the client passes through to the original object untouched.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import wrapt

from aiguard import adapters
from aiguard._breaker import Breaker
from aiguard._budget import Budget
from aiguard._engine.contract import Endpoint, Route
from aiguard._engine.driver import begin, run_async, run_sync
from aiguard._engine.state import sdk_call
from aiguard._policy import Policy, Retry, Target
from aiguard._policy_file import resolve

C = TypeVar("C")
V = TypeVar("V")

# A tree of attribute names: a nested dict is a resource, a callable is a guarded method.
Tree = dict[str, Any]
# Turns a call's positional and keyword arguments into one dict of keywords.
Binder = Callable[[tuple[Any, ...], dict[str, Any]], dict[str, Any]]


class GuardedProxy(wrapt.ObjectProxy):  # type: ignore[type-arg]
    """Looks and behaves like the wrapped object; the attributes in ``tree`` are replaced."""

    def __init__(self, wrapped: Any, tree: Tree) -> None:
        super().__init__(wrapped)
        self._self_tree = tree
        self._self_cache: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        node = self._self_tree.get(name)
        if node is None:
            return getattr(self.__wrapped__, name)
        found = self._self_cache.get(name)
        if found is None:
            found = node if callable(node) else GuardedProxy(getattr(self.__wrapped__, name), node)
            self._self_cache[name] = found
        return found

    def __repr__(self) -> str:
        return f"<aiguard.wrap of {self.__wrapped__!r}>"

    # SDK clients return themselves from __enter__: keep the guarded view inside the block.
    def __enter__(self) -> Any:
        entered = self.__wrapped__.__enter__()
        return self if entered is self.__wrapped__ else entered

    async def __aenter__(self) -> Any:
        entered = await self.__wrapped__.__aenter__()
        return self if entered is self.__wrapped__ else entered

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError(
            "an aiguard-wrapped client cannot be pickled; wrap the client after loading"
        )


def is_wrapped(obj: object) -> bool:
    return isinstance(obj, GuardedProxy)


def unwrap(obj: Any) -> Any:
    while isinstance(obj, GuardedProxy):
        obj = obj.__wrapped__
    return obj


def guarded_method(
    route: Route,
    policy: Policy,
    primary: Callable[[str], Endpoint],
    fallbacks: list[Endpoint],
    passthrough: Callable[..., Any],
    is_async: bool,
    guard_when: Callable[[dict[str, Any]], bool] | None = None,
    default_model: str | None = None,
    bind: Binder | None = None,
) -> Callable[..., Any]:
    """Build the replacement for one provider method.

    ``primary(model)`` gives the endpoint of the wrapped client for the requested model;
    ``fallbacks`` were resolved at wrap time. ``bind`` turns positional arguments into keywords
    (for SDKs whose methods are called positionally); ``default_model`` names the model when the
    call does not (an in-process model). Calls the core cannot guard (positional arguments
    without ``bind``, no model, or ``guard_when`` false) go to ``passthrough`` unchanged, so the
    SDK answers them as it would.
    """

    def prepare(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if args and bind is not None:
            try:
                kwargs = bind(args, kwargs)
                args = ()
            except TypeError:
                return None  # the SDK raises its own error for a call that does not bind
        model = kwargs.get("model", default_model)
        if (
            args
            or not isinstance(model, str)
            or (guard_when is not None and not guard_when(kwargs))
        ):
            return None
        reader = None
        plan = route.stream(kwargs, policy.stream_usage)
        if plan is not None:
            kwargs, reader = plan
        return begin(route, policy, [primary(model), *fallbacks], kwargs, reader)

    if is_async:

        async def guarded_async(*args: Any, **kwargs: Any) -> Any:
            run = prepare(args, kwargs)
            if run is None:
                return await sdk_call(passthrough, *args, **kwargs)
            return await run_async(run)

        return guarded_async

    def guarded(*args: Any, **kwargs: Any) -> Any:
        run = prepare(args, kwargs)
        if run is None:
            return sdk_call(passthrough, *args, **kwargs)
        return run_sync(run)

    return guarded


def binder(method: Callable[..., Any]) -> Binder:
    """Turn a call's positional arguments into keywords, by the SDK method's signature."""
    signature = inspect.signature(method)
    extra = next((p.name for p in signature.parameters.values() if p.kind is p.VAR_KEYWORD), None)
    if any(p.kind is p.VAR_POSITIONAL for p in signature.parameters.values()):
        raise TypeError(f"{method!r} takes *args: its calls cannot be bound to keywords")

    def bind(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        arguments = dict(signature.bind(*args, **kwargs).arguments)
        if extra is not None:
            arguments.update(arguments.pop(extra, {}))  # **kwargs flattened back
        return arguments

    return bind


def same_kind_clients(
    policy: Policy, accepts: Callable[[Any], bool], view: Callable[[Any], V], kind: str
) -> dict[int, V]:
    """The fallback targets' clients (by id) as ``view(client)``; refuses another kind of client.

    ``kind`` names the wrapped client in the error, e.g. ``"Anthropic client"``.
    """
    found: dict[int, V] = {}
    for target in policy.fallback:
        if target.client is None:
            continue
        other = unwrap(target.client)
        if not accepts(other):
            raise TypeError(
                f"fallback Target(model={target.model!r}) has a client of type "
                f"{type(other).__qualname__}; a wrapped {kind} can fall back only to another "
                f"{kind} (or to another model on the same client)"
            )
        if id(other) not in found:
            found[id(other)] = view(other)
    return found


def endpoint_cache(make: Callable[[str], Endpoint]) -> Callable[[str], Endpoint]:
    """Endpoints of the wrapped client, built once per model name."""
    cache: dict[str, Endpoint] = {}

    def get(model: str) -> Endpoint:
        endpoint = cache.get(model)
        if endpoint is None:
            if len(cache) > 256:  # bounded: model names come from callers
                cache.clear()
            endpoint = cache[model] = make(model)
        return endpoint

    return get


def wrap(
    client: C,
    *,
    policy: Policy | str | None = None,
    retry: Retry | None = ...,  # type: ignore[assignment]
    fallback: list[str | Target] | str | Target | None = ...,  # type: ignore[assignment]
    timeout: float | None = ...,  # type: ignore[assignment]
    breaker: Breaker | None = ...,  # type: ignore[assignment]
    fallback_on: Any = ...,
    budget: Budget | None = ...,  # type: ignore[assignment]
    tag: str | None = ...,  # type: ignore[assignment]
    stream_usage: bool = ...,  # type: ignore[assignment]
    raise_on_truncation: bool = ...,  # type: ignore[assignment]
    checks: Any = ...,
    output: Any = ...,
    reasks: int | None = ...,  # type: ignore[assignment]
    capture: str | bool | None = ...,  # type: ignore[assignment]
    provider: str | None = None,
) -> C:
    """Return ``client`` guarded: same type, same API, same results, with policies and telemetry.

    ``retry`` defaults to ``Retry()``; pass ``retry=None`` for a single attempt. The client's own
    retries are switched off for guarded calls (on a copy: the original client is not changed).
    ``provider`` overrides the ``gen_ai.provider.name`` aiguard detects from the base URL.
    ``budget`` refuses calls whose worst-case cost does not fit in it; ``tag`` attributes the
    spend (a feature or tenant name). Streams get usage even when the request did not ask for
    it (``stream_usage=False`` turns that off for servers that reject ``stream_options``); a
    stream cut without a finish reason is recorded as an error, and raises
    :class:`aiguard.StreamTruncated` with ``raise_on_truncation=True``. ``checks`` (see
    :mod:`aiguard.checks`) run on the request before anything is sent or reserved. ``output``
    (a pydantic model or a validating callable) validates each answer's text; a wrong answer is
    re-asked with the errors, up to ``reasks`` times (default: the retry attempts less one).
    ``capture`` sets content capture for this client's calls (a mode such as ``"SPAN_ONLY"``),
    over the process's setting.
    ``policy`` is an :class:`aiguard.Policy` or the name of one in the policy file
    (``policy="default"`` reads ``[policies.default]`` of ``aiguard.toml``); keywords override it.

    Example::

        client = aiguard.wrap(OpenAI(), retry=aiguard.Retry(attempts=4), fallback=["gpt-4o-mini"])
        reply = client.chat.completions.create(model="gpt-4o", messages=[...])
    """
    merged = Policy.build(
        resolve(policy),
        retry=retry,
        fallback=fallback,
        timeout=timeout,
        breaker=breaker,
        fallback_on=fallback_on,
        budget=budget,
        tag=tag,
        stream_usage=stream_usage,
        raise_on_truncation=raise_on_truncation,
        checks=checks,
        output=output,
        reasks=reasks,
        capture=capture,
    )
    if provider is not None and (not isinstance(provider, str) or not provider.strip()):
        raise TypeError(f"provider= must be a non-empty string, got {provider!r}")
    target = unwrap(client)
    adapter = adapters.for_client(target)
    if adapter is not None:
        wrapped: C = adapter.wrap(target, merged, provider)
        return wrapped
    raise TypeError(
        f"aiguard.wrap() cannot wrap {type(client).__module__}.{type(client).__qualname__}. "
        f"Supported clients: {adapters.supported()}. To guard any other function, decorate it "
        "with @aiguard.guard()."
    )
