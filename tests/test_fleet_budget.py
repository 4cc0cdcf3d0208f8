"""Fleet budgets on a real redis-server: one account for every process, thread and task."""

from __future__ import annotations

import os
import signal
import time
from decimal import Decimal

import openai
import pytest
from tests.conftest import API_KEY, MESSAGES
from tests.fleet_support import redis_server, results, start_workers

import aiguard
from aiguard import _store

__all__ = ["redis_server"]

# The server answers 10 input and 100 output tokens on gpt-4o: $0.001025; the worst case of
# the request (max_tokens=100) is $0.001135.
REAL = Decimal("0.001025")
WORST = Decimal(54) * Decimal("0.0000025") + Decimal(100) * Decimal("0.00001")


@pytest.fixture(autouse=True)
def _usage(server):
    server.reply("gpt-4o", prompt_tokens=10, completion_tokens=100)


def _ask(client):
    return client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=100)


def test_four_processes_of_eight_threads_or_tasks_never_exceed_one_budget(server, redis_server):
    limit = Decimal("0.06")  # about 58 calls
    budget = {"usd": str(limit), "name": "fleet"}
    job = {"url": server.url, "redis": redis_server.url, "budget": budget, "calls": 40}
    workers = start_workers(3, **job, threads=8)
    workers += start_workers(1, **job, asyncio=True, tasks=8)
    counts = results(workers)
    ok = sum(c.get("ok", 0) for c in counts)
    refused = sum(c.get("BudgetExceeded", 0) for c in counts)
    assert set().union(*counts) <= {"ok", "BudgetExceeded"}, counts
    shared = aiguard.Budget(usd=limit, name="fleet", store=redis_server.url)
    # Never exceeded; refused calls never reached the server; every answer was charged once.
    assert shared.spent <= limit and shared.reserved == 0
    assert len(server.requests) == ok and shared.spent == ok * REAL
    assert refused >= 32  # every thread and task stopped on a refusal
    # Not refused much earlier than needed: at most the worst case of each of the 32 calls
    # in flight was held when the last refusal came, and those settled a little lower.
    assert shared.spent > limit - 2 * WORST - 32 * (WORST - REAL)


def test_a_killed_process_frees_its_reservations_after_the_lease(server, redis_server):
    server.fail("gpt-4o", delay=3, times=4)  # the calls hang while the process is killed
    budget = {"usd": "1", "name": "leased", "lease": 1}
    (worker,) = start_workers(1, url=server.url, redis=redis_server.url, budget=budget, threads=4)
    shared = aiguard.Budget(usd=1, name="leased", store=redis_server.url)
    deadline = time.monotonic() + 20
    while shared.reserved < 4 * WORST and time.monotonic() < deadline:
        time.sleep(0.02)
    assert shared.reserved == 4 * WORST
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    assert shared.reserved == 4 * WORST  # still held right after the kill...
    time.sleep(1.1)
    assert shared.reserved == 0 and shared.remaining == 1  # ...and free after the lease
    assert shared.spent == 0


def test_a_retried_settle_never_charges_twice(redis_server):
    budget = aiguard.Budget(usd=1, name="retried", store=redis_server.url)
    lease = budget.reserve(Decimal("0.5"), "gpt-4o")
    assert budget.reserved == Decimal("0.5")
    for _ in range(3):
        budget.settle(Decimal("0.5"), Decimal("0.1"), lease)
    assert budget.spent == Decimal("0.1") and budget.reserved == 0


def test_a_daily_budget_counts_per_utc_day(redis_server, monkeypatch):
    budget = aiguard.Budget(usd=1, name="daily", per="day", store=redis_server.url)
    budget.settle(Decimal(0), Decimal("0.4"), budget.reserve(Decimal("0.4"), "m"))
    assert budget.spent == Decimal("0.4")
    tomorrow = time.time() + 86400
    monkeypatch.setattr("aiguard._budget.time.time", lambda: tomorrow)
    assert budget.spent == 0 and budget.remaining == 1
    local = aiguard.Budget(usd=1, per="day")
    local.settle(Decimal(0), Decimal("0.4"))
    assert local.spent == Decimal("0.4")
    monkeypatch.setattr("aiguard._budget.time.time", lambda: tomorrow + 86400)
    assert local.spent == 0


@pytest.mark.parametrize("fail", ["open", "closed"])
def test_redis_stopped_and_started_again(server, redis_server, telemetry, caplog, fail):
    budget = aiguard.Budget(usd=1, name="outage", store=redis_server.url, fail=fail)
    client = aiguard.wrap(
        openai.OpenAI(base_url=server.url, api_key=API_KEY), budget=budget, retry=None
    )
    _ask(client)
    assert budget.spent == REAL
    redis_server.stop()
    for _ in range(3):
        started = time.perf_counter()
        if fail == "open":
            _ask(client)  # served on this process's own account
        else:
            with pytest.raises(aiguard.StoreUnavailable) as refused:
                _ask(client)
            assert "redis://127.0.0.1" in str(refused.value) and "Nothing was sent" in str(
                refused.value
            )
        assert time.perf_counter() - started < 2  # refused connections: no wait at all
    assert len(server.requests) == (4 if fail == "open" else 1)
    assert [r.message for r in caplog.records].count(
        next(r.message for r in caplog.records if "failed" in r.message)
    ) == 1  # logged once
    errors = telemetry.metrics()["aiguard.store.errors"]
    assert sum(point.value for point in errors) >= 1
    redis_server.start()
    time.sleep(_store.RETRY_AFTER + 0.05)
    _ask(client)
    other = aiguard.Budget(usd=1, name="outage", store=redis_server.url)
    # A fresh server (nothing saved): the settles that waited, and the new call, are there.
    expected = REAL * (4 if fail == "open" else 1)
    assert other.spent == expected
    assert any("answers again" in r.message for r in caplog.records)


def test_a_frozen_redis_costs_a_call_at_most_the_store_timeout(server, redis_server):
    budget = aiguard.Budget(usd=1, name="frozen", store=redis_server.url)
    client = aiguard.wrap(
        openai.OpenAI(base_url=server.url, api_key=API_KEY), budget=budget, retry=None
    )
    _ask(client)
    assert redis_server.process is not None
    redis_server.process.send_signal(signal.SIGSTOP)  # accepts connections, answers nothing
    try:
        started = time.perf_counter()
        _ask(client)  # waits for the store's timeout once, then serves on its own account
        first = time.perf_counter() - started
        started = time.perf_counter()
        _ask(client)  # the store is left alone for RETRY_AFTER: no wait
        second = time.perf_counter() - started
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
    assert _store.TIMEOUT <= first < _store.TIMEOUT + 1.5
    assert second < _store.TIMEOUT
    time.sleep(_store.RETRY_AFTER)
    assert budget.spent == 3 * REAL  # the settles that waited reached the store


def test_store_and_name_are_checked_at_construction():
    with pytest.raises(TypeError, match="name="):
        aiguard.Budget(usd=1, store="redis://localhost:6379")
    with pytest.raises(ValueError, match="redis://"):
        aiguard.Budget(usd=1, name="x", store="http://localhost")
    with pytest.raises(TypeError, match="store="):
        aiguard.Budget(usd=1, name="x", store=object())
    with pytest.raises(ValueError, match="fail="):
        aiguard.Budget(usd=1, name="x", fail="maybe")
    with pytest.raises(ValueError, match="hash tags"):
        aiguard.Budget(usd=1, name="a{b}")
    with pytest.raises(ValueError, match="per="):
        aiguard.Budget(usd=1, per="week")


def test_one_round_trip_per_call_for_budget_rate_limit_and_breaker(server, redis_server):
    def shared(kind: str) -> dict[str, str]:
        return {"name": f"trip-{kind}", "store": redis_server.url}

    budget = aiguard.Budget(usd=1, **shared("budget"))
    client = aiguard.wrap(
        openai.OpenAI(base_url=server.url, api_key=API_KEY),
        budget=budget,
        rate_limit=aiguard.RateLimit(rpm=100, tpm=100_000, **shared("rate")),
        breaker=aiguard.Breaker(failures=3, **shared("breaker")),
        retry=None,
    )
    _ask(client)  # the first call loads the scripts
    seen: list[str] = []
    observer = _store.observer
    _store.observer = lambda operation, seconds, error: seen.append(operation)
    try:
        _ask(client)
        on_path = [op for op in seen if op != "store.flush"]  # the writer thread's
    finally:
        _store.observer = observer
    assert on_path == ["admit"]  # circuit, rate limit and budget: one pipelined round trip
    assert budget.spent == 2 * REAL and budget.reserved == 0


def test_what_was_asked_ahead_and_not_used_is_taken_back(server, redis_server):
    url = redis_server.url
    budget = aiguard.Budget(usd=1, name="ahead", store=url)
    limit = aiguard.RateLimit(rpm=1, name="ahead", store=url)
    breaker = aiguard.Breaker(failures=1, name="ahead", store=url)
    raw = openai.OpenAI(base_url=server.url, api_key=API_KEY)
    client = aiguard.wrap(raw, budget=budget, rate_limit=limit, breaker=breaker, retry=None)
    _ask(client)
    with pytest.raises(aiguard.RateLimited):  # the rate limit is spent: the hold goes back
        aiguard.wrap(client, timeout=0.5).chat.completions.create(
            model="gpt-4o", messages=MESSAGES, max_tokens=100
        )
    assert budget.reserved == 0 and budget.spent == REAL
    server.fail("gpt-4o", status=500)
    other = aiguard.wrap(client, rate_limit=None)
    with pytest.raises(openai.InternalServerError):
        _ask(other)  # opens the circuit
    with pytest.raises(aiguard.CircuitOpen):
        _ask(other)
    assert budget.reserved == 0 and len(server.requests) == 2
    tight = aiguard.Budget(usd=WORST / 2, name="tight", store=url)
    fresh = aiguard.RateLimit(rpm=1, name="fresh", store=url)
    with pytest.raises(aiguard.BudgetExceeded):  # refused: the request counted ahead goes back
        _ask(aiguard.wrap(raw, budget=tight, rate_limit=fresh, retry=None))
    time.sleep(0.1)  # the writer thread takes it back
    assert fresh.acquire(f"127.0.0.1:{server.port}/gpt-4o", 10)[0] is not None
