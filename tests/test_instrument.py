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
    spans = telemetry.spans()
    assert [s.name for s in spans] == ["chat gpt-4o"] * 2  # one span per call, both guarded
    assert [s.attributes["aiguard.outcome"] for s in spans] == ["ok"] * 2
    client.embeddings.create(model="text-embedding-3-small", input="hi")
    embeddings = telemetry.span("embeddings text-embedding-3-small")
    assert embeddings.attributes["aiguard.outcome"] == "ok"


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
    spans = telemetry.spans()
    assert [s.name for s in spans] == ["chat gpt-4o"] * 2  # one span per call, not two
    assert [s.attributes["aiguard.attempts"] for s in spans] == [1, 1]
    assert [s.attributes.get("gen_ai.request.stream", False) for s in spans] == [False, True]
    [duration] = telemetry.metrics()["gen_ai.client.operation.duration"]
    assert duration.count == 2


def test_without_a_policy_the_sdk_keeps_its_own_retries(server, telemetry, instrumented):
    instrumented()
    server.fail("gpt-4o", status=500)
    client = openai.OpenAI(base_url=server.url, api_key=API_KEY, max_retries=2)
    client = client.with_options(timeout=10)
    _ask(client)  # the SDK retried by itself, as without aiguard
    assert len(server.requests) == 2
    span = telemetry.span("chat gpt-4o")
    a = span.attributes
    assert (a["aiguard.attempts"], a["aiguard.retries"], a["aiguard.outcome"]) == (1, 0, "ok")
    assert [e.name for e in span.events if e.name == "aiguard.attempt.failed"] == []


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
    [span] = telemetry.spans()
    a = span.attributes
    assert span.name == "chat gpt-4o" and "error.type" not in a
    assert (a["aiguard.attempts"], a["aiguard.retries"]) == (3, 1)
    assert a["aiguard.fallback.used"] is True and a["aiguard.fallback.model"] == "gpt-4o-mini"
    assert a["gen_ai.response.model"] == "gpt-4o-mini"
    failed = [e.attributes for e in span.events if e.name == "aiguard.attempt.failed"]
    assert [(f["aiguard.attempt"], f["aiguard.attempt.model"]) for f in failed] == [
        (1, "gpt-4o"),
        (2, "gpt-4o"),
    ]
    assert {f["aiguard.failure.class"] for f in failed} == {"outage"}


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
    inference = telemetry.span("chat gpt-4o")
    assert inference.parent.span_id == outer.context.span_id
    assert inference.context.trace_id == outer.context.trace_id


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
                print(json.dumps(
                    [[s.name, s.attributes.get("aiguard.outcome")] for s in telemetry.spans()]
                ))
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
    # one span for the call, recorded by aiguard's guard
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [["chat gpt-4o", "ok"]]


def test_instrumenting_imports_no_sdk_and_patches_one_when_the_app_imports_it():
    # Each SDK costs up to seconds to import (google-genai, anthropic): instrument() patches the
    # ones already imported and the others when the app imports them, never importing one itself.
    script = textwrap.dedent(
        """
        import sys, aiguard, wrapt
        aiguard.instrument()
        sdks = ("openai", "anthropic", "ollama", "llama_cpp", "botocore", "google.genai")
        print(sorted(name for name in sdks if name in sys.modules))
        import anthropic
        from anthropic.resources.messages import Messages
        print(isinstance(Messages.__dict__["create"], wrapt.FunctionWrapper))
        aiguard.uninstrument()
        print(isinstance(Messages.__dict__["create"], wrapt.FunctionWrapper))
        aiguard.instrument()
        print(isinstance(Messages.__dict__["create"], wrapt.FunctionWrapper))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.split("\n")[:4] == ["[]", "True", "False", "True"]
