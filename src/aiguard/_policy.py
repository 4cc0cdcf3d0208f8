"""Policy objects: plain, immutable data that says how a guarded call behaves.

Nothing here performs a call. ``wrap`` and ``guard`` accept these as keywords, or bundled in a
reusable :class:`Policy`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiguard._breaker import Breaker
from aiguard._budget import Budget, _check_tag
from aiguard._capture import parse_mode
from aiguard._output import OutputSpec


def _check_seconds(what: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number of seconds, got {type(value).__name__}")
    if math.isnan(value) or value < 0:
        raise ValueError(f"{what} must be a non-negative number of seconds, got {value}")


class Failure(enum.Enum):
    """Classes of failure that decide retries and fallbacks.

    ``RATE_LIMIT`` and ``OUTAGE`` are transient and retried; ``CONTEXT_WINDOW`` and
    ``CONTENT_POLICY`` are not retried but may select a fallback; ``FATAL`` is raised at once.
    """

    RATE_LIMIT = "rate_limit"
    OUTAGE = "outage"
    CONTEXT_WINDOW = "context_window"
    CONTENT_POLICY = "content_policy"
    FATAL = "fatal"

    @property
    def transient(self) -> bool:
        return self is Failure.RATE_LIMIT or self is Failure.OUTAGE


DEFAULT_FALLBACK_ON = frozenset({Failure.RATE_LIMIT, Failure.OUTAGE, Failure.CONTEXT_WINDOW})


@dataclass(frozen=True, slots=True)
class Retry:
    """Retry transient failures with exponential backoff and jitter.

    The n-th wait is ``min(wait_max, wait_initial * wait_exp_base ** (n - 1) + U(0, wait_jitter))``
    unless the server said how long to wait (``Retry-After``), which wins. A server asking for more
    than ``max_retry_after`` seconds, or for more than the time left before the call's deadline,
    ends the retries on that target at once.

    Example::

        aiguard.wrap(OpenAI(), retry=aiguard.Retry(attempts=4, wait_initial=0.2))
    """

    attempts: int = 3
    wait_initial: float = 0.5
    wait_max: float = 20.0
    wait_jitter: float = 1.0
    wait_exp_base: float = 2.0
    max_retry_after: float = 120.0

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or isinstance(self.attempts, bool):
            raise TypeError(
                f"Retry(attempts=...) must be an int, got {type(self.attempts).__name__}"
            )
        if self.attempts < 1:
            raise ValueError(f"Retry(attempts={self.attempts}) must be at least 1 (1 = no retry)")
        for name in ("wait_initial", "wait_max", "wait_jitter", "max_retry_after"):
            _check_seconds(f"Retry({name}=...)", getattr(self, name))
        _check_seconds("Retry(wait_exp_base=...)", self.wait_exp_base)
        if self.wait_exp_base < 1:
            raise ValueError("Retry(wait_exp_base=...) must be at least 1")

    def backoff(self, retry_number: int, jitter: float) -> float:
        """The wait before retry number ``retry_number`` (1-based), ``jitter`` in [0, 1)."""
        exp = self.wait_initial * self.wait_exp_base ** (retry_number - 1)
        return min(self.wait_max, exp + jitter * self.wait_jitter)


NO_RETRY = Retry(attempts=1)
# The retry of a policy that names none. A wrapped client then follows its own retry setting
# (``max_retries``: attempts = max_retries + 1) with these waits; told apart by identity.
DEFAULT_RETRY = Retry()


@dataclass(frozen=True, slots=True)
class Target:
    """A fallback target: another model, optionally on another client.

    ``client`` of ``None`` means the client being wrapped. ``retry`` overrides the policy's retry
    for this target.

    Example::

        fallback=["gpt-4o-mini", aiguard.Target(client=azure_client, model="gpt-4o")]
    """

    model: str
    client: Any = None
    retry: Retry | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise TypeError(f"Target(model=...) must be a non-empty string, got {self.model!r}")
        if self.retry is not None and not isinstance(self.retry, Retry):
            raise TypeError("Target(retry=...) must be an aiguard.Retry or None")


@dataclass(frozen=True, slots=True)
class Policy:
    """A reusable bundle of the policy keywords ``wrap`` and ``guard`` accept.

    Example::

        strict = aiguard.Policy(retry=aiguard.Retry(attempts=4), timeout=30)
        client = aiguard.wrap(OpenAI(), policy=strict)
    """

    retry: Retry = DEFAULT_RETRY
    fallback: tuple[Target, ...] = ()
    timeout: float | None = None
    breaker: Breaker | None = None
    fallback_on: frozenset[Failure] = DEFAULT_FALLBACK_ON
    budget: Budget | None = None
    tag: str | None = None
    # Streams: ask for usage (hiding the extra chunk) and raise StreamTruncated on a cut stream.
    stream_usage: bool = True
    raise_on_truncation: bool = False
    # Input checks, run in order before the first attempt (see aiguard.checks).
    checks: tuple[Callable[..., Any], ...] = ()
    # Output validation: what the answer must be, and how often to re-ask (None: retry.attempts).
    output: OutputSpec | None = None
    reasks: int | None = None
    # Keep the SDK's own retries (zero-code instrumentation without a retry policy).
    sdk_retries: bool = False
    # Content capture for this policy's calls (a mode or True/False); None: the process's.
    capture: str | bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.retry, Retry):
            raise TypeError(
                f"retry= must be an aiguard.Retry (or None for no retries), got {self.retry!r}"
            )
        if self.timeout is not None:
            _check_seconds("timeout=", self.timeout)
            if self.timeout <= 0:
                raise ValueError(f"timeout={self.timeout} must be a positive number of seconds")
        if self.breaker is not None and not isinstance(self.breaker, Breaker):
            raise TypeError(f"breaker= must be an aiguard.Breaker, got {self.breaker!r}")
        if self.budget is not None and not isinstance(self.budget, Budget):
            raise TypeError(
                f"budget= must be an aiguard.Budget (e.g. aiguard.Budget(usd=5)), got "
                f"{self.budget!r}"
            )
        if self.tag is not None:
            _check_tag(self.tag)
        for check in self.checks:
            if not callable(check):
                raise TypeError(
                    f"checks= entries must be callables (messages, **context) -> None, such as "
                    f"aiguard.checks.NoSecrets(); got {check!r}"
                )
        if self.output is not None and not isinstance(self.output, OutputSpec):
            object.__setattr__(self, "output", OutputSpec(self.output))
        if self.reasks is not None and (
            not isinstance(self.reasks, int) or isinstance(self.reasks, bool) or self.reasks < 0
        ):
            raise TypeError(f"reasks= must be a whole number >= 0, got {self.reasks!r}")
        if self.capture is not None:
            parse_mode(self.capture)  # refuses an unknown mode at wrap time
        for name in ("stream_usage", "raise_on_truncation", "sdk_retries"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name}= must be True or False, got {getattr(self, name)!r}")

    def retry_for(self, target: Target | None) -> Retry:
        """The retry policy of a fallback target (its own, else the policy's)."""
        return target.retry if target is not None and target.retry is not None else self.retry

    @classmethod
    def build(
        cls,
        policy: Policy | str | None = None,
        *,
        retry: Any = ...,
        fallback: Any = ...,
        timeout: Any = ...,
        breaker: Any = ...,
        fallback_on: Any = ...,
        budget: Any = ...,
        tag: Any = ...,
        stream_usage: Any = ...,
        raise_on_truncation: Any = ...,
        checks: Any = ...,
        output: Any = ...,
        reasks: Any = ...,
        capture: Any = ...,
    ) -> Policy:
        """Merge explicit keywords over ``policy`` (``...`` means "not given").

        A ``str`` names a policy in the policy file (``aiguard.toml``; see
        :mod:`aiguard._policy_file`), read once and shared by everything that names it.
        """
        if isinstance(policy, str):
            # Imported here: the file layer builds policies, so it sits above this module.
            from aiguard._policy_file import named_policy

            policy = named_policy(policy)
        elif policy is not None and not isinstance(policy, Policy):
            raise TypeError(
                f"policy= must be an aiguard.Policy or the name of a policy in the policy file "
                f"(aiguard.toml), got {type(policy).__name__}"
            )
        base = policy if policy is not None else cls()
        return cls(
            retry=base.retry if retry is ... else (NO_RETRY if retry is None else retry),
            fallback=base.fallback if fallback is ... else _targets(fallback),
            timeout=base.timeout if timeout is ... else timeout,
            breaker=base.breaker if breaker is ... else breaker,
            fallback_on=base.fallback_on if fallback_on is ... else _failures(fallback_on),
            budget=base.budget if budget is ... else budget,
            tag=base.tag if tag is ... else tag,
            stream_usage=base.stream_usage if stream_usage is ... else stream_usage,
            raise_on_truncation=(
                base.raise_on_truncation if raise_on_truncation is ... else raise_on_truncation
            ),
            checks=base.checks if checks is ... else _checks(checks),
            output=base.output if output is ... else output,
            reasks=base.reasks if reasks is ... else reasks,
            capture=base.capture if capture is ... else capture,
        )


def _targets(fallback: Any) -> tuple[Target, ...]:
    if fallback is None:
        return ()
    if isinstance(fallback, str | Target):
        fallback = [fallback]
    if not isinstance(fallback, Iterable):
        raise TypeError(
            f"fallback= must be a list of model names or aiguard.Target, got {fallback!r}"
        )
    targets = []
    for item in fallback:
        if isinstance(item, str):
            if not item.strip():
                raise TypeError("fallback= model names must be non-empty strings")
            targets.append(Target(model=item))
        elif isinstance(item, Target):
            targets.append(item)
        else:
            raise TypeError(
                f"fallback= entries must be model names (str) or aiguard.Target, got {item!r}"
            )
    return tuple(targets)


def _checks(value: Any) -> tuple[Callable[..., Any], ...]:
    if value is None:
        return ()
    if callable(value):
        return (value,)
    if not isinstance(value, Iterable) or isinstance(value, str):
        raise TypeError(f"checks= must be a list of checks, got {value!r}")
    return tuple(value)


def _failures(value: Any) -> frozenset[Failure]:
    items = [value] if isinstance(value, str | Failure) else list(value)
    out = set()
    for item in items:
        try:
            out.add(item if isinstance(item, Failure) else Failure(item))
        except ValueError:
            names = ", ".join(repr(f.value) for f in Failure if f is not Failure.FATAL)
            raise ValueError(f"fallback_on= entries must be one of {names}, got {item!r}") from None
    return frozenset(out)
