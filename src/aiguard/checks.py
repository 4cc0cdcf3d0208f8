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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from aiguard._errors import CheckFailed
from aiguard._messages import Message, Part, estimate_input_tokens, to_json
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


class Finding(NamedTuple):
    """One match of a detector in a string: its ``kind`` and the ``text[start:end]`` it covers.

    Example::

        >>> find_pii("mail ada@example.com")
        [Finding(kind='email', start=5, end=20)]
    """

    kind: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class _Detector:
    kind: str
    pattern: re.Pattern[str]
    # Cheap substring tests (on the lower-cased text): the pattern cannot match without one.
    hints: tuple[str, ...] = ()
    group: int | None = 0  # the group that is the sensitive value; None: the one that matched
    valid: Callable[[re.Match[str]], bool] | None = None


# -- secrets -------------------------------------------------------------------------------------

# Token boundaries are ASCII: a key glued to a longer run of key characters is not a key
# ("risk-free" holds no "sk-" key), whatever Unicode letters sit around it.
_B = r"(?<![A-Za-z0-9_-])"

_PLACEHOLDERS = frozenset(
    {
        "changeme",
        "change_me",
        "example",
        "password",
        "passwd",
        "placeholder",
        "redacted",
        "secret",
        "token",
        "undefined",
        "none",
        "null",
        "true",
        "false",
        "required",
        "optional",
        "string",
        "your_password",
        "your-password",
        "your_api_key",
        "your-api-key",
        "your_token",
        "your-token",
    }
)


# Elisions in examples: "sk-...", "abc…", "xxxx-xxxx", "****".
_FILLER = re.compile(r"\.\.\.|\u2026|xxx|XXX|\*\*\*")


def _placeholder(value: str) -> bool:
    """``$TOKEN``, ``<password>``, ``{{secret}}``, ``********``, ``changeme``, ``sk-...``."""
    return (
        value[0] in "$<{%*[("
        or value.lower() in _PLACEHOLDERS
        or len(set(value)) <= 2  # "xxxxxx", "------"
        or _FILLER.search(value) is not None
    )


def _credential_value(value: str) -> bool:
    """Whether the value of a ``password=``-style assignment looks like a real credential."""
    return len(value) >= 6 and not _placeholder(value)


# Words that mark a value as an example rather than a credential ("sk-demo-not-a-real-key").
_EXAMPLE = re.compile(r"(?i)dummy|fake|example|sample|placeholder|demo|your|not-a-real")


def _assigned_credential(match: re.Match[str]) -> bool:
    value = match.group(match.lastindex or 0)
    if not _credential_value(value) or _EXAMPLE.search(value):
        return False
    if match.lastindex != 3:
        return True  # quoted: a literal
    # An unquoted value must also hold a digit or punctuation, and not be called or indexed:
    # ``api_key=api_key``, ``password=settings.DB_PASSWORD`` and ``token = b64encode(raw)``
    # are code, not credentials.
    after = match.string[match.end() : match.end() + 1]
    return after not in ("(", "[") and any(not (char.isalpha() or char in "_.-") for char in value)


# Keywords whose assigned value is a credential; an identifier may end with one
# (DB_PASSWORD, slackToken), and a quote may close a JSON or YAML key.
_ASSIGNED = (
    r"(?:password|passwd|passphrase|secret|client[_-]?secret|secret[_-]?key|api[_-]?key"
    r"|api[_-]?secret|access[_-]?key|private[_-]?key|(?:auth|access|refresh|bearer)[_-]?token"
    r"|token)"
)
_ASSIGNMENT = (
    # The lookahead on the first letter is only for speed: it spares most positions the
    # keyword alternation. The value is double-quoted, single-quoted or bare (groups 1-3).
    r"(?=[PpSsCcAaRrBbTt])(?i:"
    + _ASSIGNED
    + r")[\"']?[ \t]{0,8}(?:=>?|:)[ \t]{0,8}"
    + r"(?:\"([^\"\n]{1,256})\"|'([^'\n]{1,256})'|([^\s\"'`,;(){}\[\]<>]{1,256}))"
)


_SECRETS: tuple[_Detector, ...] = (
    _Detector(
        "private_key",
        # The whole PEM block when its END line follows; else the header and the base64 lines
        # after it (a truncated paste). The body stops at the first "-----", so headers without
        # an END cost one scan each, not one scan of the rest of the text.
        re.compile(
            r"-----BEGIN[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----"
            r"(?:[^-]{0,100000}(?:-(?!----)[^-]{0,100000}){0,16}"
            r"-----END[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----"
            r"|(?:(?:\s|\\[nr]){1,4}[A-Za-z0-9+/=]{16,})*)"
        ),
        ("private key",),
    ),
    _Detector(
        "anthropic_api_key",
        re.compile(_B + r"sk-ant-[A-Za-z0-9_-]{20,}"),
        ("sk-ant-",),
    ),
    _Detector(
        "openai_api_key",
        # Project, service-account and admin keys, and the older bare "sk-" + 48 characters.
        re.compile(_B + r"sk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_-]{20,}|[A-Za-z0-9]{32,})"),
        ("sk-",),
    ),
    _Detector(
        "stripe_live_key",
        re.compile(_B + r"(?:sk|rk)_live_[A-Za-z0-9]{16,}"),
        ("_live_",),
    ),
    _Detector(
        "aws_access_key_id",
        re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"),
        ("akia", "asia"),
    ),
    _Detector(
        "aws_secret_access_key",
        re.compile(
            r"(?=[AaSs])(?i:aws[_.-]?)?(?i:secret[_.-]?(?:access[_.-]?)?key)[\"']?"
            r"[ \t]{0,8}(?:=>?|:)[ \t]{0,8}[\"']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"
        ),
        ("secret",),
        group=1,
    ),
    _Detector(
        "github_token",
        re.compile(_B + r"(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
        ("gh", "github_pat_"),
    ),
    _Detector(
        "slack_token",
        re.compile(_B + r"xox[abprs]-[A-Za-z0-9-]{10,}"),
        ("xox",),
    ),
    _Detector(
        "slack_webhook",
        re.compile(r"hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/-]{20,}"),
        ("hooks.slack.com",),
    ),
    _Detector(
        "google_api_key",
        re.compile(_B + r"AIza[A-Za-z0-9_-]{35}"),
        ("aiza",),
    ),
    _Detector(
        "jwt",
        re.compile(_B + r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
        ("eyj",),
    ),
    _Detector(
        "url_password",
        # scheme://user:password@host: the password alone.
        re.compile(r"://[^\s:/@\"'<>]{1,128}:([^\s:/@\"'<>]{1,128})@"),
        ("://",),
        group=1,
        valid=lambda match: _placeholder(match.group(1)) is False,
    ),
    _Detector(
        "bearer_token",
        re.compile(r"(?<![A-Za-z0-9])(?i:bearer)[ \t]{1,8}([A-Za-z0-9._~+/-]{20,}=*)"),
        ("bearer",),
        group=1,
    ),
    _Detector(
        "secret_assignment",
        re.compile(_ASSIGNMENT),
        ("pass", "secret", "key", "token"),
        group=None,
        valid=_assigned_credential,
    ),
)

_SECRET_NAMES = {
    "private_key": "a private key",
    "anthropic_api_key": "an Anthropic API key",
    "openai_api_key": "an OpenAI API key",
    "stripe_live_key": "a Stripe live key",
    "aws_access_key_id": "an AWS access key id",
    "aws_secret_access_key": "an AWS secret access key",
    "github_token": "a GitHub token",
    "slack_token": "a Slack token",
    "slack_webhook": "a Slack webhook URL",
    "google_api_key": "a Google API key",
    "jwt": "a JSON Web Token",
    "url_password": "a password in a URL",
    "bearer_token": "a bearer token",
    "secret_assignment": "a password or secret assigned in the text",
    "custom": "a match of a custom secret pattern",
}

SECRET_KINDS: tuple[str, ...] = tuple(kind for kind in _SECRET_NAMES if kind != "custom")
"""Every kind :func:`find_secrets` can report, e.g. ``"openai_api_key"`` or ``"jwt"``.

Example::

    >>> "github_token" in SECRET_KINDS
    True
"""


# -- personal data -------------------------------------------------------------------------------


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


# Issuer prefixes of the cards in wide use (Visa, Mastercard, Amex, Diners, JCB, Discover,
# UnionPay, Maestro): a Luhn-valid order id starting with 1, 7, 8 or 9 is not a card.
_CARD_ISSUER = re.compile(r"4|5[0-9]|2[2-7]|3[0-9]|6")


def _card(value: str) -> bool:
    separators = {char for char in value if not char.isdigit()}
    digits = "".join(char for char in value if char.isdigit())
    return (
        len(separators) <= 1
        and 13 <= len(digits) <= 19
        and _CARD_ISSUER.match(digits) is not None
        and _luhn(digits)
    )


def _iban(value: str) -> bool:
    compact = value.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rotated = compact[4:] + compact[:4]
    number = "".join(str(int(char, 36)) for char in rotated)
    return int(number) % 97 == 1


def _email(value: str) -> bool:
    domain = value.rpartition("@")[2]
    labels = domain.split(".")
    return (
        len(labels) >= 2
        and len(domain) <= 253
        and labels[-1].isalpha()
        and all(label and label[0] != "-" and label[-1] != "-" for label in labels)
    )


def _phone(value: str) -> bool:
    digits = sum(char.isdigit() for char in value)
    if value.startswith("+"):
        if not 8 <= digits <= 15 or value.count("(") != value.count(")"):
            return False
        # One separator between groups at most: "+1 (415) 555-2671", not "+1 -- 2".
        return re.search(r"[ .-][ .-]|\(\)|[ .-]\)", value) is None
    # National numbers with a trunk 0 ("020 7946 0958", "01 23 45 67 89"): one separator
    # kind, so a date followed by a time ("01.02.2024 12") is not a phone number.
    separators = {char for char in value if not char.isdigit()}
    return 10 <= digits <= 12 and len(separators) == 1


_HEX = frozenset("0123456789abcdefABCDEF")


def _ipv6(value: str) -> bool:
    if "." in value:
        # An IPv4 tail ("::ffff:192.0.2.1", checked by the pattern) stands for two groups.
        value = value[: value.rindex(":") + 1] + "1:1"
    if value.count("::") > 1:
        return False
    if "::" in value:
        left, _, right = value.partition("::")
        groups = (left.split(":") if left else []) + (right.split(":") if right else [])
        if len(groups) > 7:
            return False
    else:
        groups = value.split(":")
        if len(groups) != 8:
            return False
    if not all(group and len(group) <= 4 and set(group) <= _HEX for group in groups):
        return False
    # "::1", "a::b" and "dead::beef" are valid but say nothing about anyone, and look like
    # code ("Cafe::Bad"); an address worth hiding has two groups and a digit.
    return sum(1 for group in groups if group.strip("0")) >= 2 and any(
        char.isdigit() for group in groups for char in group
    )


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = _OCTET + r"(?:\." + _OCTET + r"){3}"

_PII: tuple[_Detector, ...] = (
    _Detector(
        "email",
        re.compile(
            r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}"
            r"(?:\.[A-Za-z0-9-]{1,63}){1,8}(?![A-Za-z0-9-])"
        ),
        ("@",),
        valid=lambda match: _email(match.group()),
    ),
    _Detector(
        "iban",
        re.compile(
            r"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?"
            r"(?![A-Za-z0-9])"
        ),
        valid=lambda match: _iban(match.group()),
    ),
    _Detector(
        "credit_card",
        re.compile(r"(?<![0-9.,-])[0-9](?:[ -]?[0-9]){12,18}(?![0-9]|[.,-][0-9])"),
        valid=lambda match: _card(match.group()),
    ),
    _Detector(
        "ssn",
        # Area 000, 666 and 900-999, group 00 and serial 0000 are never issued.
        re.compile(
            r"(?<![0-9.-])(?!000|666|9[0-9][0-9])[0-9]{3}-(?!00)[0-9]{2}-(?!0000)[0-9]{4}"
            r"(?![0-9]|[.-][0-9])"
        ),
        ("-",),
    ),
    _Detector(
        "phone",
        # International: "+" and 8 to 15 digits in groups.
        re.compile(r"(?<![A-Za-z0-9+])\+[1-9][0-9 ().-]{6,24}[0-9](?![0-9]|[.-][0-9])"),
        ("+",),
        valid=lambda match: _phone(match.group()),
    ),
    _Detector(
        "phone",
        # North American: "(415) 555-2671", "415-555-2671", "415.555.2671", "1-800-555-0199".
        # Area and exchange codes start with 2-9, so "123-456-7890" ids are not numbers, and
        # the separator is one kind (not "250 300-4000"); space-only groups are left out, as
        # tables of numbers look the same.
        re.compile(
            r"(?<![0-9.,/-])(?:1[-. ]?)?(?:\([2-9][0-9]{2}\) ?[2-9][0-9]{2}[-. ]"
            r"|[2-9][0-9]{2}-[2-9][0-9]{2}-|[2-9][0-9]{2}\.[2-9][0-9]{2}\.)[0-9]{4}"
            r"(?![0-9]|[.,/-][0-9])"
        ),
    ),
    _Detector(
        "phone",
        # National numbers with a trunk 0, grouped: "020 7946 0958", "01 23 45 67 89".
        re.compile(r"(?<![0-9.,/-])0[0-9]{1,4}(?:[ .-][0-9]{2,8}){1,4}(?![0-9]|[.,/:-][0-9])"),
        valid=lambda match: _phone(match.group()),
    ),
    _Detector(
        "ip_address",
        re.compile(r"(?<![A-Za-z0-9_.])" + _IPV4 + r"(?![0-9]|\.[0-9])"),
        (".",),
        # Loopback, "any" and broadcast addresses name no one (private ranges do: a host).
        valid=lambda match: (
            not match.group().startswith("127.")
            and match.group() not in ("0.0.0.0", "255.255.255.255")
        ),
    ),
    _Detector(
        "ip_address",
        re.compile(
            r"(?<![A-Za-z0-9_:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:" + _IPV4 + r"|[0-9A-Fa-f]{0,4})"
            r"(?![A-Za-z0-9_:]|\.[0-9])"
        ),
        (":",),
        valid=lambda match: _ipv6(match.group()),
    ),
)

_PII_NAMES = {
    "email": "an email address",
    "phone": "a phone number",
    "credit_card": "a credit card number",
    "ssn": "a US social security number",
    "iban": "an IBAN",
    "ip_address": "an IP address",
}

PII_KINDS: tuple[str, ...] = tuple(_PII_NAMES)
"""Every kind of personal data :func:`find_pii` knows; :class:`NoPII` looks for all of them.

Example::

    NoPII(kinds=[k for k in PII_KINDS if k != "ip_address"])   # keep IPs in devops prompts
"""

_DIGITS = re.compile(r"[0-9]")


# -- scanning ------------------------------------------------------------------------------------


class _Found(NamedTuple):
    start: int
    end: int
    rank: int
    detector: _Detector


def _scan(text: str, detectors: Iterable[_Detector], priority: int = 0) -> Iterator[_Found]:
    lowered: str | None = None
    for rank, detector in enumerate(detectors, priority):
        if detector.hints:
            if lowered is None:
                lowered = text.lower()
            if not any(hint in lowered for hint in detector.hints):
                continue  # a substring search is far cheaper than the pattern
        for match in detector.pattern.finditer(text):
            if detector.valid is None or detector.valid(match):
                group = (match.lastindex or 0) if detector.group is None else detector.group
                if match.end(group) > match.start(group):  # a custom pattern may match ""
                    yield _Found(match.start(group), match.end(group), rank, detector)


def _resolve(found: Iterable[_Found]) -> list[_Found]:
    """Overlapping matches become one, covering all of them (nothing half-redacted), named by
    a secret before personal data, then by the leftmost and most specific detector."""
    clusters: list[list[_Found]] = []
    end = -1
    for item in sorted(found, key=lambda f: (f.start, -f.end, f.rank)):
        if clusters and item.start < end:
            clusters[-1].append(item)
            end = max(end, item.end)
        else:
            clusters.append([item])
            end = item.end
    resolved = []
    for cluster in clusters:
        best = min(cluster, key=lambda f: (f.detector.kind in _PII_NAMES, f.start, f.rank))
        last = max(item.end for item in cluster)
        resolved.append(_Found(cluster[0].start, last, best.rank, best.detector))
    return resolved


def _pii_detectors(kinds: Iterable[str]) -> tuple[_Detector, ...]:
    wanted = set(kinds)
    return tuple(detector for detector in _PII if detector.kind in wanted)


def _findings(text: str, secrets: Sequence[_Detector], pii: Sequence[_Detector]) -> list[_Found]:
    found = list(_scan(text, secrets))
    if pii and _could_hold_pii(text):
        found.extend(_scan(text, pii, priority=len(secrets)))
    return _resolve(found)


def _could_hold_pii(text: str) -> bool:
    # Every kind of personal data here has a digit or an "@": prose without either is clean.
    return "@" in text or _DIGITS.search(text) is not None


def find_secrets(text: str) -> list[str]:
    """The kinds of credential in ``text``, in order of first appearance (see SECRET_KINDS).

    Example::

        >>> find_secrets("export GITHUB_TOKEN=ghp_" + "a1B2" * 9)
        ['github_token']
    """
    kinds: dict[str, None] = {}
    for item in _findings(text, _SECRETS, ()):
        kinds.setdefault(item.detector.kind)
    return list(kinds)


def find_pii(text: str, kinds: Iterable[str] = PII_KINDS) -> list[Finding]:
    """Where ``text`` holds personal data of the given kinds (see PII_KINDS), in order.

    Findings never overlap: matches that share characters become one finding covering them all,
    named after the leftmost.

    Example::

        >>> find_pii("call +44 20 7946 0958 or mail ada@example.com")
        [Finding(kind='phone', start=5, end=21), Finding(kind='email', start=30, end=45)]
    """
    detectors = _pii_detectors(_kinds(kinds))
    return [
        Finding(item.detector.kind, item.start, item.end) for item in _findings(text, (), detectors)
    ]


def scrub(text: str, pii: bool = True) -> str:
    """``text`` with every credential, and with ``pii`` every piece of personal data, replaced
    by a marker naming its kind, such as ``[REDACTED:openai_api_key]`` or ``[REDACTED:email]``.

    For a ``password=`` assignment only the value is replaced, so the text still reads.

    Example::

        >>> scrub("password=hunter22 for ada@example.com")
        'password=[REDACTED:secret_assignment] for [REDACTED:email]'
    """
    return _replace(text, _findings(text, _SECRETS, _PII if pii else ()))


def _replace(text: str, found: Sequence[_Found]) -> str:
    if not found:
        return text
    pieces: list[str] = []
    position = 0
    for item in found:
        pieces.append(text[position : item.start])
        pieces.append(f"[REDACTED:{item.detector.kind}]")
        position = item.end
    pieces.append(text[position:])
    return "".join(pieces)


def _kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    if not isinstance(kinds, str) and (
        isinstance(kinds, bytes | dict) or not isinstance(kinds, Iterable)
    ):
        raise TypeError(
            f"NoPII(kinds=...) takes a kind or a list of them ({', '.join(PII_KINDS)}), "
            f"got {kinds!r}"
        )
    chosen = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    unknown = [kind for kind in chosen if kind not in _PII_NAMES]
    if unknown or not chosen:
        raise ValueError(
            f"kinds= must name one or more of {', '.join(PII_KINDS)}; got {list(chosen)!r}"
        )
    return chosen


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
