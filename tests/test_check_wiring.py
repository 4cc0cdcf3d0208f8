"""``checks=`` on wrap and guard: run once before anything is sent, refuse, redact, any provider."""

from __future__ import annotations

import json

import anthropic
import ollama
import pytest
from tests.conftest import API_KEY, MESSAGES

import aiguard
from aiguard._messages import Message, Part


class Recorder:
    """A custom check that records what it saw and can refuse or rewrite."""

    name = "Recorder"

    def __init__(self, refuse: str | None = None, rewrite: tuple[str, str] | None = None) -> None:
        self.seen: list[list[Message]] = []
        self.context: list[dict] = []
        self.refuse = refuse
        self.rewrite = rewrite

    def __call__(self, messages: list[Message], **context):
        self.seen.append(messages)
        self.context.append(context)
        if self.refuse:
            raise ValueError(self.refuse)
        if self.rewrite:
            old, new = self.rewrite
            return [
                Message(m.role, [Part(p.type, p.content.replace(old, new)) for p in m.parts])
                for m in messages
            ]
        return None


def test_a_refusing_check_sends_nothing_and_reserves_nothing(make_client, server, telemetry):
    budget = aiguard.Budget(usd=1)
    check = Recorder(refuse="too spicy")
    client = make_client(checks=[check], budget=budget, provider="openai")
    with pytest.raises(aiguard.CheckFailed) as caught:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=10)
    assert caught.value.check == "Recorder" and caught.value.reason == "too spicy"
    assert isinstance(caught.value, ValueError)
    assert server.requests == [] and budget.spent == 0 and budget.reserved == 0
    guard = telemetry.span("chat gpt-4o")
    assert guard.attributes["aiguard.check.failed"] == "Recorder"
    assert guard.attributes["error.type"] == "aiguard.CheckFailed"
    point = telemetry.metrics()["aiguard.refusals"][0]
    assert point.attributes == {"aiguard.refusal": "check", "aiguard.check": "Recorder"}


def test_checks_see_the_neutral_form_with_context(make_client):
    check = Recorder()
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url"}]},
    ]
    make_client(checks=[check]).chat.completions.create(model="gpt-4o", messages=messages)
    (seen,) = check.seen
    assert [(m.role, [p.type for p in m.parts]) for m in seen] == [
        ("system", ["text"]),
        ("user", ["text", "image"]),
    ]
    assert check.context == [
        {"model": "gpt-4o", "provider": "openai_compatible", "operation": "chat"}
    ]


def test_checks_run_once_not_on_every_retry(make_client, server, telemetry):
    server.fail("gpt-4o", status=500, times=2)
    check = Recorder()
    make_client(checks=[check]).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert len(check.seen) == 1 and len(server.requests) == 3
    assert telemetry.span("chat gpt-4o").attributes["aiguard.checks"] == ("Recorder",)


def test_a_redacting_check_changes_what_is_sent(make_client, server):
    check = Recorder(rewrite=("France", "[REDACTED]"))
    make_client(checks=[check]).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    sent = server.requests[0].body["messages"][0]["content"]
    assert sent == "What is the capital of [REDACTED]?"
    assert MESSAGES[0]["content"] == "What is the capital of France?"  # the caller's is untouched


def test_plain_functions_and_any_exception_refuse(make_client, server):
    def no_shouting(messages, **context):
        if any(m.text.isupper() for m in messages):
            raise RuntimeError("no shouting")

    client = make_client(checks=[no_shouting])
    with pytest.raises(aiguard.CheckFailed, match="no_shouting refused the call: no shouting"):
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "HELLO"}]
        )
    assert server.requests == []


async def test_async_checks_on_async_calls(make_async_client, server):
    async def slow_check(messages, **context):
        if "France" in messages[0].text:
            raise ValueError("geography is off topic")

    client = make_async_client(checks=[slow_check])
    with pytest.raises(aiguard.CheckFailed, match="off topic"):
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert server.requests == []


def test_an_async_check_on_a_sync_call_says_what_to_do(make_client):
    async def slow_check(messages, **context):
        return None

    with pytest.raises(TypeError, match="async check"):
        make_client(checks=[slow_check]).chat.completions.create(model="gpt-4o", messages=MESSAGES)


def test_checks_must_be_callables(make_client):
    with pytest.raises(TypeError, match="checks= entries must be callables"):
        make_client(checks=["NoSecrets"])


def test_the_decorator_checks_and_redacts_string_arguments(server):
    seen = []

    @aiguard.guard(checks=[Recorder(rewrite=("secret", "[X]"))])
    def summarise(text: str, notes: list[str]) -> str:
        seen.append((text, notes))
        return text

    assert summarise("a secret plan", ["the secret"]) == "a [X] plan"
    assert seen == [("a [X] plan", ["the [X]"])]

    @aiguard.guard(checks=[Recorder(refuse="nope")])
    def never(text: str) -> str:
        raise AssertionError("must not be called")

    with pytest.raises(aiguard.CheckFailed):
        never("hi")


def test_anthropic_requests_reach_checks_in_the_same_form(server, telemetry):
    check = Recorder(rewrite=("France", "[REDACTED]"))
    client = aiguard.wrap(
        anthropic.Anthropic(base_url=server.anthropic_url, api_key=API_KEY), checks=[check]
    )
    client.messages.create(
        model="claude-3-5-haiku-latest",
        max_tokens=20,
        system="Be brief.",
        messages=[{"role": "user", "content": [{"type": "text", "text": "Capital of France?"}]}],
    )
    assert [m.role for m in check.seen[0]] == ["system", "user"]
    sent = server.requests[0].body["messages"][0]["content"][0]["text"]
    assert sent == "Capital of [REDACTED]?"


def test_ollama_generate_prompts_reach_checks(server):
    check = Recorder(refuse="no")
    client = aiguard.wrap(ollama.Client(host=server.ollama_url), checks=[check])
    with pytest.raises(aiguard.CheckFailed):
        client.generate(model="llama3", prompt="Capital of France?", system="Be brief.")
    assert [m.text for m in check.seen[0]] == ["Be brief.", "Capital of France?"]
    assert server.requests == []


def test_builtin_pii_redaction_reaches_tool_call_arguments(make_client, server):
    messages = [
        {"role": "user", "content": "Email bob@corp.example about it"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "send", "arguments": '{"to": "bob@corp.example"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sent to bob@corp.example"},
    ]
    client = make_client(checks=[aiguard.checks.NoPII(action="redact")])
    client.chat.completions.create(model="gpt-4o", messages=messages)
    sent = json.dumps(server.requests[0].body)
    assert "bob@corp.example" not in sent and "[REDACTED:email]" in sent
    assert messages[0]["content"] == "Email bob@corp.example about it"


def test_builtin_secret_check_refuses_without_echoing(make_client, server):
    key = "sk-proj-" + "A1b2C3d4" * 6
    client = make_client(checks=[aiguard.checks.NoSecrets()])
    with pytest.raises(aiguard.CheckFailed) as caught:
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": f"my key is {key}"}]
        )
    assert key not in str(caught.value) and server.requests == []


def test_decorated_generators_run_their_checks_first():
    @aiguard.guard(checks=[aiguard.checks.NoSecrets()])
    def words(text: str):
        yield from text.split()

    assert list(words("hello there")) == ["hello", "there"]
    with pytest.raises(aiguard.CheckFailed):
        list(words("token ghp_" + "a1B2" * 9))
