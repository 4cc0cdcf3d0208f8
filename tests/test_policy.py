"""Policy objects and the pure decisions: backoff, Retry-After parsing, failure classes."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import aiguard
from aiguard._http import retry_after


@given(
    attempt=st.integers(min_value=1, max_value=60),
    jitter=st.floats(min_value=0, max_value=0.999999),
    initial=st.floats(min_value=0, max_value=100),
    wait_max=st.floats(min_value=0, max_value=1000),
    spread=st.floats(min_value=0, max_value=10),
)
def test_backoff_is_bounded_and_never_negative(attempt, jitter, initial, wait_max, spread):
    retry = aiguard.Retry(wait_initial=initial, wait_max=wait_max, wait_jitter=spread)
    wait = retry.backoff(attempt, jitter)
    assert 0 <= wait <= wait_max
    assert not math.isnan(wait)


def test_backoff_grows_exponentially():
    retry = aiguard.Retry(wait_initial=0.5, wait_jitter=0, wait_max=100)
    assert [retry.backoff(n, 0) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]


@given(st.dictionaries(st.sampled_from(["retry-after", "retry-after-ms", "x"]), st.text()))
def test_retry_after_parsing_never_crashes_and_is_never_negative(headers):
    value = retry_after(headers)
    assert value is None or (value >= 0 and math.isfinite(value))


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after-ms": "nope", "retry-after": "3"}, 3.0),
        ({"retry-after": "-1"}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
        ({}, None),
    ],
)
def test_retry_after_values(headers, expected):
    assert retry_after(headers) == expected


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempts": 0},
        {"attempts": 1.5},
        {"attempts": True},
        {"wait_initial": -1},
        {"wait_max": float("nan")},
        {"wait_jitter": "1"},
        {"wait_exp_base": 0.5},
    ],
)
def test_bad_retry_settings_are_refused(kwargs):
    with pytest.raises((TypeError, ValueError)):
        aiguard.Retry(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"failures": 0},
        {"failures": "5"},
        {"reset_after": -1},
        {"reset_after": None},
        {"reset_after": math.inf},
        {"reset_after": 1e300},
    ],
)
def test_bad_breaker_settings_are_refused(kwargs):
    with pytest.raises((TypeError, ValueError)):
        aiguard.Breaker(**kwargs)


@pytest.mark.parametrize("kwargs", [{"model": ""}, {"model": 3}, {"model": "x", "retry": 3}])
def test_bad_targets_are_refused(kwargs):
    with pytest.raises(TypeError):
        aiguard.Target(**kwargs)


def test_policy_keywords_override_the_bundle():
    base = aiguard.Policy(timeout=10)
    merged = aiguard.Policy.build(base, timeout=3, fallback="mini")
    assert merged.timeout == 3
    assert merged.fallback == (aiguard.Target(model="mini"),)
    assert aiguard.Policy.build(base, retry=None).retry.attempts == 1


def test_error_messages_say_what_to_do():
    assert "Raise timeout=" in str(aiguard.DeadlineExceeded(3, 2))
    assert "reset_after" in str(aiguard.CircuitOpen([("m", 1.0)]))
    failed = aiguard.CheckFailed("NotEmpty", "the prompt is empty")
    assert isinstance(failed, ValueError) and "Nothing was sent" in str(failed)


# -- bad input is refused at construction, naming the keyword (issue 13, points 11-13) ----------


@pytest.mark.parametrize("value", [math.inf, 1e300, 1e10, math.nan, -1, 0])
def test_a_timeout_that_no_clock_can_hold_is_refused_naming_timeout(value, raw_client):
    for make in (
        lambda: aiguard.Policy(timeout=value),
        lambda: aiguard.wrap(raw_client, timeout=value),
        lambda: aiguard.guard(timeout=value),
    ):
        with pytest.raises(ValueError, match="timeout="):
            make()


@pytest.mark.parametrize("name", ["wait_initial", "wait_max", "wait_jitter", "max_retry_after"])
def test_infinite_waits_are_refused_naming_the_field(name):
    with pytest.raises(ValueError, match=rf"Retry\({name}=\.\.\.\).*finite"):
        aiguard.Retry(**{name: math.inf})


def test_a_long_retry_ladder_never_overflows_the_backoff():
    retry = aiguard.Retry(attempts=5000, wait_initial=1, wait_max=7, wait_exp_base=1000)
    assert retry.backoff(4000, 0.5) == 7


def test_a_large_finite_timeout_still_answers(make_client):
    from tests.conftest import MESSAGES

    reply = make_client(timeout=1e9).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert reply.choices[0].message.content


@pytest.mark.parametrize(
    "fallback", ["gpt-4o-mini", ["gpt-4o-mini"], ("gpt-4o-mini",), aiguard.Target("gpt-4o-mini")]
)
def test_policy_accepts_fallback_in_every_form_wrap_accepts(fallback, server, raw_client):
    from tests.conftest import FAST, MESSAGES

    policy = aiguard.Policy(fallback=fallback, retry=FAST)
    assert policy.fallback == (aiguard.Target("gpt-4o-mini"),)
    assert policy == aiguard.Policy.build(None, fallback=fallback, retry=FAST)
    server.fail("gpt-4o", status=503, times=3)
    client = aiguard.wrap(raw_client, policy=policy)
    reply = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert reply.model == "gpt-4o-mini"


@pytest.mark.parametrize(
    "fallback_on",
    ["content_policy", ["content_policy"], ("content_policy",), aiguard.Failure.CONTENT_POLICY],
)
def test_policy_normalises_fallback_on_and_falls_back(fallback_on, server, raw_client):
    from tests.conftest import FAST, MESSAGES

    policy = aiguard.Policy(fallback="gpt-4o-mini", fallback_on=fallback_on, retry=FAST)
    assert policy.fallback_on == frozenset({aiguard.Failure.CONTENT_POLICY})
    server.fail("gpt-4o", status=400, code="content_policy_violation")
    client = aiguard.wrap(raw_client, policy=policy)
    assert client.chat.completions.create(model="gpt-4o", messages=MESSAGES).model == (
        "gpt-4o-mini"
    )


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("fatal", ValueError),
        (["outage", "fatal"], ValueError),
        (aiguard.Failure.FATAL, ValueError),
        ("outages", ValueError),
        ("OUTAGE", ValueError),
        (42, TypeError),
        ([42], TypeError),
        ({"outage": True}, TypeError),
    ],
)
def test_bad_fallback_on_is_refused_everywhere_naming_it(value, error, raw_client):
    for make in (
        lambda: aiguard.Policy(fallback_on=value),
        lambda: aiguard.wrap(raw_client, fallback_on=value),
        lambda: aiguard.guard(fallback_on=value),
    ):
        with pytest.raises(error, match="fallback_on=") as refused:
            make()
        assert "'outage'" in str(refused.value)


def test_retry_none_means_a_single_attempt_in_a_policy_too():
    assert aiguard.Policy(retry=None).retry.attempts == 1
    with pytest.raises(TypeError, match=r"retry=.*or None"):
        aiguard.Policy(retry=3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("fallback", 42),
        ("fallback", [42]),
        ("fallback", [""]),
        ("checks", 42),
        ("checks", "NoSecrets"),
        ("breaker", 3),
        ("budget", 5),
        ("reasks", -1),
        ("stream_usage", "yes"),
    ],
)
def test_bad_keywords_are_refused_naming_them(keyword, value, raw_client):
    for make in (
        lambda: aiguard.Policy(**{keyword: value}),
        lambda: aiguard.wrap(raw_client, **{keyword: value}),
    ):
        with pytest.raises((TypeError, ValueError), match=f"{keyword}="):
            make()


def _two_args(messages, model):  # no **context: the call passes provider and operation too
    return None


@pytest.mark.parametrize(
    ("check", "says"),
    [
        (aiguard.checks.NoSecrets, r"the class NoSecrets: write NoSecrets\(\)"),
        (lambda: None, r"called as check\(messages, \*\*context\)"),
        (_two_args, r"called as check\(messages, \*\*context\)"),
        (42, r"checks=.*(callables|a list of checks)"),
    ],
)
def test_checks_that_could_never_pass_are_refused_at_wrap_time(check, says, raw_client):
    for make in (
        lambda: aiguard.Policy(checks=[check]),
        lambda: aiguard.Policy(checks=check),
        lambda: aiguard.wrap(raw_client, checks=[check]),
        lambda: aiguard.guard(checks=[check]),
    ):
        with pytest.raises(TypeError, match=says):
            make()


def test_checks_of_every_calling_form_are_accepted(server, raw_client):
    from tests.conftest import MESSAGES

    seen = []

    def plain(messages, **context):
        seen.append(context["model"])

    def named(messages, *, model, provider, operation):
        seen.append(operation)

    async def later(messages, **context):
        return None

    class Callable_:
        def __call__(self, messages, **context):
            seen.append("instance")

    policy = aiguard.Policy(checks=[plain, named, Callable_(), aiguard.checks.NotEmpty()])
    assert len(policy.checks) == 4
    assert aiguard.Policy(checks=plain).checks == (plain,)
    assert aiguard.Policy(checks=later).checks == (later,)
    client = aiguard.wrap(raw_client, policy=policy)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert seen == ["gpt-4o", "chat", "instance"]


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: aiguard.checks.NoSecrets(patterns=42), r"NoSecrets\(patterns=\.\.\.\)"),
        (lambda: aiguard.checks.NoPII(kinds=42), r"NoPII\(kinds=\.\.\.\)"),
    ],
)
def test_built_in_checks_name_their_bad_parameter(make, says):
    with pytest.raises(TypeError, match=says):
        make()


# -- a policy holding a budget or a breaker copies and pickles (issue 13, point 16) ---------------


def _stateful_policy() -> aiguard.Policy:
    return aiguard.Policy(
        budget=aiguard.Budget(usd=1, per_call_usd=0.5, name="team"),
        breaker=aiguard.Breaker(failures=2, reset_after=5),
        fallback="gpt-4o-mini",
        checks=[
            aiguard.checks.NoSecrets(patterns=[r"ACME-\d{4}"]),
            aiguard.checks.NoPII(),
            aiguard.checks.MaxInputTokens(10_000),
        ],
    )


def test_a_copied_policy_shares_its_budget_and_breaker(raw_client):
    import copy

    from tests.conftest import MESSAGES

    policy = _stateful_policy()
    for copied in (copy.deepcopy(policy), copy.copy(policy), copy.deepcopy([policy])[0]):
        assert copied.fallback == policy.fallback and len(copied.checks) == 3
        assert copied.budget is policy.budget and copied.breaker is policy.breaker
    client = aiguard.wrap(raw_client, policy=copy.deepcopy(policy))
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert policy.budget is not None and policy.budget.spent > 0


def test_a_pickled_policy_carries_its_settings_and_spend_to_fresh_locks(raw_client):
    import pickle

    from tests.conftest import MESSAGES

    policy = _stateful_policy()
    assert policy.budget is not None and policy.breaker is not None
    aiguard.wrap(raw_client, policy=policy).chat.completions.create(
        model="gpt-4o", messages=MESSAGES
    )
    policy.breaker.record("k", ok=False)
    restored = pickle.loads(pickle.dumps(policy))
    budget, breaker = restored.budget, restored.breaker
    assert (budget.limit, budget.per_call, budget.name) == (1, 0.5, "team")
    assert budget.spent == policy.budget.spent and budget.reserved == 0
    assert (breaker.failures, breaker.reset_after) == (2, 5)
    assert breaker.state("k") == "closed"
    assert restored.fallback == policy.fallback and len(restored.checks) == 3
    client = aiguard.wrap(raw_client, policy=restored)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert budget.spent == 2 * policy.budget.spent  # the restored budget's lock works
    with pytest.raises(aiguard.CheckFailed):
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "code ACME-1234"}]
        )
