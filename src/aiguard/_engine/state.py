"""The engine's process-wide state, all of it: who is calling, and the test mode.

Guarded calls nest (a decorated function calling a wrapped client): the innermost guarded call
with an attempt in progress is the *frame*; nested calls never outlive its deadline and add
their cost to its ledger. Zero-code instrumentation lets a guarded client's own SDK call
through, so no call is guarded twice.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from aiguard._engine.ledger import Ledger


class Frame(Protocol):
    """What a nested guarded call needs of the one it runs in."""

    @property
    def deadline(self) -> float | None: ...

    @property
    def ledger(self) -> Ledger: ...


frame: ContextVar[Frame | None] = ContextVar("aiguard_frame", default=None)

# Set while a client adapter calls its SDK (an adapter that awaits its SDK sets it itself, for
# the whole await).
in_sdk: ContextVar[bool] = ContextVar("aiguardin_sdk", default=False)

# Told the response headers of the attempt in progress (a rate limit learns from them); set by
# the engine for the attempt, called by an adapter's HTTP hook.
rate_headers: ContextVar[Callable[[Any], None] | None] = ContextVar(
    "aiguard_rate_headers", default=None
)

# Set on an exception a guard gave up on after retrying, so an outer guard does not retry it again.
RETRIED = "_aiguard_retried"


def inside_client_call() -> bool:
    """Is this code running inside a guarded client's call to its SDK?"""
    return in_sdk.get()


def sdk_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` as a guarded client's own call to its SDK."""
    token = in_sdk.set(True)
    try:
        return fn(*args, **kwargs)
    finally:
        in_sdk.reset(token)


def current_deadline() -> float | None:
    """The deadline (on ``time.monotonic()``) of the innermost guarded call in progress."""
    call = frame.get()
    return None if call is None else call.deadline


class Testing:
    """``aiguard.testing.set_testing(True)`` makes every retry wait zero seconds."""

    active = False


testing = Testing()
