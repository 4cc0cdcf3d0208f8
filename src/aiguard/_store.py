"""Where budgets, breakers and rate limits keep their state: in the process, or shared in Redis.

Every :class:`aiguard.Budget`, :class:`aiguard.Breaker` and :class:`aiguard.RateLimit` keeps
its state in the process by default (the *in-process store*: its own fields, under a lock).
Given ``store=`` (a ``redis://`` URL, a ``redis.Redis`` or a ``redis.asyncio.Redis``), or a
default set with ``aiguard.configure(store=...)``, ``AIGUARD_STORE`` or the policy file's
``[store]`` table, objects with the same ``name`` in every process share their state there
(:mod:`aiguard._redis`, imported only then).

A store that fails never fails the call with its own exception: each operation waits at most
:data:`TIMEOUT` seconds; a failure is logged once, counted, and the store is left alone for
:data:`RETRY_AFTER` seconds (no call waits on a dead store meanwhile), then tried again. What the
object does meanwhile is its ``fail=``: ``"open"`` serves on its process-local state,
``"closed"`` refuses the call with :class:`aiguard.StoreUnavailable`.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Literal, TypeVar

from aiguard._errors import StoreUnavailable

log = logging.getLogger("aiguard")

# The longest one store operation may take (connect, send, answer), in seconds.
TIMEOUT = 0.25
# After a failure, the store is skipped for this long before it is tried again.
RETRY_AFTER = 1.0

Fail = Literal["open", "closed"]
T = TypeVar("T")
Op = tuple[str, list[str], list[Any]]  # a store operation: (script, keys, arguments)

# Told of every store operation: (operation, seconds, error type or None). Set by the telemetry
# layer (a higher one), so the store reports its latency and errors as metrics.
observer: Callable[[str, float, str | None], None] | None = None


# Ids of reservations and counted requests: unique across processes (a random prefix, drawn
# again in a forked child) and cheap (a counter; os.urandom per call costs tens of µs).
_ids = itertools.count()
_prefix = [os.urandom(8).hex()]


def _reseed() -> None:
    _prefix[0] = os.urandom(8).hex()


os.register_at_fork(after_in_child=_reseed)


def new_id() -> str:
    """An id no other reservation or request of the fleet has."""
    return f"{_prefix[0]}{next(_ids):x}"


class StoreDown(Exception):
    """The store could not answer (internal: never reaches the user's call)."""


class Store:
    """A shared store. :mod:`aiguard._redis` has the one real implementation.

    :meth:`run` calls a store operation within the bounds above; the operations themselves
    (budget, breaker and rate-limit scripts) are the implementation's.
    """

    label = "store"  # what logs and errors call it (an address, never a password)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._down = False

    @property
    def down(self) -> bool:
        """Did the store fail less than :data:`RETRY_AFTER` seconds ago?"""
        return self._down and time.monotonic() < self._down_until

    def flush(self) -> None:
        """Send what waits to be written off the call path (settles, corrections)."""

    def run(self, operation: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` against the store; raises :class:`StoreDown` if it failed (or failed
        less than :data:`RETRY_AFTER` seconds ago)."""
        if self._down and time.monotonic() < self._down_until:
            raise StoreDown(self.label)
        started = time.perf_counter()
        try:
            result = fn(*args)
        except Exception as exc:  # any redis error, OSError, a timeout, out of memory...
            self._failed(operation, exc, time.perf_counter() - started)
            raise StoreDown(self.label) from None
        self._observe(operation, time.perf_counter() - started, None)
        if self._down:
            self._back()
        return result

    def _failed(self, operation: str, exc: Exception, seconds: float) -> None:
        with self._lock:
            first = not self._down
            self._down = True
            self._down_until = time.monotonic() + RETRY_AFTER
        if first:
            log.warning(
                "aiguard: the store %s failed (%s: %s); budgets, breakers and rate limits on it "
                "follow their fail= (open: process-local state; closed: refuse) until it answers "
                "again",
                self.label,
                type(exc).__name__,
                exc,
            )
        self._observe(operation, seconds, type(exc).__name__)

    def _back(self) -> None:
        with self._lock:
            was, self._down = self._down, False
        if was:
            log.warning("aiguard: the store %s answers again: shared state resumes", self.label)
            self.recovered()

    def recovered(self) -> None:
        """The store answers again after a failure (flush what waited for it)."""

    @staticmethod
    def _observe(operation: str, seconds: float, error: str | None) -> None:
        if observer is not None:
            with contextlib.suppress(Exception):  # telemetry never hurts the app
                observer(operation, seconds, error)

    def check(self) -> str:
        """One round trip; a line for ``aiguard doctor`` (raises StoreDown when down)."""
        raise NotImplementedError


class Shared:
    """What a budget, breaker or rate limit holds about its store: which one, and ``fail=``.

    The store is resolved at use time, so a default set by ``aiguard.configure(store=...)``
    after the object was made still applies to it.
    """

    __slots__ = ("fail", "given", "what")

    def __init__(self, given: object, fail: object, what: str) -> None:
        if fail not in ("open", "closed"):
            raise ValueError(f"{what}(fail=...) must be 'open' or 'closed', got {fail!r}")
        if given is not None:
            resolve(given, f"{what}(store=...)")  # refuse a bad store at construction
        self.given = given
        self.fail: Fail = fail
        self.what = what

    def store(self, named: bool) -> Store | None:
        """The store in use: the given one, else the default for named objects, else None."""
        if self.given is not None:
            return resolve(self.given, f"{self.what}(store=...)")
        return default() if named else None

    def refuse(self, label: str, store: Store) -> StoreUnavailable:
        return StoreUnavailable(label, store.label)

    def __getstate__(self) -> dict[str, Any]:
        # A client object cannot travel to another process (a URL can): the copy then uses
        # the default store.
        given = self.given if isinstance(self.given, str) else None
        return {"fail": self.fail, "given": given, "what": self.what}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


_stores: dict[Any, Store] = {}
_stores_lock = threading.Lock()
_default: list[object] = []  # [store] once configured; empty: AIGUARD_STORE, read on first use


def resolve(given: object, what: str = "store=") -> Store | None:
    """The store for ``given``: None or ``"memory"`` (in-process), a ``redis://`` /
    ``rediss://`` / ``unix://`` URL, a ``redis.Redis`` or ``redis.asyncio.Redis``, or a Store.
    One store per URL or client, shared by every object that names it."""
    if given is None or (isinstance(given, str) and given.strip().lower() in ("", "memory")):
        return None
    if isinstance(given, Store):
        return given
    key: Any = given.strip() if isinstance(given, str) else id(given)
    store = _stores.get(key)
    if store is not None:
        return store
    if isinstance(given, str):
        if not given.strip().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                f"{what} must be a redis://, rediss:// or unix:// URL, 'memory', a redis.Redis "
                f"or a redis.asyncio.Redis; got {given!r}"
            )
    elif not type(given).__module__.startswith("redis"):
        raise TypeError(
            f"{what} must be a redis:// URL, a redis.Redis or a redis.asyncio.Redis, got "
            f"{type(given).__name__}"
        )
    try:
        from aiguard import _redis
    except ImportError:
        raise ImportError(
            "a Redis store needs the redis package (aiguard's redis extra): pip install redis"
        ) from None
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = _redis.RedisStore.make(given, what)
            if not isinstance(given, str):
                store.keepalive = given  # keeps the client, so its id stays unique
    return store


_explicit: list[bool] = []  # configure(store=...) was called: it wins over the others


def configure(store: object) -> None:
    """Set the default store of every named budget, breaker and rate limit (None: in-process)."""
    resolve(store, "configure(store=...)")
    _default[:] = [store]
    _explicit[:] = [True]


def file_default(url: str) -> None:
    """The policy file's ``[store]``: the default unless ``configure(store=...)`` or
    ``AIGUARD_STORE`` set one (they win)."""
    resolve(url, "[store] url")
    if not _explicit and not os.environ.get("AIGUARD_STORE"):
        _default[:] = [url]


def default() -> Store | None:
    """The default store: ``configure(store=...)``'s, else ``AIGUARD_STORE``'s, else None."""
    if not _default:
        _default[:] = [os.environ.get("AIGUARD_STORE") or None]
    given = _default[0]
    try:
        return resolve(given, "AIGUARD_STORE")
    except (TypeError, ValueError, ImportError) as exc:
        log.warning("aiguard: ignoring the default store: %s", exc)
        _default[:] = [None]
        return None


def check_name(name: object, what: str) -> str:
    """A shared object's name: its keys carry it inside a Redis Cluster hash tag."""
    if not isinstance(name, str) or not name.strip():
        raise TypeError(f"{what}(name=...) must be a non-empty string, got {name!r}")
    if "{" in name or "}" in name:
        raise ValueError(f"{what}(name={name!r}) may not contain '{{' or '}}' (Redis hash tags)")
    return name


def doctor() -> tuple[str, bool]:
    """``aiguard doctor``'s line about the default store, and whether it is usable."""
    store = default()
    if store is None:
        return "in-process (set AIGUARD_STORE, configure(store=...) or [store] to share)", True
    try:
        started = time.perf_counter()
        found = store.check()
        return f"{found}, answering in {1000 * (time.perf_counter() - started):.1f} ms", True
    except StoreDown:
        return f"{store.label}: NOT reachable", False


# -- ahead of a call ------------------------------------------------------------------------------
#
# A guarded call asks its target's circuit, rate limit and budgets before it sends: on a shared
# store, :func:`prefetch` sends those operations in one pipeline (one round trip), and each
# object's own operation then takes its answer from here (:func:`taken`) instead of asking
# again. What was made ahead and not used (the circuit was open, the budget refused) is taken
# back by :func:`discard`. Per context: threads and asyncio tasks never see each other's.

Plan = tuple[Any, str, list[str], list[Any]]  # (store, script, keys, arguments)
_ahead: ContextVar[dict[tuple[str, tuple[str, ...]], tuple[Any, list[Any], Any]] | None] = (
    ContextVar("aiguard_store_ahead", default=None)
)


def prefetch(plans: list[Plan]) -> None:
    """Run the plans' operations now, pipelined per store; a store that fails gives none."""
    discard()
    ahead: dict[tuple[str, tuple[str, ...]], tuple[Any, list[Any], Any]] = {}
    groups: dict[int, list[Plan]] = {}
    for plan in plans:
        groups.setdefault(id(plan[0]), []).append(plan)
    for group in groups.values():
        store = group[0][0]
        ops = [(script, keys, args) for _, script, keys, args in group]
        try:
            answers = store.run("admit", store.carried, ops)
        except StoreDown:
            store.abandon(ops)
            continue
        for (script, keys, args), answer in zip(ops, answers, strict=True):
            ahead[(script, tuple(keys))] = (store, args, answer)
    _ahead.set(ahead or None)


def taken(script: str, keys: list[str]) -> tuple[list[Any], Any] | None:
    """The (arguments, answer) of this operation made ahead in this context, once."""
    ahead = _ahead.get()
    if not ahead:
        return None
    hit = ahead.pop((script, tuple(keys)), None)
    return None if hit is None else (hit[1], hit[2])


def discard() -> None:
    """Take back what was made ahead in this context and not used."""
    ahead = _ahead.get()
    if not ahead:
        return
    _ahead.set(None)
    for (script, keys), (store, args, answer) in ahead.items():
        with contextlib.suppress(Exception):  # never into the user's call
            store.undo(script, list(keys), args, answer)
