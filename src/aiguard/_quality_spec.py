"""The quality keywords of a policy: ``evaluate=``, ``sample=`` and ``review=``, checked.

Plain data like the rest of :mod:`aiguard._policy`; nothing here runs an evaluator (see
:mod:`aiguard._online`).
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

EVALUATOR_FORM = "evaluator(messages, answer, **context)"
# What an evaluator is called with besides the messages and the answer's text.
CONTEXT = {"model": "m", "provider": "p", "tag": None, "finish_reason": "stop", "operation": "chat"}


def evaluators(value: Any) -> tuple[Callable[..., Any], ...]:
    """``evaluate=``: one evaluator or a list of them, each callable as :data:`EVALUATOR_FORM`."""
    if value is None:
        return ()
    if callable(value):
        value = [value]
    if isinstance(value, str | bytes | dict) or not isinstance(value, Iterable):
        raise TypeError(
            f"evaluate= must be a list of evaluators (such as [aiguard.evaluators.Refusal()] "
            f"or functions {EVALUATOR_FORM}), got {value!r}"
        )
    found = tuple(value)
    for evaluator in found:
        _check(evaluator)
    return found


def _check(evaluator: Any) -> None:
    if isinstance(evaluator, type):
        raise TypeError(
            f"evaluate= entries must be evaluator instances or functions, got the class "
            f"{evaluator.__qualname__}: write {evaluator.__qualname__}() to make one"
        )
    if not callable(evaluator):
        raise TypeError(f"evaluate= entries must be callables {EVALUATOR_FORM}, got {evaluator!r}")
    try:
        signature = inspect.signature(evaluator)
    except (TypeError, ValueError):
        return
    try:
        signature.bind([], "", **CONTEXT)
    except TypeError:
        raise TypeError(
            f"evaluate= entries are called as {EVALUATOR_FORM} (context: "
            f"{', '.join(CONTEXT)}); {evaluator!r} takes {signature}: give it messages and "
            f"answer parameters and **context"
        ) from None


def evaluator_name(evaluator: Any) -> str:
    name = getattr(evaluator, "name", None)
    if isinstance(name, str) and name:
        return name
    return getattr(evaluator, "__name__", None) or type(evaluator).__name__


def fraction(what: str, value: Any) -> float:
    """A sampling fraction from 0 to 1."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a fraction of calls from 0 to 1, got {value!r}")
    if not math.isfinite(value) or not 0 <= value <= 1:
        raise ValueError(f"{what} must be a fraction of calls from 0 to 1, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True, init=False)
class Review:
    """Send calls to human review: which calls, and where.

    A call goes to the review queue ``to`` when any rule holds: an evaluation scored below
    ``below``, the model refused (``refusal``), a check redacted the request (``redacted``),
    or it was drawn in the ``sample`` fraction. ``to`` is a JSONL file path (``aiguard review
    PATH`` works through it) or any callable that receives each item as a dict.

    Example::

        aiguard.wrap(client, evaluate=[judge], review=aiguard.Review("review.jsonl", below=0.5))
    """

    to: str | Callable[[dict[str, Any]], Any]
    below: float | None
    refusal: bool
    redacted: bool
    sample: float

    def __init__(
        self,
        to: str | os.PathLike[str] | Callable[[dict[str, Any]], Any],
        *,
        below: float | None = None,
        refusal: bool = False,
        redacted: bool = False,
        sample: float = 0.0,
    ) -> None:
        if isinstance(to, os.PathLike):
            to = os.fspath(to)
        if isinstance(to, str):
            if not to.strip():
                raise ValueError("Review(to=...) must be a file path or a callable")
        elif not callable(to):
            raise TypeError(f"Review(to=...) must be a JSONL file path or a callable, got {to!r}")
        if below is not None and (
            isinstance(below, bool)
            or not isinstance(below, int | float)
            or not math.isfinite(below)
        ):
            raise TypeError(f"Review(below=...) must be a score (a number) or None, got {below!r}")
        for name, flag in (("refusal", refusal), ("redacted", redacted)):
            if not isinstance(flag, bool):
                raise TypeError(f"Review({name}=...) must be True or False, got {flag!r}")
        set_ = object.__setattr__
        set_(self, "to", to)
        set_(self, "below", None if below is None else float(below))
        set_(self, "refusal", refusal)
        set_(self, "redacted", redacted)
        set_(self, "sample", fraction("Review(sample=...)", sample))


def review(value: Any) -> Review | None:
    if value is None or isinstance(value, Review):
        return value
    raise TypeError(
        f"review= must be an aiguard.Review (e.g. aiguard.Review('review.jsonl', below=0.5)) or "
        f"None, got {value!r}"
    )
