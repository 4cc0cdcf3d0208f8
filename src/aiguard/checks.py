"""Input checks: refuse or redact a request before anything is sent.

A check is any callable ``check(messages, **context)`` that reads the request's messages in
aiguard's neutral form (:class:`~aiguard._messages.Message`). It raises to refuse the call and
returns a new list of messages to send those instead (redaction); ``context`` holds ``model``,
``provider`` and ``operation``. The built-ins raise :class:`aiguard.CheckFailed`, whose message
names the kind of problem and the message it is in, never the offending value, so a refusal is
safe to log.

Everything here is plain Python (``re`` and ``unicodedata``): no model, no download. Patterns are
compiled once at import, and every pattern is bounded or anchored so that a megabyte of prompt
is scanned in a fraction of a second, whatever it holds.

Example::

    import aiguard
    from aiguard import checks

    client = aiguard.wrap(
        OpenAI(),
        checks=[checks.NotEmpty(), checks.MaxInputTokens(), checks.NoSecrets(),
                checks.NoPII(action="redact")],
    )

The helpers :func:`scrub`, :func:`find_secrets` and :func:`find_pii` apply the same detectors
to any string (log lines, captured content). :class:`Message` and :class:`Part` are here for
writing your own checks::

    def no_shouting(messages: list[checks.Message], **context: object) -> None:
        if any(message.text.isupper() for message in messages):
            raise ValueError("no shouting")
"""

from __future__ import annotations

import json
import re
import threading
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from aiguard._detect import (
    Finding,
    _could_hold_pii,
    _findings,
    _kinds,
    _pii_detectors,
    _replace,
    find_pii,
    find_secrets,
    scrub,
)
from aiguard._errors import CheckFailed
from aiguard._messages import Message, Part, estimate_input_tokens, to_json
from aiguard._patterns import (
    _PII_NAMES,
    _SECRET_NAMES,
    _SECRETS,
    PII_KINDS,
    SECRET_KINDS,
    _Detector,
)
from aiguard.prices import LOCAL_PROVIDERS, model_info

__all__ = [
    "PII_KINDS",
    "SECRET_KINDS",
    "Finding",
    "MaxInputTokens",
    "Message",
    "NoPII",
    "NoSecrets",
    "NotEmpty",
    "Part",
    "find_pii",
    "find_secrets",
    "scrub",
]


def _where(problems: Sequence[tuple[str, int, str]]) -> str:
    """ "an OpenAI API key in message 2 (user) and ..." from (description, index, role)."""
    unique = list(dict.fromkeys(problems))
    shown = [f"{what} in message {index + 1} ({role})" for what, index, role in unique[:3]]
    if len(unique) > 3:
        shown.append(f"{len(unique) - 3} more")
    if len(shown) == 1:
        return shown[0]
    return ", ".join(shown[:-1]) + " and " + shown[-1]


def _role(message: Message) -> str:
    role = message.role
    # Roles come from the request; only the usual ones are repeated in a reason.
    return role if role in ("system", "user", "assistant", "tool", "developer") else "other"


# -- the checks ----------------------------------------------------------------------------------

# Characters that draw nothing but are neither whitespace nor format characters (Cf): Hangul
# fillers, the Braille blank, combining grapheme joiner, Mongolian and other variation selectors.
_INVISIBLE = frozenset(
    "\u115f\u1160\u3164\uffa0\u2800\u034f\u180b\u180c\u180d\u180f"
    + "".join(chr(code) for code in range(0xFE00, 0xFE10))
    + "".join(chr(code) for code in range(0xE0100, 0xE01F0))
)
_VISIBLE_ASCII = re.compile(r"[!-~]")


def _blank_char(char: str) -> bool:
    if char.isspace() or char in _INVISIBLE:
        return True
    category = unicodedata.category(char)
    if category in ("Cf", "Cc", "Zs", "Zl", "Zp"):
        return True
    normal = unicodedata.normalize("NFKC", char)
    return normal != char and all(_blank_char(c) for c in normal)


def _blank(text: str) -> bool:
    if _VISIBLE_ASCII.search(text):  # the usual case, decided without looking at each character
        return False
    return all(_blank_char(char) for char in text)


class NotEmpty:
    """Refuses a request that asks nothing: no visible text, no image, no tool content.

    Text is blank when, after NFKC normalisation, it holds only whitespace and characters that
    draw nothing (zero-width spaces and joiners, the soft hyphen, BOMs, other format characters,
    Hangul fillers, variation selectors). Any image, tool call, tool result or other part counts
    as content. When the request has a user message the last one is judged, so a long system
    prompt does not hide an empty question; without one, all messages are.

    Example::

        aiguard.wrap(OpenAI(), checks=[aiguard.checks.NotEmpty()])
        # messages=[{"role": "user", "content": "\\u200b "}] -> aiguard.CheckFailed
    """

    name = "NotEmpty"

    def __call__(self, messages: Sequence[Message], **context: Any) -> None:
        users = [message for message in messages if message.role == "user"]
        judged: Sequence[Message] = users[-1:] or messages
        for message in judged:
            for part in message.parts:
                if part.type != "text" or not _blank(part.content):
                    return None
        what = "the last user message" if users else "the request"
        raise CheckFailed(self.name, f"{what} has no visible text, image or tool content")

    def __repr__(self) -> str:
        return "NotEmpty()"


_windows: dict[tuple[str | None, str], int | None] = {}
_windows_lock = threading.Lock()


def _context_window(provider: str | None, model: str) -> int | None:
    """The model's context window from genai-prices, or None where it is not known."""
    key = (provider, model)
    try:
        return _windows[key]
    except KeyError:
        pass
    window = None if provider in LOCAL_PROVIDERS else _library_window(provider, model)
    with _windows_lock:
        if len(_windows) > 4096:  # bounded: model names come from callers and servers
            _windows.clear()
        _windows[key] = window
    return window


def _library_window(provider: str | None, model: str) -> int | None:
    try:
        info = model_info(provider, model)
        window = info.context_window
    except LookupError:
        return None
    except Exception as exc:  # the data or the library changed shape: never refuse for that
        from aiguard._telemetry import report_fault

        report_fault("looking up a model's context window", exc)
        return None
    return window if isinstance(window, int) and not isinstance(window, bool) else None


class MaxInputTokens:
    """Refuses a request whose input may exceed ``n`` tokens, or without ``n`` the model's
    context window as genai-prices knows it (a model it does not know passes).

    The estimate is aiguard's upper bound (:func:`~aiguard._messages.estimate_input_tokens`):
    one token per UTF-8 byte, and the dearest image any model bills. It never lets through a
    request that is too long, but it refuses some that would fit: English averages about four
    bytes per token. Pass ``count`` (messages -> tokens) to use a real tokenizer instead.

    Example::

        checks=[aiguard.checks.MaxInputTokens(20_000)]   # or MaxInputTokens() for the window
    """

    name = "MaxInputTokens"

    def __init__(
        self, n: int | None = None, *, count: Callable[[list[Message]], int] | None = None
    ) -> None:
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"MaxInputTokens(n) must be a positive int or None, got {n!r}")
        if count is not None and not callable(count):
            raise TypeError(f"count= must be a callable (messages) -> int, got {count!r}")
        self.n = n
        self.count = count

    def __call__(self, messages: Sequence[Message], **context: Any) -> None:
        limit = self.n
        source = "the limit"
        if limit is None:
            model = context.get("model")
            provider = context.get("provider")
            if not isinstance(model, str) or not model:
                return None
            limit = _context_window(provider if isinstance(provider, str) else None, model)
            if limit is None:
                return None
            source = "the model's context window"
        if self.count is not None:
            tokens = self.count(list(messages))
            how = "counts"
        else:
            tokens = estimate_input_tokens(messages)
            how = "is estimated at up to"
        if tokens > limit:
            raise CheckFailed(
                self.name, f"the input {how} {tokens:,} tokens, over {source} of {limit:,}"
            )
        return None

    def __reduce__(self) -> tuple[Any, ...]:
        return (MaxInputTokens, (self.n,), {"count": self.count})

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.count = state["count"]

    def __repr__(self) -> str:
        return f"MaxInputTokens({self.n!r})"


class NoSecrets:
    """Refuses a request that carries a credential; the reason names its kind, never its value.

    Detects OpenAI (``sk-``, ``sk-proj-``, ``sk-svcacct-``, ``sk-admin-``) and Anthropic
    (``sk-ant-``) keys, AWS access key ids (``AKIA``/``ASIA``) and secret keys assigned to an
    AWS-looking name, GitHub tokens, Slack tokens and webhooks, Google API keys, Stripe live
    keys, PEM private keys, JSON Web Tokens, passwords in URLs, bearer tokens, and
    ``password=``/``secret:``/``api_key=``/``token:`` assignments of a real-looking value
    (placeholders such as ``$TOKEN``, ``<password>``, ``********`` and variable names pass).
    ``patterns`` adds your own (strings or compiled ``re`` patterns).

    Every part with content is read: text, tool calls, tool results and other parts.

    Example::

        checks=[aiguard.checks.NoSecrets(patterns=[r"ACME-[0-9]{8}"])]
        # "my key is sk-proj-..." -> CheckFailed: NoSecrets refused the call:
        #   an OpenAI API key in message 1 (user). Nothing was sent.
    """

    name = "NoSecrets"

    def __init__(self, patterns: Iterable[str | re.Pattern[str]] = ()) -> None:
        if isinstance(patterns, str | re.Pattern):
            patterns = (patterns,)
        if isinstance(patterns, bytes | dict) or not isinstance(patterns, Iterable):
            raise TypeError(
                f"NoSecrets(patterns=...) takes a pattern (a string or a compiled str pattern) "
                f"or a list of them, got {patterns!r}"
            )
        extra = []
        for pattern in patterns:
            if isinstance(pattern, str):
                pattern = re.compile(pattern)
            elif not isinstance(pattern, re.Pattern) or not isinstance(pattern.pattern, str):
                raise TypeError(
                    f"NoSecrets(patterns=...) takes strings or compiled str patterns, "
                    f"got {type(pattern).__name__}"
                )
            extra.append(_Detector("custom", pattern))
        self.patterns = tuple(detector.pattern for detector in extra)
        self._detectors = _SECRETS + tuple(extra)

    def __call__(self, messages: Sequence[Message], **context: Any) -> None:
        problems: list[tuple[str, int, str]] = []
        for index, message in enumerate(messages):
            for part in message.parts:
                if not part.content:
                    continue
                for item in _findings(part.content, self._detectors, ()):
                    problems.append((_SECRET_NAMES[item.detector.kind], index, _role(message)))
        if problems:
            raise CheckFailed(self.name, _where(problems))
        return None

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from its patterns: the built-in detectors hold functions pickle cannot name.
        return (NoSecrets, (self.patterns,))

    def __repr__(self) -> str:
        # Custom patterns may spell out the very secret they look for: count them, never show.
        return (
            f"NoSecrets(<{len(self.patterns)} custom patterns>)" if self.patterns else "NoSecrets()"
        )


class NoPII:
    """Refuses, or redacts, personal data: emails, phone numbers, card numbers, US SSNs, IBANs
    and IP addresses.

    Detection favours precision: cards must pass the Luhn check and start like a real issuer's,
    IBANs must pass mod-97, SSNs must be in issued ranges, phone numbers need a ``+`` country
    code or a grouped national format (plain years, prices, order ids and dates pass), and an
    IPv4 address is any valid dotted quad (so is a four-part version like ``1.2.3.4``; one
    written ``v1.2.3.4`` is not) except loopback (``127.*``), ``0.0.0.0`` and broadcast; IPv6
    addresses need two non-zero groups and a digit (``::1`` and ``std::vector`` pass).

    With ``action="redact"`` the check returns new messages (the originals are untouched) with
    each match replaced by ``[REDACTED:<kind>]``. Text parts are redacted as text; JSON parts
    (tool calls, tool results, other) have the strings inside their JSON redacted and stay
    valid JSON. Personal data that redaction cannot reach (a card number written as a JSON
    number) refuses the call instead. Images are never read.

    Example::

        checks=[aiguard.checks.NoPII(action="redact", kinds=["email", "phone"])]
        # "mail ada@example.com" is sent as "mail [REDACTED:email]"
    """

    name = "NoPII"

    def __init__(
        self,
        action: Literal["raise", "redact"] = "raise",
        kinds: Iterable[str] = PII_KINDS,
    ) -> None:
        if action not in ("raise", "redact"):
            raise ValueError(f'NoPII(action=...) must be "raise" or "redact", got {action!r}')
        self.action = action
        self.kinds = _kinds(kinds)
        self._detectors = _pii_detectors(self.kinds)

    def __call__(self, messages: Sequence[Message], **context: Any) -> list[Message] | None:
        if self.action == "redact":
            return self._redact(messages)
        problems = [
            (_PII_NAMES[item.detector.kind], index, _role(message))
            for index, message in enumerate(messages)
            for part in message.parts
            if part.content
            for item in _findings(part.content, (), self._detectors)
        ]
        if problems:
            raise CheckFailed(self.name, _where(problems))
        return None

    def _redact(self, messages: Sequence[Message]) -> list[Message] | None:
        changed = False
        out: list[Message] = []
        left: list[tuple[str, int, str]] = []
        for index, message in enumerate(messages):
            parts: list[Part] = []
            for part in message.parts:
                content = part.content
                if content and part.type == "text":
                    content = self._redact_text(content)
                elif content:
                    content = self._redact_json(content)
                    # What the JSON's strings did not hold (a card as a JSON number) is left.
                    left.extend(
                        (_PII_NAMES[item.detector.kind], index, _role(message))
                        for item in _findings(content, (), self._detectors)
                    )
                changed = changed or content != part.content
                parts.append(Part(part.type, content))
            out.append(Message(message.role, parts))
        if left:
            raise CheckFailed(self.name, _where(left) + " that redaction cannot reach")
        return out if changed else None

    def _redact_text(self, text: str) -> str:
        return _replace(text, _findings(text, (), self._detectors))

    def _redact_json(self, content: str) -> str:
        """The strings inside a JSON part redacted, or the raw text when it is not JSON."""
        if not _could_hold_pii(content):
            return content
        try:
            value = json.loads(content)
        except ValueError:
            return self._redact_text(content)
        redacted = self._redact_value(value)
        return content if redacted == value else to_json(redacted)

    def _redact_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._redact_text(value)
        if isinstance(value, list):
            return [self._redact_value(item) for item in value]
        if isinstance(value, dict):
            return {key: self._redact_value(item) for key, item in value.items()}
        return value

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from its settings: the detectors hold functions pickle cannot name.
        return (NoPII, (self.action, self.kinds))

    def __repr__(self) -> str:
        return f"NoPII(action={self.action!r}, kinds={list(self.kinds)!r})"
