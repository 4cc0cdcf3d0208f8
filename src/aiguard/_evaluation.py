"""Evaluation results on a call's trace: the ``gen_ai.evaluation.result`` event and its metrics.

``aiguard.feedback`` (a user's thumbs-up, a reviewer's verdict) and the online evaluators both
end here. The event follows the GenAI conventions: ``gen_ai.evaluation.name`` always,
``gen_ai.evaluation.score.value`` (a double) and/or ``gen_ai.evaluation.score.label``,
``gen_ai.evaluation.explanation`` when given; it is emitted in the context of the evaluated
call's span (its trace and span ids, even from another process), and carries
``gen_ai.response.id`` when the response had one.

Each result is also measured: ``aiguard.evaluation.score`` (a histogram of scores by
evaluation name, model and tag) and ``aiguard.evaluations`` (results counted with
``aiguard.evaluation.passed`` true or false when the result says).
"""

from __future__ import annotations

import math
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from opentelemetry import _logs, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from aiguard import _calls
from aiguard import _semconv as sc
from aiguard._calls import CallFacts
from aiguard._telemetry import Attrs, Telemetry, current, report_fault

EVENT = "gen_ai.evaluation.result"
NAME = "gen_ai.evaluation.name"
SCORE = "gen_ai.evaluation.score.value"
LABEL = "gen_ai.evaluation.score.label"
EXPLANATION = "gen_ai.evaluation.explanation"
PASSED = "aiguard.evaluation.passed"
METRIC_SCORE = "aiguard.evaluation.score"
METRIC_RESULTS = "aiguard.evaluations"
SCORE_BUCKETS = [round(0.1 * i, 1) for i in range(11)]
PASS_AT = 0.5  # a score at or above passes, unless the evaluator says otherwise
MAX_EXPLANATION = 2000
MAX_NAME = 128


@dataclass(frozen=True, slots=True)
class Result:
    """What an evaluator found: a score, a label, both, with an explanation.

    ``passed`` says whether the answer is acceptable; left ``None`` it is ``score >= 0.5`` for
    a score and unknown for a label alone. Evaluators may return one, or simply a number (a
    score), a bool (passed or not: score 1.0 / 0.0), a string (a label) or None (no result).
    """

    score: float | None = None
    label: str | None = None
    explanation: str | None = None
    passed: bool | None = None


def outcome(value: Any) -> Result | None:
    """An evaluator's return value as a :class:`Result`; ``TypeError`` for anything else."""
    if value is None:
        return None
    if isinstance(value, Result):
        result = value
    elif isinstance(value, bool):
        result = Result(1.0 if value else 0.0, "pass" if value else "fail", passed=value)
    elif isinstance(value, int | float):
        result = Result(float(value))
    elif isinstance(value, str):
        result = Result(label=value)
    else:
        raise TypeError(
            f"an evaluator returns a score (a number), a label (str), a bool, "
            f"aiguard.evaluators.Result or None; got {type(value).__name__}"
        )
    return _checked(result.score, result.label, result.explanation, result.passed)


def _checked(score: Any, label: Any, explanation: Any, passed: Any) -> Result:
    if score is not None:
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise TypeError(f"score= must be a number or None, got {score!r}")
        if not math.isfinite(score):
            raise ValueError(f"score= must be a finite number, got {score!r}")
        score = float(score)
    if label is not None and (not isinstance(label, str) or not label.strip()):
        raise TypeError(f"label= must be a non-empty string or None, got {label!r}")
    if score is None and label is None:
        raise ValueError("an evaluation needs a score=, a label=, or both")
    if explanation is not None and not isinstance(explanation, str):
        raise TypeError(f"explanation= must be a string or None, got {explanation!r}")
    if passed is not None and not isinstance(passed, bool):
        raise TypeError(f"passed= must be True, False or None, got {passed!r}")
    if passed is None and score is not None:
        passed = score >= PASS_AT
    return Result(score, label, explanation, passed)


def feedback(
    target: Any,
    name: str,
    score: float | None = None,
    label: str | None = None,
    explanation: str | None = None,
    *,
    passed: bool | None = None,
) -> None:
    """Record an evaluation of a guarded call: a ``gen_ai.evaluation.result`` event.

    ``target`` is what a wrapped client returned, or a :func:`aiguard.call_ref` string (stored
    anywhere, used in any process later). ``name`` names the evaluation (``"thumbs"``,
    ``"human_review"``); give a ``score`` (a number), a ``label`` (a string), or both, and an
    optional ``explanation``. ``passed`` (default: ``score >= 0.5``) feeds the pass/fail count.
    The event is linked to the call's span (its trace), and carries the response id.
    Bad arguments raise ``TypeError`` / ``ValueError``; recording itself never raises.

    Example::

        aiguard.feedback(ref, "thumbs", score=1.0, label="up")
    """
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise TypeError(f"name= must be a non-empty string of at most {MAX_NAME} characters")
    result = _checked(score, label, explanation, passed)
    if isinstance(target, str):
        facts = _calls.parse(target)
    else:
        found = _calls.facts_of(target)
        if found is None:
            raise ValueError(
                f"aiguard.feedback(): this {type(target).__name__} was not returned by a guarded "
                f"call; pass what a wrapped client returned, or a string from aiguard.call_ref()"
            )
        if not _calls.linkable(found):
            raise ValueError(
                "aiguard.feedback(): nothing links to this call (no tracer was recording it and "
                "its response has no id); configure telemetry (aiguard.configure)"
            )
        facts = found
    record(facts, name.strip(), result)


def record(facts: CallFacts, name: str, result: Result, telemetry: Telemetry | None = None) -> None:
    """Emit one evaluation result for the call ``facts`` describe, and measure it."""
    attributes: dict[str, Any] = {NAME: name}
    if result.score is not None:
        attributes[SCORE] = result.score
    if result.label is not None:
        attributes[LABEL] = result.label
    if result.explanation:
        attributes[EXPLANATION] = result.explanation[:MAX_EXPLANATION]
    if facts.response_id:
        attributes[sc.RESPONSE_ID] = facts.response_id
    if result.passed is not None:
        attributes[PASSED] = result.passed
    try:
        context = None
        if facts.trace_id and facts.span_id:
            parent = SpanContext(
                facts.trace_id, facts.span_id, True, TraceFlags(TraceFlags.SAMPLED)
            )
            context = trace.set_span_in_context(NonRecordingSpan(parent))
        _logs.get_logger("aiguard").emit(
            timestamp=time.time_ns(), event_name=EVENT, attributes=attributes, context=context
        )
    except Exception as exc:
        report_fault(f"emitting {EVENT}", exc)
    _to_span_files(facts, attributes)
    _measure(telemetry or current(), facts, name, result)


def _to_span_files(facts: CallFacts, attributes: dict[str, Any]) -> None:
    """The result, next to the spans, in the JSONL span files this process writes (for
    ``aiguard report``); nothing when it writes none."""
    jsonl = sys.modules.get("aiguard._jsonl")
    if jsonl is None:
        return
    try:
        jsonl.write_evaluation(
            {
                "traceId": f"{facts.trace_id:032x}" if facts.trace_id else "",
                "spanId": f"{facts.span_id:016x}" if facts.span_id else "",
                "timeUnixNano": str(time.time_ns()),
                "attributes": jsonl.encode_attributes(attributes),
            }
        )
    except Exception as exc:
        report_fault("writing an evaluation to the span file", exc)


class _Instruments:
    lock = threading.Lock()
    owner: Telemetry | None = None
    score: Any = None
    results: Any = None


def _measure(telemetry: Telemetry, facts: CallFacts, name: str, result: Result) -> None:
    try:
        if not telemetry.measuring():
            return
        with _Instruments.lock:
            if _Instruments.owner is not telemetry:
                meter = telemetry.meter
                _Instruments.score = meter.create_histogram(
                    METRIC_SCORE,
                    unit="1",
                    description="Scores of evaluations of GenAI answers",
                    explicit_bucket_boundaries_advisory=SCORE_BUCKETS,
                )
                _Instruments.results = meter.create_counter(
                    METRIC_RESULTS, unit="{evaluation}", description="Evaluation results"
                )
                _Instruments.owner = telemetry
        attrs: Attrs = {NAME: name}
        if facts.model:
            attrs[sc.RESPONSE_MODEL] = facts.model
        if facts.tag:
            attrs[sc.TAG] = facts.tag
        if result.score is not None:
            _Instruments.score.record(result.score, attrs)
        if result.passed is not None:
            attrs[PASSED] = result.passed
        _Instruments.results.add(1, attrs)
    except Exception as exc:
        report_fault("recording an evaluation metric", exc)
