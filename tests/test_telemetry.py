"""GenAI-conventions spans and metrics; telemetry faults never reach the app; secrets never leak."""

from __future__ import annotations

import json
import logging

import openai
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from tests.conftest import API_KEY, MESSAGES

import aiguard
from aiguard import _semconv as sc
from aiguard.testing import Capture

NO_WAIT = aiguard.Retry(attempts=3, wait_initial=0, wait_jitter=0)


def test_inference_span_follows_the_genai_conventions(make_client, server, telemetry):
    server.reply("gpt-4o", cached_tokens=3, reasoning_tokens=2, prompt_tokens=11)
    make_client().chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        max_tokens=50,
        temperature=0.2,
        top_p=0.9,
        stop=["\n"],
        seed=7,
        n=2,
        frequency_penalty=0.1,
        presence_penalty=0.3,
        response_format={"type": "json_object"},
    )
    span = telemetry.span("chat gpt-4o")
    a = span.attributes
    assert span.kind is SpanKind.CLIENT
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"  # the openai SDK's format, whatever the host
    assert a["gen_ai.request.model"] == "gpt-4o"
    assert a["server.address"] == "127.0.0.1" and a["server.port"] == server.port
    assert a["gen_ai.request.max_tokens"] == 50
    assert a["gen_ai.request.temperature"] == 0.2
    assert a["gen_ai.request.top_p"] == 0.9
    assert a["gen_ai.request.stop_sequences"] == ("\n",)
    assert a["gen_ai.request.seed"] == 7
    assert a["gen_ai.request.choice.count"] == 2
    assert a["gen_ai.request.frequency_penalty"] == 0.1
    assert a["gen_ai.request.presence_penalty"] == 0.3
    assert a["gen_ai.output.type"] == "json"
    assert a["gen_ai.response.id"].startswith("chatcmpl-")
    assert a["gen_ai.response.model"] == "gpt-4o"
    assert a["gen_ai.response.finish_reasons"] == ("stop", "stop")
    assert a["gen_ai.usage.input_tokens"] == 11
    assert a["gen_ai.usage.cache_read.input_tokens"] == 3
    assert a["gen_ai.usage.reasoning.output_tokens"] == 2
    assert a["openai.api.type"] == "chat_completions"
    assert a["openai.response.system_fingerprint"] == "fp_mock"
    assert span.status.status_code is StatusCode.UNSET


def test_sampler_visible_attributes_are_set_at_start(make_client, telemetry):
    seen = {}

    class Spy(SimpleSpanProcessor):
        def on_start(self, span, parent_context=None):
            if span.name.startswith("chat"):
                seen.update(span.attributes)

    telemetry.tracer_provider.add_span_processor(Spy(telemetry.exporter))
    make_client().chat.completions.create(model="gpt-4o", messages=MESSAGES)
    for key in (sc.OPERATION, sc.PROVIDER, sc.REQUEST_MODEL, sc.SERVER_ADDRESS, sc.SERVER_PORT):
        assert key in seen


def test_retries_and_a_fallback_are_one_inference_span_with_tokens_counted_once(
    make_client, server, telemetry
):
    server.fail("gpt-4o", status=429, times=3)
    server.reply("mini", prompt_tokens=9, completion_tokens=4)
    make_client(retry=NO_WAIT, fallback=["mini"]).chat.completions.create(
        model="gpt-4o", messages=MESSAGES
    )
    [span] = telemetry.spans()  # the happy path of the caller: one span, one generation
    a = span.attributes
    assert span.name == "chat gpt-4o" and span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET and "error.type" not in a
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "gpt-4o"  # what the caller asked for
    assert a["gen_ai.response.model"] == "mini"  # who answered
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (9, 4)
    assert (a["aiguard.attempts"], a["aiguard.retries"]) == (4, 2)
    assert a["aiguard.fallback.used"] is True and a["aiguard.fallback.model"] == "mini"
    failed = [e for e in span.events if e.name == "aiguard.attempt.failed"]
    assert [e.attributes["aiguard.attempt"] for e in failed] == [1, 2, 3]
    assert {e.attributes["error.type"] for e in failed} == {"openai.RateLimitError"}
    assert {e.attributes["aiguard.failure.class"] for e in failed} == {"rate_limit"}
    assert {e.attributes["aiguard.attempt.model"] for e in failed} == {"gpt-4o"}

    points = telemetry.metrics()
    [duration] = points["gen_ai.client.operation.duration"]
    assert duration.count == 1 and "error.type" not in duration.attributes
    assert duration.attributes["gen_ai.response.model"] == "mini"
    assert duration.attributes["gen_ai.request.model"] == "gpt-4o"
    assert duration.sum == pytest.approx((span.end_time - span.start_time) / 1e9, rel=0.05)
    tokens = points["gen_ai.client.token.usage"]
    by_type = {p.attributes["gen_ai.token.type"]: (p.count, p.sum) for p in tokens}
    assert by_type == {"input": (1, 9), "output": (1, 4)}
    retries = sum(p.value for p in points["aiguard.retries"])
    fallbacks = sum(p.value for p in points["aiguard.fallbacks"])
    assert (retries, fallbacks) == (2, 1)


def test_one_span_and_one_duration_point_cover_the_waits_between_retries(
    make_client, server, telemetry
):
    server.fail("gpt-4o", status=429, times=2, headers={"retry-after": "0.2"})
    make_client(retry=aiguard.Retry(attempts=3)).chat.completions.create(
        model="gpt-4o", messages=MESSAGES
    )
    [span] = telemetry.spans()
    seconds = (span.end_time - span.start_time) / 1e9
    assert seconds >= 0.4  # both waits are inside the logical operation
    [point] = telemetry.metrics()["gen_ai.client.operation.duration"]
    assert point.count == 1 and point.sum == pytest.approx(seconds, rel=0.05)


def test_a_failed_call_is_one_span_and_one_duration_point_with_its_error(
    make_client, server, telemetry
):
    server.fail("gpt-4o", status=500, times=5)
    with pytest.raises(openai.InternalServerError):
        make_client(retry=NO_WAIT).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    [span] = telemetry.spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "openai.InternalServerError"
    assert span.attributes["aiguard.outcome"] == "error"
    assert len([e for e in span.events if e.name == "aiguard.attempt.failed"]) == 3
    [point] = telemetry.metrics()["gen_ai.client.operation.duration"]
    assert point.count == 1
    assert point.attributes["error.type"] == "openai.InternalServerError"


def test_an_openai_client_at_any_url_reports_the_openai_provider(raw_client, telemetry):
    # Ports priced as Ollama and LM Studio, and an unknown server: nothing listens on them.
    for url in ("http://127.0.0.1:9/v1", "http://localhost:11434/v1", "http://127.0.0.2:1234/v1"):
        client = aiguard.wrap(raw_client.with_options(base_url=url, max_retries=0), retry=None)
        with pytest.raises(openai.APIError):
            client.chat.completions.create(model="m", messages=MESSAGES, timeout=0.5)
    providers = {s.attributes["gen_ai.provider.name"] for s in telemetry.spans()}
    addresses = {s.attributes["server.address"] for s in telemetry.spans()}
    assert providers == {"openai"}
    assert addresses == {"127.0.0.1", "localhost", "127.0.0.2"}


def test_duration_metric_has_the_advised_buckets_and_error_type(make_client, server, telemetry):
    server.fail("gpt-4o", status=500)
    make_client(retry=NO_WAIT).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    points = telemetry.metrics()["gen_ai.client.operation.duration"]
    assert list(points[0].explicit_bounds) == pytest.approx(sc.DURATION_BUCKETS)
    errors = [p for p in points if "error.type" in p.attributes]
    assert errors == []  # the second attempt answered: the logical call did not fail
    assert sum(p.count for p in points) == 1
    tokens = telemetry.metrics()["gen_ai.client.token.usage"]
    assert list(tokens[0].explicit_bounds) == [float(b) for b in sc.TOKEN_BUCKETS]


def test_breaker_transitions_are_counted(make_client, server, telemetry):
    client = make_client(retry=aiguard.Retry(attempts=1), breaker=aiguard.Breaker(failures=1))
    server.fail("gpt-4o", status=500)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    points = telemetry.metrics()["aiguard.breaker.transitions"]
    assert points[0].attributes["aiguard.breaker.state"] == "open"


class _Exploding(SpanExporter):
    def export(self, spans):
        raise RuntimeError("exporter down")

    def shutdown(self):
        pass


class _ExplodingProcessor(SimpleSpanProcessor):
    def on_start(self, span, parent_context=None):
        raise RuntimeError("processor on_start broke")

    def on_end(self, span):
        raise RuntimeError("processor on_end broke")


class _ExplodingMeterProvider(MeterProvider):
    def get_meter(self, *args, **kwargs):
        meter = super().get_meter(*args, **kwargs)

        class Broken:
            def record(self, *a, **k):
                raise RuntimeError("meter broke")

            add = record

        meter.create_histogram = lambda *a, **k: Broken()  # type: ignore[method-assign]
        meter.create_counter = lambda *a, **k: Broken()  # type: ignore[method-assign]
        return meter


@pytest.mark.parametrize("fault", ["exporter", "processor", "meter"])
def test_broken_telemetry_never_changes_the_result(raw_client, server, fault, caplog):
    tracer_provider = TracerProvider()
    if fault == "exporter":
        tracer_provider.add_span_processor(SimpleSpanProcessor(_Exploding()))
    elif fault == "processor":
        tracer_provider.add_span_processor(_ExplodingProcessor(_Exploding()))
    meter_provider = (
        _ExplodingMeterProvider() if fault == "meter" else MeterProvider([InMemoryMetricReader()])
    )
    aiguard.configure(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        client = aiguard.wrap(raw_client, retry=NO_WAIT, fallback=["mini"])
        server.fail("gpt-4o", status=500, times=3)
        with caplog.at_level(logging.WARNING):
            reply = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert reply.model == "mini"
        server.fail("gpt-4o", status=401)
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    finally:
        aiguard._config.reset()


def test_a_response_missing_optional_fields_loses_nothing_else(make_client, server, telemetry):
    server.reply("local", usage=False)
    reply = make_client().chat.completions.create(model="local", messages=MESSAGES)
    assert reply.usage is None
    a = telemetry.span("chat local").attributes
    assert a["gen_ai.response.model"] == "local"
    assert "gen_ai.usage.input_tokens" not in a


def test_no_secret_and_no_prompt_text_reaches_telemetry(raw_client, server, caplog):
    secret_prompt = "my private question about PROMPT-MARKER-123"
    with Capture() as capture, caplog.at_level(logging.DEBUG):
        client = aiguard.wrap(raw_client, retry=NO_WAIT, fallback=["mini"])
        server.fail("gpt-4o", status=429, times=3)
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": secret_prompt}]
        )
        server.fail("gpt-4o", status=400)
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": secret_prompt}]
            )
        dumped = [s.to_json() for s in capture.spans()]
        metrics = capture.reader.get_metrics_data().to_json()
    text = "\n".join([*dumped, metrics, caplog.text])
    assert server.requests[0].headers["authorization"] == f"Bearer {API_KEY}"
    for leak in (API_KEY, "Bearer", "PROMPT-MARKER-123", "authorization"):
        assert leak not in text, leak
    # the spans are valid JSON documents
    assert all(json.loads(d)["name"] for d in dumped)


def test_no_sdk_configured_records_nothing_and_works(raw_client, server):
    aiguard._config.reset()
    client = aiguard.wrap(raw_client, retry=NO_WAIT, fallback=["mini"])
    server.fail("gpt-4o", status=500, times=3)
    assert client.chat.completions.create(model="gpt-4o", messages=MESSAGES).model == "mini"


def test_with_no_sdk_no_attribute_is_built(raw_client, server, monkeypatch):
    from aiguard.adapters import _openai

    calls = []
    monkeypatch.setattr(
        _openai.ChatRoute, "request_attributes", lambda self, r: calls.append("req") or {}
    )
    monkeypatch.setattr(
        _openai.ChatRoute, "response_attributes", lambda self, r: calls.append("resp") or ({}, None)
    )
    aiguard._config.reset()
    aiguard.wrap(raw_client).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert calls == []
