"""The cost ledger of one guarded call: reserve, charge, release, and the roll-up.

Before each attempt the worst case of the request is reserved on every budget in force (or the
call is refused, nothing sent); after it, the reservation is settled to the real cost, or kept
whole when the cost cannot be known. What the call cost (its attempts and the guarded calls
nested in it) rolls up into the enclosing call's ledger when it ends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from aiguard import prices
from aiguard._budget import Budget
from aiguard._engine.contract import Endpoint
from aiguard._errors import AIGuardError
from aiguard._messages import DEFAULT_MAX_OUTPUT_TOKENS
from aiguard._telemetry import report_fault
from aiguard._types import Usage

ZERO = Decimal(0)
_lock = threading.Lock()  # nested calls may finish on other threads


class Ledger:
    """What one guarded call holds on budgets and what it cost."""

    __slots__ = ("budgets", "cost", "costed", "estimate", "leases", "parent")

    def __init__(self, budgets: tuple[Budget, ...], parent: Ledger | None) -> None:
        self.budgets = budgets
        self.parent = parent
        self.cost = ZERO  # over this call's attempts and the guarded calls nested in it
        self.costed = False
        self.estimate: tuple[int, int] | None = None  # the request's token bounds, made once
        # The attempt in progress's holds on shared budgets (attempts run one at a time).
        self.leases: list[Any] = []

    def worst_case(
        self, endpoint: Endpoint, estimate: Callable[[], tuple[int, int | None]]
    ) -> Decimal:
        """An attempt's worst-case cost on ``endpoint`` (zero: unknown, settled after)."""
        try:
            price = prices.lookup(endpoint.price_provider, endpoint.model)
            if price is None or not price.per_token:
                return ZERO  # unknown price or compute time: settled after the call
            if self.estimate is None:
                inputs, outputs = estimate()
                self.estimate = (inputs, DEFAULT_MAX_OUTPUT_TOKENS if outputs is None else outputs)
            amount: Decimal = price.worst_case(*self.estimate)
            return amount
        except Exception as exc:  # a fault in aiguard's pricing must not stop the call
            report_fault("estimating a call's cost", exc)
            return ZERO

    def reserve(
        self, endpoint: Endpoint, estimate: Callable[[], tuple[int, int | None]]
    ) -> Decimal:
        """Hold an attempt's worst-case cost on every budget, or raise BudgetExceeded (after
        releasing what it held). ``estimate`` gives the request's token bounds."""
        amount = self.worst_case(endpoint, estimate)
        if not amount:
            return ZERO
        leases: list[Any] = []
        try:
            for budget in self.budgets:
                leases.append(budget.reserve(amount, endpoint.model))
        except AIGuardError:  # BudgetExceeded, or StoreUnavailable (fail="closed")
            for budget, lease in zip(self.budgets, leases, strict=False):
                budget.settle(amount, ZERO, lease)
            raise
        self.leases = leases
        return amount

    def _settle(self, reserved: Decimal, charged: Decimal) -> None:
        leases, self.leases = self.leases, []
        for budget, lease in zip(self.budgets, leases or [None] * len(self.budgets), strict=True):
            budget.settle(reserved, charged, lease)

    def charge(
        self,
        endpoint: Endpoint,
        reserved: Decimal,
        usage: Usage | None,
        response_model: Any,
        seconds: float,
        unknown_is_worst: bool = False,
    ) -> tuple[Decimal | None, Decimal]:
        """Price an answered attempt, settle its reservation and add it to the total.

        Returns its cost (None: unknown) and what budgets were charged. An answer whose cost
        cannot be known (no usage reported; a stream, ``unknown_is_worst``, whose usage may be
        partial, cut before its final event) is charged its reserved worst case: a proxy that
        strips usage must not make a hard budget meaningless.
        """
        cost: Decimal | None = None
        try:
            price = None
            if isinstance(response_model, str) and response_model != endpoint.model:
                price = prices.lookup(endpoint.price_provider, response_model)
            if price is None:
                price = prices.lookup(endpoint.price_provider, endpoint.model)
            if price is not None:
                partial = usage is None or usage.output_tokens is None
                if not (unknown_is_worst and partial and price.per_token):
                    cost = price.cost(usage, seconds)
        except Exception as exc:
            report_fault("pricing a call", exc)
            cost = reserved or None  # a hard budget assumes the worst
        charged = reserved if cost is None else cost
        self._settle(reserved, charged)
        if charged or cost is not None:
            self.add(charged)
        return cost, charged

    def release(self, reserved: Decimal) -> None:
        """An attempt that failed reported no usage: it costs nothing."""
        if reserved:
            self._settle(reserved, ZERO)

    def add(self, cost: Decimal) -> None:
        with _lock:
            self.cost += cost
            self.costed = True

    def close(self) -> None:
        """The call ended: what it cost counts in the enclosing call's total too."""
        if self.parent is not None and self.costed:
            self.parent.add(self.cost)

    def remaining(self) -> Decimal | None:
        """The least any budget in force has left (None: no budget)."""
        return min(b.remaining_seen() for b in self.budgets) if self.budgets else None


def cost_basis(endpoint: Endpoint) -> str:
    """``aiguard.cost.basis``: ``compute_time`` for a model priced by the hour, else ``tokens``."""
    price = prices.lookup(endpoint.price_provider, endpoint.model)
    return "compute_time" if price is not None and not price.per_token else "tokens"
