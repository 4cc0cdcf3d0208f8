"""The routing decisions of one guarded call: plain state that never sleeps.

Where the next attempt goes (the target, or the next one when a circuit is open), whether a
failure is retried and after how long (backoff, Retry-After, the deadline), when to fall back
and when to give up, and how many re-asks an invalid answer gets. The drivers act on what it
decides; it tells the call record (events) and the metrics (retries, fallbacks, breaker).
"""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass, field

from aiguard import _semconv as sc
from aiguard._engine.contract import Endpoint
from aiguard._engine.record import CallRecord
from aiguard._engine.state import RETRIED, testing
from aiguard._errors import CircuitOpen, DeadlineExceeded, RateLimited
from aiguard._policy import Failure, Policy, Retry
from aiguard._telemetry import Attrs, Telemetry, error_type


@dataclass(slots=True)
class Failed:
    """One failed attempt, for the notes on the error the caller finally gets."""

    model: str
    error: BaseException
    failure: Failure
    wait: float | None = None


class WaitForRoom(Exception):
    """A rate limit will have room in ``seconds``: sleep, then ask for the target again."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


@dataclass(slots=True)
class Routing:
    """Targets, attempts, retries and fallbacks of one guarded call."""

    endpoints: list[Endpoint]
    policy: Policy
    deadline: float | None  # on time.monotonic()
    telemetry: Telemetry
    record: CallRecord
    index: int = 0  # the target in use
    attempts: int = 0
    on_target: int = 0  # attempts on the target in use
    retries: int = 0
    reasks: int = 0
    history: list[Failed] = field(default_factory=list)
    skipped: list[tuple[str, float]] = field(default_factory=list)
    limited: list[tuple[str, float]] = field(default_factory=list)  # no room: (model, wait)
    waited: float = 0.0  # seconds waited for rate limits

    def next_endpoint(self) -> tuple[Endpoint, float | None]:
        """The target of the next attempt and the seconds left; raises when none is left."""
        breaker = self.policy.breaker
        while self.index < len(self.endpoints):
            endpoint = self.endpoints[self.index]
            if breaker is None:
                break
            allowed, wait, transition = breaker.acquire(endpoint.breaker_key, endpoint.fleet_key)
            if transition is not None:
                self.breaker_changed(endpoint, transition)
            if allowed:
                break
            self.skipped.append((endpoint.model, wait))
            self.record.event("aiguard.breaker.skipped", {sc.FALLBACK_MODEL: endpoint.model})
            self.move_on(Failure.OUTAGE, counted=self.index + 1 < len(self.endpoints))
        else:
            if self.history:
                raise self.give_up(self.history[-1].error)
            raise CircuitOpen(self.skipped)
        remaining = None
        if self.deadline is not None:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise self.deadline_passed()
        return self.endpoints[self.index], remaining

    def rate_limited(
        self, endpoint: Endpoint, wait: float, remaining: float | None, max_wait: float
    ) -> None:
        """A rate limit has no room on the target for ``wait`` seconds: wait for it if the
        deadline allows (raises :class:`WaitForRoom`), else fall back like an open circuit,
        else raise :class:`RateLimited`. Nothing is sent meanwhile."""
        breaker = self.policy.breaker
        if breaker is not None:  # a probe it granted is not used
            breaker.release(endpoint.breaker_key, endpoint.fleet_key)
        attrs: Attrs = {sc.WAIT_KIND: "rate_limit", sc.REQUEST_MODEL: endpoint.model}
        if wait <= max_wait and (remaining is None or wait < remaining):
            self.waited += wait
            self.telemetry.record(self.telemetry.waits, wait, attrs)
            self.record.event(
                "aiguard.rate_limit.wait",
                {sc.REQUEST_MODEL: endpoint.model, sc.RATE_LIMIT_WAIT: wait},
            )
            raise WaitForRoom(wait)
        self.limited.append((endpoint.model, wait))
        self.record.event("aiguard.rate_limit.skipped", {sc.FALLBACK_MODEL: endpoint.model})
        if self.index + 1 < len(self.endpoints):
            self.move_on(Failure.RATE_LIMIT)
            return
        self.telemetry.count(
            self.telemetry.refusals,
            {sc.REQUEST_MODEL: endpoint.model, sc.REFUSAL_KIND: "rate_limit"},
        )
        raise RateLimited(self.limited)

    def attempt_started(self) -> None:
        self.attempts += 1
        self.on_target += 1

    def move_on(self, reason: Failure, counted: bool = True) -> None:
        """Fall back to the next target."""
        self.index += 1
        self.on_target = 0
        if counted and self.index < len(self.endpoints):
            nxt = self.endpoints[self.index]
            self.telemetry.count(
                self.telemetry.fallbacks,
                {sc.FALLBACK_REASON: reason.value, sc.FALLBACK_MODEL: nxt.model},
            )
            self.record.event(
                "aiguard.fallback", {sc.FALLBACK_MODEL: nxt.model, sc.FALLBACK_REASON: reason.value}
            )

    def breaker_record(self, endpoint: Endpoint, ok: bool) -> None:
        """Tell the target's circuit how an attempt went."""
        if self.policy.breaker is not None:
            state = self.policy.breaker.record(endpoint.breaker_key, ok, endpoint.fleet_key)
            if state is not None:
                self.breaker_changed(endpoint, state)

    def breaker_changed(self, endpoint: Endpoint, state: str) -> None:
        attrs: Attrs = {sc.BREAKER_STATE: state, sc.REQUEST_MODEL: endpoint.model}
        self.telemetry.count(self.telemetry.breaker, attrs)
        self.record.event("aiguard.breaker", attrs)

    def after_failure(
        self,
        endpoint: Endpoint,
        error: BaseException,
        failure: Failure,
        retry_after: float | None,
    ) -> float:
        """Decide after a failed attempt: the seconds to wait before the next one (0: fall back
        at once). Raises ``error`` (or an aiguard refusal) when the call should give up."""
        if isinstance(error, DeadlineExceeded) and error.attempts == 0:
            error.attempts = self.attempts
        failed = Failed(endpoint.model, error, failure)
        self.history.append(failed)
        retryable = failure.transient and not getattr(error, RETRIED, False)
        if retryable and self.on_target < endpoint.retry.attempts:
            wait = self.wait_for(endpoint.retry, retry_after)
            if wait is not None:
                failed.wait = wait
                self.retries += 1
                self.telemetry.count(
                    self.telemetry.retries,
                    {sc.REQUEST_MODEL: endpoint.model, sc.FAILURE_CLASS: failure.value},
                )
                self.record.event(
                    "aiguard.retry",
                    {
                        sc.ATTEMPT: self.attempts,
                        sc.ERROR_TYPE: error_type(error),
                        sc.RETRY_WAIT: wait,
                    },
                )
                return wait
        if failure in self.policy.fallback_on and self.index + 1 < len(self.endpoints):
            self.move_on(failure)
            return 0.0
        raise self.give_up(error)

    def wait_for(self, retry: Retry, retry_after: float | None) -> float | None:
        """Seconds to wait before retrying, or None when waiting makes no sense."""
        if retry_after is not None:
            if retry_after > retry.max_retry_after:
                return None
            wait = max(retry_after, 0.0)
        else:
            wait = retry.backoff(self.on_target, random.random())
        if testing.active:
            wait = 0.0
        if self.deadline is not None and time.monotonic() + wait >= self.deadline:
            return None  # the server asks for longer than we have: stop early
        return wait

    def reask(self, errors: int) -> bool:
        """An answer failed output validation: ask again (True), or not (the re-asks ran out)."""
        self.reasks += 1
        limit = self.policy.reasks
        if limit is None:
            limit = self.endpoints[self.index].retry.attempts - 1
        self.telemetry.count(
            self.telemetry.reasks, {sc.REQUEST_MODEL: self.endpoints[self.index].model}
        )
        self.record.event(
            "aiguard.output.invalid", {sc.ATTEMPT: self.attempts, sc.OUTPUT_ERRORS: errors}
        )
        if self.reasks > limit:
            return False
        self.on_target = 0  # a re-ask is a new question, not a retry of a failure
        return True

    def give_up(self, error: BaseException) -> BaseException:
        """The error the caller gets: marked as retried, with the earlier failures as notes."""
        if self.history and self.history[-1].failure.transient:
            with contextlib.suppress(Exception):
                setattr(error, RETRIED, True)
        if len(self.history) > 1 or self.skipped:
            try:
                for earlier in self.history[:-1]:
                    note = (
                        f"aiguard: attempt on {earlier.model!r} failed with "
                        f"{type(earlier.error).__name__} ({earlier.failure.value})"
                    )
                    if earlier.wait is not None:
                        note += f"; retried after {earlier.wait:.2f}s"
                    error.add_note(note)
                for model, wait in self.skipped:
                    error.add_note(
                        f"aiguard: skipped {model!r}: circuit open for another {wait:.1f}s"
                    )
            except Exception:
                pass
        return error

    def deadline_passed(self) -> DeadlineExceeded:
        timeout = self.policy.timeout
        refusal = DeadlineExceeded(timeout if timeout is not None else 0.0, self.attempts)
        if self.history:
            refusal.__cause__ = self.history[-1].error
        return refusal

    def summary(self, attrs: Attrs) -> None:
        """The call's attempts, retries, fallback, skipped circuits and re-asks, for its span."""
        attrs[sc.GUARD_ATTEMPTS] = self.attempts
        attrs[sc.GUARD_RETRIES] = self.retries
        attrs[sc.FALLBACK_USED] = self.index > 0
        if 0 < self.index < len(self.endpoints):
            attrs[sc.FALLBACK_MODEL] = self.endpoints[self.index].model
        if self.skipped:
            attrs[sc.BREAKER_SKIPPED] = len(self.skipped)
        if self.limited:
            attrs[sc.RATE_LIMIT_SKIPPED] = len(self.limited)
        if self.waited:
            attrs[sc.RATE_LIMIT_WAIT] = self.waited
        if self.reasks:
            attrs[sc.REASKS] = self.reasks
