"""Rate limits: per target, per process or shared by a fleet on a real redis-server."""

from __future__ import annotations

import json
import time

import openai
import pytest
from tests.conftest import API_KEY, MESSAGES
from tests.fleet_support import redis_server, results, start_workers

import aiguard
from aiguard._ratelimit import read_headers, reset_seconds
from aiguard.testing import Fault

__all__ = ["redis_server"]


def _client(server, limit, **policy):
    raw = openai.OpenAI(base_url=server.url, api_key=API_KEY)
    return aiguard.wrap(raw, rate_limit=limit, retry=None, **policy)


def _ask(client, model="gpt-4o"):
    return client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=10)


def test_three_processes_share_one_limit_and_the_server_never_sees_more(server, redis_server):
    rate = {"rpm": 5, "name": "tier"}
    job = {"url": server.url, "redis": redis_server.url, "rate": rate, "calls": 4, "timeout": 0.5}
    counts = results(start_workers(3, **job, threads=2))
    ok = sum(c.get("ok", 0) for c in counts)
    limited = sum(c.get("RateLimited", 0) for c in counts)
    assert ok == 5 and limited == 3 * 2 * 4 - 5, counts
    assert len(server.requests) == 5  # the refused calls sent nothing


def test_no_time_to_wait_falls_back_then_raises_without_sending(server, telemetry):
    limit = aiguard.RateLimit(rpm=1)
    client = _client(server, limit, timeout=1, fallback="gpt-4o-mini")
    _ask(client)
    assert _ask(client).model == "gpt-4o-mini"  # gpt-4o has no room for a minute
    with pytest.raises(aiguard.RateLimited) as refused:
        _ask(client)
    assert [r.model for r in server.requests] == ["gpt-4o", "gpt-4o-mini"]
    assert 55 < refused.value.retry_after <= 60
    assert "Nothing was sent" in str(refused.value) and "'gpt-4o-mini'" in str(refused.value)
    span = telemetry.spans()[-1]
    assert span.attributes["aiguard.rate_limit.skipped"] == 2
    refusals = telemetry.metrics()["aiguard.refusals"]
    assert refusals[0].attributes["aiguard.refusal"] == "rate_limit"


def test_a_call_waits_for_room_when_its_deadline_allows(server, telemetry, monkeypatch):
    monkeypatch.setattr("aiguard._ratelimit.WINDOW", 1.0)  # a one-second "minute", to stay fast
    limit = aiguard.RateLimit(rpm=2)
    client = _client(server, limit, timeout=5)
    started = time.perf_counter()
    for _ in range(3):
        _ask(client)
    assert 0.9 < time.perf_counter() - started < 3
    span = telemetry.spans()[-1]
    assert 0 < span.attributes["aiguard.rate_limit.wait_s"] <= 1
    assert [e.name for e in span.events] == ["aiguard.rate_limit.wait"]
    waits = telemetry.metrics()["aiguard.waits"]
    assert waits[0].attributes["aiguard.wait"] == "rate_limit"


def test_tokens_are_reserved_from_the_estimate_and_corrected(server):
    # The estimate: 54 prompt tokens (bytes-based bound) + max_tokens 10; the server reports
    # 5 + 5: the correction frees the rest for the next call.
    server.reply("gpt-4o", prompt_tokens=5, completion_tokens=5)
    limit = aiguard.RateLimit(tpm=100)
    client = _client(server, limit, timeout=0.5)
    _ask(client)
    _ask(client)  # fits only because the first was corrected down to 10 tokens
    limit_without = aiguard.RateLimit(tpm=100)
    limit_without.acquire("x", 64)
    assert limit_without.acquire("x", 64)[0] is None


@pytest.mark.parametrize("shared", [False, True])
def test_rate_limit_headers_tighten_the_limit_before_any_429(server, redis_server, shared):
    store = {"name": "learned", "store": redis_server.url} if shared else {}
    limit = aiguard.RateLimit(rpm=1000, **store)
    server.script(
        "gpt-4o",
        Fault(headers={"x-ratelimit-remaining-requests": "1", "x-ratelimit-reset-requests": "30s"}),
    )
    client = _client(server, limit, timeout=0.5)
    _ask(client)  # the provider says: one request left for 30 s
    _ask(client)
    with pytest.raises(aiguard.RateLimited) as refused:
        _ask(client)
    assert len(server.requests) == 2  # the third never reached the provider
    assert 25 < refused.value.retry_after <= 30


def test_anthropic_headers_are_read_too():
    said = read_headers(
        {
            "anthropic-ratelimit-requests-remaining": "3",
            "anthropic-ratelimit-requests-reset": "2099-01-01T00:00:00Z",
            "anthropic-ratelimit-tokens-remaining": "100",
            "anthropic-ratelimit-tokens-reset": time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 20)
            ),
        }
    )
    assert said["requests"] == (3, 60.0)  # never trusted for more than a window
    assert said["tokens"][0] == 100 and 15 < said["tokens"][1] <= 20
    assert reset_seconds("6m0s") == 360 and reset_seconds("20ms") == 0.02
    assert reset_seconds("1.5") == 1.5 and reset_seconds("soon") is None


def test_a_stopped_store_counts_locally_or_refuses(server, redis_server):
    open_ = aiguard.RateLimit(rpm=1, name="down", store=redis_server.url)
    closed = aiguard.RateLimit(rpm=1, name="down", store=redis_server.url, fail="closed")
    redis_server.stop()
    _ask(_client(server, open_, timeout=0.5))
    with pytest.raises(aiguard.RateLimited):
        _ask(_client(server, open_, timeout=0.5))  # counted in this process meanwhile
    with pytest.raises(aiguard.StoreUnavailable, match="rate limit 'down'"):
        _ask(_client(server, closed))
    assert len(server.requests) == 1


def test_rate_limits_are_checked_at_construction():
    with pytest.raises(TypeError, match=r"rpm=\.\.\., tpm="):
        aiguard.RateLimit()
    with pytest.raises(ValueError, match="rpm=0"):
        aiguard.RateLimit(rpm=0)
    with pytest.raises(TypeError, match="whole number"):
        aiguard.RateLimit(tpm=1.5)
    with pytest.raises(TypeError, match="name="):
        aiguard.RateLimit(rpm=1, store="redis://localhost")
    with pytest.raises(TypeError, match="rate_limit="):
        aiguard.Policy(rate_limit=5)


def test_aiguard_report_shows_rate_limit_waits_and_refusals(server, tmp_path, monkeypatch):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from tests.test_report import _run

    from aiguard._jsonl import JsonlSpanExporter
    from aiguard._telemetry import Telemetry, install

    path = tmp_path / "spans.jsonl"
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonlSpanExporter(path)))
    install(Telemetry(provider))
    try:
        monkeypatch.setattr("aiguard._ratelimit.WINDOW", 1.0)  # a one-second "minute"
        client = _client(server, aiguard.RateLimit(rpm=1), timeout=3)
        _ask(client)
        _ask(client)  # waits for the rest of the second
        with pytest.raises(aiguard.RateLimited):
            _ask(aiguard.wrap(client, timeout=0.05))
    finally:
        install(None)
        provider.shutdown()
    code, out, _ = _run(path)
    calls = json.loads(out)["calls"]
    assert code == 0 and calls["rate_limit_refusals"] == 1 and calls["rate_limit_waits"] == 1
    assert 0 < calls["rate_limit_wait_s"] <= 1
    code, text, _ = _run(path, as_json=False)
    assert "rate-limit refusals" in text and "rate-limit waits" in text
