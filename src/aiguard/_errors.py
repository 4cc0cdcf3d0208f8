"""aiguard's own refusals.

Provider failures are never wrapped: when retries and fallbacks are spent the caller gets the
provider's own exception. The classes here are raised only when aiguard itself refuses to go on,
and each message says what happened and what to do about it.
"""

from __future__ import annotations

from decimal import Decimal


class AIGuardError(Exception):
    """Base class of every refusal aiguard raises on its own account.

    Example::

        try:
            client.chat.completions.create(model="gpt-4o", messages=msgs)
        except aiguard.AIGuardError as refusal:
            log.warning("aiguard refused the call: %s", refusal)
    """


class CheckFailed(AIGuardError, ValueError):
    """A check on the call's input refused it before anything was sent.

    ``check`` names the check and ``reason`` says why; neither ever repeats the offending value,
    so the message is safe to log.
    """

    def __init__(self, check: str, reason: str) -> None:
        self.check = check
        self.reason = reason
        super().__init__(f"{check} refused the call: {reason}. Nothing was sent.")


class CircuitOpen(AIGuardError):
    """Every target of the call is behind an open circuit breaker; no request was sent.

    ``targets`` lists the ``(model, seconds until a probe is allowed)`` of each skipped target.
    """

    def __init__(self, targets: list[tuple[str, float]]) -> None:
        self.targets = targets
        parts = ", ".join(f"{model!r} (retry in {wait:.1f}s)" for model, wait in targets)
        super().__init__(
            f"circuit open for every target: {parts}. The targets failed repeatedly; aiguard "
            "skips them until their breaker's reset_after passes. Add a fallback on another "
            "provider, or raise Breaker(failures=...) if these failures were expected."
        )


class DeadlineExceeded(AIGuardError, TimeoutError):
    """The guarded call's ``timeout`` passed before it could finish.

    ``timeout`` is the whole call's budget in seconds and ``attempts`` how many requests were made.
    The last provider error, if any, is the ``__cause__``.
    """

    def __init__(self, timeout: float, attempts: int) -> None:
        self.timeout = timeout
        self.attempts = attempts
        super().__init__(
            f"the guarded call's deadline of {timeout:g}s passed after {attempts} attempt(s). "
            "Raise timeout= on the policy, or lower Retry(attempts=...) so retries fit in it."
        )


class BudgetExceeded(AIGuardError):
    """A budget refused the call before it was sent: its worst-case cost does not fit.

    ``limit``, ``spent`` and ``reserved`` (held by calls in flight) describe the budget, and
    ``estimate`` the call's worst case, all in USD (``decimal.Decimal``); ``per_call`` is true
    when the budget's ``per_call_usd`` refused it. Nothing was sent and nothing was charged.
    """

    def __init__(
        self,
        budget: str,
        limit: Decimal,
        spent: Decimal,
        reserved: Decimal,
        estimate: Decimal,
        model: str,
        per_call: bool = False,
    ) -> None:
        self.budget = budget
        self.limit = limit
        self.spent = spent
        self.reserved = reserved
        self.estimate = estimate
        self.model = model
        self.per_call = per_call
        if per_call:
            what = (
                f"the call to {model!r} may cost up to ${estimate:.6f}, more than {budget}'s "
                f"per-call limit of ${limit:.6f}"
            )
            advice = "Lower max_tokens or shorten the input, or raise Budget(per_call_usd=...)."
        else:
            what = (
                f"the call to {model!r} may cost up to ${estimate:.6f} and {budget} has "
                f"${max(limit - spent - reserved, Decimal(0)):.6f} left (limit ${limit:.6f}, "
                f"spent ${spent:.6f}, ${reserved:.6f} reserved by calls in flight)"
            )
            advice = "Raise Budget(usd=...), or lower max_tokens so the worst case fits."
        super().__init__(f"budget exceeded: {what}. Nothing was sent. {advice}")


class StreamTruncated(AIGuardError):
    """A stream ended without saying it was complete (no finish reason, no final event).

    Servers and proxies sometimes cut a stream cleanly, and SDKs do not notice: the answer is
    silently incomplete. aiguard always records it on the span (``error.type``); it raises this
    only when asked to, with ``raise_on_truncation=True``.
    """

    def __init__(self, model: str, empty: bool = False) -> None:
        self.model = model
        self.empty = empty
        if empty:  # retried like an outage; raised when the retries and fallbacks ran out
            super().__init__(
                f"the stream from {model!r} ended cleanly before its first chunk: nothing "
                "arrived, on every attempt. The server or a proxy cut it; check the server."
            )
            return
        super().__init__(
            f"the stream from {model!r} ended without a finish reason: the answer is incomplete. "
            "The server or a proxy cut it; retry the call, or treat what arrived as partial."
        )


class OutputInvalid(AIGuardError):
    """The model's answer did not validate against ``output=``, and the re-asks ran out.

    ``raw`` is the last answer as the model gave it, ``errors`` what was wrong with it (locations
    and messages, never the answer itself), ``asks`` how many times the model was asked.
    """

    def __init__(self, raw: object, errors: list[str], asks: int) -> None:
        self.raw = raw
        self.errors = errors
        self.asks = asks
        shown = "; ".join(errors[:5]) + (f"; and {len(errors) - 5} more" if len(errors) > 5 else "")
        super().__init__(
            f"the answer did not validate after {asks} ask(s): {shown}. The last answer is in "
            ".raw. Make the prompt state the format, raise reasks=, or loosen output=."
        )


class RateLimited(AIGuardError):
    """A rate limit (:class:`aiguard.RateLimit`) had no room for the call on any target, and
    the call could not wait for it; no request was sent.

    ``targets`` lists the ``(model, seconds until room is back)`` of each target tried;
    ``retry_after`` is the shortest of those waits.
    """

    def __init__(self, targets: list[tuple[str, float]]) -> None:
        self.targets = targets
        self.retry_after = min((wait for _, wait in targets), default=0.0)
        parts = ", ".join(f"{model!r} (room in {wait:.1f}s)" for model, wait in targets)
        super().__init__(
            f"rate limit reached for every target: {parts}. Nothing was sent. Retry after "
            f"{self.retry_after:.1f}s, give the call a longer timeout= so it can wait, or add a "
            "fallback on another provider."
        )


class StoreUnavailable(AIGuardError):
    """The shared store (Redis) of a budget, breaker or rate limit with ``fail="closed"`` could
    not be reached, so aiguard refused the call; no request was sent.

    ``what`` names the object (``budget 'tenant-42'``) and ``store`` the store (its address,
    never its password).
    """

    def __init__(self, what: str, store: str) -> None:
        self.what = what
        self.store = store
        super().__init__(
            f"the store {store} of {what} is unreachable and it has fail='closed': the call was "
            "refused. Nothing was sent. aiguard retries the store by itself; use fail='open' to "
            "keep serving on process-local state while it is down."
        )
