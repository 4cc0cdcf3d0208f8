"""The policy file's schema: one pydantic model per table, checked before anything is built.

A wrong value is reported by :mod:`aiguard._policy_file` with the file, the line and the field.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from aiguard import checks as builtin_checks
from aiguard._breaker import Breaker
from aiguard._policy import Retry, Target, parse_mode
from aiguard._ratelimit import RateLimit

# -- the file's schema ---------------------------------------------------------------------------

# Keys people will try that cannot live in a policy file, and where they belong instead.
_HINTS = {
    "output": "output= takes a pydantic model or a callable: pass it in code",
    "client": "a fallback client is an object: pass aiguard.Target(client=...) in code",
}


class _Table(BaseModel):
    """A TOML table: typed strictly (TOML already has types), and no key it does not know."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)
    what: ClassVar[str] = "this table"

    @model_validator(mode="wrap")
    @classmethod
    def _known_keys(cls, data: Any, handler: ModelWrapValidatorHandler[_Table]) -> _Table:
        # Instead of pydantic's "Extra inputs are not permitted": say what the table takes,
        # and still report every other problem in the table.
        if isinstance(data, cls):
            return data
        if not isinstance(data, dict):
            raise PydanticCustomError("table_type", "must be a table")
        unknown = [key for key in data if key not in cls.model_fields]
        if not unknown:
            return handler(data)
        errors = [
            InitErrorDetails(
                type=PydanticCustomError(
                    "unknown_key",
                    _HINTS.get(key)
                    or f"unknown key; {cls.what} takes {', '.join(cls.model_fields)}",
                ),
                loc=(key,),
                input=data[key],
            )
            for key in unknown
        ]
        try:
            handler({key: value for key, value in data.items() if key not in unknown})
        except ValidationError as error:
            errors.extend(_again(item) for item in error.errors())
        raise ValidationError.from_exception_data(cls.__name__, errors)

    def given(self) -> dict[str, Any]:
        """The keys the file set, in declaration order (left out: aiguard's default)."""
        return {
            name: getattr(self, name)
            for name in type(self).model_fields
            if name in self.model_fields_set
        }


def _again(item: ErrorDetails) -> InitErrorDetails:
    """An error pydantic reported, to be raised again (as a custom error: its message kept)."""
    at = (item.get("ctx") or {}).get("at")
    return InitErrorDetails(
        type=PydanticCustomError(item["type"], item["msg"], None if at is None else {"at": at}),
        loc=item["loc"],
        input=item["input"],
    )


def _not_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("blank", "must not be blank")
    return value


Text = Annotated[str, AfterValidator(_not_blank)]
Seconds = Annotated[float, Field(ge=0)]


class _RetryTable(_Table):
    what: ClassVar[str] = "retry"
    attempts: Annotated[int, Field(gt=0)] | None = None
    wait_initial: Seconds | None = None
    wait_max: Seconds | None = None
    wait_jitter: Seconds | None = None
    wait_exp_base: Annotated[float, Field(ge=1)] | None = None
    max_retry_after: Seconds | None = None

    def build(self) -> Retry:
        return Retry(**self.given())


def _retry_value(value: Any) -> Any:
    if value is False:
        return {"attempts": 1}
    if isinstance(value, dict):
        return value
    raise PydanticCustomError(
        "retry_type", "must be a table such as { attempts = 3 }, or false for a single attempt"
    )


RetryValue = Annotated[_RetryTable, BeforeValidator(_retry_value)]


class _TargetTable(_Table):
    what: ClassVar[str] = "a fallback table"
    model: Text
    retry: RetryValue | None = None

    def build(self) -> Target:
        return Target(model=self.model, retry=None if self.retry is None else self.retry.build())


def _target_value(value: Any) -> Any:
    if isinstance(value, str):
        return {"model": value}
    if isinstance(value, dict):
        return value
    raise PydanticCustomError(
        "fallback_type",
        "must be a model name or a table such as "
        '{ model = "gpt-4o-mini", retry = { attempts = 2 } }',
    )


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str | dict) else value


Fail = Literal["open", "closed"]


class _BreakerTable(_Table):
    what: ClassVar[str] = "breaker"
    failures: Annotated[int, Field(gt=0)] | None = None
    reset_after: Seconds | None = None
    name: Text | None = None
    fail: Fail | None = None

    def build(self) -> Breaker:
        return Breaker(**self.given())


class _BudgetTable(_Table):
    what: ClassVar[str] = "budget"
    usd: Annotated[float, Field(gt=0)]
    per_call_usd: Annotated[float, Field(gt=0)] | None = None
    name: Text | None = None
    per: Literal["hour", "day", "month"] | None = None
    fail: Fail = "open"
    lease: Annotated[float, Field(gt=0)] = 600.0


class _RateLimitTable(_Table):
    what: ClassVar[str] = "rate_limit"
    rpm: Annotated[int, Field(gt=0)] | None = None
    tpm: Annotated[int, Field(gt=0)] | None = None
    name: Text | None = None
    fail: Fail | None = None
    max_wait: Seconds | None = None

    def build(self) -> RateLimit:
        return RateLimit(**self.given())


class _StoreTable(_Table):
    what: ClassVar[str] = "store"
    url: Text


class _NotEmpty(_Table):
    what: ClassVar[str] = "NotEmpty"
    name: Literal["NotEmpty"]

    def build(self) -> Callable[..., Any]:
        return builtin_checks.NotEmpty()


class _MaxInputTokens(_Table):
    what: ClassVar[str] = "MaxInputTokens"
    name: Literal["MaxInputTokens"]
    n: Annotated[int, Field(gt=0)] | None = None

    def build(self) -> Callable[..., Any]:
        return builtin_checks.MaxInputTokens(self.n)


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as error:
        raise PydanticCustomError("regex", f"not a regular expression: {error}") from None
    return value


def _pii_kind(value: str) -> str:
    if value not in builtin_checks.PII_KINDS:
        raise PydanticCustomError(
            "pii_kind", f"must be one of {', '.join(builtin_checks.PII_KINDS)}"
        )
    return value


class _NoSecrets(_Table):
    what: ClassVar[str] = "NoSecrets"
    name: Literal["NoSecrets"]
    patterns: list[Annotated[str, AfterValidator(_regex)]] = []

    def build(self) -> Callable[..., Any]:
        return builtin_checks.NoSecrets(patterns=self.patterns)


class _NoPII(_Table):
    what: ClassVar[str] = "NoPII"
    name: Literal["NoPII"]
    action: Literal["raise", "redact"] = "raise"
    kinds: Annotated[list[Annotated[str, AfterValidator(_pii_kind)]], Field(min_length=1)] = list(
        builtin_checks.PII_KINDS
    )

    def build(self) -> Callable[..., Any]:
        return builtin_checks.NoPII(action=self.action, kinds=self.kinds)


_CHECKS: dict[str, type[_NotEmpty | _MaxInputTokens | _NoSecrets | _NoPII]] = {
    "NotEmpty": _NotEmpty,
    "MaxInputTokens": _MaxInputTokens,
    "NoSecrets": _NoSecrets,
    "NoPII": _NoPII,
}


def _check_value(value: Any) -> Any:
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        raise PydanticCustomError(
            "check_type", 'must be a check name or a table such as { name = "NoPII", ... }'
        )
    name = value.get("name")
    if name not in _CHECKS:
        known = ", ".join(_CHECKS)
        what = "unknown check" if isinstance(name, str) else "a check needs a name"
        raise PydanticCustomError(
            "unknown_check",
            f"{what}{f' {name!r}' if isinstance(name, str) else ''}; the built-in checks are "
            f"{known} (custom checks are passed in code)",
            {"at": "name"},
        )
    return value


CheckValue = Annotated[
    _NotEmpty | _MaxInputTokens | _NoSecrets | _NoPII,
    Field(discriminator="name"),
    BeforeValidator(_check_value),
]

FailureName = Literal["rate_limit", "outage", "context_window", "content_policy"]


def _capture_mode(value: Any) -> Any:
    if not isinstance(value, bool | str):
        raise ValueError("capture must be a mode name (a string) or true/false")
    parse_mode(value)  # a ValueError naming the modes
    return value


class _PolicyTable(_Table):
    what: ClassVar[str] = "a policy"
    retry: RetryValue | None = None
    fallback: Annotated[
        list[Annotated[_TargetTable, BeforeValidator(_target_value)]],
        BeforeValidator(_one_or_many),
    ] = []
    timeout: Annotated[float, Field(gt=0)] | None = None
    breaker: _BreakerTable | None = None
    budget: _BudgetTable | None = None
    rate_limit: _RateLimitTable | None = None
    checks: list[CheckValue] = []
    tag: Annotated[Text, Field(max_length=128)] | None = None
    fallback_on: Annotated[list[FailureName], BeforeValidator(_one_or_many)] = []
    stream_usage: bool = True
    raise_on_truncation: bool = False
    reasks: Annotated[int, Field(ge=0)] | None = None
    capture: Annotated[Any, BeforeValidator(_capture_mode)] = None


class _FileTable(_Table):
    what: ClassVar[str] = "the policy file"
    policies: dict[str, _PolicyTable] = {}
    store: _StoreTable | None = None
