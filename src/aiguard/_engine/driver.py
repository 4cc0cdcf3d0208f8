"""Driving a guarded call: its attempt loop written once, and the sync and async drivers.

:func:`attempts` holds every step of a guarded call as a generator (its checks, then each
attempt: send, read the first chunk or item, wait); a driver does what each step says and sends
the outcome back, or throws the error in, the way httpx's ``auth_flow`` is driven by
``sync_auth_flow`` and ``async_auth_flow``. Sync and async differ only in the drivers.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sys
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import SpanKind

from aiguard import _budget, _capture
from aiguard import _semconv as sc
from aiguard._capture import CaptureSettings
from aiguard._engine import quality
from aiguard._engine.call import REASK, GuardedCall
from aiguard._engine.contract import Endpoint, Reader, Route
from aiguard._engine.decisions import Routing, WaitForRoom
from aiguard._engine.ledger import Ledger
from aiguard._engine.record import CallRecord
from aiguard._engine.state import frame, sdk_call
from aiguard._engine.stream import (
    AsyncGuardedStream,
    GuardedStream,
    Lifecycle,
    first_chunk,
    first_chunk_async,
)
from aiguard._errors import StreamTruncated
from aiguard._policy import Policy
from aiguard._telemetry import Attrs, Telemetry, current, report_fault


def begin(
    route: Route,
    policy: Policy,
    endpoints: list[Endpoint],
    request: dict[str, Any],
    reader: Callable[[], Reader] | None = None,
    function: tuple[str, Attrs] | None = None,
) -> GuardedCall:
    """Open the guarded call: its record (one span) and its state.

    A model call's span is its inference span, ``{operation} {request model}``, started with
    the attributes samplers see; ``function`` names a decorated function's span and attributes.
    """
    telemetry = current()
    deadline = time.monotonic() + policy.timeout if policy.timeout is not None else None
    parent = frame.get()
    if parent is not None:
        outer = parent.deadline
        if outer is not None and (deadline is None or outer < deadline):
            deadline = outer
    budgets = _budget.active.get()
    if policy.budget is not None and policy.budget not in budgets:
        budgets = (*budgets, policy.budget)
    if function is None:
        record = _inference_record(telemetry, route, policy, endpoints, request)
    else:
        name, attrs = function
        record = CallRecord(
            telemetry, telemetry.tracing(), False, name, SpanKind.INTERNAL, attrs, False
        )
    ledger = Ledger(budgets, parent.ledger if parent is not None else None)
    tag = policy.tag if policy.tag is not None else _budget.current_tag.get()
    routing = Routing(endpoints, policy, deadline, telemetry, record)
    return GuardedCall(
        route, policy, request, telemetry, record, ledger, routing, function is None, tag, reader
    )


def _inference_record(
    telemetry: Telemetry,
    route: Route,
    policy: Policy,
    endpoints: list[Endpoint],
    request: dict[str, Any],
) -> CallRecord:
    """The record of a model call: its inference span, started with what samplers see.

    The primary's server starts the span unless a fallback has none (an in-process model): a
    span attribute cannot be removed, so then the answering target's server (or, when none
    answered, the primary's) is set at the end.
    """
    tracing = telemetry.tracing()
    measuring = telemetry.measuring()
    primary = endpoints[0]
    # No model in the request (a stored prompt names it): the operation alone.
    name = f"{route.operation} {primary.model}" if primary.model else route.operation
    attrs: Attrs = {}
    server = primary.server
    later: Attrs | None = None
    if server and any(not endpoint.server for endpoint in endpoints[1:]):
        server, later = {}, server
    if tracing or measuring:
        attrs = {sc.OPERATION: route.operation, sc.PROVIDER: primary.provider, **server}
        if primary.model:
            attrs[sc.REQUEST_MODEL] = primary.model
        if tracing:
            try:
                attrs.update(route.request_attributes(request))
                for key in sc.DOUBLE_ATTRIBUTES:
                    value = attrs.get(key)
                    if isinstance(value, int):
                        attrs[key] = float(value)
            except Exception as exc:
                report_fault("reading request attributes", exc)
    capture = input_attrs = None
    # Embeddings carry no messages: nothing of them is captured.
    if route.operation != "embeddings":
        capture = _capture.current(policy.capture)
    if capture is not None:
        input_attrs = _captured_input(route, request, capture)
    record = CallRecord(
        telemetry, tracing, measuring, name, route.span_kind, attrs, True, capture, input_attrs
    )
    record.unanswered = later
    return record


def _captured_input(route: Route, request: dict[str, Any], capture: CaptureSettings) -> Attrs:
    try:
        attrs = _capture.input_attributes(route.messages(request), capture)
        attrs.update(_capture.tool_definitions(route.tool_definitions(request)))
        return attrs
    except Exception as exc:
        report_fault("capturing message content", exc)
        return {}


# -- the attempt loop, once, and the two drivers that run it -----------------------------------
#
# ``attempts`` holds every decision of a guarded call as a generator of steps; a driver does
# what each step says (call the SDK, read a first chunk or item, sleep, await a check) and sends
# the outcome back, or throws the error in. Sync and async differ only in the drivers.


@dataclass(slots=True)
class Invoke:
    """Send the request: ``fn(request)`` (awaited by the async driver)."""

    fn: Callable[[dict[str, Any]], Any]
    request: dict[str, Any]
    guarded: bool  # a guarded client's own call to its SDK (zero-code instrumentation skips it)


@dataclass(slots=True)
class FirstChunk:
    """Read a stream up to its first chunk the user may see: ``(iterator, held chunks)``."""

    stream: Any
    reader: Reader


@dataclass(slots=True)
class FirstItem:
    """Take a decorated generator's first item (:data:`EMPTY` when it has none)."""

    generator: Any


@dataclass(slots=True)
class Close:
    """Close a stream that failed before its first chunk, so its connection is freed."""

    stream: Any


@dataclass(slots=True)
class Sleep:
    """Wait before the next attempt."""

    seconds: float


@dataclass(slots=True)
class Started:
    """What the loop returns for a stream (the SDK's stream, handed over at its first chunk) or
    a decorated generator (its first item, or :data:`EMPTY`)."""

    result: Any
    iterator: Any = None
    held: list[Any] = field(default_factory=list)
    life: Lifecycle | None = None
    first: Any = None


EMPTY = object()  # a decorated generator that yielded nothing


def attempts(run: GuardedCall, items: bool = False) -> Generator[Any, Any, Any]:
    """A guarded call's checks and attempt loop; ``items``: the call is a generator function's.

    Yields the steps above (and, for async checks, their awaitables); returns the answer, or
    :class:`Started` for a stream or a generator.
    """
    if run.policy.checks:
        yield from run.checks()
    while True:
        try:
            endpoint, remaining = run.next_endpoint()
        except WaitForRoom as later:  # a rate limit has room soon enough
            yield Sleep(later.seconds)
            continue
        attempt, request = run.start_attempt(endpoint, remaining)
        first: Any = None
        opened: Any = None  # a stream being read up to its first chunk
        try:
            result = yield Invoke(endpoint.invoke, request, run.inference)
            if run.reader is not None:  # a stream counts as started at its first chunk
                reader = run.reader()
                opened = result
                iterator, held = yield FirstChunk(result, reader)
                if not held:
                    raise StreamTruncated(endpoint.model, empty=True)
            elif items:
                first = yield FirstItem(result)
        except Exception as exc:
            if opened is not None:
                yield Close(opened)
            wait = run.failed(attempt, exc)
            if wait > 0:
                yield Sleep(wait)
            continue
        except BaseException as exc:  # cancelled or interrupted: no retry
            run.aborted(attempt, exc)
            raise
        if run.reader is not None:
            return Started(result, iterator, held, run.stream_started(attempt, reader, held))
        run.succeeded(attempt, None if items else result)
        if items:
            return Started(result, first=first)
        if run.policy.output is not None:
            result = run.validate_output(result)
            if result is REASK:
                continue
        return result


def drive_sync(steps: Generator[Any, Any, Any]) -> Any:
    """Run the steps with blocking calls and sleeps."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = steps.send(value) if error is None else steps.throw(error)
        except StopIteration as done:
            return done.value
        value = error = None
        if not isinstance(step, _STEPS):
            _refuse_async_check(step, steps)
        try:
            if isinstance(step, Invoke):
                value = sdk_call(step.fn, step.request) if step.guarded else step.fn(step.request)
            elif isinstance(step, FirstChunk):
                value = first_chunk(step.stream, step.reader)
            elif isinstance(step, FirstItem):
                value = next(step.generator, EMPTY)
            elif isinstance(step, Close):
                close = getattr(step.stream, "close", None)
                if close is not None:
                    with contextlib.suppress(Exception):  # the attempt failed already
                        close()
            else:
                time.sleep(step.seconds)
        except BaseException as exc:
            error = exc


_STEPS = (Invoke, FirstChunk, FirstItem, Close, Sleep)


def _refuse_async_check(pending: Any, steps: Generator[Any, Any, Any]) -> None:
    if hasattr(pending, "close"):
        pending.close()  # never awaited: leave no warning behind
    steps.close()
    raise TypeError(
        "an async check cannot run on a sync call: make it a plain function, or use the async "
        "client"
    )


async def drive_async(steps: Generator[Any, Any, Any]) -> Any:
    """Run the steps awaiting calls and sleeps; the decisions are the sync driver's."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = steps.send(value) if error is None else steps.throw(error)
        except StopIteration as done:
            return done.value
        value = error = None
        try:
            if isinstance(step, Invoke):
                value = sdk_call(step.fn, step.request) if step.guarded else step.fn(step.request)
                if inspect.isawaitable(value):  # not a decorated async generator
                    value = await value
            elif isinstance(step, FirstChunk):
                value = await first_chunk_async(step.stream, step.reader)
            elif isinstance(step, FirstItem):
                value = await anext(step.generator, EMPTY)
            elif isinstance(step, Close):
                await _close(step.stream)
            elif isinstance(step, Sleep):
                await _sleep(step.seconds)
            else:  # an async check's awaitable
                value = await step
        except BaseException as exc:
            error = exc


async def _close(stream: Any) -> None:
    # SDK streams have an async close(); an async generator (Ollama's) has aclose().
    close = getattr(stream, "aclose", None) or getattr(stream, "close", None)
    if close is not None:
        with contextlib.suppress(Exception):  # the attempt failed already
            closing = close()
            if inspect.isawaitable(closing):
                await closing


async def _sleep(seconds: float) -> None:
    # anyio (imported by the openai and anthropic SDKs) sleeps under asyncio and trio alike.
    anyio = sys.modules.get("anyio")
    await (anyio.sleep(seconds) if anyio is not None else asyncio.sleep(seconds))


def run_sync(run: GuardedCall) -> Any:
    """Drive a guarded call with blocking sleeps."""
    error: BaseException | None = None
    try:
        result = drive_sync(attempts(run))
        if isinstance(result, Started):
            assert result.life is not None
            result = GuardedStream(result.result, result.iterator, result.held, result.life)
        quality.returned(run, result)
        return result
    except BaseException as exc:
        error = exc
        raise
    finally:
        if not run.deferred:
            run.finish(error)


async def run_async(run: GuardedCall) -> Any:
    """Drive a guarded call with async sleeps; the decisions are the same as the sync path."""
    error: BaseException | None = None
    try:
        result = await drive_async(attempts(run))
        if isinstance(result, Started):
            assert result.life is not None
            result = AsyncGuardedStream(result.result, result.iterator, result.held, result.life)
        quality.returned(run, result)
        return result
    except BaseException as exc:
        error = exc
        raise
    finally:
        if not run.deferred:
            run.finish(error)
