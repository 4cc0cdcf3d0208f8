"""A call's facts for ``call_info`` / ``call_ref``, and its online evaluation, as it ends.

:func:`returned` ties what the call hands to the caller (the SDK's response, or aiguard's
stream proxy) to the call's :class:`~aiguard._calls.CallFacts`; :func:`ended` completes them
when the call ends (a stream: when the user is done with it) and, for a policy with
``evaluate=`` or ``review=``, hands one job to the background worker. Nothing here waits for an
evaluator or lets one raise into the call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiguard import _calls, _online, _worker
from aiguard import _semconv as sc
from aiguard._calls import CallFacts
from aiguard._telemetry import report_fault

if TYPE_CHECKING:
    from aiguard._engine.call import GuardedCall


def _facts(run: GuardedCall) -> CallFacts:
    context = run.record.span.get_span_context()
    facts = CallFacts(provider=run.endpoints[0].provider or None, tag=run.tag)
    if context.is_valid:
        facts.trace_id, facts.span_id = context.trace_id, context.span_id
    facts.model = run.endpoints[0].model or None
    return facts


def returned(run: GuardedCall, result: Any) -> None:
    """The call hands ``result`` to its caller."""
    try:
        if run.facts is None:
            run.facts = _facts(run)
        _calls.remember(result, run.facts)
        if run.policy.evaluate or run.policy.review is not None:
            run.result = result  # read by the evaluators, after the call
    except Exception as exc:
        report_fault("remembering a call's facts", exc)


def ended(run: GuardedCall, error: BaseException | None) -> None:
    """The call ended: complete its facts; queue its evaluation (a successful call's).

    A call that handed nothing to its caller (it failed, or it is a guarded generator, whose
    items are the caller's) has no facts to complete and nothing to evaluate.
    """
    try:
        facts = run.facts
        if facts is None:
            return
        policy = run.policy
        evaluating = bool(policy.evaluate) or policy.review is not None
        response = run.record.response
        response_id = response.get(sc.RESPONSE_ID)
        model = response.get(sc.RESPONSE_MODEL)
        facts.response_id = response_id if isinstance(response_id, str) else None
        if isinstance(model, str) and model:
            facts.model = model
        facts.cost_usd = float(run.ledger.cost) if run.ledger.costed else None
        facts.ended = True
        if evaluating and error is None:
            _evaluate(run, facts)
    except Exception as exc:
        report_fault("ending a call's evaluation", exc)


def _evaluate(run: GuardedCall, facts: CallFacts) -> None:
    policy = run.policy
    evaluators = _online.chosen(policy.evaluate, policy.sample)
    if not evaluators and policy.review is None:
        return
    route, request, result, streamed = run.route, run.request, run.result, run.streamed
    reasons = run.record.response.get(sc.RESPONSE_FINISH_REASONS)
    context = {
        "model": facts.model,
        "provider": facts.provider,
        "tag": facts.tag,
        "finish_reason": reasons[0] if isinstance(reasons, list | tuple) and reasons else None,
        "operation": route.operation,
    }

    def answer() -> str:
        if streamed is not None:
            return streamed
        return _online.answer_string(route.answer_text(result))

    job = _online.Job(
        evaluators,
        policy.review,
        lambda: route.messages(request),
        answer,
        context,
        facts,
        run.record.capture,
        run.redacted,
        run.telemetry,
    )
    run.result = None
    _worker.submit(job)
