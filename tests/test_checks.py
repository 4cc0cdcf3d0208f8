"""aiguard.checks: the built-in input checks and the scrub/find helpers, on neutral messages."""

from __future__ import annotations

import contextlib
import json
import random
import re
import string
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aiguard
from aiguard import checks
from aiguard._messages import Message, Part

CONTEXT = {"model": "gpt-4o", "provider": "openai", "operation": "chat"}
URLSAFE = string.ascii_letters + string.digits + "_-"
ALNUM = string.ascii_letters + string.digits
UPPER = string.ascii_uppercase + string.digits


def fake(alphabet: str, length: int, seed: int = 0) -> str:
    """Random characters in a real key's alphabet: real format, never a real key."""
    rng = random.Random(seed * 1_000 + length)
    return "".join(rng.choice(alphabet) for _ in range(length))


def user(*texts: str) -> list[Message]:
    return [Message("user", [Part("text", text)]) for text in texts]


def refusal(check: object, messages: list[Message], **context: str) -> aiguard.CheckFailed:
    with pytest.raises(aiguard.CheckFailed) as caught:
        check(messages, **(context or CONTEXT))  # type: ignore[operator]
    return caught.value


# Keys are assembled from pieces so that this file itself trips no secret scanner.
SECRETS = [
    ("openai_api_key", "sk-" + "proj-" + fake(URLSAFE, 48)),
    ("openai_api_key", "sk-" + "svcacct-" + fake(URLSAFE, 64)),
    ("openai_api_key", "sk-" + fake(ALNUM, 48)),
    ("anthropic_api_key", "sk-" + "ant-api03-" + fake(URLSAFE, 93)),
    ("aws_access_key_id", "AKIA" + fake(UPPER, 16)),
    ("aws_access_key_id", "ASIA" + fake(UPPER, 16, seed=1)),
    ("github_token", "ghp_" + fake(ALNUM, 36)),
    ("github_token", "gho_" + fake(ALNUM, 36, seed=1)),
    ("github_token", "ghs_" + fake(ALNUM, 36, seed=2)),
    ("github_token", "github_" + "pat_" + fake(ALNUM, 22) + "_" + fake(ALNUM, 59)),
    ("slack_token", "xox" + "b-" + fake(string.digits, 12) + "-" + fake(ALNUM, 24)),
    ("slack_token", "xox" + "p-" + fake(string.digits, 12, seed=1) + "-" + fake(ALNUM, 32)),
    ("google_api_key", "AI" + "za" + fake(URLSAFE, 35)),
    ("stripe_live_key", "sk_" + "live_" + fake(ALNUM, 24)),
    ("stripe_live_key", "rk_" + "live_" + fake(ALNUM, 24, seed=1)),
    (
        "jwt",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
        + "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkFkYSJ9."
        + fake(URLSAFE, 43),
    ),
]

IN_CONTEXT = [  # (kind, text, the value that must not leak)
    (
        "slack_webhook",
        "post to https://hooks.slack.com/services/T0"
        + fake(UPPER, 8)
        + "/B0"
        + fake(UPPER, 8)
        + "/"
        + fake(ALNUM, 24),
        fake(ALNUM, 24),
    ),
    (
        "aws_secret_access_key",
        "aws_secret_access_key = " + fake(ALNUM + "/+", 40),
        fake(ALNUM + "/+", 40),
    ),
    (
        "aws_secret_access_key",
        '{"SecretAccessKey": "' + fake(ALNUM + "/+", 40, seed=1) + '"}',
        fake(ALNUM + "/+", 40, seed=1),
    ),
    (
        "private_key",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEow" + fake(ALNUM, 60) + "\n"
        "-----END RSA PRIVATE KEY-----",
        "MIIEow" + fake(ALNUM, 60),
    ),
    (
        "private_key",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\nBG5vbmUAAAAEbm9uZQ...",
        "BG5vbmUAAAAEbm9uZQ",
    ),
    ("secret_assignment", "password=hunter22!", "hunter22!"),
    ("secret_assignment", "DB_PASSWORD='c0rrect-h0rse'", "c0rrect-h0rse"),
    ("secret_assignment", 'secret = "correct horse battery"', "correct horse battery"),
    ("secret_assignment", "passwd: s3cr3t-pass", "s3cr3t-pass"),
    ("secret_assignment", "api_key=ab12cd34ef56", "ab12cd34ef56"),
    ("secret_assignment", 'token: "9f8e7d6c5b4a"', "9f8e7d6c5b4a"),
    ("secret_assignment", '{"client_secret": "Zq8vT0pLmN"}', "Zq8vT0pLmN"),
    ("secret_assignment", "$db->connect(password => 'Pa55w0rd')", "Pa55w0rd"),
    ("url_password", "postgres://app:Pa55w0rd@db.internal:5432/app", "Pa55w0rd"),
    ("bearer_token", "Authorization: Bearer " + fake(ALNUM, 40), fake(ALNUM, 40)),
]

NOT_SECRETS = [
    "a risk-free plan for a task-oriented team",
    "sk-learn and scikit-learn are the same library",
    "Click 'Forgot password' to start a password reset.",
    "Each token costs money; the token count is in the usage.",
    "token",
    "max_tokens=1024, temperature=0.2",
    "Your password: ******",
    "password=<your password>",
    "PASSWORD=${DB_PASSWORD}",
    "token: null",
    'api_key="sk-..."',
    "client = OpenAI(api_key=api_key)",
    'client = OpenAI(api_key=os.environ["OPENAI_API_KEY"])',
    "password=settings.DB_PASSWORD",
    "The secret: keep it simple.",
    "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----",
    "AKIA is how AWS access key ids start",
    "ghp_ tokens are GitHub personal access tokens",
    "Bearer token authentication is described in RFC 6750.",
    "Use the OAuth flow; eyJ is how a JWT starts.",
    "the secret_key setting is required",
    "token = b64encode(f'{user}:{pass1}')",
    'OpenAI(api_key="sk-demo-not-a-real-key")',
    "password: 'your-db-password-1'",
]


# -- NoSecrets -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "key"), SECRETS, ids=[f"{k}-{i}" for i, (k, _) in enumerate(SECRETS)]
)
def test_no_secrets_refuses_each_kind_of_key_and_never_repeats_it(kind, key):
    messages = [
        Message("system", [Part("text", "You are helpful.")]),
        Message("user", [Part("text", f"Here is my key: {key} please debug my script.")]),
    ]
    error = refusal(checks.NoSecrets(), messages)
    assert error.check == "NoSecrets"
    assert checks._SECRET_NAMES[kind] + " in message 2 (user)" in error.reason
    assert key not in str(error) and key[4:20] not in str(error)
    assert checks.find_secrets(key) == [kind]
    assert key not in checks.scrub(f"key={key}")


@pytest.mark.parametrize(("kind", "text", "value"), IN_CONTEXT)
def test_no_secrets_refuses_secrets_in_their_context(kind, text, value):
    error = refusal(checks.NoSecrets(), user(text))
    assert value not in str(error)
    assert checks.find_secrets(text) == [kind]
    assert value not in checks.scrub(text)
    assert f"[REDACTED:{kind}]" in checks.scrub(text)


@pytest.mark.parametrize("text", NOT_SECRETS)
def test_no_secrets_passes_look_alikes(text):
    assert checks.NoSecrets()(user(text), **CONTEXT) is None
    assert checks.find_secrets(text) == []
    assert checks.scrub(text, pii=False) == text


def test_no_secrets_reads_tool_calls_and_tool_results():
    key = "ghp_" + fake(ALNUM, 36, seed=7)
    call = json.dumps({"function": {"name": "deploy", "arguments": json.dumps({"token": key})}})
    messages = [
        Message("user", [Part("text", "deploy it")]),
        Message("assistant", [Part("tool_call", call)]),
        Message("tool", [Part("tool_call_response", "ok")]),
    ]
    error = refusal(checks.NoSecrets(), messages)
    assert "a GitHub token in message 2 (assistant)" in error.reason
    result = [Message("tool", [Part("tool_call_response", f"created key {SECRETS[0][1]}")])]
    assert "an OpenAI API key in message 1 (tool)" in refusal(checks.NoSecrets(), result).reason


def test_no_secrets_names_every_kind_and_where_it_is():
    messages = user("nothing here", f"a {SECRETS[0][1]}", f"b {SECRETS[4][1]} {SECRETS[6][1]}")
    error = refusal(checks.NoSecrets(), messages)
    assert error.reason == (
        "an OpenAI API key in message 2 (user), an AWS access key id in message 3 (user) "
        "and a GitHub token in message 3 (user)"
    )
    assert str(error) == f"NoSecrets refused the call: {error.reason}. Nothing was sent."


def test_a_refusal_is_an_aiguard_error_and_a_value_error():
    error = refusal(checks.NoSecrets(), user(SECRETS[0][1]))
    assert isinstance(error, aiguard.AIGuardError) and isinstance(error, ValueError)


def test_no_secrets_takes_extra_patterns_and_never_shows_them():
    check = checks.NoSecrets(patterns=[r"ACME-[0-9]{8}", re.compile("internal-[a-z]{6}")])
    error = refusal(check, user("ticket ACME-12345678"))
    assert error.reason == "a match of a custom secret pattern in message 1 (user)"
    assert "ACME" not in str(error)
    assert check(user("internal-"), **CONTEXT) is None
    refusal(check, user("see internal-abcdef"))
    refusal(check, user(SECRETS[0][1]))  # the built-ins still apply


def test_no_secrets_never_shows_its_patterns_in_its_repr():
    assert repr(checks.NoSecrets(patterns=["hunter2"])) == "NoSecrets(<1 custom patterns>)"
    assert repr(checks.NoSecrets()) == "NoSecrets()"


def test_custom_checks_use_the_same_message_types():
    assert checks.Message is Message and checks.Part is Part


def test_no_secrets_rejects_patterns_that_are_not_patterns():
    with pytest.raises(TypeError, match="patterns"):
        checks.NoSecrets(patterns=[42])  # type: ignore[list-item]
    with pytest.raises(re.error):
        checks.NoSecrets(patterns=["("])


# -- NoPII ---------------------------------------------------------------------------------------

PII = [
    ("email", "ada@example.com"),
    ("email", "ada.lovelace+ai@maths.example.co.uk"),
    ("phone", "+44 20 7946 0958"),
    ("phone", "+1 (415) 555-2671"),
    ("phone", "+33 1 23 45 67 89"),
    ("phone", "+4915112345678"),
    ("phone", "(415) 555-2671"),
    ("phone", "415-555-2671"),
    ("phone", "1-800-555-0199"),
    ("phone", "020 7946 0958"),
    ("credit_card", "4111 1111 1111 1111"),
    ("credit_card", "5555-5555-5555-4444"),
    ("credit_card", "378282246310005"),
    ("ssn", "123-45-6789"),
    ("iban", "GB82WEST12345698765432"),
    ("iban", "GB82 WEST 1234 5698 7654 32"),
    ("iban", "DE89 3704 0044 0532 0130 00"),
    ("ip_address", "192.168.1.10"),
    ("ip_address", "8.8.8.8"),
    ("ip_address", "2001:db8:85a3::8a2e:370:7334"),
    ("ip_address", "2001:0db8:85a3:0000:0000:8a2e:0370:7334"),
    ("ip_address", "fe80::1ff:fe23:4567:890a"),
]

NOT_PII = [
    "It happened in 2024 and again in 1999.",
    "The laptop costs $1,234.56 (or €1.234,56).",
    "Order #1234567890123456 shipped.",  # no card issuer starts with 1
    "card 4111 1111 1111 1112",  # fails the Luhn check
    "ref 4111111111111112",
    "Meet on 2024-01-15 at 10:30:45, or 15/01/2024, or 01.02.2024 12:30.",
    "Released in v1.2.3.4 and version 2.0.1.",
    "000-12-3456 666-12-3456 912-12-3456 123-00-4567 123-45-0000",
    "GB83WEST12345698765432",  # wrong check digits
    "999.1.1.1 and 256.10.10.10 are not addresses",
    "std::vector<int> and Foo::Bar",
    "listen on 127.0.0.1, 0.0.0.0 or ::1",
    "MAC 00:1A:2B:3C:4D:5E",
    "id 123-456-7890",
    "ISBN 978-3-16-148410-0",
    "mention @ada or write to ada@localhost",
    "1.5 million users, +5 points, 3.14159",
    "call extension 2671",
]


@pytest.mark.parametrize(("kind", "value"), PII, ids=[f"{k}-{v}" for k, v in PII])
def test_no_pii_refuses_each_kind_and_never_repeats_it(kind, value):
    text = f"Contact: {value}, thanks."
    error = refusal(checks.NoPII(), user("hello", text))
    assert error.check == "NoPII"
    assert error.reason == checks._PII_NAMES[kind] + " in message 2 (user)"
    assert value not in str(error)
    start = text.index(value)
    assert checks.find_pii(text) == [checks.Finding(kind, start, start + len(value))]


@pytest.mark.parametrize("text", NOT_PII)
def test_no_pii_passes_look_alikes(text):
    assert checks.NoPII()(user(text), **CONTEXT) is None
    assert checks.find_pii(text) == []
    assert checks.scrub(text) == text


def test_no_pii_redacts_into_new_messages_and_leaves_the_originals():
    messages = [
        Message("system", [Part("text", "Be brief.")]),
        Message(
            "user",
            [
                Part("text", "I am ada@example.com, call +44 20 7946 0958."),
                Part("image"),
                Part("text", "card 4111 1111 1111 1111"),
            ],
        ),
    ]
    before = [Message(m.role, [Part(p.type, p.content) for p in m.parts]) for m in messages]
    redacted = checks.NoPII(action="redact")(messages, **CONTEXT)
    assert messages == before
    assert redacted is not None and redacted is not messages
    assert [[p.type for p in m.parts] for m in redacted] == [["text"], ["text", "image", "text"]]
    assert redacted[1].parts[0].content == "I am [REDACTED:email], call [REDACTED:phone]."
    assert redacted[1].parts[2].content == "card [REDACTED:credit_card]"
    assert redacted[0].parts[0].content == "Be brief."


def test_no_pii_redact_returns_none_when_there_is_nothing_to_redact():
    assert checks.NoPII(action="redact")(user("nothing personal"), **CONTEXT) is None


def test_no_pii_redacts_the_strings_inside_json_parts_and_keeps_them_json():
    arguments = json.dumps({"to": "ada@example.com", "body": "hi"})
    call = json.dumps({"id": "call_1", "function": {"name": "send", "arguments": arguments}})
    result = json.dumps({"type": "tool_result", "content": "sent to ada@example.com"})
    messages = [
        Message("assistant", [Part("tool_call", call)]),
        Message("user", [Part("tool_call_response", result)]),
        Message("tool", [Part("tool_call_response", "plain text from ada@example.com")]),
    ]
    redacted = checks.NoPII(action="redact")(messages, **CONTEXT)
    assert redacted is not None
    sent = json.loads(redacted[0].parts[0].content)
    assert json.loads(sent["function"]["arguments"]) == {"to": "[REDACTED:email]", "body": "hi"}
    assert json.loads(redacted[1].parts[0].content)["content"] == "sent to [REDACTED:email]"
    assert redacted[2].parts[0].content == "plain text from [REDACTED:email]"


def test_no_pii_redact_refuses_what_it_cannot_reach():
    messages = [Message("assistant", [Part("tool_call", '{"card": 4111111111111111}')])]
    error = refusal(checks.NoPII(action="redact"), messages)
    assert "a credit card number in message 1 (assistant) that redaction cannot reach" in str(error)
    assert "4111111111111111" not in str(error)


def test_no_pii_kinds_choose_what_is_looked_for():
    check = checks.NoPII(kinds=[k for k in checks.PII_KINDS if k != "ip_address"])
    assert check(user("server 10.0.0.1 is down"), **CONTEXT) is None
    refusal(check, user("mail ada@example.com"))
    assert checks.NoPII(kinds="email")(user("call +44 20 7946 0958"), **CONTEXT) is None
    assert checks.find_pii("10.0.0.1 ada@example.com", kinds=["email"]) == [
        checks.Finding("email", 9, 24)
    ]


def test_no_pii_rejects_unknown_actions_and_kinds():
    with pytest.raises(ValueError, match="action"):
        checks.NoPII(action="mask")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kinds"):
        checks.NoPII(kinds=["email", "passport"])
    with pytest.raises(ValueError, match="kinds"):
        checks.NoPII(kinds=[])


def test_no_pii_never_reads_images():
    assert checks.NoPII()([Message("user", [Part("image")])], **CONTEXT) is None


# -- scrub and find ------------------------------------------------------------------------------


def test_scrub_replaces_secrets_always_and_pii_when_asked():
    key = SECRETS[0][1]
    text = f"key {key}, password=hunter22!, mail ada@example.com"
    assert checks.scrub(text) == (
        "key [REDACTED:openai_api_key], password=[REDACTED:secret_assignment], "
        "mail [REDACTED:email]"
    )
    assert checks.scrub(text, pii=False) == (
        "key [REDACTED:openai_api_key], password=[REDACTED:secret_assignment], mail ada@example.com"
    )


def test_overlapping_matches_become_one_marker():
    key = SECRETS[0][1]
    assert checks.scrub(f"OPENAI_API_KEY={key}") == "OPENAI_API_KEY=[REDACTED:openai_api_key]"
    assert checks.find_secrets(f'api_key="{key}"') == ["openai_api_key"]
    # The IPv4 tail of an IPv6 address is part of the address.
    assert checks.find_pii("::ffff:192.168.1.10") == [checks.Finding("ip_address", 0, 19)]


def test_find_secrets_lists_kinds_once_in_order():
    text = f"{SECRETS[6][1]} {SECRETS[0][1]} {SECRETS[7][1]}"
    assert checks.find_secrets(text) == ["github_token", "openai_api_key"]
    assert set(checks.find_secrets(text)) <= set(checks.SECRET_KINDS)


# -- NotEmpty ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n\t ",
        "\u200b\u200c\u200d\u2060\ufeff",  # zero-width spaces, joiners, word joiner, BOM
        "\u00ad\u180e\u2061\u2062\u2063\u2064\u200e\u200f",  # soft hyphen, invisible operators
        "\u3000\u3000",  # fullwidth spaces
        "\u3164\u115f\u2800",  # Hangul fillers, Braille blank
        "\ufe0f\u034f",  # a variation selector, the combining grapheme joiner
    ],
)
def test_not_empty_refuses_text_that_shows_nothing(text):
    error = refusal(checks.NotEmpty(), user(text))
    assert error.check == "NotEmpty"
    assert error.reason == "the last user message has no visible text, image or tool content"


@pytest.mark.parametrize("text", ["hi", " \u200b ?", "\uff41", "中文", "😀", "\u200bx\u200b"])
def test_not_empty_passes_visible_text(text):
    assert checks.NotEmpty()(user(text), **CONTEXT) is None


def test_not_empty_counts_images_and_tool_content():
    assert checks.NotEmpty()([Message("user", [Part("image"), Part("image")])], **CONTEXT) is None
    for part in (Part("image"), Part("tool_call", "{}"), Part("tool_call_response", "")):
        messages = [Message("user", [Part("text", "\u200b"), part])]
        assert checks.NotEmpty()(messages, **CONTEXT) is None


def test_not_empty_judges_the_last_user_message():
    long_system = Message("system", [Part("text", "You are a helpful assistant. " * 50)])
    refusal(checks.NotEmpty(), [long_system, *user(" ")])
    refusal(checks.NotEmpty(), user("first question", "\u200b"))
    answered = [*user("\u200b", "the real question"), Message("assistant", [])]
    assert checks.NotEmpty()(answered, **CONTEXT) is None


def test_not_empty_without_a_user_message_judges_all():
    system = [Message("system", [Part("text", "Summarise the news.")])]
    assert checks.NotEmpty()(system, **CONTEXT) is None
    error = refusal(checks.NotEmpty(), [Message("system", [Part("text", " ")])])
    assert error.reason == "the request has no visible text, image or tool content"
    refusal(checks.NotEmpty(), [])


# -- MaxInputTokens ------------------------------------------------------------------------------


def test_max_input_tokens_with_an_explicit_limit():
    check = checks.MaxInputTokens(100)
    assert check(user("short"), **CONTEXT) is None
    error = refusal(check, user("x" * 200))
    assert error.check == "MaxInputTokens"
    assert error.reason == "the input is estimated at up to 224 tokens, over the limit of 100"
    assert "x" * 10 not in str(error)


def test_max_input_tokens_defaults_to_the_models_context_window():
    check = checks.MaxInputTokens()
    assert check(user("x" * 100_000), **CONTEXT) is None
    error = refusal(check, user("x" * 130_000))
    assert "over the model's context window of 128,000" in error.reason
    # Any provider genai-prices does not know still resolves a well-known model name.
    refusal(check, user("x" * 130_000), model="gpt-4o", provider="openai_compatible")


def test_max_input_tokens_lets_unknown_and_local_models_through():
    check = checks.MaxInputTokens()
    huge = user("x" * 3_000_000)
    assert check(huge, model="my-finetune-xyz", provider="openai", operation="chat") is None
    assert check(huge, model="gpt-4o", provider="ollama", operation="chat") is None
    assert check(huge) is None  # no model in the context


def test_max_input_tokens_can_use_a_real_tokenizer():
    check = checks.MaxInputTokens(
        10, count=lambda messages: sum(len(m.text.split()) for m in messages)
    )
    assert check(user("one two three " * 3), **CONTEXT) is None
    error = refusal(check, user("word " * 11))
    assert error.reason == "the input counts 11 tokens, over the limit of 10"


@pytest.mark.parametrize("n", [0, -1, 1.5, True, "100"])
def test_max_input_tokens_rejects_nonsense_limits(n):
    with pytest.raises(ValueError, match="positive int"):
        checks.MaxInputTokens(n)  # type: ignore[arg-type]


# -- every check, any input ----------------------------------------------------------------------

PART_TYPES = ("text", "image", "tool_call", "tool_call_response", "other")
parts = st.builds(Part, st.sampled_from(PART_TYPES), st.text(max_size=200))
json_parts = st.builds(
    lambda kind, value: Part(kind, json.dumps(value, ensure_ascii=False)),
    st.sampled_from(("tool_call", "tool_call_response", "other")),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=60),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=10,
    ),
)
messages_strategy = st.lists(
    st.builds(
        Message,
        st.sampled_from(("system", "user", "assistant", "tool", "developer", "x")),
        st.lists(parts | json_parts, max_size=4),
    ),
    max_size=5,
)
ALL_CHECKS = [
    checks.NotEmpty(),
    checks.MaxInputTokens(),
    checks.MaxInputTokens(500),
    checks.NoSecrets(),
    checks.NoPII(),
    checks.NoPII(action="redact"),
]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages_strategy, st.sampled_from(("gpt-4o", "claude-3-5-haiku-latest", "?", "")))
def test_checks_never_crash_and_keep_the_shape_of_the_request(messages, model):
    for check in ALL_CHECKS:
        try:
            result = check(messages, model=model, provider="openai", operation="chat")
        except aiguard.CheckFailed as error:
            assert error.check == check.name
            continue
        if result is not None:
            assert [[p.type for p in m.parts] for m in result] == [
                [p.type for p in m.parts] for m in messages
            ]
            assert checks.NoPII()(result, **CONTEXT) is None  # nothing left to find


KEYS = {
    "openai": st.text(URLSAFE, min_size=48, max_size=48).map(lambda s: "sk-" + "proj-" + s),
    "anthropic": st.text(URLSAFE, min_size=40, max_size=93).map(lambda s: "sk-" + "ant-" + s),
    "aws": st.text(UPPER, min_size=16, max_size=16).map(lambda s: "AKIA" + s),
    "github": st.text(ALNUM, min_size=36, max_size=36).map(lambda s: "ghp_" + s),
    "google": st.text(URLSAFE, min_size=35, max_size=35).map(lambda s: "AI" + "za" + s),
    "stripe": st.text(ALNUM, min_size=24, max_size=32).map(lambda s: "sk_" + "live_" + s),
}


@settings(max_examples=300, deadline=None)
@given(st.text(), st.one_of(*KEYS.values()), st.text())
def test_generated_keys_anywhere_in_any_text_are_always_caught(before, key, after):
    text = f"{before} {key} {after}"
    for messages in (
        user(text),
        [Message("user", [Part("image"), Part("text", "hi")]), *user(text)],
        [Message("tool", [Part("tool_call_response", json.dumps({"out": text}))])],
    ):
        error = refusal(checks.NoSecrets(), messages)
        assert key not in str(error)
    assert key not in checks.scrub(text)
    assert checks.find_secrets(text)


@settings(max_examples=200, deadline=None)
@given(
    st.text(),
    st.from_regex(r"[a-z][a-z0-9._]{0,20}@[a-z][a-z0-9]{0,10}\.(com|org|co\.uk)", fullmatch=True),
    st.text(),
)
def test_generated_emails_are_always_redacted(before, email, after):
    text = f"{before} {email} {after}"
    redacted = checks.NoPII(action="redact", kinds=["email"])(user(text), **CONTEXT)
    assert redacted is not None
    assert email not in redacted[0].parts[0].content
    assert email not in str(refusal(checks.NoPII(), user(text)))


# -- speed: a guard against catastrophic patterns, not a benchmark ---------------------------------

# Process CPU time, so a loaded machine does not fail the test: a linear scan of a megabyte takes
# a fraction of a second, a pattern that backtracks catastrophically on it takes hours. The
# checks' real cost is measured in benchmarks/, not here.
LIMIT_SECONDS = 10.0


def _megabyte_prompts() -> dict[str, str]:
    rng = random.Random(42)
    words = [
        "the", "invoice", "total", "is", "$1,234.56", "on", "2024-01-15", "call", "me", "at",
        "server", "10.0.0.1", "token", "password", "reset", "sk-", "v1.2.3.4", "order", "#8812",
        "ada@example", ".com", "+44", "20", "7946", "0958", "4111", "::", "-----BEGIN", "key=",
        "eyJ", "AKIA", "中文", "😀", "\u200b", "\n",
    ]  # fmt: skip
    size = 1_000_000
    realistic = " ".join(rng.choice(words) for _ in range(size // 5))[:size]
    return {
        "realistic": realistic,
        "printable": "".join(rng.choice(string.printable) for _ in range(size)),
        "digits and spaces": "1 " * (size // 2),
        "key prefixes": "sk- AKIA ghp_ xoxb- eyJ " * (size // 25),
        "pem headers": "-----BEGIN RSA PRIVATE KEY-----" * (size // 31),
        "at signs": ("a" * 60 + "@") * (size // 61),
        "colons": "1:2:3:4:5:6:7 " * (size // 14),
        "assignments": "password= token: " * (size // 17),
    }


@pytest.mark.parametrize("name", list(_megabyte_prompts()))
def test_a_megabyte_prompt_never_backtracks_catastrophically(name):
    text = _megabyte_prompts()[name]
    messages = user(text)
    for check in (checks.NoSecrets(), checks.NoPII(), checks.NoPII(action="redact")):
        started = time.process_time()
        with contextlib.suppress(aiguard.CheckFailed):
            check(messages, **CONTEXT)
        elapsed = time.process_time() - started
        assert elapsed < LIMIT_SECONDS, f"{check!r} took {elapsed:.2f}s on {name!r}"
