#!/usr/bin/env python
"""What aiguard adds to a model call, against a conventions-complete hand-written floor.

Run from the repository root with the project's virtualenv active::

    python benchmarks/overhead.py            # the full run, one command (2-4 min on 2 shared cores)
    python benchmarks/overhead.py --quick    # a smoke run (well under a minute; CI runs it)
    python benchmarks/overhead.py --json     # JSON on stdout, the table on stderr

Every case calls the REAL ``openai.OpenAI`` client; only its HTTP transport is replaced by an
in-process ``httpx2.MockTransport`` that answers with a fixed, realistic ``chat.completion`` (or
an SSE stream). So each call still builds the request, serialises it, goes through httpx2 and
parses the response into pydantic models: everything a real call does except the network.

Per call (``call_cases``):

``bare``
    The plain openai client.
``floor``
    The *conventions-complete floor*: the plain call inside one hand-written OpenTelemetry SDK
    span (CLIENT, ``chat gpt-4o``) with the attributes an inference span carries (operation,
    provider, request and response model, server address and port, response id, finish
    reasons, input and output tokens), plus the three metric points the GenAI conventions ask
    for: one ``gen_ai.client.operation.duration`` point and two ``gen_ai.client.token.usage``
    points (input, output), histograms with the conventions' bucket advisories.
``telemetry``
    ``aiguard.wrap(client, retry=None)``: telemetry (and cost) only, no policy.
``default``
    ``aiguard.wrap(client)``: the defaults (a ``Retry()``).
``full_policy``
    ``aiguard.wrap`` with retry, a fallback, a circuit breaker, a deadline, a budget and checks.
``full_policy_no_sdk``
    The same full policy with no SDK configured (the global no-op API providers).

aiguard's figures are given as added time over ``bare`` and as a ratio of the floor's added time
(targets: telemetry <= 1.15x, full policy <= 1.3x).

Streams (``stream_cases``), all with the same full policy for aiguard:

``stream_*``
    A real SSE stream of 20 content chunks read to the end: bare, floor (the span and metrics
    above, plus ``time_to_first_chunk`` once and ``time_per_output_chunk`` once per chunk after
    the first, and the usage chunk asked for, as aiguard does) and aiguard.
``chunks_*``
    The per-chunk cost. The SDK spends tens of µs parsing each SSE chunk, which drowns what
    instrumentation does per chunk, so these streams go through the same SDK ``Stream`` with the
    SSE decoding and chunk parsing replaced by pre-built chunk objects
    (``PreparsedOpenAI``). Each is timed at two lengths; the slope between them is the cost per
    chunk. aiguard's per-chunk cost beyond the floor's is the headline (target <= 1.5 µs).

Import time (``import_times``): ``import aiguard`` in fresh interpreters (target <= 80 ms), and
what the first use of the engine and of the price data add.

Method: cases are measured interleaved. In every round each case times one batch (process CPU
time by default, ``time.process_time_ns``; the garbage collector is paused during a batch), in a
shuffled order per round so that no case always follows the same neighbour. Differences are
*paired*: the median over rounds of (case - bare) within the same round, so slow drift of a
shared machine cancels.
"""

from __future__ import annotations

import argparse
import builtins
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Literal, TextIO

import httpx2
import openai
from openai.types.chat import ChatCompletionChunk
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

import aiguard
import aiguard._config

TELEMETRY_RATIO_TARGET = 1.15  # telemetry-only wrap: added time <= 1.15x the floor's
FULL_RATIO_TARGET = 1.3  # full policy: added time <= 1.3x the floor's
CHUNK_TARGET_US = 1.5  # per streamed chunk, beyond the floor's own per-chunk cost
IMPORT_TARGET_MS = 80.0

MODEL = "gpt-4o"
MESSAGES: list[Any] = [
    {"role": "system", "content": "You are a concise assistant for a travel booking site."},
    {"role": "user", "content": "What is the capital of France? Answer in one sentence."},
]
STREAM_CHUNKS = 20  # content chunks of the real SSE stream (plus a role and a finish chunk)
CHUNKS_SHORT, CHUNKS_LONG = 10, 410  # the two lengths of the per-chunk (slope) streams

# The GenAI conventions' bucket advisories.
DURATION_BUCKETS = [0.01 * 2**i for i in range(14)]  # 0.01 ... 81.92 s
TOKEN_BUCKETS = [4**i for i in range(14)]  # 1 ... 67108864

# ---------------------------------------------------------------------------------------------
# The fake provider: a fixed chat.completion (or stream) served in-process.
# ---------------------------------------------------------------------------------------------

CHAT_COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-BENCH0c8Yk1mQ2xR7vT3nW9pL4sJ",
    "object": "chat.completion",
    "created": 1741569952,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "The capital of France is Paris.",
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 38,
        "completion_tokens": 8,
        "total_tokens": 46,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": "fp_f5bdcc3276",
}
CHAT_BODY = json.dumps(CHAT_COMPLETION).encode()
CHAT_HEADERS = {
    "content-type": "application/json",
    "openai-organization": "bench-org",
    "openai-processing-ms": "412",
    "openai-version": "2020-10-01",
    "x-request-id": "req_0123456789abcdef0123456789abcdef",
    "x-ratelimit-limit-requests": "10000",
    "x-ratelimit-remaining-requests": "9999",
    "x-ratelimit-limit-tokens": "30000000",
    "x-ratelimit-remaining-tokens": "29999950",
}
SSE_HEADERS = {"content-type": "text/event-stream", "x-request-id": "req_bench_stream"}

Handler = Callable[[httpx2.Request], httpx2.Response]


def chat_handler(request: httpx2.Request) -> httpx2.Response:
    """Answer every request with the same chat completion (no network, no sleep)."""
    return httpx2.Response(200, headers=CHAT_HEADERS, content=CHAT_BODY)


def make_openai_client(handler: Handler, cls: type[openai.OpenAI] = openai.OpenAI) -> openai.OpenAI:
    """The real openai SDK client, with its HTTP answered in-process by ``handler``."""
    return cls(
        api_key="sk-bench",
        base_url="http://bench.local/v1",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )


def chunk_dicts(chunks: int, usage: bool) -> list[dict[str, Any]]:
    """The chunks of a streamed answer: a role chunk, ``chunks`` words, a finish chunk, usage."""

    def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": "gpt-4o-2024-08-06",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    out = [chunk({"role": "assistant", "content": ""}, None)]
    out += [chunk({"content": f"word{i} "}, None) for i in range(chunks)]
    out.append(chunk({}, "stop"))
    if usage:
        out.append(
            {
                **chunk({}, None),
                "choices": [],
                "usage": {
                    "prompt_tokens": 38,
                    "completion_tokens": chunks,
                    "total_tokens": 38 + chunks,
                },
            }
        )
    return out


def wants_usage(request: httpx2.Request) -> bool:
    body = json.loads(request.content)
    return bool((body.get("stream_options") or {}).get("include_usage"))


def sse_handler(chunks: int) -> Handler:
    """A real SSE stream; the usage chunk only when the request asks for it (as OpenAI does)."""
    bodies = {
        usage: b"".join(
            b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunk_dicts(chunks, usage)
        )
        + b"data: [DONE]\n\n"
        for usage in (False, True)
    }

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers=SSE_HEADERS, content=bodies[wants_usage(request)])

    return handler


class _Event:
    """A server-sent event whose data is already parsed (what ``Stream.__stream__`` reads)."""

    __slots__ = ("data", "event", "value")

    def __init__(self, value: Any, data: str = "{}") -> None:
        self.data = data
        self.event = None
        self.value = value

    def json(self) -> Any:
        return self.value


_PREPARSED: dict[tuple[int, bool], tuple[_Event, ...]] = {}


def preparsed_events(chunks: int, usage: bool) -> tuple[_Event, ...]:
    key = (chunks, usage)
    if key not in _PREPARSED:
        parsed = [ChatCompletionChunk.model_validate(c) for c in chunk_dicts(chunks, usage)]
        _PREPARSED[key] = (*(_Event(c) for c in parsed), _Event(None, "[DONE]"))
    return _PREPARSED[key]


class _PreparsedDecoder:
    """Stands in for the SDK's SSE decoder: the body names the stream, the events are ready."""

    def iter_bytes(self, iterator: Iterator[bytes]) -> Iterator[_Event]:
        chunks, _, usage = b"".join(iterator).partition(b":")
        yield from preparsed_events(int(chunks), usage == b"1")


class PreparsedOpenAI(openai.OpenAI):
    """The real client and ``Stream``, minus SSE decoding and chunk parsing (per-chunk cases)."""

    def _make_sse_decoder(self) -> Any:
        return _PreparsedDecoder()

    def _process_response_data(self, *, data: Any, cast_to: Any, response: Any) -> Any:
        if isinstance(data, ChatCompletionChunk):
            return data
        return super()._process_response_data(data=data, cast_to=cast_to, response=response)


def preparsed_handler(chunks: int) -> Handler:
    def handler(request: httpx2.Request) -> httpx2.Response:
        plan = f"{chunks}:{int(wants_usage(request))}".encode()
        return httpx2.Response(200, headers=SSE_HEADERS, content=plan)

    return handler


# ---------------------------------------------------------------------------------------------
# Telemetry: SDK providers that record everything and export nowhere.
# ---------------------------------------------------------------------------------------------


class NullSpanExporter(SpanExporter):
    """Accepts every batch and drops it; counts spans per instrumentation scope."""

    def __init__(self) -> None:
        self.spans: Counter[str] = Counter()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            scope = span.instrumentation_scope
            self.spans[scope.name if scope is not None else "?"] += 1
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


@dataclass
class Sdk:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    exporter: NullSpanExporter
    reader: InMemoryMetricReader

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def make_sdk() -> Sdk:
    exporter = NullSpanExporter()
    tracer_provider = TracerProvider()
    # A big queue so no span is dropped: every span pays the full enqueue/export path.
    tracer_provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=1 << 17))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    return Sdk(tracer_provider, meter_provider, exporter, reader)


TelemetryMode = Literal["sdk", "noop"]


class TelemetrySwitch:
    """Switches what aiguard records with: the SDK providers, or the global (no-op) API ones."""

    def __init__(self, sdk: Sdk) -> None:
        self.sdk = sdk
        self.mode: TelemetryMode | None = None

    def use(self, mode: TelemetryMode | None) -> bool:
        """Returns True when the mode changed (aiguard then builds new instruments lazily)."""
        if mode is None or mode == self.mode:
            return False
        if mode == "sdk":
            aiguard.configure(
                tracer_provider=self.sdk.tracer_provider, meter_provider=self.sdk.meter_provider
            )
        else:
            aiguard._config.reset()
        self.mode = mode
        return True


def check_global_providers_are_noop() -> None:
    """The no-SDK case is meaningless if something set SDK providers globally."""
    tracer_provider = trace.get_tracer_provider()
    meter_provider = metrics.get_meter_provider()
    if isinstance(tracer_provider, TracerProvider) or isinstance(meter_provider, MeterProvider):
        sys.exit(
            "global OpenTelemetry SDK providers are set (OTEL_PYTHON_* env vars or "
            "auto-instrumentation?); the no-SDK case needs the default no-op ones"
        )


# ---------------------------------------------------------------------------------------------
# The floor: what a careful hand-written instrumentation following the conventions records.
# ---------------------------------------------------------------------------------------------


class Floor:
    """One SDK span with the inference attributes, and the conventions' metric points."""

    def __init__(self, sdk: Sdk) -> None:
        self.tracer = sdk.tracer_provider.get_tracer("benchmark.floor")
        meter = sdk.meter_provider.get_meter("benchmark.floor")
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.first_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            description="Time to receive the first chunk in a streaming operation",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.per_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_per_output_chunk",
            unit="s",
            description="Time between consecutive chunks in a streaming operation",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.start_attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": MODEL,
            "server.address": "bench.local",
            "server.port": 80,
        }

    def _end(
        self, span: Any, started: float, rid: str, model: str, finish: list[str], usage: Any
    ) -> None:
        span.set_attributes(
            {
                "gen_ai.response.id": rid,
                "gen_ai.response.model": model,
                "gen_ai.response.finish_reasons": finish,
                "gen_ai.usage.input_tokens": usage.prompt_tokens,
                "gen_ai.usage.output_tokens": usage.completion_tokens,
            }
        )
        span.end()
        attrs = {**self.start_attrs, "gen_ai.response.model": model}
        self.duration.record(time.perf_counter() - started, attrs)
        self.tokens.record(usage.prompt_tokens, {**attrs, "gen_ai.token.type": "input"})
        self.tokens.record(usage.completion_tokens, {**attrs, "gen_ai.token.type": "output"})

    def call(self, client: openai.OpenAI) -> Any:
        started = time.perf_counter()
        span = self.tracer.start_span(
            "chat " + MODEL, kind=SpanKind.CLIENT, attributes=self.start_attrs
        )
        with trace.use_span(
            span, end_on_exit=False, record_exception=True, set_status_on_exception=True
        ):
            result = client.chat.completions.create(model=MODEL, messages=MESSAGES)
        finish = [c.finish_reason for c in result.choices]
        self._end(span, started, result.id, result.model, finish, result.usage)
        return result

    def stream(self, client: openai.OpenAI) -> int:
        """Read a stream to the end; the usage chunk is asked for, as aiguard does.

        Like the instrumentations do, the request is sent in the span's context and the chunks
        are read in the caller's (the span is not current while the caller iterates).
        """
        started = time.perf_counter()
        span = self.tracer.start_span(
            "chat " + MODEL, kind=SpanKind.CLIENT, attributes=self.start_attrs
        )
        with trace.use_span(
            span, end_on_exit=False, record_exception=True, set_status_on_exception=True
        ):
            stream = client.chat.completions.create(
                model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
        count = 0
        last = 0.0
        attrs: dict[str, Any] = {}
        rid = model = ""
        finish: list[str] = []
        usage = None
        for chunk in stream:
            now = time.perf_counter()
            if count:
                self.per_chunk.record(now - last, attrs)
            else:
                rid, model = chunk.id, chunk.model
                attrs = {**self.start_attrs, "gen_ai.response.model": model}
                self.first_chunk.record(now - started, attrs)
            last = now
            count += 1
            for choice in chunk.choices:
                if choice.finish_reason:
                    finish.append(choice.finish_reason)
            if chunk.usage is not None:
                usage = chunk.usage
        self._end(span, started, rid, model, finish, usage)
        return count


# ---------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------

Group = Literal["call", "stream", "chunks_short", "chunks_long"]


@dataclass
class Case:
    name: str
    description: str
    call: Callable[[], Any]
    group: Group = "call"
    # What aiguard must record with during this case; None when aiguard is not involved.
    telemetry: TelemetryMode | None = None
    # Relative batch size: a case whose call is slow times fewer calls per batch.
    batch_scale: float = 1.0
    # What a correct call returns, checked once before timing.
    expect: Callable[[Any], bool] | None = None
    calls_made: int = 0


def full_policy() -> dict[str, Any]:
    return {
        "retry": aiguard.Retry(attempts=3),
        "fallback": ["gpt-4o-mini"],
        "timeout": 30,
        "breaker": aiguard.Breaker(failures=5, reset_after=30),
        "budget": aiguard.Budget(usd=10**9),
        "checks": [aiguard.checks.NotEmpty(), aiguard.checks.NoSecrets()],
    }


def call_cases(floor: Floor) -> list[Case]:
    """Non-streaming ``chat.completions.create`` cases."""
    bare = make_openai_client(chat_handler)
    telemetry_only = aiguard.wrap(make_openai_client(chat_handler), retry=None)
    default = aiguard.wrap(make_openai_client(chat_handler))
    full = aiguard.wrap(make_openai_client(chat_handler), **full_policy())
    full_no_sdk = aiguard.wrap(make_openai_client(chat_handler), **full_policy())

    def create(client: openai.OpenAI) -> Callable[[], Any]:
        return lambda: client.chat.completions.create(model=MODEL, messages=MESSAGES)

    return [
        Case("bare", "plain openai.OpenAI client", create(bare)),
        Case(
            "floor",
            "1 SDK span, 10 attributes, 3 metric points",
            lambda: floor.call(bare),
        ),
        Case(
            "telemetry",
            "wrap(client, retry=None)",
            create(telemetry_only),
            telemetry="sdk",
        ),
        Case("default", "wrap(client): default Retry()", create(default), telemetry="sdk"),
        Case(
            "full_policy",
            "retry fallback breaker deadline budget checks",
            create(full),
            telemetry="sdk",
        ),
        Case(
            "full_policy_no_sdk",
            "full policy, no SDK configured",
            create(full_no_sdk),
            telemetry="noop",
        ),
    ]


def read_stream(client: openai.OpenAI) -> int:
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    return sum(1 for _ in stream)


def stream_triplet(
    group: Group,
    prefix: str,
    chunks: int,
    handler: Handler,
    cls: type[openai.OpenAI],
    floor: Floor,
    scale: float,
) -> list[Case]:
    bare = make_openai_client(handler, cls)
    guarded = aiguard.wrap(make_openai_client(handler, cls), **full_policy())
    total = chunks + 2  # role chunk + content chunks + finish chunk (the usage chunk is hidden)

    def expect(count: int) -> bool:
        # aiguard hides the usage chunk it asked for; a stream that shows it is still correct.
        return count in (total, total + 1)

    def expect_floor(count: int) -> bool:
        return count == total + 1  # the floor sees the usage chunk it asked for

    return [
        Case(
            f"{prefix}_bare",
            f"bare, {total} chunks",
            lambda: read_stream(bare),
            group,
            None,
            scale,
            expect,
        ),
        Case(
            f"{prefix}_floor",
            "span, 3 points, TTFC, TPOC per chunk",
            lambda: floor.stream(bare),
            group,
            None,
            scale,
            expect_floor,
        ),
        Case(
            f"{prefix}_aiguard",
            "wrap, full policy",
            lambda: read_stream(guarded),
            group,
            "sdk",
            scale,
            expect,
        ),
    ]


def stream_cases(floor: Floor) -> list[Case]:
    return [
        *stream_triplet(
            "stream", "stream", STREAM_CHUNKS, sse_handler(STREAM_CHUNKS), openai.OpenAI, floor, 0.5
        ),
        *stream_triplet(
            "chunks_short",
            "chunks10",
            CHUNKS_SHORT,
            preparsed_handler(CHUNKS_SHORT),
            PreparsedOpenAI,
            floor,
            1.0,
        ),
        *stream_triplet(
            "chunks_long",
            "chunks410",
            CHUNKS_LONG,
            preparsed_handler(CHUNKS_LONG),
            PreparsedOpenAI,
            floor,
            0.25,
        ),
    ]


def build_cases(floor: Floor) -> list[Case]:
    return call_cases(floor) + stream_cases(floor)


def check_cases(cases: list[Case], switch: TelemetrySwitch) -> None:
    """Every case must return the expected answer before anything is timed."""
    for case in cases:
        switch.use(case.telemetry)
        result = case.call()
        case.calls_made += 1
        if case.expect is not None:
            if not case.expect(result):
                sys.exit(f"case {case.name} returned an unexpected result: {result!r}")
            continue
        content = result.choices[0].message.content
        if content != CHAT_COMPLETION["choices"][0]["message"]["content"]:
            sys.exit(f"case {case.name} returned an unexpected completion: {content!r}")


# ---------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------

CLOCKS: dict[str, Callable[[], int]] = {"cpu": time.process_time_ns, "wall": time.perf_counter_ns}


def time_batch(call: Callable[[], Any], n: int, pause_gc: bool, clock: Callable[[], int]) -> int:
    """Nanoseconds for ``n`` back-to-back calls."""
    if pause_gc:
        gc.collect()
        gc.disable()
    try:
        start = clock()
        for _ in range(n):
            call()
        return clock() - start
    finally:
        if pause_gc:
            gc.enable()


@dataclass
class Samples:
    case: Case
    us: list[float] = field(default_factory=list)  # per call, one per timed round


def measure(
    cases: list[Case],
    switch: TelemetrySwitch,
    *,
    rounds: int,
    batch: int,
    warmup_rounds: int,
    pause_gc: bool,
    seed: int,
    clock: Callable[[], int],
) -> dict[str, Samples]:
    """Interleaved rounds: each round times one batch per case, in a shuffled order."""
    rng = random.Random(seed)
    samples = {case.name: Samples(case) for case in cases}
    order = list(cases)
    for round_no in range(warmup_rounds + rounds):
        rng.shuffle(order)
        for case in order:
            if switch.use(case.telemetry):
                case.call()  # untimed: lets aiguard build its tracer and instruments
                case.calls_made += 1
            n = max(1, round(batch * case.batch_scale))
            elapsed = time_batch(case.call, n, pause_gc, clock)
            case.calls_made += n
            if round_no >= warmup_rounds:
                samples[case.name].us.append(elapsed / 1000 / n)
    return samples


# ---------------------------------------------------------------------------------------------
# Import time: fresh interpreters
# ---------------------------------------------------------------------------------------------

IMPORT_SNIPPETS = {
    "import aiguard": "import aiguard",
    "+ first use of the engine": "import aiguard\naiguard.wrap, aiguard.Retry",
    "+ configure (OpenTelemetry SDK)": "import aiguard\naiguard.wrap, aiguard.configure",
    "+ price data (first priced call)": (
        "import aiguard\naiguard.wrap, aiguard.configure\naiguard.prices.lookup('openai', 'gpt-4o')"
    ),
    "import openai": "import openai",
    "import openai, aiguard + engine": "import openai\nimport aiguard\naiguard.wrap",
}
QUICK_IMPORT_SNIPPETS = ("import aiguard", "+ first use of the engine")
HEAVY_MODULES = (
    "genai_prices",
    "pydantic",
    "opentelemetry.sdk",
    "opentelemetry.trace",
    "wrapt",
    "asyncio",
)
_IMPORT_PROBE = """import time
wall, cpu = time.perf_counter(), time.process_time()
{snippet}
print((time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000)
"""


def import_times(runs: int, names: Sequence[str]) -> dict[str, Any]:
    """Wall and CPU time of each snippet in ``runs`` fresh interpreters (interleaved), medians.

    Timed inside the child, so interpreter start-up is left out; ``import aiguard`` is what an
    application pays at start, the other lines what the first uses add on top of it.
    """
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(runs):
        for name in names:
            code = _IMPORT_PROBE.format(snippet=IMPORT_SNIPPETS[name])
            out = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            )
            w, c = (float(x) for x in out.stdout.split()[-2:])
            wall[name].append(w)
            cpu[name].append(c)
    probe = "import aiguard, sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout.splitlines()[-1]))
    return {
        "runs": runs,
        "wall_ms": {name: statistics.median(v) for name, v in wall.items()},
        "cpu_ms": {name: statistics.median(v) for name, v in cpu.items()},
        "wall_min_ms": {name: min(v) for name, v in wall.items()},
        "heavy_loaded_by_import": [m for m in HEAVY_MODULES if m in loaded],
    }


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def paired(a: list[float], b: list[float]) -> list[float]:
    return [x - y for x, y in zip(a, b, strict=True)]


def summarize_calls(
    samples: dict[str, Samples], names: list[str], bare: str, floor: str
) -> list[dict[str, Any]]:
    """Per case: median, and the paired added time over ``bare`` and its ratio to the floor's."""
    floor_added = statistics.median(paired(samples[floor].us, samples[bare].us))
    rows = []
    for name in names:
        s = samples[name]
        diffs = paired(s.us, samples[bare].us)
        added = statistics.median(diffs)
        rows.append(
            {
                "case": name,
                "description": s.case.description,
                "median_us": statistics.median(s.us),
                "p25_us": quantile(s.us, 0.25),
                "p75_us": quantile(s.us, 0.75),
                "added_us": added,
                "added_p25_us": quantile(diffs, 0.25),
                "added_p75_us": quantile(diffs, 0.75),
                "ratio_of_floor": added / floor_added if floor_added > 0 else float("nan"),
            }
        )
    return rows


def summarize_chunks(samples: dict[str, Samples]) -> dict[str, Any]:
    """Per-chunk cost: the slope between the short and the long stream, per round, paired."""
    span = CHUNKS_LONG - CHUNKS_SHORT

    def slopes(kind: str) -> list[float]:
        return [
            (long - short) / span
            for short, long in zip(
                samples[f"chunks{CHUNKS_SHORT}_{kind}"].us,
                samples[f"chunks{CHUNKS_LONG}_{kind}"].us,
                strict=True,
            )
        ]

    bare, floor, guarded = slopes("bare"), slopes("floor"), slopes("aiguard")
    floor_added = paired(floor, bare)
    beyond_floor = paired(guarded, floor)
    return {
        "bare_us": statistics.median(bare),
        "floor_us": statistics.median(floor),
        "aiguard_us": statistics.median(guarded),
        "floor_added_us": statistics.median(floor_added),
        "aiguard_added_us": statistics.median(paired(guarded, bare)),
        "aiguard_beyond_floor_us": statistics.median(beyond_floor),
        "beyond_floor_p25_us": quantile(beyond_floor, 0.25),
        "beyond_floor_p75_us": quantile(beyond_floor, 0.75),
    }


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "implementation": platform.python_implementation()}
    dists = (
        "aiguard",
        "openai",
        "httpx2",
        "opentelemetry-api",
        "opentelemetry-sdk",
        "wrapt",
        "pydantic",
    )
    for dist in dists:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {"cpu": cpu, "cores": usable, "os": platform.platform()}


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def print_report(result: dict[str, Any], out: TextIO) -> None:
    def print(*args: Any) -> None:  # the whole report goes to ``out``
        builtins.print(*args, file=out)

    v, m, r = result["versions"], result["machine"], result["run"]
    print(
        f"Python {v['python']} | openai {v['openai']} | httpx2 {v['httpx2']} | "
        f"opentelemetry-sdk {v['opentelemetry-sdk']} | aiguard {v['aiguard']} | wrapt {v['wrapt']} "
        f"| pydantic {v['pydantic']}"
    )
    print(f"{m['cpu']}, {m['cores']} cores usable, {m['os']}")
    print(
        f"{r['rounds']} rounds (+{r['warmup_rounds']} warm-up), {r['batch']} calls per case per "
        f"round, interleaved, {r['clock']} time, gc paused: {r['pause_gc']}; {r['seconds']:.0f} s"
    )

    def table(title: str, rows: list[dict[str, Any]], unit: str) -> None:
        print()
        print(title)
        header = (
            f"  {'case':<20} {'median':>9} {'added vs bare':>14} {'p25..p75 added':>17} "
            f"{'x floor':>8}  what"
        )
        print(header)
        print(f"  {'':<20} {unit:>9} {unit:>14} {unit:>17}")
        for row in rows:
            spread = f"{row['added_p25_us']:+.1f}..{row['added_p75_us']:+.1f}"
            print(
                f"  {row['case']:<20} {row['median_us']:>9.1f} {row['added_us']:>+14.1f} "
                f"{spread:>17} {row['ratio_of_floor']:>7.2f}x  {row['description']}"
            )

    table("Per call (chat.completions.create)", result["calls"], "µs/call")
    table(
        f"Per stream ({STREAM_CHUNKS + 2} chunks, real SSE, read to the end)",
        result["streams"],
        "µs/strm",
    )
    c = result["chunks"]
    print()
    print(
        f"Per streamed chunk (slope between {CHUNKS_SHORT + 2}- and {CHUNKS_LONG + 2}-chunk "
        "streams, pre-parsed chunks)"
    )
    print(
        f"  bare {c['bare_us']:.2f} µs | floor {c['floor_us']:.2f} µs (+{c['floor_added_us']:.2f}) "
        f"| aiguard {c['aiguard_us']:.2f} µs (+{c['aiguard_added_us']:.2f})"
    )
    imports = result.get("imports")
    if imports:
        print()
        print(f"Import (fresh interpreters, timed inside, median of {imports['runs']})")
        print(f"  {'':<34} {'wall ms':>8} {'cpu ms':>8} {'min wall':>9}")
        for name, ms in imports["wall_ms"].items():
            print(
                f"  {name:<34} {ms:>8.1f} {imports['cpu_ms'][name]:>8.1f} "
                f"{imports['wall_min_ms'][name]:>9.1f}"
            )
        heavy = ", ".join(imports["heavy_loaded_by_import"]) or "none"
        print(f"  heavy modules loaded by 'import aiguard': {heavy}")
    spans = result["checks"]
    print()
    print(
        f"spans exported: floor {spans['floor_spans']}, aiguard {spans['aiguard_spans']} "
        f"({spans['aiguard_spans_per_sdk_call']:.2f} per guarded SDK call); floor metric "
        f"points recorded: {', '.join(spans['floor_metrics']) or 'NONE'}"
    )
    print()
    print("Targets")
    by_name = {row["case"]: row for row in result["calls"]}
    tel, full, no_sdk = by_name["telemetry"], by_name["full_policy"], by_name["full_policy_no_sdk"]
    print(
        f"  telemetry-only  {tel['ratio_of_floor']:.2f}x floor (<= {TELEMETRY_RATIO_TARGET}x)  "
        f"{verdict(tel['ratio_of_floor'] <= TELEMETRY_RATIO_TARGET)}"
    )
    print(
        f"  full policy     {full['ratio_of_floor']:.2f}x floor (<= {FULL_RATIO_TARGET}x)  "
        f"{verdict(full['ratio_of_floor'] <= FULL_RATIO_TARGET)}"
    )
    print(f"  no SDK          {no_sdk['added_us']:+.1f} µs per call over bare")
    beyond = c["aiguard_beyond_floor_us"]
    print(
        f"  per chunk       {beyond:+.2f} µs beyond the floor's per-chunk cost (<= "
        f"{CHUNK_TARGET_US} µs; p25..p75 {c['beyond_floor_p25_us']:+.2f}.."
        f"{c['beyond_floor_p75_us']:+.2f})  {verdict(beyond <= CHUNK_TARGET_US)}"
    )
    if imports:
        ms = imports["wall_ms"]["import aiguard"]
        print(
            f"  import aiguard  {ms:.1f} ms (<= {IMPORT_TARGET_MS:.0f} ms)  "
            f"{verdict(ms <= IMPORT_TARGET_MS)}"
        )


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run (CI)")
    parser.add_argument("--json", action="store_true", help="JSON on stdout, the table on stderr")
    parser.add_argument("--rounds", type=int, help="timed rounds (default 24, quick 5)")
    parser.add_argument(
        "--batch", type=int, help="calls per case per round (default 150, quick 25)"
    )
    parser.add_argument("--warmup", type=int, help="untimed warm-up rounds (default 2, quick 1)")
    parser.add_argument(
        "--imports",
        type=int,
        help="fresh interpreters per import figure (default 12, quick 3; 0: skip)",
    )
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="cpu",
        help="process CPU time (default) or wall time",
    )
    parser.add_argument(
        "--keep-gc", action="store_true", help="leave the garbage collector on during batches"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed for the per-round case order")
    parser.add_argument(
        "--profile",
        metavar="CASE",
        help="instead of timing, profile CASE (e.g. full_policy) with cProfile and print "
        "aiguard's and OpenTelemetry's functions by cumulative time",
    )
    args = parser.parse_args(argv)
    rounds, batch, warmup, imports = (5, 25, 1, 3) if args.quick else (24, 150, 2, 12)
    args.rounds = args.rounds or rounds
    args.batch = args.batch or batch
    args.warmup = args.warmup if args.warmup is not None else warmup
    args.imports = args.imports if args.imports is not None else imports
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_global_providers_are_noop()
    sdk = make_sdk()
    switch = TelemetrySwitch(sdk)
    floor = Floor(sdk)
    cases = build_cases(floor)
    check_cases(cases, switch)
    if args.profile:
        return profile(cases, switch, args.profile)
    # Objects that live for the whole run need not be traversed by every collection.
    gc.collect()
    gc.freeze()

    started = time.perf_counter()
    samples = measure(
        cases,
        switch,
        rounds=args.rounds,
        batch=args.batch,
        warmup_rounds=args.warmup,
        pause_gc=not args.keep_gc,
        seed=args.seed,
        clock=CLOCKS[args.clock],
    )
    seconds = time.perf_counter() - started
    snippets = QUICK_IMPORT_SNIPPETS if args.quick else tuple(IMPORT_SNIPPETS)
    imports = import_times(args.imports, snippets) if args.imports > 0 else None

    sdk.tracer_provider.force_flush()
    guarded_sdk_calls = sum(c.calls_made for c in cases if c.telemetry == "sdk")
    floor_metrics = sorted(
        metric.name
        for resource in (sdk.reader.get_metrics_data() or metrics_data_none()).resource_metrics
        for scope in resource.scope_metrics
        if scope.scope.name == "benchmark.floor"
        for metric in scope.metrics
    )
    call_names = [c.name for c in cases if c.group == "call"]
    stream_names = [c.name for c in cases if c.group == "stream"]
    result: dict[str, Any] = {
        "versions": versions(),
        "machine": machine(),
        "run": {
            "rounds": args.rounds,
            "batch": args.batch,
            "warmup_rounds": args.warmup,
            "pause_gc": not args.keep_gc,
            "clock": args.clock,
            "seed": args.seed,
            "seconds": seconds,
        },
        "calls": summarize_calls(samples, call_names, "bare", "floor"),
        "streams": summarize_calls(samples, stream_names, "stream_bare", "stream_floor"),
        "chunks": summarize_chunks(samples),
        "imports": imports,
        "checks": {
            "floor_spans": sdk.exporter.spans["benchmark.floor"],
            "aiguard_spans": sdk.exporter.spans["aiguard"],
            "aiguard_spans_per_sdk_call": sdk.exporter.spans["aiguard"] / max(guarded_sdk_calls, 1),
            "floor_metrics": floor_metrics,
        },
        "targets": {
            "telemetry_ratio_of_floor": TELEMETRY_RATIO_TARGET,
            "full_policy_ratio_of_floor": FULL_RATIO_TARGET,
            "chunk_beyond_floor_us": CHUNK_TARGET_US,
            "import_ms": IMPORT_TARGET_MS,
        },
    }
    # With --json the table goes to stderr and stdout carries only the JSON document.
    print_report(result, sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(result, indent=2))
    sdk.shutdown()
    return 0


def profile(cases: list[Case], switch: TelemetrySwitch, name: str, calls: int = 3000) -> int:
    """cProfile ``calls`` calls of one case; aiguard's and OpenTelemetry's functions only."""
    import cProfile
    import pstats

    case = next((c for c in cases if c.name == name), None)
    if case is None:
        sys.exit(f"no case {name!r}; cases: {', '.join(c.name for c in cases)}")
    switch.use(case.telemetry)
    for _ in range(200):
        case.call()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        case.call()
    profiler.disable()
    print(f"{calls} calls of {name} ({case.description}); profiling inflates every figure")
    stats = pstats.Stats(profiler)
    stats.sort_stats("cumulative").print_stats(r"aiguard|opentelemetry", 45)
    return 0


def metrics_data_none() -> Any:
    class Empty:
        resource_metrics: list[Any] = []

    return Empty()


if __name__ == "__main__":
    sys.exit(main())
