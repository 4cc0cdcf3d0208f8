"""Hard spending limits, and the tag spend is attributed to.

A :class:`Budget` is never exceeded: before a call is sent its worst-case cost is reserved, and the
call is refused when the reservation does not fit; afterwards the reservation is settled to the
real cost. Budgets apply per wrapped client or decorated function (``budget=``) and to any code in
a ``with aiguard.budget(...)`` block; every budget in force must have room for the call.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar, Token
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, Generic, Literal, TypeVar

from aiguard import _store
from aiguard._errors import BudgetExceeded

_ZERO = Decimal(0)
T = TypeVar("T")

# Budgets of the enclosing ``with aiguard.budget(...)`` blocks and guarded calls, outermost first.
active: ContextVar[tuple[Budget, ...]] = ContextVar("aiguard_budgets", default=())
# The tag of the enclosing ``with aiguard.tag(...)`` block.
current_tag: ContextVar[str | None] = ContextVar("aiguard_tag", default=None)


def _usd(name: str, value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        raise TypeError(f"{name} must be a number of USD, got {value!r}")
    try:
        amount = Decimal(str(value))
    except ArithmeticError:
        raise ValueError(f"{name} must be a number of USD, got {value!r}") from None
    if not amount.is_finite() or amount <= 0:
        raise ValueError(f"{name} must be a positive, finite number of USD, got {value!r}")
    return amount


Period = Literal["hour", "day", "month"]
_NANO = Decimal(10) ** 9  # shared budgets count whole nano-USD


def window(per: Period | None, now: float | None = None) -> tuple[str, int]:
    """The UTC window a spend falls in (``"all"`` without ``per``) and when its count may be
    dropped (a day after it ends; 0: never)."""
    if per is None:
        return "all", 0
    t = time.gmtime(now if now is not None else time.time())
    if per == "hour":
        label, length = time.strftime("%Y%m%d%H", t), 3600
    elif per == "day":
        label, length = time.strftime("%Y%m%d", t), 86400
    else:
        label, length = time.strftime("%Y%m", t), 31 * 86400
    return label, int(now if now is not None else time.time()) + length + 86400


def _nano(amount: Decimal, rounding: str = ROUND_CEILING) -> int:
    return int((amount * _NANO).to_integral_value(rounding))


class _Lease:
    """A reservation held on a shared store (settled there, once)."""

    __slots__ = ("id", "store")

    def __init__(self, store: Any, lease: str) -> None:
        self.store = store
        self.id = lease


class Budget:
    """A spending limit in USD that guarded calls reserve against before they are sent.

    ``spent`` is what settled calls cost, ``reserved`` what calls in flight may still cost, and
    ``remaining`` what is left for new calls. ``per_call_usd`` also refuses any single call whose
    worst case exceeds it. ``per`` makes the limit apply per UTC ``"hour"``, ``"day"`` or
    ``"month"`` (none: for ever). Safe to share between threads and asyncio tasks.

    With ``store=`` (a ``redis://`` URL, a ``redis.Redis`` or ``redis.asyncio.Redis``; or the
    default store, see ``aiguard.configure``) budgets of the same ``name`` in every process
    share one account: it is never exceeded whatever the number of processes. A reservation is
    a lease of ``lease`` seconds: a process that dies holding one frees it when it ends. If the
    store fails, ``fail="open"`` keeps serving on this process's own account, ``"closed"``
    refuses calls with :class:`aiguard.StoreUnavailable` (see ``docs/fleet.md``).

    Copies of a policy share its budget; a pickled budget arrives as an independent budget with
    the same limit and spend (a shared one: the same account, through its store URL).

    Example::

        monthly = aiguard.Budget(usd=50.00, per_call_usd=0.25, name="tenant-42")
        client = aiguard.wrap(OpenAI(), budget=monthly)
        print(monthly.spent, monthly.remaining)
        daily = aiguard.Budget(usd=20, name="tenant-42", per="day", store="redis://cache:6379")
    """

    def __init__(
        self,
        usd: float | Decimal | str,
        *,
        per_call_usd: float | Decimal | str | None = None,
        name: str | None = None,
        per: Period | None = None,
        store: object = None,
        fail: _store.Fail = "open",
        lease: float = 600.0,
    ) -> None:
        self.limit = _usd("Budget(usd=...)", usd)
        self.per_call = None if per_call_usd is None else _usd("per_call_usd", per_call_usd)
        if name is not None:
            _store.check_name(name, "Budget")
        elif store is not None:
            raise TypeError("Budget(store=...) needs name=...: budgets share state by name")
        self.name = name
        if per not in (None, "hour", "day", "month"):
            raise ValueError(f"Budget(per=...) must be 'hour', 'day', 'month' or None, got {per!r}")
        self.per = per
        if isinstance(lease, bool) or not isinstance(lease, int | float):
            raise TypeError(f"Budget(lease=...) must be a number of seconds, got {lease!r}")
        if not math.isfinite(lease) or not 0 < lease <= 1e7:
            raise ValueError(f"Budget(lease={lease}) must be from 0 to 1e7 seconds")
        self.lease = float(lease)
        self._shared = _store.Shared(store, fail, "Budget")
        self._spent = _ZERO
        self._reserved = _ZERO
        self._window = window(per)[0]
        self._seen: tuple[Decimal, Decimal] | None = None  # the store's, at the last reservation
        self._refusals = 0
        self._lock = threading.Lock()

    def _store(self) -> Any:
        return self._shared.store(self.name is not None)

    def _roll(self) -> None:
        """A new window began: this process's own account starts again (under the lock)."""
        if self.per is not None:
            current = window(self.per)[0]
            if current != self._window:
                self._window, self._spent = current, _ZERO

    def _read(self) -> tuple[Decimal, Decimal]:
        """(spent, reserved): the store's when shared and up, else this process's."""
        store = self._store()
        if store is not None:
            try:
                store.flush()  # this process's settles first
                spent, held = store.read(self.name, window(self.per)[0])
                return Decimal(spent) / _NANO, Decimal(held) / _NANO
            except _store.StoreDown:
                pass
        with self._lock:
            self._roll()
            return self._spent, self._reserved

    @property
    def spent(self) -> Decimal:
        """USD charged by calls that finished (in the current window, with ``per``)."""
        return self._read()[0]

    @property
    def reserved(self) -> Decimal:
        """USD held for calls in flight (their worst case)."""
        return self._read()[1]

    @property
    def remaining(self) -> Decimal:
        """USD left for new calls (never negative)."""
        spent, reserved = self._read()
        return max(self.limit - spent - reserved, _ZERO)

    def remaining_seen(self) -> Decimal:
        """``remaining`` as last seen, without asking the store again (for telemetry)."""
        seen = self._seen
        if seen is None or self._store() is None:
            with self._lock:
                self._roll()
                return max(self.limit - self._spent - self._reserved, _ZERO)
        return max(self.limit - seen[0] - seen[1], _ZERO)

    @property
    def refusals(self) -> int:
        """How many calls this budget refused."""
        return self._refusals

    # A budget is a shared account, not a value: copying a policy (copy, deepcopy) must not
    # split it, so a copy is the budget itself. Pickling carries the limit and what is spent to
    # a new, independent budget (another process cannot hold this one's lock or reservations:
    # share budgets across processes through Redis).
    def __copy__(self) -> Budget:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Budget:
        return self

    def __getstate__(self) -> dict[str, Any]:
        with self._lock:
            state = self.__dict__.copy()
        del state["_lock"]
        state["_reserved"] = _ZERO  # calls in flight settle here, not in the copy
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        per = f" per {self.per}" if self.per else ""
        return f"<aiguard.Budget{label} ${self._spent} of ${self.limit}{per} spent>"

    def _label(self) -> str:
        return f"budget {self.name!r}" if self.name else "the budget"

    def _reservation(self, amount: Decimal) -> tuple[Any, ...]:
        """The shared store's arguments to hold ``amount`` under a new lease."""
        return (
            self.name,
            window(self.per)[0],
            _nano(amount),
            _nano(self.limit, ROUND_FLOOR),
            _store.new_id(),
            int(self.lease * 1000),
        )

    def plan(self, amount: Decimal) -> tuple[Any, ...] | None:
        """The store operation :meth:`reserve` will make, to send ahead (None: nothing to
        send: in-process, the store down, or refused per call)."""
        store = self._store()
        if store is None or store.down or (self.per_call is not None and amount > self.per_call):
            return None
        return (store, *store.plan_reserve(*self._reservation(amount)))

    def reserve(self, amount: Decimal, model: str) -> _Lease | None:
        """Hold ``amount`` for a call, or raise :class:`BudgetExceeded` and hold nothing.

        Returns the lease to settle when the hold is on a shared store (None: in-process).
        """
        if self.per_call is not None and amount > self.per_call:
            with self._lock:
                self._refusals += 1
                spent, reserved = self._spent, self._reserved
            raise BudgetExceeded(self._label(), self.per_call, spent, reserved, amount, model, True)
        store = self._store()
        if store is not None:
            asked, sent = self._reservation(amount), not store.down
            try:
                ok, spent_n, held_n, lease = store.reserve(*asked)
            except _store.StoreDown:
                if sent:  # its answer never came: it may land late
                    store.forget_hold(asked[0], asked[1], asked[4])
                if self._shared.fail == "closed":
                    with self._lock:
                        self._refusals += 1
                    raise self._shared.refuse(self._label(), store) from None
            else:
                spent, reserved = Decimal(spent_n) / _NANO, Decimal(held_n) / _NANO
                if ok:
                    self._seen = (spent, reserved)
                    return _Lease(store, lease)
                with self._lock:
                    self._refusals += 1
                raise BudgetExceeded(self._label(), self.limit, spent, reserved, amount, model)
        with self._lock:
            self._roll()
            if self._spent + self._reserved + amount > self.limit:
                self._refusals += 1
                raise BudgetExceeded(
                    self._label(), self.limit, self._spent, self._reserved, amount, model
                )
            self._reserved += amount
        return None

    def settle(self, reserved: Decimal, cost: Decimal, lease: _Lease | None = None) -> None:
        """Release a reservation and charge what the call really cost.

        ``lease`` is what :meth:`reserve` returned. A shared settle the store could not take
        is kept and sent when the store answers again (it never charges twice), and counted
        in this process's own account meanwhile.
        """
        store = lease.store if lease is not None else (self._store() if cost else None)
        if store is not None:
            if lease is None and reserved:  # held in this process while the store was down
                with self._lock:
                    self._reserved = max(self._reserved - reserved, _ZERO)
            reserved = _ZERO
            win, expire = window(self.per)
            lease_id = lease.id if lease is not None else _store.new_id()
            try:
                store.settle(self.name, win, expire, lease_id, _nano(cost))
                return
            except _store.StoreDown:
                pass  # kept by the store for later; this process's account counts it now
        with self._lock:
            self._roll()
            self._reserved = max(self._reserved - reserved, _ZERO)
            self._spent += cost

    def _scope(self) -> _Scope[Budget]:
        def enter() -> Token[Any]:
            outer = active.get()
            return active.set(outer if self in outer else (*outer, self))

        return _Scope(enter, active, self, ())


class _Scope(Generic[T]):
    """A ``with`` / ``async with`` block that sets a context variable for the code inside.

    It may be left in another context than the one it was entered in: entered in a web
    handler, left in the streamed response's generator, which the server runs as another task
    (a copy of the handler's context). There a context variable's token cannot be used, so the
    value the block replaced is restored by hand, if the variable still holds what the block set.
    """

    __slots__ = ("_default", "_enter", "_set", "_token", "_value", "_var")

    def __init__(
        self, enter: Callable[[], Token[Any]], var: ContextVar[Any], value: T, default: Any
    ) -> None:
        self._enter = enter
        self._var = var
        self._value = value
        self._default = default  # the variable's default, for a block entered where it was unset
        self._token: Token[Any] | None = None
        self._set: Any = None

    def __enter__(self) -> T:
        if self._token is not None:
            raise RuntimeError("this aiguard scope is already entered; make a new one per block")
        self._token = self._enter()
        self._set = self._var.get()
        return self._value

    def __exit__(self, *exc: object) -> None:
        token, self._token = self._token, None
        if token is None:
            return
        try:
            self._var.reset(token)
        except ValueError:  # entered in another context (a response generator's task)
            if self._var.get() is self._set:
                old = token.old_value
                self._var.set(self._default if old is Token.MISSING else old)
        finally:
            self._set = None

    async def __aenter__(self) -> T:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__()


def budget(
    usd: float | Decimal | str | Budget | None = None,
    *,
    per_call_usd: float | Decimal | str | None = None,
    name: str | None = None,
) -> _Scope[Budget]:
    """A block in which every guarded call also counts against a budget (sync or async code).

    Pass a limit to make a new :class:`Budget`, or an existing one to apply it again (a tenant's
    budget shared across requests). Nested blocks all apply; the block gives the budget.

    Example::

        with aiguard.budget(usd=2.00) as b:
            answer = client.chat.completions.create(model="gpt-4o", messages=msgs)
        print(b.spent, b.remaining)
    """
    if isinstance(usd, Budget):
        if per_call_usd is not None or name is not None:
            raise TypeError("aiguard.budget(existing_budget) takes no other arguments")
        return usd._scope()
    if usd is None:
        raise TypeError("aiguard.budget() needs usd=..., a limit in USD, or an aiguard.Budget")
    return Budget(usd, per_call_usd=per_call_usd, name=name)._scope()


def _check_tag(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 128:
        raise TypeError(
            f"a tag must be a non-empty string of at most 128 characters, got {value!r}; keep "
            "tags few and fixed (a feature or tenant name): each one is a metric series"
        )
    return value


def tag(name: str) -> _Scope[str]:
    """Attribute the spend of every guarded call in the block to ``name`` (``aiguard.tag``).

    Tags are metric attributes, so keep them few: a feature, a tenant tier, never a user id.

    Example::

        with aiguard.tag("summaries"):
            client.chat.completions.create(model="gpt-4o-mini", messages=msgs)
    """
    checked = _check_tag(name)
    return _Scope(lambda: current_tag.set(checked), current_tag, checked, None)
