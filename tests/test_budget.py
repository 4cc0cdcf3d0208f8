"""Hard budgets: worst case reserved before sending, settled after, never exceeded."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from decimal import Decimal

import openai
import pytest
from tests.conftest import API_KEY, FAST, MESSAGES

import aiguard
from aiguard import prices

# The server reports 10 input and 20 output tokens: $0.000225 on gpt-4o ($2.50/M in, $10/M out).
REAL = Decimal("0.000225")
# "What is the capital of France?": 30 bytes + 8 per message + 16 per call, at $2.50/M, plus
# max_tokens=100 at $10/M.
WORST = Decimal(54) * Decimal("0.0000025") + Decimal(100) * Decimal("0.00001")


@pytest.fixture(autouse=True)
def _usage(server):
    server.reply("gpt-4o", prompt_tokens=10, completion_tokens=20)
    server.reply("gpt-4o-mini", prompt_tokens=10, completion_tokens=20)


def _ask(client, model="gpt-4o", **kw):
    return client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=100, **kw)


def test_a_call_that_does_not_fit_is_refused_and_nothing_is_sent(make_client, server, telemetry):
    budget = aiguard.Budget(usd=WORST - Decimal("0.000001"), name="tiny")
    client = make_client(provider="openai", budget=budget)
    with pytest.raises(aiguard.BudgetExceeded) as caught:
        _ask(client)
    assert server.requests == []
    refusal = caught.value
    assert isinstance(refusal, aiguard.AIGuardError)
    assert refusal.estimate == WORST and refusal.spent == 0 and refusal.limit == budget.limit
    message = str(refusal)
    assert "budget 'tiny'" in message and "Nothing was sent" in message
    assert "Raise Budget(usd=...)" in message and "gpt-4o" in message
    assert budget.spent == 0 and budget.reserved == 0 and budget.refusals == 1
    guard = telemetry.span("chat gpt-4o")
    assert guard.attributes["error.type"] == "aiguard.BudgetExceeded"
    assert [e.name for e in guard.events] == ["aiguard.budget.refused"]
    assert (
        guard.attributes["aiguard.attempts"] == 0
        and "gen_ai.usage.input_tokens" not in guard.attributes
    )
    refusals = telemetry.metrics()["aiguard.refusals"]
    assert refusals[0].value == 1 and refusals[0].attributes["aiguard.refusal"] == "budget"


def test_the_reservation_is_settled_to_the_real_cost(make_client, server, telemetry):
    budget = aiguard.Budget(usd=1)
    _ask(make_client(provider="openai", budget=budget))
    assert budget.spent == REAL and budget.reserved == 0
    assert budget.remaining == Decimal(1) - REAL
    guard = telemetry.span("chat gpt-4o")
    assert guard.attributes["aiguard.budget.remaining_usd"] == pytest.approx(float(1 - REAL))


def test_without_max_tokens_the_documented_default_is_reserved(make_client):
    budget = aiguard.Budget(usd="0.04")  # 4,096 output tokens at $10/M = $0.04096
    with pytest.raises(aiguard.BudgetExceeded):
        make_client(provider="openai", budget=budget).chat.completions.create(
            model="gpt-4o", messages=MESSAGES
        )


def test_n_choices_multiply_the_output_reserved(make_client, server):
    budget = aiguard.Budget(usd=WORST + Decimal("0.0001"))
    with pytest.raises(aiguard.BudgetExceeded):
        _ask(make_client(provider="openai", budget=budget), n=2)
    assert server.requests == []


def test_per_call_cap_refuses_one_dear_call(make_client, server):
    budget = aiguard.Budget(usd=100, per_call_usd=WORST / 2)
    with pytest.raises(aiguard.BudgetExceeded, match="per-call limit") as caught:
        _ask(make_client(provider="openai", budget=budget))
    assert caught.value.per_call and server.requests == []


def test_scopes_apply_to_every_call_inside_and_nest(make_client, server):
    client = make_client(provider="openai")
    with aiguard.budget(usd=1, name="outer") as outer:
        with aiguard.budget(usd=WORST + REAL / 2) as inner:
            _ask(client)
            with pytest.raises(aiguard.BudgetExceeded, match="the budget"):
                _ask(client)  # inner has less than a worst case left: the worst case does not fit
        _ask(client)
    _ask(client)  # outside every scope: unlimited
    assert inner.spent == REAL
    assert outer.spent == 2 * REAL
    assert len(server.requests) == 3


def test_an_existing_budget_can_be_scoped_again(make_client):
    tenant = aiguard.Budget(usd=1)
    client = make_client(provider="openai")
    for _ in range(2):
        with aiguard.budget(tenant):
            _ask(client)
    assert tenant.spent == 2 * REAL
    with pytest.raises(TypeError):
        aiguard.budget(tenant, name="x")


def test_the_outermost_refusal_counts(make_client, server):
    client = make_client(provider="openai")
    with (
        aiguard.budget(usd=WORST / 2) as outer,
        aiguard.budget(usd=10),
        pytest.raises(aiguard.BudgetExceeded),
    ):
        _ask(client)
    assert outer.refusals == 1 and server.requests == []


def test_retries_and_fallbacks_each_reserve(make_client, server):
    server.fail("gpt-4o", status=500, times=3)
    budget = aiguard.Budget(usd=WORST + REAL)  # one worst case at a time
    client = make_client(provider="openai", budget=budget, fallback=["gpt-4o-mini"])
    _ask(client)
    assert [r.model for r in server.requests] == ["gpt-4o"] * 3 + ["gpt-4o-mini"]
    mini = prices.cost("gpt-4o-mini", aiguard.Usage(input_tokens=10, output_tokens=20))
    assert budget.spent == mini and budget.reserved == 0


def test_a_refused_fallback_raises_budget_exceeded_after_the_primary_failed(make_client, server):
    server.fail("gpt-4o-mini", status=500, times=3)
    prices.register("pricey", input_per_mtok=1000, output_per_mtok=1000)
    try:
        budget = aiguard.Budget(usd=WORST * 2)
        client = make_client(provider="openai", budget=budget, fallback=["pricey"])
        with pytest.raises(aiguard.BudgetExceeded):
            _ask(client, model="gpt-4o-mini")
        assert {r.model for r in server.requests} == {"gpt-4o-mini"}
        assert budget.spent == 0 and budget.reserved == 0
    finally:
        prices.unregister("pricey")


def test_unknown_prices_pass_a_budget(make_client, server):
    budget = aiguard.Budget(usd="0.000001")
    _ask(make_client(provider="openai", budget=budget), model="house-model")
    assert budget.spent == 0 and len(server.requests) == 1


def test_a_decorated_function_budget_covers_the_calls_it_makes(make_client, server):
    client = make_client(provider="openai")
    budget = aiguard.Budget(usd=WORST + REAL / 2)

    @aiguard.guard(budget=budget)
    def two_calls() -> None:
        _ask(client)
        _ask(client)

    with pytest.raises(aiguard.BudgetExceeded):
        two_calls()
    assert budget.spent == REAL and len(server.requests) == 1


def test_a_decorated_generator_keeps_its_budget_between_items(make_client, server):
    client = make_client(provider="openai")
    budget = aiguard.Budget(usd=1)

    @aiguard.guard(budget=budget)
    def answers():
        for _ in range(3):
            yield _ask(client)

    assert len(list(answers())) == 3
    assert budget.spent == 3 * REAL


def test_eight_threads_never_overspend(raw_client, server):
    budget = aiguard.Budget(usd=WORST * 5 + REAL / 2)
    client = aiguard.wrap(raw_client, provider="openai", budget=budget, retry=FAST)
    outcomes: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(10):
            try:
                _ask(client)
                result = "ok"
            except aiguard.BudgetExceeded:
                result = "refused"
            with lock:
                outcomes.append(result)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sent = outcomes.count("ok")
    assert budget.spent == sent * REAL <= budget.limit
    assert budget.reserved == 0
    assert outcomes.count("refused") == budget.refusals > 0
    assert len(server.requests) == sent
    # A call is refused only while spent + in flight leaves no room for a worst case.
    assert sent >= 5


async def test_fifty_tasks_never_overspend(server):
    budget = aiguard.Budget(usd=WORST * 7)
    client = aiguard.wrap(
        openai.AsyncOpenAI(base_url=server.url, api_key=API_KEY),
        provider="openai",
        budget=budget,
        retry=FAST,
    )

    async def one() -> bool:
        try:
            await _ask(client)
        except aiguard.BudgetExceeded:
            return False
        return True

    async with aiguard.budget(usd=1) as scope:
        results = await asyncio.gather(*(one() for _ in range(50)))
    sent = sum(results)
    assert budget.spent == scope.spent == sent * REAL <= budget.limit
    assert budget.reserved == 0 and scope.reserved == 0
    assert len(server.requests) == sent and budget.refusals == 50 - sent > 0


async def test_async_scopes_stay_with_their_task(make_async_client):
    client = make_async_client(provider="openai")

    async def spend(limit: str) -> Decimal:
        async with aiguard.budget(usd=limit) as mine:
            await _ask(client)
            await asyncio.sleep(0)
            await _ask(client)
        return mine.spent

    spent = await asyncio.gather(spend("1"), spend("2"), spend("3"))
    assert spent == [2 * REAL] * 3


@pytest.mark.parametrize(
    ("usd", "error"),
    [
        (-1, ValueError),
        (0, ValueError),
        ("abc", ValueError),
        (float("inf"), ValueError),
        (None, TypeError),
        (True, TypeError),
        ([1], TypeError),
    ],
)
def test_budgets_reject_bad_limits(usd, error):
    with pytest.raises(error, match="USD"):
        aiguard.Budget(usd=usd)


def test_bad_budget_arguments_say_what_to_pass(make_client):
    with pytest.raises(TypeError, match=r"aiguard.Budget\(usd=5\)"):
        make_client(budget=5)
    with pytest.raises(ValueError, match="per_call_usd"):
        aiguard.Budget(usd=1, per_call_usd=0)
    with pytest.raises(TypeError, match="usd="):
        aiguard.budget()
    scope = aiguard.budget(usd=1)
    with scope, pytest.raises(RuntimeError, match="already entered"), scope:
        pass


def test_budget_state_reads_well():
    budget = aiguard.Budget(usd="2.50", name="team")
    assert repr(budget) == "<aiguard.Budget 'team' $0 of $2.50 spent>"
    assert budget.remaining == Decimal("2.50")


def test_an_answer_without_usage_is_charged_its_worst_case_and_says_so(
    make_client, server, telemetry
):
    server.reply("gpt-4o", usage=False)  # a proxy that strips the usage
    budget = aiguard.Budget(usd=1)
    _ask(make_client(provider="openai", budget=budget))
    assert budget.spent == WORST and budget.reserved == 0  # not $0: the limit stays hard
    a = telemetry.span("chat gpt-4o").attributes
    assert "aiguard.cost.usd" not in a
    assert a["aiguard.cost.unknown"] is True
    assert a["aiguard.cost.charged_usd"] == pytest.approx(float(WORST))
    [spend] = telemetry.metrics()["aiguard.cost"]
    assert spend.value == pytest.approx(float(WORST))  # the metric agrees with the budget


def test_a_stream_cut_midway_records_the_worst_case_it_was_charged(make_client, server, telemetry):
    server.fail("gpt-4o", cut_after=2)
    budget = aiguard.Budget(usd=1)
    client = make_client(provider="openai", budget=budget)
    with pytest.raises(openai.APIError):
        for _ in _ask(client, stream=True):
            pass
    assert budget.spent == WORST
    a = telemetry.span("chat gpt-4o").attributes
    assert a["aiguard.cost.charged_usd"] == pytest.approx(float(WORST))
    assert a["aiguard.cost.total_usd"] == pytest.approx(float(WORST))
    [spend] = telemetry.metrics()["aiguard.cost"]
    assert spend.value == pytest.approx(float(WORST))


# -- a scope entered in a web handler and left in its streamed response (issue 13, point 6) ------


def _streaming_app(client, leave):
    """A FastAPI app whose handler enters a budget and a tag, and whose response generator,
    run by the server as another task, leaves them when the stream ends."""
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse

    from aiguard import _budget

    app = FastAPI()
    seen: dict[str, object] = {}

    @app.get("/stream")
    async def stream():
        stack = contextlib.ExitStack()
        seen["budget"] = stack.enter_context(aiguard.budget(usd=1))
        stack.enter_context(aiguard.tag("streams"))
        chunks = await client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, max_tokens=100, stream=True
        )

        async def body():
            try:
                async for chunk in chunks:
                    if chunk.choices and chunk.choices[0].delta.content:
                        yield chunk.choices[0].delta.content
            finally:
                leave(stack)
                seen["after"] = (_budget.active.get(), _budget.current_tag.get())

        return StreamingResponse(body())

    return app, seen


@pytest.mark.parametrize(
    "leave", [contextlib.ExitStack.close, lambda stack: stack.__exit__(None, None, None)]
)
def test_a_budget_entered_in_a_handler_can_be_left_in_the_streamed_response(
    raw_async_client, leave
):
    from fastapi.testclient import TestClient

    client = aiguard.wrap(raw_async_client, retry=FAST)
    app, seen = _streaming_app(client, leave)
    with TestClient(app) as http:
        for _ in range(2):
            response = http.get("/stream")
            assert response.status_code == 200 and response.text == "Hello from gpt-4o."
            assert seen["budget"].spent == REAL and seen["budget"].reserved == 0
            assert seen["after"] == ((), None)  # left: nothing of the request stays in force


def test_a_scope_left_in_another_context_restores_only_what_it_set():
    import contextvars

    from aiguard import _budget

    outer = aiguard.Budget(usd=1)
    scope = aiguard.budget(usd=2)
    with aiguard.budget(outer):
        inner = scope.__enter__()
        assert _budget.active.get() == (outer, inner)
        elsewhere = contextvars.copy_context()
        elsewhere.run(scope.__exit__)  # left in a copy: the copy goes back to the outer budget
        assert elsewhere[_budget.active] == (outer,)
        assert _budget.active.get() == (outer, inner)  # the original context is not touched
        untouched = aiguard.budget(usd=3)
        untouched.__enter__()
        changed = contextvars.copy_context()
        changed.run(_budget.active.set, ())  # the copy moved on: nothing there is ours
        changed.run(untouched.__exit__)
        assert changed[_budget.active] == ()
