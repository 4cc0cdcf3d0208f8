"""Policy objects: plain, immutable data that says how a guarded call behaves.

Nothing here performs a call. ``wrap`` and ``guard`` accept these as keywords, or bundled in a
reusable :class:`Policy`.
"""

from __future__ import annotations

import enum
import inspect
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any

from aiguard._breaker import Breaker
from aiguard._budget import Budget, _check_tag
from aiguard._output import OutputSpec
from aiguard._quality_spec import Review, evaluators, fraction
from aiguard._quality_spec import review as _review
from aiguard._ratelimit import RateLimit

# Content capture modes (OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT); a policy may set one.
MODES = ("NO_CONTENT", "SPAN_ONLY", "EVENT_ONLY", "SPAN_AND_EVENT")


def parse_mode(value: object) -> tuple[bool, bool]:
    """(on spans, as events) for a mode name; raises ValueError naming the valid ones."""
    if isinstance(value, bool):
        return value, False
    text = str(value).strip().upper()
    if text in ("TRUE", "1"):
        return True, False
    if text in ("", "FALSE", "0", "NO_CONTENT"):
        return False, False
    if text not in MODES:
        raise ValueError(f"capture_content must be one of {', '.join(MODES)} (or True/False)")
    return text in ("SPAN_ONLY", "SPAN_AND_EVENT"), text in ("EVENT_ONLY", "SPAN_AND_EVENT")


# The longest wait or deadline aiguard takes (about 31 years): beyond it the clocks and socket
# timeouts underneath overflow, so a larger value would fail every call instead of this one.
MAX_SECONDS = 1e9


def _check_seconds(what: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number of seconds, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or value > MAX_SECONDS:
        raise ValueError(
            f"{what} must be a finite number of seconds from 0 to {MAX_SECONDS:g} "
            f"(about 31 years), got {value}"
        )


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
        try:
            exp = self.wait_initial * float(self.wait_exp_base) ** (retry_number - 1)
        except OverflowError:  # many attempts: the exponential passed any float long ago
            exp = math.inf if self.wait_initial else 0.0
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


@dataclass(frozen=True, slots=True, init=False)
class Policy:
    """A reusable bundle of the policy keywords ``wrap`` and ``guard`` accept.

    It accepts exactly what they accept, in the same forms (``fallback="gpt-4o-mini"``,
    ``fallback_on="outage"``, ``retry=None``, a single check), and keeps them normalised:
    ``fallback`` a tuple of :class:`Target`, ``fallback_on`` a frozenset of :class:`Failure`,
    ``checks`` a tuple. A wrong value raises ``TypeError`` or ``ValueError`` naming the keyword.

    Example::

        strict = aiguard.Policy(retry=aiguard.Retry(attempts=4), timeout=30, fallback="gpt-4o-mini")
        client = aiguard.wrap(OpenAI(), policy=strict)
    """

    retry: Retry
    fallback: tuple[Target, ...]
    timeout: float | None
    breaker: Breaker | None
    fallback_on: frozenset[Failure]
    budget: Budget | None
    tag: str | None
    # Streams: ask for usage (hiding the extra chunk) and raise StreamTruncated on a cut stream.
    stream_usage: bool
    raise_on_truncation: bool
    # Input checks, run in order before the first attempt (see aiguard.checks).
    checks: tuple[Callable[..., Any], ...]
    # Output validation: what the answer must be, and how often to re-ask (None: retry.attempts).
    output: OutputSpec | None
    reasks: int | None
    # Keep the SDK's own retries (zero-code instrumentation without a retry policy).
    sdk_retries: bool
    # Content capture for this policy's calls (a mode or True/False); None: the process's.
    capture: str | bool | None
    # Online evaluators, run off the call path on a ``sample`` fraction of calls; human review.
    evaluate: tuple[Callable[..., Any], ...]
    sample: float
    review: Review | None
    # Requests and tokens per minute per target (see aiguard.RateLimit).
    rate_limit: RateLimit | None

    def __init__(
        self,
        retry: Retry | None = DEFAULT_RETRY,
        fallback: Iterable[str | Target] | str | Target | None = (),
        timeout: float | None = None,
        breaker: Breaker | None = None,
        fallback_on: Iterable[Failure | str] | Failure | str = DEFAULT_FALLBACK_ON,
        budget: Budget | None = None,
        tag: str | None = None,
        stream_usage: bool = True,
        raise_on_truncation: bool = False,
        checks: Iterable[Callable[..., Any]] | Callable[..., Any] | None = (),
        output: Any = None,
        reasks: int | None = None,
        sdk_retries: bool = False,
        capture: str | bool | None = None,
        evaluate: Iterable[Callable[..., Any]] | Callable[..., Any] | None = (),
        sample: float = 1.0,
        review: Review | None = None,
        rate_limit: RateLimit | None = None,
    ) -> None:
        set_ = object.__setattr__
        set_(self, "retry", _retry(retry))
        set_(self, "fallback", _targets(fallback))
        set_(self, "timeout", _timeout(timeout))
        if breaker is not None and not isinstance(breaker, Breaker):
            raise TypeError(
                f"breaker= must be an aiguard.Breaker (e.g. aiguard.Breaker(failures=5)) or "
                f"None, got {breaker!r}"
            )
        set_(self, "breaker", breaker)
        set_(self, "fallback_on", _failures(fallback_on))
        if budget is not None and not isinstance(budget, Budget):
            raise TypeError(
                f"budget= must be an aiguard.Budget (e.g. aiguard.Budget(usd=5)) or None, got "
                f"{budget!r}"
            )
        set_(self, "budget", budget)
        set_(self, "tag", None if tag is None else _check_tag(tag))
        for name, flag in (
            ("stream_usage", stream_usage),
            ("raise_on_truncation", raise_on_truncation),
            ("sdk_retries", sdk_retries),
        ):
            if not isinstance(flag, bool):
                raise TypeError(f"{name}= must be True or False, got {flag!r}")
            set_(self, name, flag)
        set_(self, "checks", _checks(checks))
        set_(
            self,
            "output",
            output if output is None or isinstance(output, OutputSpec) else OutputSpec(output),
        )
        if reasks is not None and (
            not isinstance(reasks, int) or isinstance(reasks, bool) or reasks < 0
        ):
            raise TypeError(f"reasks= must be a whole number >= 0 or None, got {reasks!r}")
        set_(self, "reasks", reasks)
        if capture is not None:
            parse_mode(capture)  # refuses an unknown mode at wrap time
        set_(self, "capture", capture)
        set_(self, "evaluate", evaluators(evaluate))
        set_(self, "sample", fraction("sample=", sample))
        set_(self, "review", _review(review))
        if rate_limit is not None and not isinstance(rate_limit, RateLimit):
            raise TypeError(
                f"rate_limit= must be an aiguard.RateLimit (e.g. aiguard.RateLimit(rpm=500)) or "
                f"None, got {rate_limit!r}"
            )
        set_(self, "rate_limit", rate_limit)

    def retry_for(self, target: Target | None) -> Retry:
        """The retry policy of a fallback target (its own, else the policy's)."""
        return target.retry if target is not None and target.retry is not None else self.retry

    @classmethod
    def build(cls, policy: Policy | str | None = None, **given: Any) -> Policy:
        """Merge explicit keywords over ``policy`` (``...`` means "not given").

        The keywords are those of :class:`Policy`, in any form it accepts; ``wrap``, ``guard``
        and the policy file all come through here, so they accept and refuse the same values.
        A ``str`` names a policy in the policy file (``aiguard.toml``), read once and shared by
        everything that names it: ``aiguard.Policy.build("default")``.
        """
        policy = resolve(policy)
        if policy is not None and not isinstance(policy, Policy):
            raise TypeError(
                f"policy= must be an aiguard.Policy or the name of a policy in the policy file "
                f"(aiguard.toml), got {type(policy).__name__}"
            )
        given = {key: value for key, value in given.items() if value is not ...}
        if not given:
            return policy if policy is not None else cls()
        if policy is None:
            return cls(**given)
        merged = {f.name: getattr(policy, f.name) for f in fields(cls)}
        return cls(**(merged | given))


def resolve(policy: Policy | str | None) -> Policy | None:
    """``policy=`` as ``wrap``, ``guard`` and ``instrument`` take it: a :class:`Policy`, the name
    of one in the policy file (read once and shared by everything that names it), or None.

    The one import of a higher layer, at call time and only for a name: the policy file builds
    policies, so it sits above this module, and reading it loads pydantic and its schema.
    """
    if isinstance(policy, str):
        from aiguard._policy_file import named_policy

        return named_policy(policy)
    return policy


def _retry(value: Any) -> Retry:
    if value is None:
        return NO_RETRY
    if not isinstance(value, Retry):
        raise TypeError(
            f"retry= must be an aiguard.Retry (e.g. aiguard.Retry(attempts=3)), or None for a "
            f"single attempt; got {value!r}"
        )
    return value


def _timeout(value: Any) -> float | None:
    if value is None:
        return None
    _check_seconds("timeout=", value)
    if value <= 0:
        raise ValueError(f"timeout={value} must be a positive number of seconds, or None")
    return float(value)


_FALLBACK_FORMS = "a model name, an aiguard.Target, or a list of them"


def _targets(fallback: Any) -> tuple[Target, ...]:
    if fallback is None:
        return ()
    if isinstance(fallback, str | Target):
        fallback = [fallback]
    if isinstance(fallback, bytes | dict) or not isinstance(fallback, Iterable):
        raise TypeError(f"fallback= must be {_FALLBACK_FORMS}, got {fallback!r}")
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


_FAILURE_NAMES = ", ".join(repr(f.value) for f in Failure if f is not Failure.FATAL)


def _failures(value: Any) -> frozenset[Failure]:
    if isinstance(value, str | Failure):
        value = [value]
    if isinstance(value, bytes | dict) or not isinstance(value, Iterable):
        raise TypeError(
            f"fallback_on= must be a failure class or a list of them ({_FAILURE_NAMES}, or "
            f"aiguard.Failure members), got {value!r}"
        )
    out = set()
    for item in value:
        if isinstance(item, str):
            try:
                item = Failure(item)
            except ValueError:
                raise ValueError(
                    f"fallback_on= entries must be one of {_FAILURE_NAMES}, got {item!r}"
                ) from None
        elif not isinstance(item, Failure):
            raise TypeError(
                f"fallback_on= entries must be one of {_FAILURE_NAMES} (or aiguard.Failure "
                f"members), got {item!r}"
            )
        if item is Failure.FATAL:
            # A fatal failure (a bad request, a bad key) fails the same way on any target.
            raise ValueError(
                f"fallback_on= cannot include 'fatal': fatal failures (400, 401, 403, 404, ...) "
                f"are raised at once; use one of {_FAILURE_NAMES}"
            )
        out.add(item)
    return frozenset(out)


_CHECK_FORM = "check(messages, **context)"


def _checks(value: Any) -> tuple[Callable[..., Any], ...]:
    if value is None:
        return ()
    if callable(value):  # one check (a class is refused below, naming the instance to pass)
        value = [value]
    if isinstance(value, str | bytes | dict) or not isinstance(value, Iterable):
        raise TypeError(
            f"checks= must be a list of checks (such as [aiguard.checks.NoSecrets()] or "
            f"functions {_CHECK_FORM}), got {value!r}"
        )
    checks = tuple(value)
    for check in checks:
        _check_check(check)
    return checks


def _check_check(check: Any) -> None:
    """Refuse at wrap time what would refuse every call: a class, a non-callable, a callable
    that cannot be called as ``check(messages, model=..., provider=..., operation=...)``."""
    if isinstance(check, type):
        raise TypeError(
            f"checks= entries must be check instances or functions, got the class "
            f"{check.__qualname__}: write {check.__qualname__}() to make one"
        )
    if not callable(check):
        raise TypeError(
            f"checks= entries must be callables {_CHECK_FORM}, such as "
            f"aiguard.checks.NoSecrets(); got {check!r}"
        )
    try:
        signature = inspect.signature(check)
    except (TypeError, ValueError):
        return  # a builtin or an extension without a signature: trusted
    try:
        signature.bind([], model="m", provider="p", operation="chat")
    except TypeError:
        raise TypeError(
            f"checks= entries are called as {_CHECK_FORM} (context: model, provider, "
            f"operation); {check!r} takes {signature}: give it a messages parameter and "
            f"**context"
        ) from None
