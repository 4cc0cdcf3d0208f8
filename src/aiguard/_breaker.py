"""Circuit breaker: skip a target that keeps failing until it has had time to recover."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiguard import _store

State = Literal["closed", "open", "half_open"]
_TRANSITIONS: dict[int, State | None] = {0: None, 1: "open", 2: "half_open", 3: "closed"}
# A shared half-open probe holds the circuit this long at least (a probe's process may die).
PROBE_SECONDS = 30.0


@dataclass(slots=True)
class _Circuit:
    failures: int = 0
    opened_at: float = 0.0
    state: State = "closed"
    probing: bool = False


@dataclass(frozen=True, eq=False)
class Breaker:
    """Open a target's circuit after ``failures`` consecutive transient failures.

    While open, the target is skipped without a request (the next fallback is used, or
    :class:`aiguard.CircuitOpen` is raised). After ``reset_after`` seconds one probe is let through
    (half-open); its success closes the circuit, its failure opens it again. Each target
    (client and model) has its own circuit; state is shared by threads and asyncio tasks, and by
    copies of a policy; a pickled breaker arrives with every circuit closed.

    With ``store=`` (or a default store, see ``aiguard.configure``) breakers of the same
    ``name`` in every process share their circuits, keyed by the target's host, port and
    model: one process opening a circuit makes every process skip that target, and one probe
    goes out fleet-wide when it half-opens. If the store fails, ``fail="open"`` uses this
    process's own circuits, ``"closed"`` refuses calls with :class:`aiguard.StoreUnavailable`.

    Example::

        client = aiguard.wrap(OpenAI(), breaker=aiguard.Breaker(failures=5, reset_after=30))
        shared = aiguard.Breaker(failures=5, name="openai", store="redis://cache:6379")
    """

    failures: int = 5
    reset_after: float = 30.0
    name: str | None = None
    store: object = field(default=None, repr=False)
    fail: _store.Fail = "open"
    _circuits: dict[Hashable, _Circuit] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    # Shared circuits last seen closed and clean (their success needs no round trip).
    _clean: set[str] = field(default_factory=set, init=False, repr=False)
    _shared: _store.Shared = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.failures, bool) or not isinstance(self.failures, int):
            raise TypeError("Breaker(failures=...) must be an int")
        if self.failures < 1:
            raise ValueError(f"Breaker(failures={self.failures}) must be at least 1")
        if isinstance(self.reset_after, bool) or not isinstance(self.reset_after, int | float):
            raise TypeError("Breaker(reset_after=...) must be a number of seconds")
        if not math.isfinite(self.reset_after) or not 0 <= self.reset_after <= 1e9:
            raise ValueError(
                f"Breaker(reset_after={self.reset_after}) must be a finite number of seconds "
                "from 0 to 1e9"
            )
        if self.name is not None:
            _store.check_name(self.name, "Breaker")
        elif self.store is not None:
            raise TypeError("Breaker(store=...) needs name=...: breakers share circuits by name")
        object.__setattr__(self, "_shared", _store.Shared(self.store, self.fail, "Breaker"))

    # Circuit state is shared, like a budget: copies of a policy (copy, deepcopy) keep the same
    # breaker. A pickled breaker arrives with the same settings and every circuit closed (its
    # keys name objects of this process; its lock cannot travel).
    def __copy__(self) -> Breaker:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Breaker:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        store = self.store if isinstance(self.store, str) else None
        return (Breaker, (self.failures, self.reset_after, self.name, store, self.fail))

    def _fleet(self) -> _store.Store | None:
        return self._shared.store(self.name is not None)

    def _refuse(self, store: _store.Store) -> Exception:
        return self._shared.refuse(f"breaker {self.name!r}", store)

    def _probe(self) -> tuple[int, int]:
        return int(self.reset_after * 1000), int(max(self.reset_after, PROBE_SECONDS) * 1000)

    def plan(self, fleet_key: str) -> tuple[Any, ...] | None:
        """The store operation :meth:`acquire` will make, to send ahead (None: none)."""
        store = self._fleet()
        if store is None or store.down or self.name is None:
            return None
        return (store, *store.plan_acquire(self.name, fleet_key, *self._probe()))  # type: ignore[attr-defined]

    def acquire(
        self, key: Hashable, fleet_key: str | None = None
    ) -> tuple[bool, float, State | None]:
        """May a request go to ``key`` now? Returns (allowed, seconds until a probe, transition).

        ``fleet_key`` names the target the same way in every process (for shared circuits).
        """
        store = self._fleet()
        if store is not None and self.name is not None:
            target = fleet_key or str(key)
            try:
                allowed, wait_ms, transition, failures = store.acquire(  # type: ignore[attr-defined]
                    self.name, target, *self._probe()
                )
            except _store.StoreDown:
                if self.fail == "closed":
                    raise self._refuse(store) from None
            else:
                if allowed and not failures and transition == 0:
                    self._clean.add(target)
                else:
                    self._clean.discard(target)
                return bool(allowed), wait_ms / 1000, _TRANSITIONS[transition]
        return self._acquire(key)

    def state(self, key: Hashable) -> State:
        """The circuit state of one target key, as last decided."""
        with self._lock:
            circuit = self._circuits.get(key)
            return circuit.state if circuit else "closed"

    def _acquire(self, key: Hashable) -> tuple[bool, float, State | None]:
        with self._lock:
            circuit = self._circuits.get(key)
            if circuit is None or circuit.state == "closed":
                return True, 0.0, None
            now = time.monotonic()
            left = circuit.opened_at + self.reset_after - now
            if circuit.state == "open" and left <= 0:
                circuit.state = "half_open"
                circuit.probing = True
                return True, 0.0, "half_open"
            if circuit.state == "half_open" and not circuit.probing:
                circuit.probing = True
                return True, 0.0, None
            return False, max(left, 0.0), None

    def record(self, key: Hashable, ok: bool, fleet_key: str | None = None) -> State | None:
        """Record a request's result; returns the new state if it changed."""
        store = self._fleet()
        if store is not None and self.name is not None:
            target = fleet_key or str(key)
            if ok and target in self._clean:
                return None  # closed and clean when the request went out: nothing to tell
            self._clean.discard(target)
            try:
                changed = store.record(self.name, target, ok, self.failures)  # type: ignore[attr-defined]
                return _TRANSITIONS[changed]
            except _store.StoreDown:
                pass  # this process's own circuit counts it
        return self._record(key, ok)

    def _record(self, key: Hashable, ok: bool) -> State | None:
        with self._lock:
            circuit = self._circuits.get(key)
            if ok:
                if circuit is None or (circuit.state == "closed" and circuit.failures == 0):
                    return None
                was = circuit.state
                circuit.failures, circuit.state, circuit.probing = 0, "closed", False
                return "closed" if was != "closed" else None
            if circuit is None:
                circuit = self._circuits[key] = _Circuit()
            circuit.failures += 1
            circuit.probing = False
            if circuit.state == "half_open" or (
                circuit.state == "closed" and circuit.failures >= self.failures
            ):
                circuit.state, circuit.opened_at = "open", time.monotonic()
                return "open"
            return None

    def release(self, key: Hashable, fleet_key: str | None = None) -> None:
        """A probe ended without a verdict (e.g. a non-transient error): allow another probe."""
        store = self._fleet()
        if (
            store is not None
            and self.name is not None
            and (fleet_key or str(key)) not in self._clean
        ):
            try:
                store.release(self.name, fleet_key or str(key))  # type: ignore[attr-defined]
                return
            except _store.StoreDown:
                pass
        with self._lock:
            circuit = self._circuits.get(key)
            if circuit is not None:
                circuit.probing = False
