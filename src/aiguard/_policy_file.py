"""Named policies from a TOML file, so operations can change them without a code change.

``wrap(client, policy="default")`` and ``@guard(policy="summaries")`` take the policy of that
name from the policy file; keywords given in code override the file's values.

Where the file is found, once per process (:func:`reload` reads it again):

1. ``AIGUARD_CONFIG``, if set: the path of the file (relative to the current directory). A file
   named ``pyproject.toml`` is read from its ``[tool.aiguard]`` table, any other file whole. A
   path that names no file is an error, never a silent fall-through.
2. Otherwise, from the current directory upwards: ``aiguard.toml``, else a ``pyproject.toml``
   with a ``[tool.aiguard]`` table (a ``pyproject.toml`` without one is passed over). The
   nearest directory wins, and the search stops after the first directory holding ``.git`` (the
   repository's root) or at the filesystem root.

The format (in ``pyproject.toml`` the same tables under ``[tool.aiguard.policies.<name>]``)::

    [policies.default]
    retry = { attempts = 4, wait_initial = 0.5, wait_max = 20 }   # or false: a single attempt
    fallback = ["gpt-4o-mini", { model = "gpt-4o-mini", retry = { attempts = 2 } }]
    timeout = 30
    breaker = { failures = 5, reset_after = 30 }
    budget = { usd = 5.0, per_call_usd = 0.25, name = "default" }
    checks = ["NoSecrets", "NotEmpty", { name = "NoPII", action = "redact" },
              { name = "MaxInputTokens", n = 8000 }]
    tag = "support"
    fallback_on = ["rate_limit", "outage"]
    capture = "SPAN_ONLY"        # this policy's calls record prompts and answers (scrubbed)
    stream_usage = true
    raise_on_truncation = false
    reasks = 1

    [policies.summaries]
    retry = { attempts = 2 }

A key left out keeps aiguard's default (as when the keyword is not passed in code); named
policies do not inherit from one another. ``retry`` takes the fields of :class:`aiguard.Retry`,
``breaker`` those of :class:`aiguard.Breaker`, ``budget`` those of :class:`aiguard.Budget` (its
``name`` defaults to the policy's name), and ``checks`` the built-in checks of
:mod:`aiguard.checks` by name, alone or as a table of ``name`` and the check's parameters.
Fallback clients, ``output`` and custom checks are objects, so they are given in code.

Each named policy is built once per process: every client and function using it shares its
:class:`aiguard.Budget` (so the limit holds across them) and its :class:`aiguard.Breaker`. A
budget survives :func:`reload` while its settings are unchanged.

Errors are raised as :class:`PolicyFileError` naming the file, the line and the field, e.g.
``aiguard.toml:7: policies.default.retry.attempts: Input should be greater than 0``. tomllib
reports no positions for values, so the line is found by scanning the text for the key's table
and key (and an array item's start): a best effort that names the key's line when it cannot
name the value's.

Everything here runs when a client is wrapped or a function decorated, never per call.
"""

from __future__ import annotations

import bisect
import os
import re
import threading
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
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
from aiguard._budget import Budget
from aiguard._errors import AIGuardError
from aiguard._policy import Policy, Retry, Target, parse_mode

ENV_VAR = "AIGUARD_CONFIG"
FILE_NAME = "aiguard.toml"
PYPROJECT = "pyproject.toml"

Key = tuple[str | int, ...]


class PolicyFileError(AIGuardError, ValueError):
    """The policy file is missing, unreadable or invalid, or names no such policy.

    ``path``, ``line`` and ``field`` locate the (first) problem where known; the message says
    what is wrong and how to fix it.

    Example::

        try:
            client = aiguard.wrap(OpenAI(), policy="default")
        except aiguard.PolicyFileError as problem:
            sys.exit(str(problem))  # aiguard.toml:7: policies.default.retry.attempts: ...
    """

    def __init__(
        self,
        message: str,
        *,
        path: Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = path
        self.line = line
        self.field = field
        super().__init__(message)


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


class _BreakerTable(_Table):
    what: ClassVar[str] = "breaker"
    failures: Annotated[int, Field(gt=0)] | None = None
    reset_after: Seconds | None = None

    def build(self) -> Breaker:
        return Breaker(**self.given())


class _BudgetTable(_Table):
    what: ClassVar[str] = "budget"
    usd: Annotated[float, Field(gt=0)]
    per_call_usd: Annotated[float, Field(gt=0)] | None = None
    name: Text | None = None


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


# -- finding and reading the file -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Source:
    path: Path
    text: str
    table: Any  # the aiguard table: the whole file, or pyproject's [tool.aiguard]
    prefix: tuple[str, ...]  # the table's key in the file: () or ("tool", "aiguard")

    @property
    def shown(self) -> str:
        return _shown(self.path)

    def header(self, name: str) -> str:
        return f"[{'.'.join((*self.prefix, 'policies', name))}]"


def _shown(path: Path) -> str:
    """The path as people will recognise it: relative below the current directory."""
    cwd = Path.cwd()
    if cwd.parent == cwd:  # at the filesystem root a relative path reads as a typo
        return str(path)
    try:
        return str(path.relative_to(cwd))
    except ValueError:
        return str(path)


def _read(path: Path, pyproject: bool) -> _Source | None:
    """The file's aiguard table, or None for a pyproject.toml without one."""
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PolicyFileError(
            f"{_shown(path)}: cannot read the policy file: {error}", path=path
        ) from None
    if pyproject and "aiguard" not in text:
        return None  # the usual pyproject.toml: no need to parse it
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        found = re.search(r"at line (\d+)", str(error))
        line = int(found.group(1)) if found else text.count("\n") + 1
        raise PolicyFileError(
            f"{_shown(path)}:{line}: invalid TOML: {error}", path=path, line=line
        ) from None
    if not pyproject:
        return _Source(path, text, data, ())
    tool = data.get("tool")
    if not isinstance(tool, dict) or "aiguard" not in tool:
        return None
    return _Source(path, text, tool["aiguard"], ("tool", "aiguard"))


@dataclass(frozen=True, slots=True)
class _Search:
    """Where the policy file was looked for, and what was found."""

    source: _Source | None
    looked: str  # for the "no policy file" message


def _search(env: str | None, cwd: Path) -> _Search:
    if env:
        path = (cwd / Path(env).expanduser()).absolute()
        if not path.is_file():
            raise PolicyFileError(
                f"{ENV_VAR}={env!r} names no file ({path}). Point it at a policy file, or unset "
                f"it to use {FILE_NAME} in the current directory.",
                path=path,
            )
        source = _read(path, pyproject=path.name == PYPROJECT)
        if source is None:
            raise PolicyFileError(
                f"{ENV_VAR}={env!r}: {path} has no [tool.aiguard] table", path=path
            )
        return _Search(source, f"{ENV_VAR}={env!r}")
    directory = cwd
    for directory in (cwd, *cwd.parents):
        for name in (FILE_NAME, PYPROJECT):
            candidate = directory / name
            if candidate.is_file():
                source = _read(candidate, pyproject=name == PYPROJECT)
                if source is not None:
                    return _Search(source, str(candidate))
        if (directory / ".git").exists():
            break
    if directory == cwd:
        where = f"in {cwd}"
    else:
        where = f"in {cwd} or the directories above it, up to {directory}"
    return _Search(None, where)


# -- building policies ----------------------------------------------------------------------------

# One Budget per (file, policy) for the life of the process, kept by reload() while unchanged.
_budgets: dict[tuple[Path, str], Budget] = {}


def _budget(path: Path, policy: str, table: _BudgetTable) -> Budget:
    fresh = Budget(table.usd, per_call_usd=table.per_call_usd, name=table.name or policy)
    kept = _budgets.get((path, policy))
    if kept is not None and (kept.limit, kept.per_call, kept.name) == (
        fresh.limit,
        fresh.per_call,
        fresh.name,
    ):
        return kept
    _budgets[(path, policy)] = fresh
    return fresh


def _policy(source: _Source, name: str, table: _PolicyTable) -> Policy:
    given: dict[str, Any] = {}
    for key, value in table.given().items():
        try:
            if key in ("retry", "breaker"):
                given[key] = value.build()
            elif key == "fallback":
                given[key] = [target.build() for target in value]
            elif key == "checks":
                given[key] = [check.build() for check in value]
            elif key == "budget":
                given[key] = _budget(source.path, name, value)
            else:
                given[key] = value
        except (TypeError, ValueError) as error:  # the schema should have caught it first
            raise _error(source, ("policies", name, key), str(error)) from None
    try:
        return Policy.build(None, **given)
    except (TypeError, ValueError) as error:
        raise _error(source, ("policies", name), str(error)) from None


def _error(source: _Source, key: Key, message: str) -> PolicyFileError:
    full = (*source.prefix, *key)
    line = _line_of(_locate(source.text), full)
    dotted = ".".join(str(part) for part in full)
    where = f"{source.shown}:{line}" if line else source.shown
    return PolicyFileError(
        f"{where}: {dotted}: {message}", path=source.path, line=line, field=dotted
    )


def _invalid(source: _Source, error: ValidationError) -> PolicyFileError:
    lines = _locate(source.text)
    problems: list[tuple[int, str, str]] = []
    for item in error.errors(include_url=False, include_input=False):
        key: list[str | int] = []
        for part in item["loc"]:
            # A check's variant shows in pydantic's location ("checks.2.NoPII.kinds"): drop it.
            if not (isinstance(part, str) and part in _CHECKS and key and isinstance(key[-1], int)):
                key.append(part)
        at = (item.get("ctx") or {}).get("at")
        if isinstance(at, str):
            key.append(at)
        full = (*source.prefix, *key)
        problems.append(
            (_line_of(lines, full) or 0, ".".join(str(part) for part in full), item["msg"])
        )
    problems.sort(key=lambda problem: problem[0])  # in file order; stable for ties
    text = "\n".join(
        f"{source.shown}{f':{line}' if line else ''}: {dotted}: {message}"
        for line, dotted, message in problems
    )
    line, dotted, _ = problems[0]
    return PolicyFileError(text, path=source.path, line=line or None, field=dotted)


def _build(source: _Source) -> dict[str, Policy]:
    try:
        table = _FileTable.model_validate(source.table)
    except ValidationError as error:
        raise _invalid(source, error) from None
    return {name: _policy(source, name, policy) for name, policy in table.policies.items()}


# -- locating keys in the text --------------------------------------------------------------------

_BARE = re.compile(r"[A-Za-z0-9_-]+")
_SCALAR = re.compile(r"[^,\]}\r\n#]+")


class _Locator:
    """The line on which each key and array item starts, in TOML that tomllib accepted."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.newlines = [index for index, char in enumerate(text) if char == "\n"]
        self.lines: dict[Key, int] = {}
        self.arrays: dict[Key, int] = {}

    def run(self) -> dict[Key, int]:
        text = self.text
        table: Key = ()
        while True:
            self.skip()
            if self.pos >= len(text):
                return self.lines
            start = self.pos
            if text.startswith("[[", self.pos):
                self.pos += 2
                path = self.key()
                self.expect("]]")
                index = self.arrays[path] = self.arrays.get(path, -1) + 1
                self.mark(path, start)
                table = (*path, index)
            elif text[self.pos] == "[":
                self.pos += 1
                table = self.key()
                self.expect("]")
            else:
                self.pair(table)
                continue
            self.mark(table, start)

    def line(self, pos: int) -> int:
        return bisect.bisect_left(self.newlines, pos) + 1

    def mark(self, key: Key, pos: int) -> None:
        # The enclosing tables too: ``[a.b]`` or ``a.b = 1`` is where ``a`` first appears.
        line = self.line(pos)
        for length in range(1, len(key) + 1):
            self.lines.setdefault(key[:length], line)

    def skip(self, newlines: bool = True) -> None:
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char in " \t" or (newlines and char in "\r\n"):
                self.pos += 1
            elif char == "#":
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            else:
                return

    def expect(self, token: str) -> None:
        self.skip(newlines=False)
        if not self.text.startswith(token, self.pos):
            raise ValueError(f"expected {token!r} at {self.pos}")
        self.pos += len(token)

    def key(self) -> tuple[str, ...]:
        parts: list[str] = []
        while True:
            self.skip(newlines=False)
            char = self.text[self.pos]
            if char == '"':
                parts.append(tomllib.loads(f"k = {self.string(char)}")["k"])
            elif char == "'":
                parts.append(self.string(char)[1:-1])
            else:
                bare = _BARE.match(self.text, self.pos)
                if bare is None:
                    raise ValueError(f"no key at {self.pos}")
                parts.append(bare.group())
                self.pos = bare.end()
            self.skip(newlines=False)
            if not self.text.startswith(".", self.pos):
                return tuple(parts)
            self.pos += 1

    def pair(self, table: Key) -> None:
        start = self.pos
        key = (*table, *self.key())
        self.expect("=")
        self.mark(key, start)
        self.value(key)

    def string(self, quote: str) -> str:
        start, text = self.pos, self.text
        self.pos += 1
        while text[self.pos] != quote:
            self.pos += 2 if quote == '"' and text[self.pos] == "\\" else 1
        self.pos += 1
        return text[start : self.pos]

    def multiline(self, quote: str) -> None:
        text = self.text
        self.pos += 3
        while not text.startswith(quote * 3, self.pos):
            self.pos += 2 if quote == '"' and text[self.pos] == "\\" else 1
        self.pos += 3
        for _ in range(2):  # up to two quotes may end the content right before the delimiter
            if text.startswith(quote, self.pos):
                self.pos += 1

    def value(self, key: Key) -> None:
        self.skip(newlines=False)
        text = self.text
        char = text[self.pos]
        if char in "\"'":
            if text.startswith(char * 3, self.pos):
                self.multiline(char)
            else:
                self.string(char)
        elif char in "[{":
            self.pos += 1
            close = "]" if char == "[" else "}"
            index = 0
            while True:
                self.skip()
                if text[self.pos] == close:
                    self.pos += 1
                    return
                if char == "[":
                    self.mark((*key, index), self.pos)
                    self.value((*key, index))
                    index += 1
                else:
                    self.pair(key)
                self.skip()
                if text[self.pos] == ",":
                    self.pos += 1
                elif text[self.pos] != close:
                    raise ValueError(f"expected ',' or {close!r} at {self.pos}")
        else:
            scalar = _SCALAR.match(text, self.pos)
            if scalar is None:
                raise ValueError(f"no value at {self.pos}")
            self.pos = scalar.end()


def _locate(text: str) -> dict[Key, int]:
    locator = _Locator(text)
    try:
        return locator.run()
    except (ValueError, IndexError, tomllib.TOMLDecodeError):
        return locator.lines  # a best effort: what was found before the scan lost its way


def _line_of(lines: dict[Key, int], key: Key) -> int | None:
    """The line of ``key``, or of its nearest enclosing key or table that the scan found."""
    for length in range(len(key), 0, -1):
        line = lines.get(key[:length])
        if line is not None:
            return line
    return None


# -- the cache ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Loaded:
    found_for: tuple[str | None, Path]  # (AIGUARD_CONFIG, current directory)
    search: _Search
    policies: dict[str, Policy] = field(default_factory=dict)


_lock = threading.Lock()
_loaded: _Loaded | None = None


def _load(found_for: tuple[str | None, Path]) -> _Loaded:
    search = _search(*found_for)
    policies = {} if search.source is None else _build(search.source)
    return _Loaded(found_for, search, policies)


def _where() -> tuple[str | None, Path]:
    return os.environ.get(ENV_VAR) or None, Path.cwd()


def _current() -> _Loaded:
    global _loaded
    found_for = _where()
    with _lock:
        # Read once; again only if AIGUARD_CONFIG or the current directory changed since, or
        # if there was no file (the search is cheap, and a name without a file fails anyway).
        if _loaded is None or _loaded.found_for != found_for or _loaded.search.source is None:
            _loaded = _load(found_for)
        return _loaded


def resolve(policy: Policy | str | None) -> Policy | None:
    """``policy=`` as ``wrap``, ``guard`` and ``instrument`` take it: a :class:`Policy`, the
    name of one in the policy file (read once and shared by everything that names it), or None.
    """
    return named_policy(policy) if isinstance(policy, str) else policy


def named_policy(name: str) -> Policy:
    """The policy called ``name`` in the policy file (what ``policy="name"`` resolves to).

    Example::

        aiguard._policy_file.named_policy("default").budget.spent
    """
    loaded = _current()
    source = loaded.search.source
    if source is None:
        raise PolicyFileError(
            f"policy={name!r} names a policy in a policy file, but none was found: {ENV_VAR} is "
            f"not set, and there is no {FILE_NAME} (nor a {PYPROJECT} with a [tool.aiguard] "
            f"table) {loaded.search.looked}. Create {FILE_NAME} there with a "
            f"[policies.{name}] table, e.g.\n\n    [policies.{name}]\n"
            f"    retry = {{ attempts = 3 }}\n\nor set {ENV_VAR} to the path of a policy file."
        )
    policy = loaded.policies.get(name)
    if policy is None:
        known = ", ".join(repr(known) for known in loaded.policies) or "none"
        raise PolicyFileError(
            f"{source.shown}: no policy named {name!r}; the file defines {known}. Add a "
            f"{source.header(name)} table, or pass one of those names.",
            path=source.path,
        )
    return policy


def reload() -> Path | None:
    """Read the policy file again, now; returns its path (None: there is none).

    Clients wrapped and functions decorated afterwards get the new policies; those made before
    keep theirs. A policy whose budget settings did not change keeps its :class:`aiguard.Budget`
    and what it has spent. An invalid file raises :class:`PolicyFileError` and leaves the
    policies read before in force.

    Example::

        signal.signal(signal.SIGHUP, lambda *_: aiguard._policy_file.reload())
    """
    global _loaded
    with _lock:
        fresh = _loaded = _load(_where())
    source = fresh.search.source
    return None if source is None else source.path


def reset() -> None:
    """Forget the policy file and every budget made from it (for tests)."""
    global _loaded
    with _lock:
        _loaded = None
        _budgets.clear()


def found() -> Path | None:
    """The policy file in force, if any (reads it; raises :class:`PolicyFileError` if invalid)."""
    source = _current().search.source
    return None if source is None else source.path
