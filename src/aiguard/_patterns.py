"""The patterns of the detectors behind the built-in checks: secrets and personal data.

Each :class:`_Detector` is a bounded or anchored regular expression with cheap substring hints
and, where a pattern alone over-matches, a validator (Luhn, IBAN checksum, placeholders).
:mod:`aiguard._detect` scans text with them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass


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
