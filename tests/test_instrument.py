"""Zero-code instrumentation: every client guarded, no double spans, behaviour unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import anthropic
import openai
import pytest
from tests.conftest import API_KEY, MESSAGES

import aiguard


@pytest.fixture
def instrumented():
    yield aiguard.instrument
    aiguard.uninstrument()


def _ask(client, model="gpt-4o"):
    return client.chat.completions.create(model=model, messages=MESSAGES)


def test_clients_made_before_and_after_are_guarded(server, telemetry, instrumented):
    before = openai.OpenAI(base_url=server.url, api_key=API_KEY)
    instrumented()
    after = openai.OpenAI(base_url=server.url, api_key=API_KEY)
    assert type(after) is openai.OpenAI  # the app's objects are the SDK's own
    for client in (before, after):
        assert _ask(client).choices[0].message.content
    assert len(telemetry.spans("aiguard chat gpt-4o")) == 2
    assert len(telemetry.spans("chat gpt-4o")) == 2
    client.embeddings.create(model="text-embedding-3-small", input="hi")
    assert telemetry.spans("embeddings text-embedding-3-small")


def test_uninstrument_restores_the_sdk(server, telemetry, instrumented):
    instrumented()
    aiguard.uninstrument()
    _ask(openai.OpenAI(base_url=server.url, api_key=API_KEY))
    assert telemetry.spans() == []


def test_a_wrapped_client_is_not_recorded_twice(server, telemetry, instrumented):
    instrumented()
    wrapped = aiguard.wrap(openai.OpenAI(base_url=server.url, api_key=API_KEY), retry=None)
    _ask(wrapped)
    list(wrapped.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    assert len(telemetry.spans("aiguard chat gpt-4o")) == 2
    assert len(telemetry.spans("chat gpt-4o")) == 2


def test_without_a_policy_the_sdk_keeps_its_own_retries(server, telemetry, instrumented):
    instrumented()
    server.fail("gpt-4o", status=500)
    client = openai.OpenAI(base_url=server.url, api_key=API_KEY, max_retries=2)
    client = client.with_options(timeout=10)
    _ask(client)  # the SDK retried by itself, as without aiguard
    assert len(server.requests) == 2
    guard = telemetry.span("aiguard chat gpt-4o")
    assert guard.attributes["aiguard.retries"] == 0 and guard.attributes["aiguard.outcome"] == "ok"


def test_a_policy_brings_retries_and_fallbacks(server, telemetry, instrumented):
    instrumented(
        aiguard.Policy(
            retry=aiguard.Retry(attempts=2, wait_initial=0, wait_jitter=0),
            fallback=(aiguard.Target("gpt-4o-mini"),),
        )
    )
    server.fail("gpt-4o", status=503, times=2)
    reply = _ask(openai.OpenAI(base_url=server.url, api_key=API_KEY))
    assert reply.model == "gpt-4o-mini"
    assert len(telemetry.spans("chat gpt-4o")) == 2


async def test_async_clients_and_anthropic(server, telemetry, instrumented):
    instrumented()
    client = openai.AsyncOpenAI(base_url=server.url, api_key=API_KEY)
    reply = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert reply.choices[0].message.content
    claude = anthropic.Anthropic(base_url=server.anthropic_url, api_key=API_KEY)
    claude.messages.create(model="claude-3-5-haiku-latest", max_tokens=10, messages=MESSAGES)
    assert telemetry.spans("chat gpt-4o") and telemetry.spans("chat claude-3-5-haiku-latest")


def test_calls_inside_a_decorated_function_nest_under_it(server, telemetry, instrumented):
    instrumented()
    client = openai.OpenAI(base_url=server.url, api_key=API_KEY)

    @aiguard.guard
    def pipeline() -> str:
        return _ask(client).choices[0].message.content

    pipeline()
    outer = telemetry.span(pipeline.__qualname__)
    guard = telemetry.span("aiguard chat gpt-4o")
    assert guard.parent.span_id == outer.context.span_id


def test_a_broken_guard_never_breaks_the_call(server, telemetry, instrumented, monkeypatch):
    from aiguard import adapters

    instrumented()
    monkeypatch.setattr(adapters, "for_client", lambda client: 1 / 0)
    assert _ask(openai.OpenAI(base_url=server.url, api_key=API_KEY)).choices


def test_opentelemetry_instrument_finds_the_entry_point(server, tmp_path):
    app = tmp_path / "app.py"
    app.write_text(
        textwrap.dedent(
            f"""
            import json, openai
            from aiguard.testing import Capture
            with Capture() as telemetry:
                client = openai.OpenAI(base_url={server.url!r}, api_key="sk-test")
                client.chat.completions.create(
                    model="gpt-4o", messages=[{{"role": "user", "content": "hi"}}]
                )
                print(json.dumps([s.name for s in telemetry.spans()]))
            """
        )
    )
    launcher = os.path.join(os.path.dirname(sys.executable), "opentelemetry-instrument")
    done = subprocess.run(
        [launcher, sys.executable, str(app)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"},
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [
        "chat gpt-4o",
        "aiguard chat gpt-4o",
    ]
