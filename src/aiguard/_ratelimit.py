"""Rate limits: requests and tokens per minute per target, in the process or fleet-wide.

A :class:`RateLimit` counts, per target (host, port and model), the requests sent and the
tokens they may use over the last 60 seconds (a sliding window: no minute ever holds more than
the limit, whatever its start). A request's tokens are reserved from its estimate (prompt plus
``max_tokens``, the way providers count them) and corrected with the real usage afterwards. The
provider's own rate-limit headers tighten it until their reset, so a fleet stops before the
provider starts answering 429.
"""

from __future__ import annotations

import contextlib
import math
import re
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aiguard import _store

WINDOW = 60.0

# What the providers' headers say: (remaining, reset) per kind, OpenAI's then Anthropic's.
_HEADERS = {
    "requests": (
        ("x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"),
        ("anthropic-ratelimit-requests-remaining", "anthropic-ratelimit-requests-reset"),
    ),
    "tokens": (
        ("x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"),
        ("anthropic-ratelimit-tokens-remaining", "anthropic-ratelimit-tokens-reset"),
    ),
}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def reset_seconds(value: str, now: float | None = None) -> float | None:
    """A reset header in seconds from now: OpenAI's ``6m0s`` / ``20ms`` / ``1.5``, or
    Anthropic's RFC 3339 time. None when unreadable."""
    text = value.strip()
    try:
        return max(float(text), 0.0)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if parts and "".join(n + u for n, u in parts) == text:
        scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
        return sum(float(n) * scale[u] for n, u in parts)
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    return max(at - (now if now is not None else time.time()), 0.0)


def read_headers(headers: Mapping[str, str]) -> dict[str, tuple[int, float]]:
    """``{"requests"|"tokens": (remaining, seconds until reset)}`` from response headers."""
    out: dict[str, tuple[int, float]] = {}
    for kind, names in _HEADERS.items():
        for remaining_name, reset_name in names:
            remaining, reset = headers.get(remaining_name), headers.get(reset_name)
            if remaining is None or reset is None:
                continue
            seconds = reset_seconds(reset)
            if seconds is not None and remaining.strip().isdigit():
                out[kind] = (int(remaining), min(seconds, WINDOW))
                break
    return out


class _Window:
    """One target's last minute, in this process (the in-process store, and the fallback)."""

    __slots__ = ("entries", "learned", "total")

    def __init__(self) -> None:
        self.entries: dict[str, list[Any]] = {}  # id -> [sent at, tokens], oldest first
        self.total = 0
        self.learned: dict[str, list[float]] = {}  # kind -> [remaining, until]

    def acquire(self, rpm: int, tpm: int, tokens: int, entry: str, now: float) -> float:
        """Seconds until room (0: the request was counted)."""
        entries = self.entries
        while entries:
            first = next(iter(entries))
            if entries[first][0] > now - WINDOW:
                break
            self.total -= entries.pop(first)[1]
        wait = 0.0
        if rpm and len(entries) + 1 > rpm:
            wait = list(entries.values())[len(entries) - rpm][0] + WINDOW - now
        need = self.total + min(tokens, tpm) - tpm if tpm else 0
        if need > 0:
            freed = 0
            for sent, used in entries.values():
                freed += used
                if freed >= need:
                    wait = max(wait, sent + WINDOW - now)
                    break
        for kind, cost in (("requests", 1), ("tokens", tokens)):
            remaining, until = self.learned.get(kind, (0.0, 0.0))
            if until > now and remaining < cost:
                wait = max(wait, until - now)
        if wait > 0:
            return wait
        entries[entry] = [now, tokens]
        self.total += tokens
        for kind, cost in (("requests", 1), ("tokens", tokens)):
            if kind in self.learned:
                self.learned[kind][0] -= cost
        return 0.0

    def correct(self, entry: str, tokens: int) -> None:
        held = self.entries.get(entry)
        if held is not None:
            delta = tokens - held[1]
            held[1] = tokens
            self.total += delta
            if "tokens" in self.learned:
                self.learned["tokens"][0] -= delta

    def learn(self, said: dict[str, tuple[int, float]], now: float) -> None:
        for kind, (remaining, seconds) in said.items():
            self.learned[kind] = [float(remaining), now + seconds]


class Ticket:
    """A request counted on a rate limit, to correct with its real tokens."""

    __slots__ = ("id", "store", "target", "tokens")

    def __init__(self, target: str, entry: str, tokens: int, store: Any) -> None:
        self.target = target
        self.id = entry
        self.tokens = tokens
        self.store = store


def _per_minute(what: str, value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"RateLimit({what}=...) must be a whole number per minute, got {value!r}")
    if value < 1:
        raise ValueError(f"RateLimit({what}={value}) must be at least 1")
    return value


class RateLimit:
    """Requests (``rpm``) and tokens (``tpm``) per minute, per target, never exceeded.

    Apply it with ``rate_limit=`` on ``wrap``, ``guard`` or a ``Policy``. Before each attempt
    the request and its estimated tokens are counted on its target; when there is no room the
    call waits for it if its deadline allows (at most ``max_wait`` seconds), otherwise falls
    back to the next target (no request sent), otherwise raises :class:`aiguard.RateLimited`.

    With ``store=`` (or a default store, see ``aiguard.configure``) limits of the same ``name``
    in every process share their counts: the fleet as a whole stays under the provider's
    limits. If the store fails, ``fail="open"`` counts in this process only, ``"closed"``
    refuses calls with :class:`aiguard.StoreUnavailable`.

    Example::

        tier = aiguard.RateLimit(rpm=500, tpm=30_000, name="openai-tier-1", store=REDIS_URL)
        client = aiguard.wrap(OpenAI(), rate_limit=tier)
    """

    def __init__(
        self,
        rpm: int | None = None,
        tpm: int | None = None,
        *,
        name: str | None = None,
        store: object = None,
        fail: _store.Fail = "open",
        max_wait: float = 60.0,
    ) -> None:
        self.rpm = _per_minute("rpm", rpm)
        self.tpm = _per_minute("tpm", tpm)
        if not (self.rpm or self.tpm):
            raise TypeError("RateLimit() needs rpm=..., tpm=... or both")
        if name is not None:
            _store.check_name(name, "RateLimit")
        elif store is not None:
            raise TypeError("RateLimit(store=...) needs name=...: limits share counts by name")
        self.name = name
        if isinstance(max_wait, bool) or not isinstance(max_wait, int | float):
            raise TypeError(f"RateLimit(max_wait=...) must be a number of seconds: {max_wait!r}")
        if not math.isfinite(max_wait) or max_wait < 0:
            raise ValueError(f"RateLimit(max_wait={max_wait}) must be finite and >= 0")
        self.max_wait = float(max_wait)
        self._shared = _store.Shared(store, fail, "RateLimit")
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()
        self.waits = 0
        self.refusals = 0

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        return f"<aiguard.RateLimit{label} rpm={self.rpm or None} tpm={self.tpm or None}>"

    # Like a budget, a limit is shared state: copies of a policy keep the same one.
    def __copy__(self) -> RateLimit:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> RateLimit:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        store = self._shared.given if isinstance(self._shared.given, str) else None
        kwargs = {"name": self.name, "store": store, "fail": self._shared.fail}
        return (_remake, (self.rpm or None, self.tpm or None, kwargs, self.max_wait))

    def _store(self) -> Any:
        return self._shared.store(self.name is not None)

    def _local(self, target: str) -> _Window:
        window = self._windows.get(target)
        if window is None:
            window = self._windows[target] = _Window()
        return window

    def plan(self, target: str, tokens: int) -> tuple[Any, ...] | None:
        """The store operation :meth:`acquire` will make, to send ahead (None: none)."""
        store = self._store()
        if store is None or store.down:
            return None
        entry = _store.new_id()
        return (store, *store.plan_rate(self.name, target, self.rpm, self.tpm, tokens, entry))

    def acquire(self, target: str, tokens: int) -> tuple[Ticket | None, float]:
        """Count a request of ``tokens`` on ``target``: (its ticket, 0), or (None, seconds
        until room). Raises StoreUnavailable (fail="closed", the store down)."""
        entry = _store.new_id()
        store = self._store()
        if store is not None:
            try:
                wait, entry = store.rate_acquire(
                    self.name, target, self.rpm, self.tpm, tokens, entry
                )
            except _store.StoreDown:
                if self._shared.fail == "closed":
                    raise self._shared.refuse(f"rate limit {self.name!r}", store) from None
            else:
                return (Ticket(target, entry, tokens, store), 0.0) if not wait else (None, wait)
        with self._lock:
            wait = self._local(target).acquire(self.rpm, self.tpm, tokens, entry, time.monotonic())
        return (Ticket(target, entry, tokens, None), 0.0) if not wait else (None, wait)

    def correct(self, ticket: Ticket, tokens: int) -> None:
        """The request really used ``tokens``: count those instead of its estimate."""
        if tokens == ticket.tokens or not self.tpm:
            return
        if ticket.store is not None:
            try:
                ticket.store.rate_correct(self.name, ticket.target, ticket.id, tokens)
                return
            except _store.StoreDown:
                return  # the estimate stays counted: too many, never too few
        with self._lock:
            self._local(ticket.target).correct(ticket.id, tokens)

    def forget(self, ticket: Ticket) -> None:
        """The request was counted but never sent (a budget refused it): uncount it."""
        if ticket.store is not None:
            with contextlib.suppress(_store.StoreDown):
                ticket.store.rate_forget(self.name, ticket.target, ticket.id)
            return
        with self._lock:
            window = self._local(ticket.target)
            held = window.entries.pop(ticket.id, None)
            if held is not None:
                window.total -= held[1]

    def learn(self, target: str, headers: Mapping[str, str]) -> None:
        """Tighten the limit with what the provider's rate-limit headers say."""
        said = read_headers(headers)
        if not said:
            return
        store = self._store()
        if store is not None:
            try:
                store.rate_learn(self.name, target, said)
                return
            except _store.StoreDown:
                pass
        with self._lock:
            self._local(target).learn(said, time.monotonic())


def _remake(rpm: int | None, tpm: int | None, kwargs: dict[str, Any], wait: float) -> RateLimit:
    return RateLimit(rpm, tpm, max_wait=wait, **kwargs)
