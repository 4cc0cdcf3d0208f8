"""The policy file's quality keys: ``evaluate``, ``sample`` and the ``review`` table.

::

    [policies.support]
    evaluate = ["refusal", "empty_answer", { name = "matches", pattern = "^\\\\{" }]
    sample = 0.2

    [policies.support.review]
    to = "review.jsonl"
    below = 0.5
    refusal = true

Built-in evaluators are named as in :mod:`aiguard.evaluators` (snake case, alone or as a table
with their parameters); a judge or a custom evaluator is an object, passed in code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field
from pydantic_core import PydanticCustomError

from aiguard import evaluators
from aiguard._policy_schema import Text, _FileTable, _PolicyTable, _regex, _Table
from aiguard._quality_spec import Review


class _Simple(_Table):
    what: ClassVar[str] = "an evaluator"
    name: Literal["refusal", "empty_answer", "truncated", "valid_json"]

    def build(self) -> Callable[..., Any]:
        built: dict[str, Callable[[], Callable[..., Any]]] = {
            "refusal": evaluators.Refusal,
            "empty_answer": evaluators.EmptyAnswer,
            "truncated": evaluators.Truncated,
            "valid_json": evaluators.ValidJson,
        }
        return built[self.name]()


class _Matches(_Table):
    what: ClassVar[str] = "matches"
    name: Literal["matches"]
    pattern: Annotated[str, BeforeValidator(_regex)]
    must: bool = True

    def build(self) -> Callable[..., Any]:
        return evaluators.Matches(self.pattern, must=self.must)


class _Grounded(_Table):
    what: ClassVar[str] = "grounded"
    name: Literal["grounded"]
    context: Text | None = None
    threshold: Annotated[float, Field(ge=0, le=1)] = 0.6

    def build(self) -> Callable[..., Any]:
        return evaluators.Grounded(self.context, threshold=self.threshold)


_NAMES = ("refusal", "empty_answer", "truncated", "valid_json", "matches", "grounded")


def _evaluator_value(value: Any) -> Any:
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        raise PydanticCustomError(
            "evaluator_type", 'must be an evaluator name or a table such as { name = "matches" }'
        )
    name = value.get("name")
    if name not in _NAMES:
        what = f"unknown evaluator {name!r}" if isinstance(name, str) else "no evaluator name"
        raise PydanticCustomError(
            "unknown_evaluator",
            f"{what}; the built-in evaluators are {', '.join(_NAMES)} (a judge or a custom "
            f"evaluator is passed in code)",
        )
    return value


EvaluatorValue = Annotated[
    _Simple | _Matches | _Grounded,
    Field(discriminator="name"),
    BeforeValidator(_evaluator_value),
]


class ReviewTable(_Table):
    what: ClassVar[str] = "review"
    to: Text
    below: float | None = None
    refusal: bool = False
    redacted: bool = False
    sample: Annotated[float, Field(ge=0, le=1)] = 0.0

    def build(self) -> Review:
        return Review(
            self.to,
            below=self.below,
            refusal=self.refusal,
            redacted=self.redacted,
            sample=self.sample,
        )


Fraction = Annotated[float, Field(ge=0, le=1)]
QUALITY_KEYS = ("evaluate", "sample", "review")


class PolicyTable(_PolicyTable):
    """A policy's table with the quality keys."""

    evaluate: list[EvaluatorValue] = []
    sample: Fraction = 1.0
    review: ReviewTable | None = None


class FileTable(_FileTable):
    policies: dict[str, PolicyTable] = {}  # type: ignore[assignment]


def build(key: str, value: Any) -> Any:
    """The policy keyword for a quality key's validated value."""
    if key == "evaluate":
        return [evaluator.build() for evaluator in value]
    if key == "review":
        return value.build()
    return value
