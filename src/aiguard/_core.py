"""The guarded-call core: one pipeline for the decorator and every client wrapper.

A guarded call walks an ordered list of :class:`Endpoint` (the primary target, then its
fallbacks). :class:`Run` holds the decisions (retry after how long, fall back, give up) and the
telemetry of one call; it never sleeps or awaits, so :func:`run_sync` and :func:`run_async` are
the only places where sync and async differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Hashable
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from aiguard import _semconv as sc
from aiguard._errors import CircuitOpen, DeadlineExceeded
from aiguard._policy import Failure, Policy, Retry
from aiguard._telemetry import (
    Attrs,
    Telemetry,
    add_event,
    current,
    end_span,
    error_type,
    report_fault,
    usage_attributes,
)
from aiguard._types import Usage

# The deadline of the innermost guarded call in progress: nested guards never outlive it.
_deadline: ContextVar[float | None] = ContextVar("aiguard_deadline", default=None)

# Set on an exception a guard gave up on after retrying, so an outer guard does not retry it again.
_RETRIED = "_aiguard_retried"


class Route(Protocol):
    """What a provider adapter tells the core about one guarded method."""

    operation: str
    span_kind: SpanKind

    def request_attributes(self, request: dict[str, Any]) -> Attrs: ...

    def response_attributes(self, result: Any) -> tuple[Attrs, Usage | None]: ...

    def classify(self, error: BaseException) -> tuple[Failure, float | None]: ...


@dataclass(slots=True)
class Endpoint:
    """One target a guarded call may send its request to."""

    invoke: Callable[[dict[str, Any]], Any]
    model: str
    provider: str
    server: Attrs
    retry: Retry
    breaker_key: Hashable
    timeout_param: str | None = "timeout"
    metric_attrs: Attrs | None = None


@dataclass(slots=True)
class _Attempt:
    endpoint: Endpoint
    index: int
    span: Span
    token: object | None
    deadline_token: Token[float | None] | None
    started: float


@dataclass(slots=True)
class _Failed:
    model: str
    error: BaseException
    failure: Failure
    wait: float | None = None


@dataclass(slots=True)
class Run:
    """The state and telemetry of one guarded call (shared by the sync and async runners)."""

    route: Route
    policy: Policy
    endpoints: list[Endpoint]
    request: dict[str, Any]
    telemetry: Telemetry
    span: Span
    deadline: float | None
    attempt_spans: bool
    tracing: bool
    measuring: bool
    index: int = 0
    attempts: int = 0
    on_target: int = 0
    retries: int = 0
    history: list[_Failed] = field(default_factory=list)
    skipped: list[tuple[str, float]] = field(default_factory=list)
    request_attrs: Attrs | None = None

    # -- choosing where the next request goes --------------------------------------------------

    def next_endpoint(self) -> tuple[Endpoint, float | None]:
        """The endpoint for the next attempt and the seconds left; raises when none is left."""
        breaker = self.policy.breaker
        while self.index < len(self.endpoints):
            endpoint = self.endpoints[self.index]
            if breaker is None:
                break
            allowed, wait, transition = breaker.acquire(endpoint.breaker_key)
            if transition is not None:
                self._breaker_changed(endpoint, transition)
            if allowed:
                break
            self.skipped.append((endpoint.model, wait))
            add_event(self.span, "aiguard.breaker.skipped", {sc.FALLBACK_MODEL: endpoint.model})
            self._move_on(Failure.OUTAGE, counted=self.index + 1 < len(self.endpoints))
        else:
            if self.history:
                raise self._give_up(self.history[-1].error)
            raise CircuitOpen(self.skipped)
        remaining = None
        if self.deadline is not None:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise self._deadline_passed()
        return self.endpoints[self.index], remaining

    def _move_on(self, reason: Failure, counted: bool = True) -> None:
        self.index += 1
        self.on_target = 0
        if counted and self.index < len(self.endpoints):
            nxt = self.endpoints[self.index]
            self.telemetry.count(
                self.telemetry.fallbacks,
                {sc.FALLBACK_REASON: reason.value, sc.FALLBACK_MODEL: nxt.model},
            )
            add_event(
                self.span,
                "aiguard.fallback",
                {sc.FALLBACK_MODEL: nxt.model, sc.FALLBACK_REASON: reason.value},
            )

    def _breaker_changed(self, endpoint: Endpoint, state: str) -> None:
        attrs: Attrs = {sc.BREAKER_STATE: state, sc.REQUEST_MODEL: endpoint.model}
        self.telemetry.count(self.telemetry.breaker, attrs)
        add_event(self.span, "aiguard.breaker", attrs)

    # -- one attempt ---------------------------------------------------------------------------

    def start_attempt(
        self, endpoint: Endpoint, remaining: float | None
    ) -> tuple[_Attempt, dict[str, Any]]:
        self.attempts += 1
        self.on_target += 1
        request = self.request
        if endpoint.model != request.get("model") or remaining is not None:
            request = dict(request)
            if endpoint.model or "model" in request:
                request["model"] = endpoint.model
            if remaining is not None and endpoint.timeout_param is not None:
                given = request.get(endpoint.timeout_param)
                if not isinstance(given, int | float) or given > remaining:
                    request[endpoint.timeout_param] = remaining
        span = self.span
        token = deadline_token = None
        if self.tracing:
            if self.attempt_spans:
                span = self._attempt_span(endpoint)
            try:
                token = otel_context.attach(trace.set_span_in_context(span))
            except Exception as exc:
                report_fault("attaching the span context", exc)
        if self.deadline is not None:
            deadline_token = _deadline.set(self.deadline)
        attempt = _Attempt(endpoint, self.index, span, token, deadline_token, time.perf_counter())
        return attempt, request

    def _attempt_span(self, endpoint: Endpoint) -> Span:
        if self.request_attrs is None:
            try:
                self.request_attrs = self.route.request_attributes(self.request)
            except Exception as exc:
                report_fault("reading request attributes", exc)
                self.request_attrs = {}
        attrs: Attrs = {
            sc.OPERATION: self.route.operation,
            sc.PROVIDER: endpoint.provider,
            sc.REQUEST_MODEL: endpoint.model,
            **endpoint.server,
            **self.request_attrs,
            sc.ATTEMPT: self.attempts,
            sc.TARGET_INDEX: self.index,
        }
        return self.telemetry.start_span(
            f"{self.route.operation} {endpoint.model}", self.route.span_kind, attrs, self.span
        )

    def _metric_attrs(self, endpoint: Endpoint) -> Attrs:
        base = endpoint.metric_attrs
        if base is None:
            base = endpoint.metric_attrs = {
                sc.OPERATION: self.route.operation,
                sc.PROVIDER: endpoint.provider,
                sc.REQUEST_MODEL: endpoint.model,
                **endpoint.server,
            }
        return dict(base)

    def _detach(self, attempt: _Attempt) -> None:
        if attempt.deadline_token is not None:
            _deadline.reset(attempt.deadline_token)
        if attempt.token is not None:
            try:
                otel_context.detach(attempt.token)  # type: ignore[arg-type]
            except Exception as exc:
                report_fault("detaching the span context", exc)

    def succeeded(self, attempt: _Attempt, result: Any) -> None:
        """Record a successful attempt."""
        self._detach(attempt)
        endpoint = attempt.endpoint
        if self.policy.breaker is not None:
            state = self.policy.breaker.record(endpoint.breaker_key, True)
            if state is not None:
                self._breaker_changed(endpoint, state)
        if not self.attempt_spans or not (self.tracing or self.measuring):
            return
        seconds = time.perf_counter() - attempt.started
        try:
            attrs, usage = self.route.response_attributes(result)
        except Exception as exc:
            report_fault("reading response attributes", exc)
            attrs, usage = {}, None
        if self.measuring:
            metric_attrs = self._metric_attrs(endpoint)
            model = attrs.get(sc.RESPONSE_MODEL)
            if model is not None:
                metric_attrs[sc.RESPONSE_MODEL] = model
            self.telemetry.record_attempt(seconds, usage, metric_attrs)
        if self.tracing:
            if usage is not None:
                attrs.update(usage_attributes(usage))
            end_span(attempt.span, None, attrs)

    def aborted(self, attempt: _Attempt, error: BaseException) -> None:
        """The attempt was cancelled or interrupted: end its span, decide nothing."""
        self._detach(attempt)
        if self.policy.breaker is not None:
            self.policy.breaker.release(attempt.endpoint.breaker_key)
        if self.attempt_spans and self.tracing:
            end_span(attempt.span, error)

    def failed(self, attempt: _Attempt, error: BaseException) -> float:
        """Record a failed attempt and decide: the seconds to wait before the next attempt.

        Raises ``error`` (or an aiguard refusal) when the call should give up.
        """
        self._detach(attempt)
        endpoint = attempt.endpoint
        try:
            failure, retry_after = self.route.classify(error)
        except Exception as exc:
            report_fault("classifying an error", exc)
            failure, retry_after = Failure.FATAL, None
        if self.attempt_spans:
            if self.measuring:
                seconds = time.perf_counter() - attempt.started
                metric_attrs = self._metric_attrs(endpoint)
                metric_attrs[sc.ERROR_TYPE] = error_type(error)
                self.telemetry.record_attempt(seconds, None, metric_attrs)
            if self.tracing:
                end_span(attempt.span, error, {sc.FAILURE_CLASS: failure.value})
        if self.policy.breaker is not None:
            state = self.policy.breaker.record(endpoint.breaker_key, not failure.transient)
            if state is not None:
                self._breaker_changed(endpoint, state)
        if isinstance(error, DeadlineExceeded) and error.attempts == 0:
            error.attempts = self.attempts
        record = _Failed(endpoint.model, error, failure)
        self.history.append(record)

        retryable = failure.transient and not getattr(error, _RETRIED, False)
        if retryable and self.on_target < endpoint.retry.attempts:
            wait = self._wait(endpoint.retry, retry_after)
            if wait is not None:
                record.wait = wait
                self.retries += 1
                self.telemetry.count(
                    self.telemetry.retries,
                    {sc.REQUEST_MODEL: endpoint.model, sc.FAILURE_CLASS: failure.value},
                )
                add_event(
                    self.span,
                    "aiguard.retry",
                    {
                        sc.ATTEMPT: self.attempts,
                        sc.ERROR_TYPE: error_type(error),
                        sc.RETRY_WAIT: wait,
                    },
                )
                return wait
        if failure in self.policy.fallback_on and self.index + 1 < len(self.endpoints):
            self._move_on(failure)
            return 0.0
        raise self._give_up(error)

    def _wait(self, retry: Retry, retry_after: float | None) -> float | None:
        """Seconds to wait before retrying, or None when waiting makes no sense."""
        if retry_after is not None:
            if retry_after > retry.max_retry_after:
                return None
            wait = max(retry_after, 0.0)
        else:
            wait = retry.backoff(self.on_target, random.random())
        if _testing.active:
            wait = 0.0
        if self.deadline is not None and time.monotonic() + wait >= self.deadline:
            return None  # the server asks for longer than we have: stop early
        return wait

    # -- ending --------------------------------------------------------------------------------

    def _give_up(self, error: BaseException) -> BaseException:
        if self.history and self.history[-1].failure.transient:
            with contextlib.suppress(Exception):
                setattr(error, _RETRIED, True)
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

    def _deadline_passed(self) -> DeadlineExceeded:
        timeout = self.policy.timeout
        refusal = DeadlineExceeded(timeout if timeout is not None else 0.0, self.attempts)
        if self.history:
            refusal.__cause__ = self.history[-1].error
        return refusal

    def finish(self, error: BaseException | None) -> None:
        """End the guarded call's span with its summary."""
        if not self.tracing:
            return
        attrs: Attrs = {
            sc.GUARD_ATTEMPTS: self.attempts,
            sc.GUARD_RETRIES: self.retries,
            sc.GUARD_OUTCOME: "ok" if error is None else "error",
            sc.FALLBACK_USED: self.index > 0,
        }
        if self.index > 0 and self.index < len(self.endpoints):
            attrs[sc.FALLBACK_MODEL] = self.endpoints[self.index].model
        if self.skipped:
            attrs[sc.BREAKER_SKIPPED] = len(self.skipped)
        end_span(self.span, error, attrs)


class _Testing:
    """``aiguard.testing.set_testing(True)`` makes every retry wait zero seconds."""

    active = False


_testing = _Testing()


def begin(
    route: Route,
    policy: Policy,
    endpoints: list[Endpoint],
    request: dict[str, Any],
    span_name: str,
    span_attrs: Attrs,
    attempt_spans: bool = True,
) -> Run:
    """Open the guarded call's span and its state."""
    telemetry = current()
    now = time.monotonic()
    deadline = now + policy.timeout if policy.timeout is not None else None
    outer = _deadline.get()
    if outer is not None and (deadline is None or outer < deadline):
        deadline = outer
    tracing = telemetry.tracing()
    span = (
        telemetry.start_span(span_name, SpanKind.INTERNAL, span_attrs)
        if tracing
        else trace.INVALID_SPAN
    )
    return Run(
        route,
        policy,
        endpoints,
        request,
        telemetry,
        span,
        deadline,
        attempt_spans,
        tracing,
        telemetry.measuring(),
    )


def run_sync(run: Run) -> Any:
    """Drive a guarded call with blocking sleeps."""
    error: BaseException | None = None
    try:
        while True:
            endpoint, remaining = run.next_endpoint()
            attempt, request = run.start_attempt(endpoint, remaining)
            try:
                result = endpoint.invoke(request)
            except BaseException as exc:
                if not isinstance(exc, Exception):  # cancelled or interrupted: no retry
                    run.aborted(attempt, exc)
                    raise
                wait = run.failed(attempt, exc)
                if wait > 0:
                    time.sleep(wait)
                continue
            run.succeeded(attempt, result)
            return result
    except BaseException as exc:
        error = exc
        raise
    finally:
        run.finish(error)


async def run_async(run: Run) -> Any:
    """Drive a guarded call with ``asyncio.sleep``; the decisions are the same as the sync path."""
    error: BaseException | None = None
    try:
        while True:
            endpoint, remaining = run.next_endpoint()
            attempt, request = run.start_attempt(endpoint, remaining)
            try:
                result = await endpoint.invoke(request)
            except BaseException as exc:
                if not isinstance(exc, Exception):  # cancelled or interrupted: no retry
                    run.aborted(attempt, exc)
                    raise
                wait = run.failed(attempt, exc)
                if wait > 0:
                    await asyncio.sleep(wait)
                continue
            run.succeeded(attempt, result)
            return result
    except BaseException as exc:
        error = exc
        raise
    finally:
        run.finish(error)
