"""Content capture: off by default, opt-in on spans and as events, always scrubbed; and a scan of
everything exported for the API key, the auth header and (capture off) the prompt."""

from __future__ import annotations

import json
import logging

import pytest
from tests.conftest import API_KEY
from tests.conventions import LOGS

import aiguard
from aiguard import _capture

SECRET_PROMPT = (
    "Summarise the Zanzibar merger. My key is sk-proj-" + "Q" * 40 + " mail bob@corp.example"
)
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": SECRET_PROMPT},
]

_events = LOGS  # the run's log events (tests/conftest.py)


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.delenv(_capture.ENV, raising=False)
    _capture.reset()
    _events.clear()
    yield
    _capture.reset()


def _ask(client):
    return client.chat.completions.create(model="gpt-4o", messages=MESSAGES)


def test_nothing_is_captured_by_default(make_client, telemetry):
    _ask(make_client())
    for span in telemetry.spans():
        assert not any(
            k.startswith("gen_ai.input") or k.startswith("gen_ai.output") for k in span.attributes
        )
    assert _events.get_finished_logs() == ()


def test_capture_off_reads_no_message_text(make_client, telemetry, monkeypatch):
    from aiguard import checks
    from aiguard.adapters import _shapes  # the openai adapter reads its shapes through it

    reads = []
    for module, name in (
        (_shapes, "request_messages"),
        (_shapes, "answer_messages"),
        (checks, "scrub"),
    ):
        real = getattr(module, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            reads.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)
    _ask(make_client())
    assert reads == []
    aiguard.configure(
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        capture_content=True,
    )
    _ask(make_client())
    assert {"request_messages", "answer_messages", "scrub"} <= set(reads)  # the spies see reads


def test_span_capture_follows_the_conventions_and_scrubs(make_client, telemetry):
    aiguard.configure(
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        capture_content="span_only",
    )
    _ask(make_client())
    a = telemetry.span("chat gpt-4o").attributes
    inputs = json.loads(a["gen_ai.input.messages"])
    # A chat's system message is part of its history: it stays there, in the order sent.
    assert inputs[0] == {"role": "system", "parts": [{"type": "text", "content": "You are terse."}]}
    assert inputs[1]["role"] == "user" and inputs[1]["parts"][0]["type"] == "text"
    text = inputs[1]["parts"][0]["content"]
    assert "Zanzibar merger" in text
    assert "sk-proj-" not in text and "bob@corp.example" not in text
    assert "gen_ai.system_instructions" not in a
    output = json.loads(a["gen_ai.output.messages"])
    assert output == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "Hello from gpt-4o."}],
            "finish_reason": "stop",
        }
    ]
    assert _events.get_finished_logs() == ()


def test_pii_can_be_kept_but_secrets_never(make_client, telemetry):
    aiguard.configure(
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        capture_content=True,
        capture_pii=True,
    )
    _ask(make_client())
    text = telemetry.span("chat gpt-4o").attributes["gen_ai.input.messages"]
    assert "bob@corp.example" in text and "sk-proj-" not in text


def test_long_content_is_truncated_with_a_marker(make_client, telemetry):
    aiguard.configure(
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        capture_content="SPAN_ONLY",
        capture_max_chars=32,
    )
    _ask(make_client())
    inputs = json.loads(telemetry.span("chat gpt-4o").attributes["gen_ai.input.messages"])
    content = inputs[1]["parts"][0]["content"]
    assert content.endswith(_capture.TRUNCATED) and len(content) == 32 + len(_capture.TRUNCATED)


def test_event_capture_through_the_logs_api(make_client, telemetry, monkeypatch):
    monkeypatch.setenv(_capture.ENV, "event_only")
    _capture.reset()
    _ask(make_client())
    span = telemetry.span("chat gpt-4o")
    assert "gen_ai.input.messages" not in span.attributes
    (record,) = [r.log_record for r in _events.get_finished_logs()]
    assert record.event_name == "gen_ai.client.inference.operation.details"
    assert record.span_id == span.context.span_id
    # Structured values in the event, not JSON strings; the span's attributes too.
    system, message = record.attributes["gen_ai.input.messages"]
    assert system["role"] == "system" and message["role"] == "user"
    assert "Zanzibar" in message["parts"][0]["content"]
    assert "sk-proj-" not in message["parts"][0]["content"]
    [answer] = record.attributes["gen_ai.output.messages"]
    assert answer["role"] == "assistant" and answer["finish_reason"] == "stop"
    assert "Hello from gpt-4o." in answer["parts"][0]["content"]
    for key in ("gen_ai.operation.name", "gen_ai.request.model", "gen_ai.response.model"):
        assert record.attributes[key] == span.attributes[key]
    assert (
        record.attributes["gen_ai.usage.output_tokens"]
        == span.attributes["gen_ai.usage.output_tokens"]
    )


@pytest.mark.parametrize(
    ("value", "span", "event"),
    [("true", True, False), ("SPAN_AND_EVENT", True, True), ("no_content", False, False)],
)
def test_the_environment_variable(value, span, event, monkeypatch):
    monkeypatch.setenv(_capture.ENV, value)
    _capture.reset()
    found = _capture.current()
    assert (found.span, found.event) == (span, event) if found else not (span or event)


def test_bad_capture_settings_are_refused():
    with pytest.raises(ValueError, match="SPAN_AND_EVENT"):
        aiguard.configure(capture_content="everything")
    with pytest.raises(TypeError, match="capture_max_chars"):
        aiguard.configure(capture_content=True, capture_max_chars=0)


def test_a_capture_fault_never_reaches_the_caller(make_client, telemetry, monkeypatch):
    aiguard.configure(
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        capture_content="SPAN_AND_EVENT",
    )

    def explode(*args, **kwargs):
        raise RuntimeError("scrubber broke")

    monkeypatch.setattr(_capture, "_clean", explode)
    reply = _ask(make_client())
    assert reply.choices[0].message.content


def test_no_secret_reaches_any_exported_telemetry(make_client, server, telemetry, caplog):
    """Spans, events, metrics and logs, for calls that succeed, retry and fail."""
    server.fail("gpt-4o", status=429, headers={"retry-after": "0"})
    server.fail("gpt-4o-mini", status=401, times=1)
    client = make_client(fallback=["gpt-4o-mini"])
    with caplog.at_level(logging.DEBUG):
        _ask(client)
        with pytest.raises(Exception):  # noqa: B017 - whatever the provider raised
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    exported = [
        json.dumps(dict(s.attributes))
        + s.name
        + str(s.status.description)
        + json.dumps([dict(e.attributes or {}) for e in s.events])
        for s in telemetry.spans()
    ]
    exported += [str(p.attributes) for points in telemetry.metrics().values() for p in points]
    exported += [str(r.log_record.attributes) for r in _events.get_finished_logs()]
    exported += [r.getMessage() for r in caplog.records]
    blob = "\n".join(exported)
    assert API_KEY not in blob and "Bearer" not in blob
    assert "Zanzibar" not in blob and "bob@corp.example" not in blob


def test_stream_answers_are_captured_when_asked(make_client, telemetry, server):
    aiguard.configure(
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        capture_content="SPAN_ONLY",
    )
    chunks = list(
        make_client().chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    )
    assert chunks
    output = json.loads(telemetry.span("chat gpt-4o").attributes["gen_ai.output.messages"])
    assert output[0]["parts"][0]["content"] == "Hello from gpt-4o."
    assert output[0]["finish_reason"] == "stop"


async def test_async_anthropic_stream_answers_are_captured(server, telemetry):
    import anthropic

    aiguard.configure(
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        capture_content="SPAN_ONLY",
    )
    client = aiguard.wrap(anthropic.AsyncAnthropic(base_url=server.anthropic_url, api_key=API_KEY))
    stream = await client.messages.create(
        model="claude-3-5-haiku-latest", max_tokens=20, messages=MESSAGES, stream=True
    )
    [event async for event in stream]
    span = telemetry.span("chat claude-3-5-haiku-latest")
    output = json.loads(span.attributes["gen_ai.output.messages"])
    assert output[0]["parts"][0]["content"] == "Hello from claude-3-5-haiku-latest."


def test_streams_keep_nothing_with_capture_off(make_client, telemetry, monkeypatch):
    from aiguard.adapters import _shapes

    monkeypatch.setattr(_shapes, "chunk_text", lambda chunk: pytest.fail("read with capture off"))
    list(make_client().chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))


def test_a_policy_can_capture_its_own_calls(make_client, telemetry):
    make_client(capture="SPAN_ONLY").chat.completions.create(model="gpt-4o", messages=MESSAGES)
    make_client().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert "gen_ai.input.messages" in telemetry.span("chat gpt-4o").attributes
    assert "gen_ai.input.messages" not in telemetry.span("chat gpt-4o-mini").attributes
    with pytest.raises(ValueError, match="SPAN_AND_EVENT"):
        make_client(capture="loud")


def test_a_policy_file_can_capture(tmp_path, monkeypatch, make_client, telemetry):
    from aiguard import _policy_file

    policy = tmp_path / "aiguard.toml"
    policy.write_text('[policies.audited]\ncapture = "SPAN_ONLY"\nretry = false\n')
    monkeypatch.setenv("AIGUARD_CONFIG", str(policy))
    _policy_file.reset()
    try:
        make_client(policy="audited").chat.completions.create(model="gpt-4o", messages=MESSAGES)
    finally:
        _policy_file.reset()
    assert "gen_ai.input.messages" in telemetry.span("chat gpt-4o").attributes


def _capture_spans(telemetry):
    aiguard.configure(
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        capture_content="SPAN_ONLY",
    )


def test_tool_calls_and_tool_answers_are_structured_parts(make_client, server, telemetry):
    _capture_spans(telemetry)
    server.reply("gpt-4o", tool_calls=({"name": "weather", "arguments": {"city": "Paris"}},))
    history = [
        {"role": "user", "content": "Weather in Rome, then Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_rome",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Rome"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_rome", "content": "sunny, 24C"},
    ]
    make_client().chat.completions.create(model="gpt-4o", messages=history)
    a = telemetry.span("chat gpt-4o").attributes
    user, assistant, tool = json.loads(a["gen_ai.input.messages"])
    assert user["role"] == "user"
    assert assistant == {
        "role": "assistant",
        "parts": [
            {
                "type": "tool_call",
                "id": "call_rome",
                "name": "weather",
                "arguments": {"city": "Rome"},
            }
        ],
    }
    assert tool == {
        "role": "tool",
        "parts": [{"type": "tool_call_response", "id": "call_rome", "response": "sunny, 24C"}],
    }
    # An answer that only calls a tool still records its output message.
    assert json.loads(a["gen_ai.output.messages"]) == [
        {
            "role": "assistant",
            "parts": [
                {
                    "type": "tool_call",
                    "id": "call_0",
                    "name": "weather",
                    "arguments": {"city": "Paris"},
                }
            ],
            "finish_reason": "tool_calls",
        }
    ]


def test_every_choice_is_an_output_message(make_client, telemetry):
    _capture_spans(telemetry)
    make_client().chat.completions.create(model="gpt-4o", messages=MESSAGES, n=3)
    output = json.loads(telemetry.span("chat gpt-4o").attributes["gen_ai.output.messages"])
    assert len(output) == 3
    assert all(m["role"] == "assistant" and m["finish_reason"] == "stop" for m in output)


def test_embeddings_capture_no_content(make_client, telemetry):
    _capture_spans(telemetry)
    make_client().embeddings.create(model="text-embedding-3-small", input=SECRET_PROMPT)
    a = telemetry.span("embeddings text-embedding-3-small").attributes
    assert not [k for k in a if k.startswith(("gen_ai.input", "gen_ai.output"))]


def test_anthropic_system_is_system_instructions(server, telemetry):
    import anthropic

    _capture_spans(telemetry)
    client = aiguard.wrap(anthropic.Anthropic(base_url=server.anthropic_url, api_key=API_KEY))
    client.messages.create(
        model="claude-x",
        max_tokens=50,
        system="You are terse.",
        messages=[{"role": "user", "content": "Hi"}],
    )
    a = telemetry.span("chat claude-x").attributes
    assert json.loads(a["gen_ai.system_instructions"]) == [
        {"type": "text", "content": "You are terse."}
    ]
    assert json.loads(a["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "Hi"}]}
    ]
    [answer] = json.loads(a["gen_ai.output.messages"])
    assert answer["role"] == "assistant" and answer["parts"][0]["type"] == "text"


def test_tool_definitions_are_recorded_with_capture_on(make_client, telemetry):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "The weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    make_client().chat.completions.create(model="gpt-4o", messages=MESSAGES, tools=tools)
    assert "gen_ai.tool.definitions" not in telemetry.span("chat gpt-4o").attributes  # off
    telemetry.clear()
    _capture_spans(telemetry)
    make_client().chat.completions.create(model="gpt-4o", messages=MESSAGES, tools=tools)
    definitions = json.loads(telemetry.span("chat gpt-4o").attributes["gen_ai.tool.definitions"])
    assert definitions == [
        {
            "type": "function",
            "name": "weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
