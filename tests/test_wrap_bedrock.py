"""aiguard.wrap over boto3's bedrock-runtime client, real HTTP to the testing kit's Bedrock wire.

What only Bedrock has: ``modelId``, response dicts, ``ClientError`` codes, botocore's own retries
(off for guarded calls only), the ``converse_stream`` answer whose ``stream`` is an AWS
event stream, and a client class botocore makes per client.
"""

from __future__ import annotations

import gc
import json
from decimal import Decimal

import boto3
import botocore.config
import botocore.exceptions
import pydantic
import pytest
from botocore.eventstream import EventStream
from tests.conftest import FAST

import aiguard
import aiguard.testing
from aiguard import _classify, prices
from aiguard._policy import Failure
from aiguard._types import Usage
from aiguard.adapters import _bedrock
from aiguard.testing import Fault

MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"
OTHER = "us.anthropic.claude-3-5-sonnet-20240620-v1:0"
ASK = [{"role": "user", "content": [{"text": "What is the capital of France?"}]}]
SPAN = f"chat {MODEL}"


def _client(server):
    return boto3.client(
        "bedrock-runtime",
        endpoint_url=server.anthropic_url,
        region_name="eu-west-1",
        aws_access_key_id="AKIDAIGUARDTEST",
        aws_secret_access_key="aiguard-test-secret",
    )


@pytest.fixture
def raw(server):
    client = _client(server)
    yield client
    client.close()


@pytest.fixture
def make(raw):
    def make(**policy):
        policy.setdefault("retry", FAST)
        return aiguard.wrap(raw, **policy)

    return make


def _text(response):
    return response["output"]["message"]["content"][0]["text"]


def _events(response):
    return list(response["stream"])


def _failed(span):
    return [e.attributes for e in span.events if e.name == "aiguard.attempt.failed"]


# -- drop-in -----------------------------------------------------------------------------------


def test_the_wrapped_client_is_the_same_client(raw, make, server, telemetry):
    client = make()
    assert isinstance(client, type(raw))
    assert client.meta is raw.meta and client.exceptions is raw.exceptions
    response = client.converse(modelId=MODEL, messages=ASK)
    bare = raw.converse(modelId=MODEL, messages=ASK)
    assert type(response) is dict and response.keys() == bare.keys()
    assert _text(response) == _text(bare) == f"Hello from {MODEL}."
    assert len(telemetry.spans(SPAN)) == 1  # the bare call made no span


def test_other_methods_and_calls_boto3_refuses_pass_through(make, server, telemetry):
    client = make()
    with pytest.raises(TypeError):  # boto3's own: positional arguments
        client.converse(MODEL)
    with pytest.raises(botocore.exceptions.ParamValidationError):
        client.converse(messages=ASK)  # no modelId: boto3 says so, unguarded
    with pytest.raises(botocore.exceptions.ParamValidationError, match='"model"'):
        client.converse(modelId=MODEL, model=MODEL, messages=ASK)  # not a converse parameter
    with pytest.raises(botocore.exceptions.ClientError):  # invoke_model: the kit has no route
        client.invoke_model(modelId=MODEL, body=b"{}")
    assert telemetry.spans() == []


def test_only_bedrock_runtime_clients_are_supported(raw):
    s3 = boto3.client(
        "s3", region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b"
    )
    assert _bedrock.supports(raw) and not _bedrock.supports(s3)
    with pytest.raises(TypeError, match="cannot wrap"):
        aiguard.wrap(s3)


# -- errors and retries ------------------------------------------------------------------------


def test_throttling_is_retried_by_aiguard_not_botocore(make, server, telemetry):
    server.fail(MODEL, status=429, times=3)
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        make().converse(modelId=MODEL, messages=ASK)
    assert caught.value.response["Error"]["Code"] == "ThrottlingException"
    assert len(server.requests) == 3  # aiguard's three attempts; botocore retried none
    span = telemetry.span(SPAN)
    assert [f["aiguard.failure.class"] for f in _failed(span)] == ["rate_limit"] * 3
    assert span.attributes["error.type"].endswith(".ThrottlingException")


def test_the_bare_client_keeps_its_own_retries(raw, make, server):
    make()  # wrapping registers a handler on the client: it must not change bare calls
    server.fail(MODEL, status=503)
    assert _text(raw.converse(modelId=MODEL, messages=ASK))
    assert len(server.requests) == 2  # botocore's own retry
    assert raw.meta.config.retries["mode"] == "standard"


@pytest.mark.parametrize("mode", ["legacy", "standard", "adaptive"])
def test_no_retry_mode_of_botocore_retries_a_guarded_call(server, mode):
    config = botocore.config.Config(retries={"mode": mode, "max_attempts": 5})
    raw = boto3.client(
        "bedrock-runtime",
        endpoint_url=server.anthropic_url,
        region_name="eu-west-1",
        aws_access_key_id="AKIDAIGUARDTEST",
        aws_secret_access_key="aiguard-test-secret",
        config=config,
    )
    server.fail(MODEL, status=503, times=2)
    retry = aiguard.Retry(attempts=2, wait_initial=0.001, wait_max=0.001, wait_jitter=0.0)
    with pytest.raises(botocore.exceptions.ClientError):
        aiguard.wrap(raw, retry=retry).converse(modelId=MODEL, messages=ASK)
    assert len(server.requests) == 2


@pytest.mark.parametrize(("retries", "attempts"), [(None, 3), ({"max_attempts": 1}, 2)])
def test_without_retry_aiguard_retries_as_often_as_the_client_would(
    server, telemetry, retries, attempts
):
    config = botocore.config.Config(retries=retries) if retries else None
    raw = boto3.client(
        "bedrock-runtime",
        endpoint_url=server.anthropic_url,
        region_name="eu-west-1",
        aws_access_key_id="AKIDAIGUARDTEST",
        aws_secret_access_key="aiguard-test-secret",
        config=config,
    )
    server.fail(MODEL, status=503, times=5)
    with aiguard.testing.set_testing(True), pytest.raises(botocore.exceptions.ClientError):
        aiguard.wrap(raw).converse(modelId=MODEL, messages=ASK)
    assert len(server.requests) == attempts
    assert telemetry.span(SPAN).attributes["aiguard.attempts"] == attempts


def test_a_decorated_function_calling_boto3_is_classified_by_the_adapter():
    error = _client_error("ThrottlingException", "slow down", 429)
    assert _classify.classify(error)[0] is Failure.RATE_LIMIT


def test_model_not_ready_is_transient(make, server, telemetry):
    server.fail(MODEL, status=429, code="ModelNotReadyException")
    assert _text(make().converse(modelId=MODEL, messages=ASK))
    [failed] = _failed(telemetry.span(SPAN))
    assert failed["aiguard.failure.class"] == "outage"


def test_a_connection_reset_is_retried(make, server):
    server.fail(MODEL, reset=True)
    assert _text(make().converse(modelId=MODEL, messages=ASK))
    assert len(server.requests) == 2


def test_a_validation_error_is_not_retried(make, server, telemetry):
    server.fail(MODEL, status=400)
    with pytest.raises(botocore.exceptions.ClientError):
        make().converse(modelId=MODEL, messages=ASK)
    assert len(server.requests) == 1
    [failed] = _failed(telemetry.span(SPAN))
    assert failed["aiguard.failure.class"] == "fatal"


def _client_error(code, message, status=400):
    response = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {"retry-after": "2"}},
    }
    return botocore.exceptions.ClientError(response, "Converse")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (_client_error("ValidationException", "Input is too long for requested model."), "cw"),
        (_client_error("ValidationException", "prompt is too long: 210000 tokens > 200000"), "cw"),
        (_client_error("ValidationException", "Too many input tokens."), "cw"),
        (_client_error("ValidationException", "Malformed input request"), "fatal"),
        (_client_error("ThrottlingException", "slow down", 429), "rate"),
        (_client_error("ServiceUnavailableException", "down", 503), "outage"),
        (_client_error("ModelStreamErrorException", "x", 424), "outage"),
        (_client_error("AccessDeniedException", "no", 403), "fatal"),
        (_client_error("SomethingNew", "?", 502), "outage"),
        (botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"), "outage"),
        (botocore.exceptions.ReadTimeoutError(endpoint_url="http://x"), "outage"),
        (ValueError("ours"), "fatal"),
    ],
)
def test_errors_are_classified(error, expected):
    classes = {
        "cw": Failure.CONTEXT_WINDOW,
        "fatal": Failure.FATAL,
        "rate": Failure.RATE_LIMIT,
        "outage": Failure.OUTAGE,
    }
    failure, _ = _bedrock.classify(error)
    assert failure is classes[expected]


def test_a_throttle_carries_the_wait_asked_for():
    assert _bedrock.classify(_client_error("ThrottlingException", "x", 429)) == (
        Failure.RATE_LIMIT,
        2.0,
    )


def test_an_in_stream_error_is_classified_by_its_name():
    error = botocore.exceptions.EventStreamError(
        {"Error": {"Code": "throttlingException", "Message": "x"}}, "ConverseStream"
    )
    assert _bedrock.classify(error)[0] is Failure.RATE_LIMIT


# -- fallback ----------------------------------------------------------------------------------


def test_a_fallback_to_another_bedrock_client(make, server, telemetry):
    other = _client(server)
    server.fail(MODEL, status=503, times=3)
    response = make(fallback=[aiguard.Target(OTHER, client=other)]).converse(
        modelId=MODEL, messages=ASK
    )
    assert _text(response) == f"Hello from {OTHER}."
    assert [r.model for r in server.requests] == [MODEL] * 3 + [OTHER]
    assert telemetry.span(SPAN).attributes["gen_ai.response.model"] == OTHER


def test_a_fallback_client_of_another_kind_is_refused(raw):
    s3 = boto3.client(
        "s3", region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b"
    )
    with pytest.raises(TypeError, match="bedrock-runtime client"):
        aiguard.wrap(raw, fallback=[aiguard.Target("x", client=s3)])


# -- attributes, usage and cost ----------------------------------------------------------------


def test_attributes_usage_and_cost(make, server, telemetry):
    server.reply(MODEL, prompt_tokens=1200, cached_tokens=1000, cache_write_tokens=100)
    config = {"maxTokens": 64, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]}
    response = make().converse(
        modelId=MODEL,
        messages=ASK,
        system=[{"text": "Be brief."}],
        inferenceConfig=config,
        additionalModelRequestFields={"top_k": 5},
    )
    assert response["usage"]["inputTokens"] == 100  # what was neither read nor written
    attrs = telemetry.span(SPAN).attributes
    assert attrs["gen_ai.provider.name"] == "aws.bedrock"
    assert attrs["server.address"] == "127.0.0.1" and attrs["server.port"] == server.port
    assert attrs["gen_ai.request.max_tokens"] == 64
    assert (attrs["gen_ai.request.temperature"], attrs["gen_ai.request.top_p"]) == (0.2, 0.9)
    assert attrs["gen_ai.request.top_k"] == 5.0
    assert attrs["gen_ai.request.stop_sequences"] == ("END",)
    assert attrs["gen_ai.response.finish_reasons"] == ("end_turn",)
    assert attrs["gen_ai.response.model"] == MODEL
    assert attrs["gen_ai.usage.input_tokens"] == 1200
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 1000
    usage = Usage(
        input_tokens=1200,
        output_tokens=response["usage"]["outputTokens"],
        cache_read_tokens=1000,
        cache_write_tokens=100,
    )
    price = prices.lookup("aws.bedrock", MODEL)
    assert price is not None
    expected = price.cost(usage)
    assert expected is not None and expected > 0
    assert Decimal(str(attrs["aiguard.cost.usd"])) == pytest.approx(expected)


def test_an_inference_profile_is_priced():
    assert prices.lookup("aws.bedrock", OTHER) is not None


def test_a_budget_reserves_the_requested_output(make, server):
    budget = aiguard.Budget(usd=1.0)
    make(budget=budget).converse(modelId=MODEL, messages=ASK, inferenceConfig={"maxTokens": 10})
    assert 0 < budget.spent < 0.001


# -- the neutral request -----------------------------------------------------------------------


def test_system_tool_use_and_tool_results_become_neutral_messages():
    request = {
        "system": [{"text": "Be brief."}, {"cachePoint": {"type": "default"}}],
        "messages": [
            {"role": "user", "content": [{"text": "Weather?"}, {"image": {"format": "png"}}]},
            {
                "role": "assistant",
                "content": [
                    {"toolUse": {"toolUseId": "t1", "name": "weather", "input": {"city": "Oslo"}}}
                ],
            },
            {
                "role": "user",
                "content": [
                    {"toolResult": {"toolUseId": "t1", "content": [{"text": "rain"}]}},
                    {"toolResult": {"toolUseId": "t2", "content": [{"json": {"c": 4}}]}},
                ],
            },
        ],
    }
    system, user, assistant, results = _bedrock.converse_messages(request)
    assert (system.role, system.instructions, system.text) == ("system", True, "Be brief.")
    assert [p.type for p in user.parts] == ["text", "image"]
    [call] = assistant.parts
    assert call.type == "tool_call" and json.loads(call.content)["name"] == "weather"
    assert [(p.type, p.content, p.id) for p in results.parts] == [
        ("tool_call_response", "rain", "t1"),
        ("tool_call_response", '[{"json":{"c":4}}]', "t2"),
    ]


def test_a_check_reads_the_system_prompt(make, server):
    client = make(checks=[aiguard.checks.NoSecrets()])
    with pytest.raises(aiguard.CheckFailed):
        client.converse(modelId=MODEL, messages=ASK, system=[{"text": "key sk-proj-" + "x1" * 24}])
    assert server.requests == []


def test_a_redacting_check_reaches_text_tool_use_and_tool_results(make, server):
    email = "bob@corp.example"
    messages = [
        {"role": "user", "content": [{"text": f"Email {email} about it"}]},
        {
            "role": "assistant",
            "content": [{"toolUse": {"toolUseId": "t1", "name": "send", "input": {"to": email}}}],
        },
        {
            "role": "user",
            "content": [
                {"toolResult": {"toolUseId": "t1", "content": [{"text": f"sent {email}"}]}}
            ],
        },
    ]
    client = make(checks=[aiguard.checks.NoPII(action="redact")])
    client.converse(modelId=MODEL, messages=messages, system=[{"text": f"Owner: {email}"}])
    sent = json.dumps(server.requests[0].body)
    assert email not in sent and sent.count("[REDACTED:email]") == 4
    assert messages[0]["content"][0]["text"] == f"Email {email} about it"  # the caller's own


def test_capture_records_tool_calls_of_the_answer(make, server, telemetry):
    server.reply(MODEL, tool_calls=({"name": "weather", "arguments": {"city": "Oslo"}},))
    response = make(capture="SPAN_ONLY").converse(modelId=MODEL, messages=ASK)
    assert response["stopReason"] == "tool_use"
    [answer] = json.loads(telemetry.span(SPAN).attributes["gen_ai.output.messages"])
    [part] = answer["parts"]
    assert part["type"] == "tool_call" and answer["finish_reason"] == "tool_use"


class City(pydantic.BaseModel):
    city: str


def test_a_wrong_answer_is_reasked_in_content_blocks(make, server, telemetry):
    right = '{"city": "Paris"}'
    server.answer(MODEL, "Paris", right)
    response = make(output=City).converse(modelId=MODEL, messages=ASK)
    assert _text(response) == right
    again = server.requests[1].body["messages"]
    assert again[1] == {"role": "assistant", "content": [{"text": "Paris"}]}
    assert "did not match" in again[2]["content"][0]["text"]


# -- streams -----------------------------------------------------------------------------------


def test_a_stream_is_the_response_dict_with_a_botocore_event_stream(make, raw, server, telemetry):
    response = make().converse_stream(modelId=MODEL, messages=ASK)
    bare = raw.converse_stream(modelId=MODEL, messages=ASK)
    assert type(response) is dict and response.keys() == bare.keys()
    assert isinstance(response["stream"], EventStream)
    assert _events(response) == _events(bare)
    attrs = telemetry.span(SPAN).attributes
    assert attrs["aiguard.outcome"] == "ok" and attrs["gen_ai.request.stream"] is True
    assert attrs["gen_ai.response.finish_reasons"] == ("end_turn",)
    assert attrs["gen_ai.usage.output_tokens"] > 0 and attrs["aiguard.cost.usd"] > 0
    assert attrs["aiguard.stream.chunks"] == 7  # start, 3 deltas, block stop, stop, metadata


def test_an_in_stream_throttle_before_any_content_is_retried(make, server, telemetry):
    server.fail(MODEL, stream_error="ThrottlingException")
    events = _events(make().converse_stream(modelId=MODEL, messages=ASK))
    assert "messageStart" in events[0] and "metadata" in events[-1]
    assert len(server.requests) == 2
    [failed] = _failed(telemetry.span(SPAN))
    assert failed["aiguard.failure.class"] == "rate_limit"


def test_an_in_stream_error_after_content_reaches_the_user(make, server, telemetry):
    server.fail(MODEL, stream_error="modelStreamErrorException", cut_after=1)
    response = make().converse_stream(modelId=MODEL, messages=ASK)
    with pytest.raises(botocore.exceptions.EventStreamError):
        _events(response)
    assert len(server.requests) == 1
    span = telemetry.span(SPAN)
    assert span.attributes["aiguard.outcome"] == "error"
    assert span.attributes["error.type"].endswith(".EventStreamError")


def test_a_stream_cut_mid_answer(make, server, telemetry):
    server.fail(MODEL, cut_after=2)
    response = make().converse_stream(modelId=MODEL, messages=ASK)
    with pytest.raises(Exception) as caught:  # urllib3's ProtocolError, as boto3 lets it out
        _events(response)
    assert "Connection broken" in str(caught.value)
    attrs = telemetry.span(SPAN).attributes
    assert attrs["aiguard.outcome"] == "error" and attrs["aiguard.stream.chunks"] == 3


def test_a_stream_failing_before_its_first_event_is_retried(make, server, telemetry):
    server.script(MODEL, Fault(empty=True), Fault(reset=True))
    assert "metadata" in _events(make().converse_stream(modelId=MODEL, messages=ASK))[-1]
    assert len(server.requests) == 3
    assert telemetry.span(SPAN).attributes["aiguard.attempts"] == 3


def test_a_truncated_stream_is_recorded_or_raised(make, server, telemetry):
    server.fail(MODEL, truncate=True)
    events = _events(make().converse_stream(modelId=MODEL, messages=ASK))
    assert not any("messageStop" in e for e in events)
    attrs = telemetry.span(SPAN).attributes
    assert attrs["aiguard.outcome"] == "error" and attrs["error.type"] == "aiguard.StreamTruncated"
    server.fail(MODEL, truncate=True)
    response = make(raise_on_truncation=True).converse_stream(modelId=MODEL, messages=ASK)
    with pytest.raises(aiguard.StreamTruncated):
        _events(response)


def test_a_stream_closed_early_is_abandoned(make, server, telemetry):
    response = make().converse_stream(modelId=MODEL, messages=ASK)
    stream = response["stream"]
    next(iter(stream))
    stream.close()
    attrs = telemetry.span(SPAN).attributes
    assert attrs["aiguard.stream.abandoned"] is True and attrs["aiguard.outcome"] == "abandoned"


def test_a_stream_dropped_unread_ends_its_span(make, server, telemetry):
    make().converse_stream(modelId=MODEL, messages=ASK)
    gc.collect()
    assert telemetry.span(SPAN).attributes["aiguard.stream.abandoned"] is True


def test_stream_capture_records_the_text(make, server, telemetry):
    _events(make(capture="SPAN_ONLY").converse_stream(modelId=MODEL, messages=ASK))
    [answer] = json.loads(telemetry.span(SPAN).attributes["gen_ai.output.messages"])
    assert answer["parts"] == [{"type": "text", "content": f"Hello from {MODEL}."}]
    assert answer["finish_reason"] == "end_turn"


def test_a_streamed_tool_call(make, server):
    server.reply(MODEL, tool_calls=({"name": "weather", "arguments": {"city": "Oslo"}},))
    events = _events(make().converse_stream(modelId=MODEL, messages=ASK))
    [start] = [e["contentBlockStart"] for e in events if "contentBlockStart" in e]
    assert start["start"]["toolUse"]["name"] == "weather"
    assert {"messageStop": {"stopReason": "tool_use"}} in events


# -- zero-code instrumentation -----------------------------------------------------------------


@pytest.fixture
def instrumented():
    yield aiguard.instrument
    aiguard.uninstrument()


def test_instrument_guards_clients_made_before_and_after(server, telemetry, instrumented):
    before = _client(server)
    instrumented()
    after = _client(server)
    assert _text(before.converse(modelId=MODEL, messages=ASK))
    assert "metadata" in _events(after.converse_stream(modelId=MODEL, messages=ASK))[-1]
    spans = telemetry.spans(SPAN)
    assert [s.attributes["aiguard.outcome"] for s in spans] == ["ok", "ok"]
    assert spans[1].attributes["gen_ai.usage.output_tokens"] > 0


def test_instrument_keeps_botocore_retries_and_wraps_no_call_twice(server, telemetry, instrumented):
    instrumented()
    client = aiguard.wrap(_client(server), retry=FAST)
    server.fail(MODEL, status=503)
    assert _text(client.converse(modelId=MODEL, messages=ASK))
    assert len(telemetry.spans(SPAN)) == 1
    bare = _client(server)
    server.fail(MODEL, status=503)
    assert _text(bare.converse(modelId=MODEL, messages=ASK))  # botocore retried it
    assert len(telemetry.spans(SPAN)) == 2


def test_instrument_leaves_other_services_alone(server, telemetry, instrumented):
    instrumented()
    s3 = boto3.client(
        "s3",
        endpoint_url=server.anthropic_url,
        region_name="us-east-1",
        aws_access_key_id="a",
        aws_secret_access_key="b",
    )
    with pytest.raises(botocore.exceptions.ClientError):
        s3.list_buckets()
    assert telemetry.spans() == []
