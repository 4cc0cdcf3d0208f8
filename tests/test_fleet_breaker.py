"""Shared circuit breakers on a real redis-server: one process opens, every process skips."""

from __future__ import annotations

import time

import openai
import pytest
from tests.conftest import API_KEY, MESSAGES
from tests.fleet_support import redis_server, results, start_workers

import aiguard

__all__ = ["redis_server"]


def _client(server, breaker, **policy):
    raw = openai.OpenAI(base_url=server.url, api_key=API_KEY)
    return aiguard.wrap(raw, breaker=breaker, retry=None, **policy)


def test_a_circuit_opened_in_one_process_is_honoured_by_another(server, redis_server, telemetry):
    server.fail("gpt-4o", status=500, times=2)
    breaker = {"failures": 2, "reset_after": 30, "name": "openai"}
    job = {"url": server.url, "redis": redis_server.url, "breaker": breaker, "calls": 2}
    (counts,) = results(start_workers(1, **job))
    assert counts == {"InternalServerError": 2}
    assert len(server.requests) == 2
    here = aiguard.Breaker(failures=2, reset_after=30, name="openai", store=redis_server.url)
    client = _client(server, here)
    with pytest.raises(aiguard.CircuitOpen):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert len(server.requests) == 2  # skipped without a request
    # With a fallback, the call goes there at once.
    answer = _client(server, here, fallback="gpt-4o-mini").chat.completions.create(
        model="gpt-4o", messages=MESSAGES
    )
    assert answer.model == "gpt-4o-mini"
    assert [r.model for r in server.requests[2:]] == ["gpt-4o-mini"]
    # Another breaker name, or another model, has its own circuit.
    other = aiguard.Breaker(failures=2, name="other", store=redis_server.url)
    _client(server, other).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    span = telemetry.spans()[0]
    assert span.attributes["aiguard.breaker.skipped"] == 1


def test_one_probe_fleet_wide_when_half_open(redis_server):
    def breaker():  # one per "process": they share nothing but the store
        return aiguard.Breaker(failures=1, reset_after=0.2, name="probe", store=redis_server.url)

    first, second = breaker(), breaker()
    key = "api.example.com:443/gpt-4o"
    assert first.acquire(object(), key)[0]
    assert first.record(object(), False, key) == "open"
    allowed, wait, _ = second.acquire(object(), key)
    assert not allowed and 0 < wait <= 0.2
    time.sleep(0.25)
    assert first.acquire(object(), key) == (True, 0.0, "half_open")
    assert not second.acquire(object(), key)[0]  # the probe is out: nobody else goes
    assert second.record(object(), True, key) == "closed"  # any process's success closes it
    assert first.acquire(object(), key) == (True, 0.0, None)


def test_a_stopped_store_falls_back_to_local_circuits_or_refuses(server, redis_server):
    shared = aiguard.Breaker(failures=1, name="down", store=redis_server.url)
    closed = aiguard.Breaker(failures=1, name="down", store=redis_server.url, fail="closed")
    redis_server.stop()
    answer = _client(server, shared).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert answer.model == "gpt-4o"
    with pytest.raises(aiguard.StoreUnavailable, match="breaker 'down'"):
        _client(server, closed).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert len(server.requests) == 1


def test_shared_breakers_are_checked_at_construction():
    with pytest.raises(TypeError, match="name="):
        aiguard.Breaker(store="redis://localhost:6379")
    with pytest.raises(ValueError, match="fail="):
        aiguard.Breaker(name="x", fail="sometimes")
