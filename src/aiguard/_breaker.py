"""Circuit breaker: skip a target that keeps failing until it has had time to recover."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Literal

State = Literal["closed", "open", "half_open"]


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

    Example::

        client = aiguard.wrap(OpenAI(), breaker=aiguard.Breaker(failures=5, reset_after=30))
    """

    failures: int = 5
    reset_after: float = 30.0
    _circuits: dict[Hashable, _Circuit] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

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

    # Circuit state is shared, like a budget: copies of a policy (copy, deepcopy) keep the same
    # breaker. A pickled breaker arrives with the same settings and every circuit closed (its
    # keys name objects of this process; its lock cannot travel).
    def __copy__(self) -> Breaker:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Breaker:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (Breaker, (self.failures, self.reset_after))

    def state(self, key: Hashable) -> State:
        """The circuit state of one target key, as last decided."""
        with self._lock:
            circuit = self._circuits.get(key)
            return circuit.state if circuit else "closed"

    def acquire(self, key: Hashable) -> tuple[bool, float, State | None]:
        """May a request go to ``key`` now? Returns (allowed, seconds until a probe, transition)."""
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

    def record(self, key: Hashable, ok: bool) -> State | None:
        """Record a request's result; returns the new state if it changed."""
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

    def release(self, key: Hashable) -> None:
        """A probe ended without a verdict (e.g. a non-transient error): allow another probe."""
        with self._lock:
            circuit = self._circuits.get(key)
            if circuit is not None:
                circuit.probing = False
