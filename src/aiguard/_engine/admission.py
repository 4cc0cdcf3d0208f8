"""Before an attempt is sent: what a rate limit counts, and the shared store asked ahead.

A rate limit counts a request's tokens as providers do (prompt plus the most it may write). On
a shared store, the next target's circuit, its rate-limit count and the budgets' holds are
asked in one round trip before the routing asks each of them (see :func:`aiguard._store.prefetch`).
"""

from __future__ import annotations

from typing import Any

from aiguard import _store
from aiguard._engine.contract import Endpoint, Route
from aiguard._engine.ledger import Ledger
from aiguard._messages import DEFAULT_MAX_OUTPUT_TOKENS
from aiguard._policy import Policy
from aiguard._telemetry import report_fault


def tokens(route: Route, request: dict[str, Any], ledger: Ledger) -> int:
    """The request's tokens as providers' rate limits count them: prompt + max output."""
    if not route.priced:
        return 0
    try:
        if ledger.estimate is None:
            inputs, outputs = route.estimate(request)
            ledger.estimate = (inputs, DEFAULT_MAX_OUTPUT_TOKENS if outputs is None else outputs)
        return sum(ledger.estimate)
    except Exception as exc:  # a fault in aiguard's estimate must not stop the call
        report_fault("estimating a call's tokens", exc)
        return 0


def prefetch(
    endpoints: list[Endpoint],
    index: int,
    policy: Policy,
    ledger: Ledger,
    route: Route,
    request: dict[str, Any],
) -> None:
    """On a shared store, ask the target at ``index`` about its circuit, rate limit and
    budgets in one round trip (their own calls then take the answers)."""
    if index >= len(endpoints):
        return
    endpoint = endpoints[index]
    plans = []
    try:
        if policy.breaker is not None:
            plans.append(policy.breaker.plan(endpoint.fleet_key))
        if policy.rate_limit is not None:
            plans.append(policy.rate_limit.plan(endpoint.fleet_key, tokens(route, request, ledger)))
        if ledger.budgets and route.priced:
            amount = ledger.worst_case(endpoint, lambda: route.estimate(request))
            if amount:
                plans.extend(budget.plan(amount) for budget in ledger.budgets)
        found = [plan for plan in plans if plan is not None]
        if len(found) > 1:
            _store.prefetch(found)
    except Exception as exc:  # never into the user's call: each asks on its own then
        report_fault("asking the store ahead", exc)
