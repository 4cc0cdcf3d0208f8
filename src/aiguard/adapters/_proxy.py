"""The guarded view of a client, shared by every adapter: the proxy and the guarded methods.

An adapter describes which methods to guard (a tree of attribute names ending in guards);
:class:`GuardedProxy` serves everything else from the client itself, read at each use (nothing
is copied), and each guarded method runs the engine (:mod:`aiguard._engine.driver`) with the
adapter's route and endpoints.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from types import MethodType
from typing import Any, TypeVar

import wrapt

from aiguard._engine.contract import Endpoint, Route
from aiguard._engine.driver import begin, run_async, run_sync
from aiguard._engine.state import sdk_call
from aiguard._policy import Policy

C = TypeVar("C")
V = TypeVar("V")

# Turns a call's positional and keyword arguments into one dict of keywords.
Binder = Callable[[tuple[Any, ...], dict[str, Any]], dict[str, Any]]


# A guarded method: ``guard(proxy, wrapped, instance, args, kwargs)``, called with the SDK's method
# as found on the client at the time of the call (``wrapped``), so a mock or a patch set on the
# client or its class is what the guard calls.
Guard = Callable[[Any, Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]
# A tree of attribute names: a nested dict is a resource, a callable is a guard, a View is an
# SDK object re-made around the guarded resource.
Tree = dict[str, Any]


@dataclass(frozen=True, slots=True)
class View:
    """An attribute served as ``make(proxy, value)`` instead of its value."""

    make: Callable[[Any, Any], Any]


class _ClientInit:
    def __get__(self, proxy: Any, owner: Any) -> Any:
        if proxy is None:
            return owner._init
        try:
            wrapped = proxy.__wrapped__
        except (ValueError, AttributeError):  # being constructed
            return owner._init.__get__(proxy, owner)
        return wrapped.__init__


class GuardedProxy(wrapt.ObjectProxy):  # type: ignore[type-arg]
    """Looks and behaves like the wrapped object; the methods named in ``tree`` are guarded.

    Nothing is copied or cached from the wrapped object: every attribute is looked up on it when
    it is read, so assigning or patching attributes (on the proxy, the client or its class),
    rotating ``api_key`` or changing ``base_url`` work as they do on the bare client. Setting and
    deleting attributes go to the wrapped object (``wrapt.ObjectProxy`` forwards them).
    """

    def _init(self, wrapped: Any, tree: Tree, policy: Policy, provider: str | None) -> None:
        super().__init__(wrapped)
        self._self_tree = tree
        self._self_policy = policy
        self._self_provider = provider
        # name -> (what it was made from, its instance, the guarded view): remade when the
        # attribute changes.
        self._self_views: dict[str, tuple[Any, Any, Any]] = {}

    # ``client.__init__`` is the client's (editors and signature checks read it); constructing
    # the proxy runs ``_init``, found while the proxy wraps nothing yet.
    __init__ = _ClientInit()

    def __getattr__(self, name: str) -> Any:
        if name == "__wrapped__":  # asked before it is set (see _ClientInit)
            raise AttributeError(name)
        live = getattr(self.__wrapped__, name)
        node = self._self_tree.get(name)
        if node is None:
            return live
        # A bound method is a new object on every read: its function and instance identify it.
        bound = type(live) is MethodType
        key = live.__func__ if bound else live
        owner = live.__self__ if bound else None
        view = self._self_views.get(name)
        if view is not None and view[0] is key and view[1] is owner:
            return view[2]
        if isinstance(node, dict):
            made: Any = GuardedProxy(live, node, self._self_policy, self._self_provider)
        elif isinstance(node, View):
            made = node.make(self, live)
        elif callable(live):
            made = wrapt.FunctionWrapper(live, functools.partial(node, self))
        else:
            return live  # not a method any more: nothing to guard
        self._self_views[name] = (key, owner, made)
        return made

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


# The endpoints of one call: given the SDK method to call and the requested model.
Endpoints = Callable[[Callable[..., Any], str], list[Endpoint]]


def guarded_method(
    route: Route,
    policy: Policy,
    endpoints: Endpoints,
    is_async: bool,
    guard_when: Callable[[dict[str, Any]], bool] | None = None,
    default_model: str | None = None,
    bind: Binder | None = None,
) -> Guard:
    """Build the guard of one provider method.

    ``endpoints(method, model)`` gives the targets of one call: the primary (which calls
    ``method``, the SDK's method as found at call time) and its fallbacks. ``bind`` turns
    positional arguments into keywords (for SDKs whose methods are called positionally);
    ``default_model`` names the model when the call does not (an in-process model). Calls the
    core cannot guard (positional arguments without ``bind``, no model, or ``guard_when``
    false) go to the SDK's method unchanged, so the SDK answers them as it would.
    """

    def prepare(method: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
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
        return begin(route, policy, endpoints(method, model), kwargs, reader)

    if is_async:

        async def guarded_async(
            proxy: Any,
            method: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            run = prepare(method, args, kwargs)
            if run is None:
                return await sdk_call(method, *args, **kwargs)
            return await run_async(run)

        return guarded_async

    def guarded(
        proxy: Any,
        method: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        run = prepare(method, args, kwargs)
        if run is None:
            return sdk_call(method, *args, **kwargs)
        return run_sync(run)

    return guarded


def rebound(
    proxy: Any, method: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: Any
) -> Any:
    """A guard for an SDK helper built on its resource's guarded methods (``stream()``).

    The SDK's own helper runs with the guarded resource as ``self``, so the requests it makes
    through ``self.create(...)`` are guarded and the helper returns what it always does. A
    helper replaced by a mock is called as it is.
    """
    function = getattr(method, "__func__", None)
    if function is None or getattr(method, "__self__", None) is not proxy.__wrapped__:
        return method(*args, **kwargs)
    return function(proxy, *args, **kwargs)


def _remade(proxy: Any, value: Any) -> Any:
    try:
        return type(value)(proxy)
    except Exception:  # an SDK that builds its views differently: unguarded, as it was
        return value


# ``with_raw_response`` and ``with_streaming_response``: the SDK's own view of the resource,
# built around the guarded resource, so the methods it wraps are the guarded ones.
SDK_VIEW = View(_remade)


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


@dataclass(frozen=True, slots=True)
class Patch:
    """One row of an adapter's ``PATCHES``: SDK methods zero-code instrumentation guards.

    ``find`` returns the class whose ``methods`` are patched (called by ``aiguard.instrument()``,
    never at import); ``path`` is where those methods sit on a guarded client
    (``("chat", "completions")``); ``client_attr`` is the attribute of the method's instance
    that holds the client ("" when the instance is the client).
    """

    find: Callable[[], type]
    methods: tuple[str, ...]
    path: tuple[str, ...] = ()
    client_attr: str = ""


def resource_class(client_cls: type, path: tuple[str, ...]) -> Callable[[], type]:
    """The class of a client's resource (``client.chat.completions``), found on a throwaway
    client when first asked for."""

    def find() -> type:
        obj: Any = client_cls(api_key="aiguard-instrument", base_url="http://x")
        for name in path:
            obj = getattr(obj, name)
        return type(obj)

    return find


def the_class(cls: type) -> Callable[[], type]:
    """A ``Patch.find`` for methods defined on the client class itself."""
    return lambda: cls
