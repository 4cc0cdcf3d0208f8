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
    budget = { usd = 5.0, per_call_usd = 0.25, name = "default", per = "day" }
    rate_limit = { rpm = 500, tpm = 30000, name = "openai-tier-1" }
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

    [store]                      # the default store of every named budget, breaker, rate limit
    url = "redis://cache:6379/0"

A key left out keeps aiguard's default (as when the keyword is not passed in code); named
policies do not inherit from one another. ``retry`` takes the fields of :class:`aiguard.Retry`,
``breaker`` those of :class:`aiguard.Breaker`, ``budget`` those of :class:`aiguard.Budget` (its
``name`` defaults to the policy's name), ``rate_limit`` those of :class:`aiguard.RateLimit`,
and ``checks`` the built-in checks of :mod:`aiguard.checks` by name, alone or as a table of
``name`` and the check's parameters.
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

import os
import re
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import (
    ValidationError,
)

from aiguard import _policy_quality, _store
from aiguard._budget import Budget
from aiguard._errors import AIGuardError
from aiguard._policy import Policy
from aiguard._policy_quality import FileTable as _FileTable
from aiguard._policy_quality import PolicyTable as _PolicyTable
from aiguard._policy_schema import _CHECKS, _BudgetTable
from aiguard._toml_lines import Key, _line_of, _locate

ENV_VAR = "AIGUARD_CONFIG"
FILE_NAME = "aiguard.toml"
PYPROJECT = "pyproject.toml"


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
    fresh = Budget(
        table.usd,
        per_call_usd=table.per_call_usd,
        name=table.name or policy,
        per=table.per,
        fail=table.fail,
        lease=table.lease,
    )
    kept = _budgets.get((path, policy))
    if kept is not None and (kept.limit, kept.per_call, kept.name, kept.per) == (
        fresh.limit,
        fresh.per_call,
        fresh.name,
        fresh.per,
    ):
        return kept
    _budgets[(path, policy)] = fresh
    return fresh


def _policy(source: _Source, name: str, table: _PolicyTable) -> Policy:
    given: dict[str, Any] = {}
    for key, value in table.given().items():
        try:
            if key in ("retry", "breaker", "rate_limit"):
                given[key] = value.build()
            elif key == "fallback":
                given[key] = [target.build() for target in value]
            elif key == "checks":
                given[key] = [check.build() for check in value]
            elif key == "budget":
                given[key] = _budget(source.path, name, value)
            elif key in _policy_quality.QUALITY_KEYS:
                given[key] = _policy_quality.build(key, value)
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
    if table.store is not None:
        try:
            _store.file_default(table.store.url)
        except (TypeError, ValueError, ImportError) as error:
            raise _error(source, ("store", "url"), str(error)) from None
    return {name: _policy(source, name, policy) for name, policy in table.policies.items()}


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
