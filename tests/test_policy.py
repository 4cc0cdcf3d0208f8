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
    "kwargs", [{"failures": 0}, {"failures": "5"}, {"reset_after": -1}, {"reset_after": None}]
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
