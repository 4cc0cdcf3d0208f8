"""The policy file's quality keys: evaluate (built-ins by name), sample, and the review table."""

from __future__ import annotations

import pytest
from tests.test_policy_file import _isolated, problem, write

import aiguard
from aiguard import evaluators

__all__ = ["_isolated"]  # each test in its own directory (the policy-file tests' fixture)

QUALITY = """
[policies.default]
evaluate = ["refusal", "empty_answer", "truncated", "valid_json",
            { name = "matches", pattern = "^[A-Z]", must = true },
            { name = "grounded", context = "Paris is the capital.", threshold = 0.5 }]
sample = 0.25

[policies.default.review]
to = "review.jsonl"
below = 0.5
refusal = true
redacted = true
sample = 0.01
"""


def test_the_quality_keys_are_parsed_into_evaluators_and_a_review(tmp_path):
    write(tmp_path, QUALITY)
    policy = aiguard.Policy.build("default")
    kinds = [type(e) for e in policy.evaluate]
    assert kinds == [
        evaluators.Refusal,
        evaluators.EmptyAnswer,
        evaluators.Truncated,
        evaluators.ValidJson,
        evaluators.Matches,
        evaluators.Grounded,
    ]
    matches, grounded = policy.evaluate[4:]
    assert matches.pattern.pattern == "^[A-Z]" and grounded.threshold == 0.5
    assert policy.sample == 0.25
    review = policy.review
    assert review is not None and review.to == "review.jsonl" and review.below == 0.5
    assert (review.refusal, review.redacted, review.sample) == (True, True, 0.01)
    assert aiguard.Policy.build("default", sample=1.0).evaluate == policy.evaluate


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('evaluate = ["judge"]', "unknown evaluator 'judge'; the built-in evaluators are"),
        ('evaluate = [{ name = "matches", pattern = "(" }]', "not a regular expression"),
        ("sample = 2.0", "less than or equal to 1"),
        ("review = { below = 0.5 }", "to"),
    ],
)
def test_wrong_quality_keys_name_the_line_and_the_key(text, message):
    error = problem(f"[policies.default]\n{text}\n")
    assert str(error).startswith("aiguard.toml:2: policies.default.") and message in str(error)
