"""The guarded-call core: one pipeline for the decorator and every client wrapper.

A guarded call walks an ordered list of :class:`Endpoint` (the primary target, then its
fallbacks). :class:`Run` holds the decisions (retry after how long, fall back, give up) and the
telemetry of one call; it never sleeps or awaits, so :func:`run_sync` and :func:`run_async` are
the only places where sync and async differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import random
import sys
import threading
import time
from collections.abc import Callable, Generator, Hashable
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from aiguard import _budget, _capture, prices
from aiguard import _semconv as sc
from aiguard._budget import Budget
from aiguard._capture import Capture
from aiguard._errors import (
    BudgetExceeded,
    CheckFailed,
    CircuitOpen,
    DeadlineExceeded,
    OutputInvalid,
    StreamTruncated,
)
from aiguard._messages import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    Message,
    replace_text,
    request_messages,
)
from aiguard._output import InvalidOutput, answer_text, chunk_text, reask_request
from aiguard._policy import Failure, Policy, Retry
from aiguard._stream import (
    AsyncGuardedStream,
    Ended,
    GuardedStream,
    Reader,
    _Lifecycle,
    first_chunk,
    first_chunk_async,
)
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

# The innermost guarded call with an attempt in progress: nested guards never outlive its
# deadline and add their cost to its total.
_frame: ContextVar[Run | None] = ContextVar("aiguard_frame", default=None)
_ZERO = Decimal(0)
REASK = object()  # validate_output: the answer was wrong, ask again
_cost_lock = threading.Lock()


# Set while a client adapter calls its SDK: zero-code instrumentation lets such calls through,
# so a call is never guarded (or recorded) twice.
_in_sdk: ContextVar[bool] = ContextVar("aiguard_in_sdk", default=False)


def inside_client_call() -> bool:
    """Is this code running inside a guarded client's call to its SDK?"""
    return _in_sdk.get()


def sdk_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` as a guarded client's own call to its SDK."""
    token = _in_sdk.set(True)
    try:
        return fn(*args, **kwargs)
    finally:
        _in_sdk.reset(token)


def current_deadline() -> float | None:
    """The deadline (on ``time.monotonic()``) of the innermost guarded call in progress."""
    run = _frame.get()
    return None if run is None else run.deadline


# Set on an exception a guard gave up on after retrying, so an outer guard does not retry it again.
_RETRIED = "_aiguard_retried"


class Route(Protocol):
    """What a provider adapter tells the core about one guarded method."""

    operation: str
    span_kind: SpanKind
    # Does a response carry usage that has a price? False for the decorator's functions.
    priced: bool

    def request_attributes(self, request: dict[str, Any]) -> Attrs: ...

    def response_attributes(self, result: Any) -> tuple[Attrs, Usage | None]: ...

    def classify(self, error: BaseException) -> tuple[Failure, float | None]: ...

    def estimate(self, request: dict[str, Any]) -> tuple[int, int | None]:
        """Upper bounds of the request's input tokens and of its output tokens (None: unset)."""
        ...

    def stream(
        self, request: dict[str, Any], include_usage: bool
    ) -> tuple[dict[str, Any], Callable[[], Reader]] | None:
        """For a request that asks for a stream: the request to send and its chunk readers."""
        ...


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
    scope: list[tuple[ContextVar[Any], Token[Any]]] | None
    started: float
    reserved: Decimal = _ZERO


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
    parent: Run | None = None
    budgets: tuple[Budget, ...] = ()
    tag: str | None = None
    cost: Decimal = _ZERO  # over this call's attempts and the guarded calls nested in it
    costed: bool = False
    estimate: tuple[int, int] | None = None
    reader: Callable[[], Reader] | None = None  # set for a streaming call
    checked: list[str] | None = None
    failed_check: str | None = None
    reasks: int = 0
    capture: Capture | None = None  # prompts and answers in telemetry: opt-in
    captured: Attrs | None = None
    deferred: bool = False  # a stream was handed to the user: it ends the call

    @property
    def raise_on_truncation(self) -> bool:
        return self.policy.raise_on_truncation

    # -- input checks, before anything is sent or reserved --------------------------------------

    def checks(self) -> Generator[Any, Any, None]:
        """Run the policy's checks in order; yields what an async check returns, to be awaited.

        A check refuses by raising (any exception becomes :class:`CheckFailed` naming it) and
        redacts by returning new messages, whose changed text replaces the original in the
        request. Nothing reads message text unless a check is configured.
        """
        endpoint = self.endpoints[0]
        context = {
            "model": endpoint.model,
            "provider": endpoint.provider,
            "operation": self.route.operation,
        }
        extract = getattr(self.route, "messages", None) or request_messages
        original = messages = extract(self.request)
        for check in self.policy.checks:
            name = check_name(check)
            try:
                result = check(messages, **context)
                if inspect.isawaitable(result):
                    result = yield result
            except CheckFailed as refusal:
                self._refused(name)
                raise refusal from None
            except Exception as exc:
                self._refused(name)
                raise CheckFailed(name, str(exc) or type(exc).__name__) from exc
            if isinstance(result, list):
                messages = result
        self.checked = [check_name(check) for check in self.policy.checks]
        if messages is not original:
            self.request = replace_text(self.request, _redactions(original, messages))

    def _refused(self, name: str) -> None:
        self.failed_check = name
        self.telemetry.count(
            self.telemetry.refusals, {sc.REFUSAL_KIND: "check", sc.CHECK_NAME: name}
        )
        add_event(self.span, "aiguard.check.failed", {sc.CHECK_NAME: name})

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
        """Open an attempt: reserve its worst-case cost, start its span, enter its scope.

        Raises :class:`BudgetExceeded` (nothing sent) when a budget has no room for it.
        """
        reserved = self._reserve(endpoint) if self.budgets else _ZERO
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
        token = None
        if self.tracing:
            if self.attempt_spans:
                span = self._attempt_span(endpoint)
            try:
                token = otel_context.attach(trace.set_span_in_context(span))
            except Exception as exc:
                report_fault("attaching the span context", exc)
        attempt = _Attempt(
            endpoint, self.index, span, token, self.enter(), time.perf_counter(), reserved
        )
        return attempt, request

    def enter(self) -> list[tuple[ContextVar[Any], Token[Any]]]:
        """Make this call the parent of guarded calls made until :meth:`leave`."""
        scope: list[tuple[ContextVar[Any], Token[Any]]] = [(_frame, _frame.set(self))]
        policy = self.policy
        if policy.budget is not None:
            scope.append((_budget.active, _budget.active.set(self.budgets)))
        if policy.tag is not None:
            scope.append((_budget.current_tag, _budget.current_tag.set(policy.tag)))
        return scope

    @staticmethod
    def leave(scope: list[tuple[ContextVar[Any], Token[Any]]] | None) -> None:
        if scope:
            for var, token in reversed(scope):
                var.reset(token)

    # -- cost and budgets ----------------------------------------------------------------------

    def _reserve(self, endpoint: Endpoint) -> Decimal:
        """Hold the attempt's worst-case cost on every budget in force, or refuse the call."""
        if not self.route.priced:
            return _ZERO
        try:
            price = prices.lookup(endpoint.provider, endpoint.model)
            if price is None or not price.per_token:
                return _ZERO  # unknown price or compute time: settled after the call
            if self.estimate is None:
                inputs, outputs = self.route.estimate(self.request)
                self.estimate = (inputs, DEFAULT_MAX_OUTPUT_TOKENS if outputs is None else outputs)
            amount = price.worst_case(*self.estimate)
        except Exception as exc:  # a fault in aiguard's pricing must not stop the call
            report_fault("estimating a call's cost", exc)
            return _ZERO
        held: list[Budget] = []
        try:
            for budget in self.budgets:
                budget.reserve(amount, endpoint.model)
                held.append(budget)
        except BudgetExceeded:
            for budget in held:
                budget.settle(amount, _ZERO)
            self.telemetry.count(
                self.telemetry.refusals,
                {sc.REQUEST_MODEL: endpoint.model, sc.REFUSAL_KIND: "budget"},
            )
            add_event(self.span, "aiguard.budget.refused", {sc.REQUEST_MODEL: endpoint.model})
            raise
        return amount

    def _charge(
        self,
        attempt: _Attempt,
        usage: Usage | None,
        response_model: Any,
        seconds: float,
        unknown_is_worst: bool = False,
    ) -> Decimal | None:
        """Price a finished attempt, settle its reservations and add it to the totals.

        ``unknown_is_worst``: for a stream, whose usage may be missing or partial (cut before its
        final event): its cost is unknown, and budgets keep its worst case.
        """
        cost: Decimal | None = None
        try:
            endpoint = attempt.endpoint
            price = None
            if isinstance(response_model, str) and response_model != endpoint.model:
                price = prices.lookup(endpoint.provider, response_model)
            if price is None:
                price = prices.lookup(endpoint.provider, endpoint.model)
            if price is not None:
                partial = usage is None or usage.output_tokens is None
                if not (unknown_is_worst and partial and price.per_token):
                    cost = price.cost(usage, seconds)
        except Exception as exc:
            report_fault("pricing a call", exc)
            cost = attempt.reserved or None  # a hard budget assumes the worst
        charged = cost
        if charged is None and unknown_is_worst:
            charged = attempt.reserved
        for budget in self.budgets:
            budget.settle(attempt.reserved, charged or _ZERO)
        if cost is not None:
            self.add_cost(cost)
        return cost

    def add_cost(self, cost: Decimal) -> None:
        with _cost_lock:  # nested calls may finish on other threads
            self.cost += cost
            self.costed = True

    def _release(self, attempt: _Attempt) -> None:
        if attempt.reserved:
            for budget in self.budgets:
                budget.settle(attempt.reserved, _ZERO)

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
        if self.capture is not None and self.capture.span:
            attrs.update(self._captured_input())
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
        self.leave(attempt.scope)
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
        if not self.attempt_spans or not (
            self.tracing or self.measuring or self.budgets or self.capture
        ):
            return
        seconds = time.perf_counter() - attempt.started
        try:
            attrs, usage = self.route.response_attributes(result)
        except Exception as exc:
            report_fault("reading response attributes", exc)
            attrs, usage = {}, None
        self._answered(attempt, attrs, usage, seconds, result)

    def _answered(
        self,
        attempt: _Attempt,
        attrs: Attrs,
        usage: Usage | None,
        seconds: float,
        answer: Any,
        error: BaseException | None = None,
        stream: Attrs | None = None,
        chunk_gap: float | None = None,
    ) -> None:
        """Price, measure, capture and end the span of an answered request, plain or streamed.

        ``stream`` holds a stream's own span attributes (its usage may be partial, so budgets
        keep its worst case when unknown); ``answer`` is what content capture records.
        """
        endpoint = attempt.endpoint
        model = attrs.get(sc.RESPONSE_MODEL)
        cost = (
            self._charge(attempt, usage, model, seconds, unknown_is_worst=stream is not None)
            if self.route.priced
            else None
        )
        if self.measuring:
            metric_attrs = self._metric_attrs(endpoint)
            if model is not None:
                metric_attrs[sc.RESPONSE_MODEL] = model
            if error is not None:
                metric_attrs[sc.ERROR_TYPE] = error_type(error)
            self.telemetry.record_attempt(seconds, usage, metric_attrs)
            if chunk_gap is not None:
                self.telemetry.record(self.telemetry.chunk_time, chunk_gap, metric_attrs)
            if cost is not None:
                if self.tag is not None:
                    metric_attrs[sc.TAG] = self.tag
                self.telemetry.count(self.telemetry.cost, metric_attrs, float(cost))
        if self.capture is not None and answer is not None:
            self._capture_output(attempt, answer, attrs)
        if self.tracing:
            if usage is not None:
                attrs.update(usage_attributes(usage))
            if cost is not None:
                attrs[sc.COST_USD] = float(cost)
                attrs[sc.COST_BASIS] = cost_basis(endpoint)
            if stream is not None:
                attrs.update(stream)
            end_span(attempt.span, error, attrs)

    def _captured_input(self) -> Attrs:
        if self.captured is None:
            assert self.capture is not None
            try:
                extract = getattr(self.route, "messages", None) or request_messages
                self.captured = _capture.input_attributes(extract(self.request), self.capture)
            except Exception as exc:
                report_fault("capturing message content", exc)
                self.captured = {}
        return self.captured

    def _capture_output(self, attempt: _Attempt, result: Any, attrs: Attrs) -> None:
        capture = self.capture
        assert capture is not None
        try:
            output = _capture.output_attributes(
                answer_text(result), attrs.get(sc.RESPONSE_FINISH_REASONS), capture
            )
        except Exception as exc:
            report_fault("capturing message content", exc)
            return
        if capture.span:
            attrs.update(output)
        if capture.event:
            event: Attrs = {
                sc.OPERATION: self.route.operation,
                sc.PROVIDER: attempt.endpoint.provider,
                sc.REQUEST_MODEL: attempt.endpoint.model,
                **self._captured_input(),
                **output,
            }
            _capture.emit_event(attempt.span, event)

    # -- output validation ---------------------------------------------------------------------

    def validate_output(self, result: Any) -> Any:
        """The value to return, or :data:`REASK` to ask again; raises :class:`OutputInvalid`."""
        spec = self.policy.output
        assert spec is not None
        raw = answer_text(result)
        function = getattr(self.route, "returns_output", False)
        try:
            value = spec.validate(raw)
        except InvalidOutput as bad:
            self.reasks += 1
            limit = self.policy.reasks
            if limit is None:
                limit = self.endpoints[self.index].retry.attempts - 1
            self.telemetry.count(
                self.telemetry.reasks, {sc.REQUEST_MODEL: self.endpoints[self.index].model}
            )
            add_event(
                self.span,
                "aiguard.output.invalid",
                {sc.ATTEMPT: self.attempts, sc.OUTPUT_ERRORS: len(bad.errors)},
            )
            if self.reasks > limit:
                raise OutputInvalid(raw, bad.errors, self.attempts) from None
            if not function:
                self.request = reask_request(self.request, raw, bad.errors)
            self.on_target = 0  # a re-ask is a new question, not a retry of a failure
            return REASK
        return value if function else result

    # -- streams -------------------------------------------------------------------------------

    def stream_started(self, attempt: _Attempt, reader: Reader, held: list[Any]) -> _Lifecycle:
        """The first chunk arrived: hand the stream to the user, who ends the call."""
        self._detach(attempt)  # the user iterates in their own context
        self.deferred = True
        kept = list(held) if self.capture is not None else None
        life = _Lifecycle(self, attempt, reader, kept)
        if self.measuring:
            self.telemetry.record(
                self.telemetry.first_chunk,
                life.first_at - attempt.started,
                self._metric_attrs(attempt.endpoint),
            )
        return life

    def stream_ended(
        self,
        attempt: _Attempt,
        reader: Reader,
        how: Ended,
        first_at: float,
        kept: list[Any] | None = None,
    ) -> None:
        """Record how a stream handed to the user ended, and end the guarded call."""
        now = time.perf_counter()
        endpoint = attempt.endpoint
        error = how.error
        failure = None
        if error is not None and not isinstance(error, StreamTruncated):
            try:
                failure, _ = self.route.classify(error)
            except Exception as exc:
                report_fault("classifying an error", exc)
                failure = Failure.FATAL
        if self.policy.breaker is not None:
            ok = failure is None or not failure.transient
            state = self.policy.breaker.record(endpoint.breaker_key, ok)
            if state is not None:
                self._breaker_changed(endpoint, state)
        recorded = error
        if error is None and not how.abandoned and not reader.complete:
            recorded = StreamTruncated(endpoint.model)  # cut cleanly: the SDK did not notice
        if not (self.tracing or self.measuring or self.budgets or self.capture):
            self.finish(recorded)
            return
        try:
            attrs, usage = reader.result()
        except Exception as exc:
            report_fault("reading response attributes", exc)
            attrs, usage = {}, None
        stream: Attrs = {
            sc.TIME_TO_FIRST_CHUNK: first_at - attempt.started,
            sc.STREAM_CHUNKS: reader.chunks,
        }
        if how.abandoned:
            stream[sc.STREAM_ABANDONED] = True
        self._answered(
            attempt,
            attrs,
            usage,
            now - attempt.started,
            "".join(map(chunk_text, kept)) if kept is not None else None,
            recorded,
            stream,
            (now - first_at) / (reader.chunks - 1) if reader.chunks > 1 else None,
        )
        self.finish(recorded, "abandoned" if how.abandoned else None)

    def aborted(self, attempt: _Attempt, error: BaseException) -> None:
        """The attempt was cancelled or interrupted: end its span, decide nothing."""
        self._detach(attempt)
        self._release(attempt)
        if self.policy.breaker is not None:
            self.policy.breaker.release(attempt.endpoint.breaker_key)
        if self.attempt_spans and self.tracing:
            end_span(attempt.span, error)

    def failed(self, attempt: _Attempt, error: BaseException) -> float:
        """Record a failed attempt and decide: the seconds to wait before the next attempt.

        Raises ``error`` (or an aiguard refusal) when the call should give up. A failed attempt
        reported no usage, so it costs nothing: its reservation is released.
        """
        self._detach(attempt)
        self._release(attempt)
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

    def finish(self, error: BaseException | None, outcome: str | None = None) -> None:
        """End the guarded call's span with its summary; add its cost to the enclosing call's."""
        if self.parent is not None and self.costed:
            self.parent.add_cost(self.cost)
        if not self.tracing:
            return
        attrs: Attrs = {
            sc.GUARD_ATTEMPTS: self.attempts,
            sc.GUARD_RETRIES: self.retries,
            sc.GUARD_OUTCOME: outcome or ("ok" if error is None else "error"),
            sc.FALLBACK_USED: self.index > 0,
        }
        if self.index > 0 and self.index < len(self.endpoints):
            attrs[sc.FALLBACK_MODEL] = self.endpoints[self.index].model
        if self.skipped:
            attrs[sc.BREAKER_SKIPPED] = len(self.skipped)
        if self.costed:
            attrs[sc.COST_TOTAL_USD] = float(self.cost)
        if self.budgets:
            attrs[sc.BUDGET_REMAINING_USD] = float(min(b.remaining for b in self.budgets))
        if self.tag is not None:
            attrs[sc.TAG] = self.tag
        if self.checked:
            attrs[sc.CHECKS] = self.checked
        if self.failed_check is not None:
            attrs[sc.CHECK_FAILED] = self.failed_check
        if self.reasks:
            attrs[sc.REASKS] = self.reasks
        end_span(self.span, error, attrs)


def check_name(check: Any) -> str:
    name = getattr(check, "name", None)
    if isinstance(name, str) and name:
        return name
    return getattr(check, "__qualname__", None) or type(check).__qualname__


def _redactions(before: list[Message], after: list[Message]) -> dict[str, str]:
    """Original text -> redacted text, for what a check changed.

    A text part is a string of the request as it is; a structured part (a tool call, its
    result) is JSON made from the request's values, so its changed strings are matched inside.
    """
    changed: dict[str, str] = {}
    for old, new in zip(before, after, strict=False):
        for old_part, new_part in zip(old.parts, new.parts, strict=False):
            if old_part.content == new_part.content or not old_part.content:
                continue
            changed[old_part.content] = new_part.content
            if old_part.type != "text":
                with contextlib.suppress(ValueError):  # not JSON: nothing more to match
                    _changed_strings(
                        json.loads(old_part.content), json.loads(new_part.content), changed
                    )
    return changed


def _changed_strings(old: Any, new: Any, changed: dict[str, str]) -> None:
    if isinstance(old, str) and isinstance(new, str):
        if old != new:
            changed[old] = new
    elif isinstance(old, dict) and isinstance(new, dict):
        for key, value in old.items():
            if key in new:
                _changed_strings(value, new[key], changed)
    elif isinstance(old, list) and isinstance(new, list):
        for a, b in zip(old, new, strict=False):
            _changed_strings(a, b, changed)


def checks_sync(run: Run) -> None:
    """Run the policy's checks on a sync call (an async check is refused)."""
    steps = run.checks()
    for pending in steps:
        if hasattr(pending, "close"):
            pending.close()  # never awaited: do not leave a warning behind
        steps.close()
        raise TypeError(
            "an async check cannot run on a sync call: make it a plain function, or use the "
            "async client"
        )


async def checks_async(run: Run) -> None:
    """Run the policy's checks on an async call, awaiting async checks."""
    steps = run.checks()
    try:
        pending = next(steps)
        while True:
            try:
                result = await pending
            except Exception as exc:
                pending = steps.throw(exc)
            else:
                pending = steps.send(result)
    except StopIteration:
        return


def cost_basis(endpoint: Endpoint) -> str:
    price = prices.lookup(endpoint.provider, endpoint.model)
    return "compute_time" if price is not None and not price.per_token else "tokens"


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
    reader: Callable[[], Reader] | None = None,
) -> Run:
    """Open the guarded call's span and its state."""
    telemetry = current()
    now = time.monotonic()
    deadline = now + policy.timeout if policy.timeout is not None else None
    parent = _frame.get()
    if parent is not None:
        outer = parent.deadline
        if outer is not None and (deadline is None or outer < deadline):
            deadline = outer
    budgets = _budget.active.get()
    if policy.budget is not None and policy.budget not in budgets:
        budgets = (*budgets, policy.budget)
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
        parent=parent,
        budgets=budgets,
        tag=policy.tag if policy.tag is not None else _budget.current_tag.get(),
        reader=reader,
        capture=_capture.current(policy.capture) if attempt_spans else None,
    )


def run_sync(run: Run) -> Any:
    """Drive a guarded call with blocking sleeps."""
    error: BaseException | None = None
    try:
        if run.policy.checks:
            checks_sync(run)
        while True:
            endpoint, remaining = run.next_endpoint()
            attempt, request = run.start_attempt(endpoint, remaining)
            try:
                result = (
                    sdk_call(endpoint.invoke, request)
                    if run.attempt_spans
                    else (endpoint.invoke(request))
                )
                if run.reader is not None:  # a stream counts as started at its first chunk
                    reader = run.reader()
                    iterator, held = first_chunk(result, reader)
            except BaseException as exc:
                if not isinstance(exc, Exception):  # cancelled or interrupted: no retry
                    run.aborted(attempt, exc)
                    raise
                wait = run.failed(attempt, exc)
                if wait > 0:
                    time.sleep(wait)
                continue
            if run.reader is not None:
                life = run.stream_started(attempt, reader, held)
                return GuardedStream(result, iterator, held, life)
            run.succeeded(attempt, result)
            if run.policy.output is not None:
                result = run.validate_output(result)
                if result is REASK:
                    continue
            return result
    except BaseException as exc:
        error = exc
        raise
    finally:
        if not run.deferred:
            run.finish(error)


async def _sleep(seconds: float) -> None:
    # anyio (imported by the openai and anthropic SDKs) sleeps under asyncio and trio alike.
    anyio = sys.modules.get("anyio")
    await (anyio.sleep(seconds) if anyio is not None else asyncio.sleep(seconds))


async def run_async(run: Run) -> Any:
    """Drive a guarded call with async sleeps; the decisions are the same as the sync path."""
    error: BaseException | None = None
    try:
        if run.policy.checks:
            await checks_async(run)
        while True:
            endpoint, remaining = run.next_endpoint()
            attempt, request = run.start_attempt(endpoint, remaining)
            try:
                pending = (
                    sdk_call(endpoint.invoke, request)
                    if run.attempt_spans
                    else (endpoint.invoke(request))
                )
                result = await pending
                if run.reader is not None:
                    reader = run.reader()
                    iterator, held = await first_chunk_async(result, reader)
            except BaseException as exc:
                if not isinstance(exc, Exception):  # cancelled or interrupted: no retry
                    run.aborted(attempt, exc)
                    raise
                wait = run.failed(attempt, exc)
                if wait > 0:
                    await _sleep(wait)
                continue
            if run.reader is not None:
                life = run.stream_started(attempt, reader, held)
                return AsyncGuardedStream(result, iterator, held, life)
            run.succeeded(attempt, result)
            if run.policy.output is not None:
                result = run.validate_output(result)
                if result is REASK:
                    continue
            return result
    except BaseException as exc:
        error = exc
        raise
    finally:
        if not run.deferred:
            run.finish(error)
