"""The guarded call: the decisions and state of one call, whatever drives it.

A guarded call walks an ordered list of :class:`Endpoint` (the primary target, then its
fallbacks). :class:`GuardedCall` decides (retry after how long, fall back, give up) and tells
its record and ledger what happened; :mod:`aiguard._engine.driver` runs it, sync or async.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from contextvars import ContextVar, Token
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span

from aiguard import _budget, _capture, _store
from aiguard import _semconv as sc
from aiguard._calls import CallFacts
from aiguard._engine import admission, quality
from aiguard._engine.checking import check_name, run_checks
from aiguard._engine.contract import Endpoint, Reader, Route
from aiguard._engine.decisions import Routing
from aiguard._engine.ledger import ZERO, Ledger, cost_basis
from aiguard._engine.record import CallRecord
from aiguard._engine.state import frame, rate_headers
from aiguard._engine.stream import Ended, Lifecycle
from aiguard._errors import (
    BudgetExceeded,
    OutputInvalid,
    StoreUnavailable,
    StreamTruncated,
)
from aiguard._messages import Message, Part
from aiguard._output import InvalidOutput
from aiguard._policy import Failure, Policy
from aiguard._ratelimit import Ticket
from aiguard._telemetry import Attrs, Telemetry, report_fault
from aiguard._types import Usage

REASK = object()  # validate_output: the answer was wrong, ask again


@dataclass(slots=True)
class _Attempt:
    endpoint: Endpoint
    token: object | None
    scope: list[tuple[ContextVar[Any], Token[Any]]] | None
    started: float
    reserved: Decimal = ZERO


@dataclass(slots=True)
class GuardedCall:
    """The decisions and state of one guarded call, shared by the sync and async drivers.

    It never sleeps or awaits: it answers what the drivers ask (where the next attempt goes,
    how long to wait, whether to give up) and tells its :class:`CallRecord` (telemetry) and
    its :class:`Ledger` (cost and budgets) what happened.
    """

    route: Route
    policy: Policy
    request: dict[str, Any]
    telemetry: Telemetry
    record: CallRecord
    ledger: Ledger
    routing: Routing
    inference: bool  # a model call (a wrapped client), not a decorated function
    tag: str | None = None
    reader: Callable[[], Reader] | None = None  # set for a streaming call
    checked: list[str] | None = None
    failed_check: str | None = None
    deferred: bool = False  # a stream was handed to the user: it ends the call
    ticket: Ticket | None = None  # the attempt's count on its rate limit
    # call_info / call_ref and online evaluation (see aiguard._engine.quality)
    facts: CallFacts | None = None
    result: Any = None  # the answer, kept for the evaluators until the call ends
    streamed: str | None = None  # a stream's text, kept for the evaluators
    redacted: bool = False  # a check redacted the request

    @property
    def _evaluated(self) -> bool:
        return bool(self.policy.evaluate) or self.policy.review is not None

    @property
    def span(self) -> Span:
        return self.record.span

    @property
    def deadline(self) -> float | None:
        return self.routing.deadline

    @property
    def endpoints(self) -> list[Endpoint]:
        return self.routing.endpoints

    def next_endpoint(self) -> tuple[Endpoint, float | None]:
        """The target of the next attempt and the seconds left; raises when none is left, or
        :class:`WaitForRoom` when a rate limit's room is worth waiting for."""
        while True:
            admission.prefetch(
                self.endpoints,
                self.routing.index,
                self.policy,
                self.ledger,
                self.route,
                self.request,
            )
            try:
                endpoint, remaining = self.routing.next_endpoint()
                limit = self.policy.rate_limit
                if limit is None:
                    return endpoint, remaining
                tokens = admission.tokens(self.route, self.request, self.ledger)
                ticket, wait = limit.acquire(endpoint.fleet_key, tokens)
                if ticket is not None:
                    self.ticket = ticket
                    return endpoint, remaining
                self.routing.rate_limited(endpoint, wait, remaining, limit.max_wait)
            except BaseException:
                _store.discard()
                raise

    # -- input checks, before anything is sent or reserved --------------------------------------

    def checks(self) -> Generator[Any, Any, None]:
        """Run the policy's checks (see :mod:`aiguard._engine.checking`)."""
        endpoint = self.endpoints[0]
        context = {
            "model": endpoint.model,
            "provider": endpoint.price_provider,
            "operation": self.route.operation,
        }
        checks = self.policy.checks
        messages = self.route.messages(self.request)
        before = self.request
        self.request = yield from run_checks(checks, messages, self.request, context, self._refused)
        self.redacted = self.request is not before
        self.checked = [check_name(check) for check in checks]

    def _refused(self, name: str) -> None:
        self.failed_check = name
        self.telemetry.count(
            self.telemetry.refusals, {sc.REFUSAL_KIND: "check", sc.CHECK_NAME: name}
        )
        self.record.event("aiguard.check.failed", {sc.CHECK_NAME: name})

    # -- one attempt ---------------------------------------------------------------------------

    def start_attempt(
        self, endpoint: Endpoint, remaining: float | None
    ) -> tuple[_Attempt, dict[str, Any]]:
        """Open an attempt: reserve its worst-case cost, start its span, enter its scope.

        Raises :class:`BudgetExceeded` (nothing sent) when a budget has no room for it.
        """
        try:
            reserved = self._reserve(endpoint) if self.ledger.budgets else ZERO
        except BaseException:
            ticket, self.ticket = self.ticket, None
            if ticket is not None and self.policy.rate_limit is not None:
                self.policy.rate_limit.forget(ticket)  # counted, never sent
            raise
        finally:
            _store.discard()  # what was asked ahead and not used
        self.routing.attempt_started()
        request = self.request
        if endpoint.model != request.get("model") or remaining is not None:
            request = dict(request)
            if endpoint.model or "model" in request:
                request["model"] = endpoint.model
            if remaining is not None and endpoint.timeout_param is not None:
                given = request.get(endpoint.timeout_param)
                if not isinstance(given, int | float) and endpoint.client_timeout is not None:
                    given = endpoint.client_timeout()  # the client's own: never widened
                if not isinstance(given, int | float) or given > remaining:
                    request[endpoint.timeout_param] = remaining
        token = None
        if self.record.tracing:
            try:
                token = otel_context.attach(trace.set_span_in_context(self.record.span))
            except Exception as exc:
                report_fault("attaching the span context", exc)
        scope = self.enter()
        limit = self.policy.rate_limit
        if limit is not None:  # the provider's rate-limit headers tighten the limit
            target = endpoint.fleet_key
            sink = rate_headers.set(lambda headers: limit.learn(target, headers))
            scope.append((rate_headers, sink))
        attempt = _Attempt(endpoint, token, scope, time.perf_counter(), reserved)
        return attempt, request

    def enter(self) -> list[tuple[ContextVar[Any], Token[Any]]]:
        """Make this call the parent of guarded calls made until :meth:`leave`."""
        scope: list[tuple[ContextVar[Any], Token[Any]]] = [(frame, frame.set(self))]
        policy = self.policy
        if policy.budget is not None:
            scope.append((_budget.active, _budget.active.set(self.ledger.budgets)))
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
            return ZERO
        try:
            return self.ledger.reserve(endpoint, lambda: self.route.estimate(self.request))
        except (BudgetExceeded, StoreUnavailable):
            self.telemetry.count(
                self.telemetry.refusals,
                {sc.REQUEST_MODEL: endpoint.model, sc.REFUSAL_KIND: "budget"},
            )
            self.record.event("aiguard.budget.refused", {sc.REQUEST_MODEL: endpoint.model})
            raise

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
        self.routing.breaker_record(attempt.endpoint, True)
        record = self.record
        if not self.inference or not (
            record.tracing
            or record.measuring
            or self.ledger.budgets
            or record.capture
            or self._evaluated
            or self.ticket
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
        stream: Attrs | None = None,
    ) -> None:
        """Price an answered request, plain or streamed, and tell the call record.

        ``stream`` holds a stream's own span attributes (its usage may be partial, so budgets
        keep its worst case when unknown); ``answer`` is what content capture records.
        """
        endpoint = attempt.endpoint
        record = self.record
        if self.route.priced:
            self._price(attempt, attrs, usage, seconds, stream is not None)
        ticket, self.ticket = self.ticket, None
        if ticket is not None and usage is not None and usage.input_tokens is not None:
            assert self.policy.rate_limit is not None
            used = usage.input_tokens + (usage.output_tokens or 0)
            self.policy.rate_limit.correct(ticket, used)
        if stream is not None:
            attrs.update(stream)
        output = None
        if record.capture is not None and answer is not None:
            output = self._captured_output(answer, attrs)
        record.answered(endpoint.target_attrs(), attrs, usage, output)

    def _price(
        self, attempt: _Attempt, attrs: Attrs, usage: Usage | None, seconds: float, stream: bool
    ) -> None:
        """Charge the answer to the budgets; its cost on the span and the spend metric."""
        endpoint = attempt.endpoint
        model = attrs.get(sc.RESPONSE_MODEL)
        cost, charged = self.ledger.charge(
            endpoint, attempt.reserved, usage, model, seconds, unknown_is_worst=stream
        )
        if cost is not None:
            attrs[sc.COST_USD] = float(cost)
            attrs[sc.COST_BASIS] = cost_basis(endpoint)
        elif charged:  # what budgets were charged, so budgets and telemetry agree
            attrs[sc.COST_UNKNOWN] = True
            attrs[sc.COST_CHARGED_USD] = float(charged)
        if (cost is not None or charged) and self.record.measuring:
            # Few attributes: spend by provider, model and tag.
            metric_attrs: Attrs = {
                sc.PROVIDER: endpoint.provider,
                sc.REQUEST_MODEL: self.endpoints[0].model,
            }
            if model is not None:
                metric_attrs[sc.RESPONSE_MODEL] = model
            if self.tag is not None:
                metric_attrs[sc.TAG] = self.tag
            self.telemetry.count(self.telemetry.cost, metric_attrs, float(charged))

    def _captured_output(self, answer: Any, attrs: Attrs) -> Attrs | None:
        """The answer's ``gen_ai.output.messages``; ``answer`` is a response, or a stream's
        text."""
        capture = self.record.capture
        assert capture is not None
        try:
            if isinstance(answer, str):
                reasons = attrs.get(sc.RESPONSE_FINISH_REASONS)
                reason = reasons[0] if isinstance(reasons, list | tuple) and reasons else ""
                message = Message("assistant", [Part("text", answer)] if answer else [])
                return _capture.output_attributes([(message, str(reason))], capture)
            return _capture.output_attributes(self.route.answer_messages(answer), capture)
        except Exception as exc:
            report_fault("capturing message content", exc)
            return None

    # -- output validation ---------------------------------------------------------------------

    def validate_output(self, result: Any) -> Any:
        """The value to return, or :data:`REASK` to ask again; raises :class:`OutputInvalid`."""
        spec = self.policy.output
        assert spec is not None
        raw = self.route.answer_text(result)
        function = self.route.returns_output
        try:
            value = spec.validate(raw)
        except InvalidOutput as bad:
            if not self.routing.reask(len(bad.errors)):
                raise OutputInvalid(raw, bad.errors, self.routing.attempts) from None
            if not function:
                self.request = self.route.reask(self.request, raw, bad.errors)
            return REASK
        return value if function else result

    # -- streams -------------------------------------------------------------------------------

    def stream_started(self, attempt: _Attempt, reader: Reader, held: list[Any]) -> Lifecycle:
        """The first chunk arrived: hand the stream to the user, who ends the call."""
        self._detach(attempt)  # the user iterates in their own context
        self.deferred = True
        record = self.record
        kept = list(held) if record.capture is not None or self._evaluated else None

        def ended(how: Ended, kept: list[Any] | None) -> None:
            self.stream_ended(attempt, reader, how, kept)

        life = Lifecycle(
            reader, ended, attempt.endpoint.model, self.policy.raise_on_truncation, kept
        )
        if record.tracing or record.measuring:
            model = None
            if record.measuring:
                try:
                    model = reader.result()[0].get(sc.RESPONSE_MODEL)
                except Exception as exc:
                    report_fault("reading response attributes", exc)
            record.first_chunk(life.first_at - record.started, model)
            if record.chunk_attrs is not None:
                life.measure(self.telemetry.chunk_time, record.chunk_attrs)
        return life

    def stream_ended(
        self,
        attempt: _Attempt,
        reader: Reader,
        how: Ended,
        kept: list[Any] | None = None,
    ) -> None:
        """Record how a stream handed to the user ended, and end the guarded call."""
        now = time.perf_counter()
        endpoint = attempt.endpoint
        error = how.error
        failure = None
        if error is not None and not isinstance(error, StreamTruncated):
            try:
                failure, _ = (endpoint.classify or self.route.classify)(error)
            except Exception as exc:
                report_fault("classifying an error", exc)
                failure = Failure.FATAL
        self.routing.breaker_record(endpoint, failure is None or not failure.transient)
        recorded = error
        if error is None and not how.abandoned and not reader.complete:
            recorded = StreamTruncated(endpoint.model)  # cut cleanly: the SDK did not notice
        record = self.record
        if recorded is not None and self.inference:  # the answering attempt failed after all
            kind = failure.value if failure is not None else Failure.OUTAGE.value
            record.attempt_failed(
                self.routing.attempts, endpoint.model, recorded, kind, now - attempt.started
            )
        if (
            record.tracing
            or record.measuring
            or self.ledger.budgets
            or record.capture
            or self._evaluated
            or self.ticket
        ):
            try:
                attrs, usage = reader.result()
            except Exception as exc:
                report_fault("reading response attributes", exc)
                attrs, usage = {}, None
            stream: Attrs = {sc.STREAM_CHUNKS: reader.chunks}
            if how.abandoned:
                stream[sc.STREAM_ABANDONED] = True
            answer = "".join(map(reader.text, kept)) if kept is not None else None
            self.streamed = answer
            self._answered(attempt, attrs, usage, now - attempt.started, answer, stream)
        self.finish(recorded, "abandoned" if how.abandoned else None)

    def aborted(self, attempt: _Attempt, error: BaseException) -> None:
        """The attempt was cancelled or interrupted: decide nothing."""
        self._detach(attempt)
        self.ledger.release(attempt.reserved)
        if self.policy.breaker is not None:
            self.policy.breaker.release(attempt.endpoint.breaker_key, attempt.endpoint.fleet_key)

    def failed(self, attempt: _Attempt, error: BaseException) -> float:
        """Record a failed attempt and decide: the seconds to wait before the next attempt.

        Raises ``error`` (or an aiguard refusal) when the call should give up. A failed attempt
        reported no usage, so it costs nothing: its reservation is released.
        """
        self._detach(attempt)
        self.ledger.release(attempt.reserved)
        endpoint = attempt.endpoint
        try:
            if isinstance(error, StreamTruncated):  # ended before its first chunk
                failure, retry_after = Failure.OUTAGE, None
            else:
                failure, retry_after = (endpoint.classify or self.route.classify)(error)
        except Exception as exc:
            report_fault("classifying an error", exc)
            failure, retry_after = Failure.FATAL, None
        if self.inference:
            self.record.attempt_failed(
                self.routing.attempts,
                endpoint.model,
                error,
                failure.value,
                time.perf_counter() - attempt.started,
            )
        self.routing.breaker_record(endpoint, not failure.transient)
        return self.routing.after_failure(endpoint, error, failure, retry_after)

    # -- ending --------------------------------------------------------------------------------

    def finish(self, error: BaseException | None, outcome: str | None = None) -> None:
        """End the call record with the call's summary; add its cost to the enclosing call's."""
        ledger = self.ledger
        ledger.close()
        record = self.record
        if not (record.tracing or record.measuring):
            quality.ended(self, error)
            return
        cancelled = error is not None and not isinstance(error, Exception)
        if cancelled:
            outcome = "cancelled"  # not a failure of the provider: no error recorded
            error = None
        attrs: Attrs = {sc.GUARD_OUTCOME: outcome or ("ok" if error is None else "error")}
        self.routing.summary(attrs)
        if ledger.costed:
            attrs[sc.COST_TOTAL_USD] = float(ledger.cost)
        remaining = ledger.remaining()
        if remaining is not None:
            attrs[sc.BUDGET_REMAINING_USD] = float(remaining)
        if self.tag is not None:
            attrs[sc.TAG] = self.tag
        if self.checked:
            attrs[sc.CHECKS] = self.checked
        if self.failed_check is not None:
            attrs[sc.CHECK_FAILED] = self.failed_check
        record.end(error, attrs, cancelled)
        quality.ended(self, error)
