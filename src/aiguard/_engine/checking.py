"""Input checks: run the policy's checks on a request before anything is sent or reserved.

A check refuses by raising (any exception becomes :class:`aiguard.CheckFailed` naming it) and
redacts by returning new messages, whose changed text replaces the original in the request.
Nothing reads message text unless a check is configured. An async check's awaitable is yielded
for the async driver to await; the sync driver refuses it.
"""

from __future__ import annotations

import contextlib
import inspect
import json
from collections.abc import Callable, Generator, Sequence
from typing import Any

from aiguard._errors import CheckFailed
from aiguard._messages import Message, replace_text


def run_checks(
    checks: Sequence[Any],
    messages: list[Message],
    request: dict[str, Any],
    context: dict[str, Any],
    refused: Callable[[str], None],
) -> Generator[Any, Any, dict[str, Any]]:
    """Run ``checks`` in order on ``messages``; return the request to send (redacted or not).

    ``refused(name)`` is told which check refused before the refusal is raised.
    """
    original = messages
    for check in checks:
        name = check_name(check)
        try:
            result = check(messages, **context)
            if inspect.isawaitable(result):
                result = yield result
        except CheckFailed as refusal:
            refused(name)
            raise refusal from None
        except Exception as exc:
            refused(name)
            raise CheckFailed(name, str(exc) or type(exc).__name__) from exc
        if isinstance(result, list):
            messages = result
    if messages is not original:
        return dict(replace_text(request, _redactions(original, messages)))
    return request


def check_name(check: Any) -> str:
    name = getattr(check, "name", None)
    if isinstance(name, str) and name:
        return name
    return getattr(check, "__qualname__", None) or type(check).__qualname__


def _redactions(before: list[Message], after: list[Message]) -> dict[str, str]:
    """Original text -> redacted text, for what a check changed.

    A text part is a string of the request as it is; a structured part (a tool call, its
    result) is JSON made from the request's values, so its changed strings are matched inside.
    """
    changed: dict[str, str] = {}
    for old, new in zip(before, after, strict=False):
        for old_part, new_part in zip(old.parts, new.parts, strict=False):
            if old_part.content == new_part.content or not old_part.content:
                continue
            changed[old_part.content] = new_part.content
            if old_part.type != "text":
                with contextlib.suppress(ValueError):  # not JSON: nothing more to match
                    _changed_strings(
                        json.loads(old_part.content), json.loads(new_part.content), changed
                    )
    return changed


def _changed_strings(old: Any, new: Any, changed: dict[str, str]) -> None:
    if isinstance(old, str) and isinstance(new, str):
        if old != new:
            changed[old] = new
    elif isinstance(old, dict) and isinstance(new, dict):
        for key, value in old.items():
            if key in new:
                _changed_strings(value, new[key], changed)
    elif isinstance(old, list) and isinstance(new, list):
        for a, b in zip(old, new, strict=False):
            _changed_strings(a, b, changed)
