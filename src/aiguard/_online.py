"""One call's online evaluation, as the background worker runs it.

The engine builds a :class:`Job` when a call with ``evaluate=`` or ``review=`` ends and hands
it to :mod:`aiguard._worker`; everything slow (turning the request into neutral messages,
reading the answer's text, the evaluators themselves, writing a review item) happens here, on
the worker's thread.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiguard import _review, _worker
from aiguard._calls import CallFacts
from aiguard._capture import CaptureSettings
from aiguard._evaluation import Result, outcome, record
from aiguard._messages import Message, to_json
from aiguard._quality_spec import Review, evaluator_name
from aiguard._telemetry import Telemetry, report_fault


@dataclass(slots=True)
class Job:
    """The evaluators and review of one ended call, with what they need to read it."""

    evaluators: tuple[Callable[..., Any], ...]
    review: Review | None
    messages: Callable[[], list[Message]]
    answer: Callable[[], str]
    context: dict[str, Any]
    facts: CallFacts
    capture: CaptureSettings | None
    redacted: bool
    telemetry: Telemetry

    def __call__(self) -> None:
        try:
            messages = self.messages()
        except Exception as exc:
            report_fault("reading the request's messages for evaluation", exc)
            messages = []
        try:
            answer = self.answer()
        except Exception as exc:
            report_fault("reading the answer for evaluation", exc)
            answer = ""
        results: list[tuple[str, Result]] = []
        for evaluator in self.evaluators:
            name = evaluator_name(evaluator)
            result = run_evaluator(evaluator, name, messages, answer, self.context)
            if result is not None:
                record(self.facts, name, result, self.telemetry)
                results.append((name, result))
        if self.review is not None:
            _review.consider(self, messages, answer, results)


def run_evaluator(
    evaluator: Callable[..., Any],
    name: str,
    messages: list[Message],
    answer: str,
    context: dict[str, Any],
) -> Result | None:
    """What one evaluator found, or None (no result, or it failed: logged once)."""
    try:
        value = evaluator(messages, answer, **context)
        if inspect.isawaitable(value):
            value = _worker.worker().run_async(value)
        return outcome(value)
    except Exception as exc:
        report_fault(f"the evaluator {name!r}", exc)
        return None


def sampled(fraction: float) -> bool:
    return fraction >= 1.0 or (fraction > 0.0 and random.random() < fraction)


def chosen(
    evaluators: tuple[Callable[..., Any], ...], fraction: float
) -> tuple[Callable[..., Any], ...]:
    """The evaluators that judge this call: a ``fraction`` of calls is evaluated, and of those
    an evaluator with a ``sample`` attribute (a judge that costs a call) only its own share."""
    if not evaluators or not sampled(fraction):
        return ()
    return tuple(e for e in evaluators if sampled(_own_share(e)))


def _own_share(evaluator: Any) -> float:
    share = getattr(evaluator, "sample", 1.0)
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
        return 1.0
    return float(share)


def answer_string(value: Any) -> str:
    """An answer as text: a string as it is, a parsed object as JSON, nothing as ''."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    dump = getattr(value, "model_dump_json", None)
    if callable(dump):
        return str(dump())
    return to_json(value)
