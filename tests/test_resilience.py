"""Retries, fallbacks, circuit breaker and deadline over the real openai SDK and real HTTP."""

from __future__ import annotations

import email.utils
import threading
import time

import openai
import pytest
from tests.conftest import MESSAGES

import aiguard

NO_WAIT = aiguard.Retry(attempts=3, wait_initial=0, wait_jitter=0)


def ask(client, model="gpt-4o", **kwargs):
    return client.chat.completions.create(model=model, messages=MESSAGES, **kwargs)


# -- retries -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 408, 409, 500, 502, 503, 504])
def test_transient_statuses_are_retried(make_client, server, status):
    server.fail("gpt-4o", status=status, times=2)
    reply = ask(make_client(retry=NO_WAIT))
    assert reply.choices[0].message.content == "Hello from gpt-4o."
    assert len(server.requests) == 3


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (403, openai.PermissionDeniedError),
        (404, openai.NotFoundError),
        (422, openai.UnprocessableEntityError),
    ],
)
def test_non_transient_errors_are_raised_at_once(make_client, server, status, error):
    server.fail("gpt-4o", status=status)
    with pytest.raises(error):
        ask(make_client(retry=NO_WAIT, fallback=["backup"]))
    assert len(server.requests) == 1


def test_one_429_with_two_attempts_is_exactly_two_requests(make_client, server):
    server.fail("gpt-4o", status=429, times=10)
    with pytest.raises(openai.RateLimitError) as info:
        ask(make_client(retry=aiguard.Retry(attempts=2, wait_initial=0, wait_jitter=0)))
    assert len(server.requests) == 2
    # earlier failures are attached to the raised provider error
    assert any("attempt on 'gpt-4o' failed with RateLimitError" in n for n in info.value.__notes__)


def test_connection_reset_is_retried(make_client, server):
    server.fail("gpt-4o", reset=True)
    assert ask(make_client(retry=NO_WAIT)).choices[0].message.content
    assert len(server.requests) == 2


def test_request_timeout_is_retried(make_client, server, raw_client):
    server.fail("gpt-4o", delay=0.5)
    client = aiguard.wrap(raw_client.with_options(timeout=0.1), retry=NO_WAIT)
    assert ask(client).choices[0].message.content
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    "headers",
    [{"retry-after": "0.3"}, {"retry-after-ms": "300"}],
)
def test_retry_after_is_honoured(make_client, server, headers):
    server.fail("gpt-4o", status=429, headers=headers)
    started = time.monotonic()
    ask(make_client(retry=NO_WAIT))
    gap = server.requests[1].at - server.requests[0].at
    assert gap >= 0.28, gap
    assert time.monotonic() - started < 2


def test_retry_after_as_an_http_date_is_honoured(make_client, server):
    when = email.utils.formatdate(time.time() + 1.2, usegmt=True)
    server.fail("gpt-4o", status=503, headers={"retry-after": when})
    ask(make_client(retry=NO_WAIT))
    assert server.requests[1].at - server.requests[0].at >= 0.15


def test_retry_after_longer_than_the_deadline_stops_early(make_client, server):
    server.fail("gpt-4o", status=429, headers={"retry-after": "30"})
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError):
        ask(make_client(retry=NO_WAIT, timeout=5))
    assert time.monotonic() - started < 1
    assert len(server.requests) == 1


def test_retry_after_longer_than_the_deadline_moves_to_the_fallback(make_client, server):
    server.fail("gpt-4o", status=429, headers={"retry-after": "30"})
    reply = ask(make_client(retry=NO_WAIT, timeout=5, fallback=["gpt-4o-mini"]))
    assert reply.model == "gpt-4o-mini"


def test_retry_after_beyond_max_retry_after_is_not_waited(make_client, server):
    server.fail("gpt-4o", status=429, headers={"retry-after": "500"})
    with pytest.raises(openai.RateLimitError):
        ask(make_client(retry=aiguard.Retry(attempts=3, max_retry_after=10)))
    assert len(server.requests) == 1


def test_backoff_waits_between_attempts(make_client, server):
    server.fail("gpt-4o", status=500, times=2)
    ask(make_client(retry=aiguard.Retry(attempts=3, wait_initial=0.1, wait_jitter=0)))
    first, second, third = (r.at for r in server.requests)
    assert second - first >= 0.09
    assert third - second >= 0.19  # exponential: 0.1, then 0.2


def test_testing_mode_removes_waits(make_client, server):
    server.fail("gpt-4o", status=500, times=2)
    aiguard.testing.set_testing(True)
    try:
        started = time.monotonic()
        ask(make_client(retry=aiguard.Retry(attempts=3, wait_initial=5)))
        assert time.monotonic() - started < 1
    finally:
        aiguard.testing.set_testing(False)


# -- fallbacks ---------------------------------------------------------------------------------


def test_fallback_after_retries_are_spent(make_client, server, telemetry):
    server.fail("gpt-4o", status=503, times=3)
    reply = ask(make_client(retry=NO_WAIT, fallback=["gpt-4o-mini"]))
    assert reply.model == "gpt-4o-mini"
    assert [r.model for r in server.requests] == ["gpt-4o"] * 3 + ["gpt-4o-mini"]
    guard = telemetry.span("chat gpt-4o").attributes
    assert guard["aiguard.fallback.used"] is True
    assert guard["aiguard.fallback.model"] == "gpt-4o-mini"
    assert guard["aiguard.attempts"] == 4


def test_each_fallback_target_has_its_own_retries(make_client, server):
    server.fail("a", status=500, times=9)
    server.fail("b", status=500, times=1)
    fallback = [aiguard.Target(model="b", retry=aiguard.Retry(attempts=2, wait_initial=0))]
    reply = ask(make_client(retry=aiguard.Retry(attempts=1), fallback=fallback), model="a")
    assert reply.model == "b"
    assert [r.model for r in server.requests] == ["a", "b", "b"]


def test_fallback_to_another_client(make_client, server):
    from aiguard.testing import MockServer

    with MockServer() as other_server:
        other = openai.OpenAI(base_url=other_server.url, api_key="sk-other")
        server.fail("gpt-4o", status=500, times=5)
        client = make_client(retry=NO_WAIT, fallback=[aiguard.Target(client=other, model="local")])
        reply = ask(client)
        assert reply.model == "local"
        assert [r.model for r in other_server.requests] == ["local"]


def test_fallback_to_a_client_of_another_kind_is_refused_at_wrap_time(raw_client, raw_async_client):
    with pytest.raises(TypeError, match="can fall back only"):
        aiguard.wrap(raw_client, fallback=[aiguard.Target(client=raw_async_client, model="x")])


def test_context_window_error_skips_straight_to_the_next_target(make_client, server):
    server.fail("small", status=400, code="context_length_exceeded")
    reply = ask(make_client(retry=NO_WAIT, fallback=["large"]), model="small")
    assert reply.model == "large"
    assert [r.model for r in server.requests] == ["small", "large"]


def test_content_policy_falls_back_only_when_asked(make_client, server):
    server.fail("gpt-4o", status=400, code="content_policy_violation")
    with pytest.raises(openai.BadRequestError):
        ask(make_client(retry=NO_WAIT, fallback=["other"]))
    server.fail("gpt-4o", status=400, code="content_policy_violation")
    client = make_client(retry=NO_WAIT, fallback=["other"], fallback_on=["content_policy"])
    assert ask(client).model == "other"


def test_fallback_can_be_limited_to_chosen_failure_classes(make_client, server):
    server.fail("gpt-4o", status=503, times=3)
    with pytest.raises(openai.InternalServerError):
        ask(make_client(retry=NO_WAIT, fallback=["other"], fallback_on=["rate_limit"]))
    assert {r.model for r in server.requests} == {"gpt-4o"}


def test_all_targets_failing_raises_the_last_provider_error_with_history(make_client, server):
    server.fail("*", status=500, times=20)
    with pytest.raises(openai.InternalServerError) as info:
        ask(make_client(retry=aiguard.Retry(attempts=2, wait_initial=0), fallback=["b", "c"]))
    assert len(server.requests) == 6
    assert len(info.value.__notes__) == 5


def test_a_policy_object_bundles_the_keywords(raw_client, server):
    policy = aiguard.Policy(retry=NO_WAIT, fallback=aiguard.Policy.build(fallback=["b"]).fallback)
    server.fail("a", status=500, times=3)
    assert ask(aiguard.wrap(raw_client, policy=policy), model="a").model == "b"


# -- circuit breaker ---------------------------------------------------------------------------


def test_breaker_opens_after_consecutive_failures_and_skips_the_target(make_client, server):
    breaker = aiguard.Breaker(failures=2, reset_after=60)
    client = make_client(retry=aiguard.Retry(attempts=1), breaker=breaker)
    server.fail("gpt-4o", status=500, times=2)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            ask(client)
    with pytest.raises(aiguard.CircuitOpen) as info:
        ask(client)
    assert len(server.requests) == 2  # the third call sent nothing
    assert "gpt-4o" in str(info.value) and "reset_after" in str(info.value)


def test_open_breaker_goes_straight_to_the_fallback(make_client, server):
    breaker = aiguard.Breaker(failures=1, reset_after=60)
    client = make_client(retry=aiguard.Retry(attempts=1), breaker=breaker, fallback=["backup"])
    server.fail("gpt-4o", status=500)
    assert ask(client).model == "backup"
    assert ask(client).model == "backup"
    assert [r.model for r in server.requests] == ["gpt-4o", "backup", "backup"]


def tripped(make_client, server, reset_after):
    """A client whose gpt-4o circuit has just opened after one 500."""
    breaker = aiguard.Breaker(failures=1, reset_after=reset_after)
    client = make_client(retry=aiguard.Retry(attempts=1), breaker=breaker)
    server.fail("gpt-4o", status=500)
    with pytest.raises(openai.InternalServerError):
        ask(client)
    return client, breaker


def test_breaker_half_open_probe_closes_on_success(make_client, server):
    client, breaker = tripped(make_client, server, reset_after=0.2)
    with pytest.raises(aiguard.CircuitOpen):
        ask(client)
    time.sleep(0.25)
    assert ask(client).model == "gpt-4o"  # the probe
    assert breaker.state((id(client.__wrapped__), "gpt-4o")) == "closed"


def test_breaker_half_open_probe_failure_reopens(make_client, server):
    client, _ = tripped(make_client, server, reset_after=0.2)
    server.fail("gpt-4o", status=500)
    time.sleep(0.25)
    with pytest.raises(openai.InternalServerError):
        ask(client)
    with pytest.raises(aiguard.CircuitOpen):
        ask(client)


def test_breaker_lets_one_probe_through_under_concurrency(make_client, server):
    client, _ = tripped(make_client, server, reset_after=0.1)
    time.sleep(0.15)
    server.fail("gpt-4o", delay=0.3)  # the probe is slow
    results: list[str] = []

    def call() -> None:
        try:
            ask(client)
            results.append("ok")
        except aiguard.CircuitOpen:
            results.append("open")

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 1 and results.count("open") == 7


def test_breaker_state_is_consistent_under_threads():
    breaker = aiguard.Breaker(failures=1000, reset_after=60)

    def hammer() -> None:
        for _ in range(250):
            breaker.record("k", False)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert breaker.state("k") == "open"
    assert breaker._circuits["k"].failures == 2000


# -- deadline ----------------------------------------------------------------------------------


def test_deadline_bounds_the_whole_call(make_client, server):
    server.fail("gpt-4o", delay=1.0, times=5)
    started = time.monotonic()
    with pytest.raises((aiguard.DeadlineExceeded, openai.APITimeoutError)):
        ask(make_client(retry=NO_WAIT, timeout=0.6))
    assert time.monotonic() - started < 1.2


def test_deadline_passed_between_attempts_raises_deadline_exceeded(make_client, server):
    server.fail("gpt-4o", status=500, times=5)
    client = make_client(
        retry=aiguard.Retry(attempts=5, wait_initial=0.3, wait_jitter=0), timeout=0.5
    )
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError):
        ask(client)  # the next backoff does not fit: stop early with the provider's error
    assert time.monotonic() - started < 0.9


def test_deadline_exceeded_names_the_timeout_and_chains_the_cause(make_client, server):
    server.fail("gpt-4o", delay=1.0)
    with pytest.raises(aiguard.DeadlineExceeded) as info:
        ask(make_client(retry=NO_WAIT, timeout=0.35, fallback=["backup"]))
    assert "0.35s" in str(info.value) and "timeout=" in str(info.value)
    assert isinstance(info.value.__cause__, openai.APITimeoutError)
    assert info.value.attempts == 1
    assert [r.model for r in server.requests] == ["gpt-4o"]


def test_each_attempt_gets_the_time_left_as_its_timeout(make_client, server):
    server.fail("gpt-4o", delay=2)
    started = time.monotonic()
    with pytest.raises((aiguard.DeadlineExceeded, openai.APITimeoutError)):
        ask(make_client(retry=aiguard.Retry(attempts=1), timeout=0.3))
    assert time.monotonic() - started < 1


def test_a_deadline_never_widens_the_clients_own_timeout(server, raw_client):
    server.fail("gpt-4o", delay=1.5)
    client = aiguard.wrap(raw_client.with_options(timeout=0.3), timeout=5, retry=None)
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert time.monotonic() - started < 1.0  # the client's 0.3 s, not the deadline's 5 s
