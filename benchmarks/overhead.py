#!/usr/bin/env python
"""Per-call overhead of aiguard on ``client.chat.completions.create``.

Run from the repository root with the project's virtualenv active::

    python benchmarks/overhead.py            # full run (under a minute on 2 cores)
    python benchmarks/overhead.py --quick    # ~10 s smoke run
    python benchmarks/overhead.py --json     # JSON on stdout, the table on stderr

Every case calls the REAL ``openai.OpenAI`` client; only its HTTP transport is replaced by an
in-process ``httpx2.MockTransport`` that answers with a fixed, realistic ``chat.completion``. So
each call still builds the request, serialises it, goes through httpx2 and parses the response
into pydantic models -- everything a real call does except the network.

Cases (see ``chat_cases``):

``bare``
    The plain openai client.
``otel_span``
    The plain call inside one hand-written OpenTelemetry SDK span carrying a dozen attributes
    (from the same SDK tracer provider aiguard uses): the floor for "a call with a span".
``wrap_no_policy``
    ``aiguard.wrap(client, retry=None)``, telemetry recorded with the SDK providers.
``wrap_full_policy``
    ``aiguard.wrap`` with retry, a fallback, a timeout and a circuit breaker, SDK providers.
``wrap_full_policy_no_sdk``
    The same full policy with no SDK configured: aiguard records through the global
    OpenTelemetry API providers, which are the default no-op ones.
``wrap_full_policy_unpriced``
    The full policy on a model with no price (``provider="vllm"``): no cost is computed, so the
    difference to ``wrap_full_policy`` is the cost accounting's share (price, span attributes,
    spend metric).
``wrap_full_policy_budget``
    The full policy plus ``budget=aiguard.Budget(...)`` and ``tag=``: the difference to
    ``wrap_full_policy`` is the budget's share (input estimate, reservation, settlement).

Cases are measured interleaved: in every round each case times one batch of calls (with
``time.perf_counter_ns`` and the garbage collector paused), in a shuffled order per round so that
no case always follows the same neighbour. The figure per case is the median over rounds of the
per-call time of its batch.

Streaming cases (``stream_cases``) read a whole ``stream=True`` answer of 50 content chunks,
bare (``stream_bare_50``) and through ``aiguard.wrap`` with the full policy and SDK telemetry
(``stream_wrap_50``): what aiguard adds to a whole stream (its spans, the usage chunk it asks
for, cost). The SDK spends tens of µs parsing each chunk, which drowns aiguard's per-chunk work
in noise, so that is measured on its own (``per_chunk``): the same 1,000 parsed chunks iterated
bare and through aiguard's stream proxy and chunk reader.

Adding a case: write a function returning ``Case`` objects (like ``chat_cases``) and add it to
``build_cases``.
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
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Literal, TextIO

import httpx2
import openai
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

import aiguard
import aiguard._config

TARGET_US = 40.0
TARGET_CHUNK_US = 2.0
STREAM_LENGTHS = (50,)
MODEL = "gpt-4o"
MESSAGES: list[Any] = [
    {"role": "system", "content": "You are a concise assistant for a travel booking site."},
    {"role": "user", "content": "What is the capital of France? Answer in one sentence."},
]

# ---------------------------------------------------------------------------------------------
# The fake provider: a fixed chat.completion served in-process.
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


def chat_handler(request: httpx2.Request) -> httpx2.Response:
    """Answer every request with the same chat completion (no network, no sleep)."""
    return httpx2.Response(200, headers=CHAT_HEADERS, content=CHAT_BODY)


def make_openai_client(handler: Callable[[httpx2.Request], httpx2.Response]) -> openai.OpenAI:
    """The real openai SDK client, with its HTTP answered in-process by ``handler``."""
    return openai.OpenAI(
        api_key="sk-bench",
        base_url="http://bench.local/v1",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )


# ---------------------------------------------------------------------------------------------
# Telemetry: SDK providers that record everything and export nowhere.
# ---------------------------------------------------------------------------------------------


class NullSpanExporter(SpanExporter):
    """Accepts every batch and drops it; counts spans so the run can check they were recorded."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        self.spans += len(spans)
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
# Cases
# ---------------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    description: str
    call: Callable[[], Any]
    # What aiguard must record with during this case; None when aiguard is not involved.
    telemetry: TelemetryMode | None = None
    # What one timed unit is. A streaming case would use "chunk" and the chunks per call.
    unit: str = "call"
    units_per_call: int = 1
    # Spans one call should produce (checked against the null exporter's count at the end).
    spans_per_call: int = 0
    # What a correct call returns, checked once before timing.
    expect: Callable[[Any], bool] | None = None


def full_policy() -> dict[str, Any]:
    return {
        "retry": aiguard.Retry(attempts=3),
        "fallback": ["gpt-4o-mini"],
        "timeout": 30,
        "breaker": aiguard.Breaker(failures=5, reset_after=30),
    }


def chat_cases(sdk: Sdk) -> list[Case]:
    """Non-streaming ``chat.completions.create`` cases."""
    bare = make_openai_client(chat_handler)
    no_policy = aiguard.wrap(make_openai_client(chat_handler), retry=None)
    full = aiguard.wrap(make_openai_client(chat_handler), **full_policy())
    full_no_sdk = aiguard.wrap(make_openai_client(chat_handler), **full_policy())
    unpriced = aiguard.wrap(make_openai_client(chat_handler), provider="vllm", **full_policy())
    budgeted = aiguard.wrap(
        make_openai_client(chat_handler),
        budget=aiguard.Budget(usd=10**9),
        tag="bench",
        **full_policy(),
    )

    tracer = sdk.tracer_provider.get_tracer("benchmark")
    span_attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": MODEL,
        "server.address": "bench.local",
        "server.port": 80,
        "gen_ai.openai.api_type": "chat_completions",
    }

    def call_bare() -> Any:
        return bare.chat.completions.create(model=MODEL, messages=MESSAGES)

    def call_otel_span() -> Any:
        with tracer.start_as_current_span(
            "chat " + MODEL, kind=SpanKind.CLIENT, attributes=span_attrs
        ) as span:
            result = bare.chat.completions.create(model=MODEL, messages=MESSAGES)
            usage: Any = result.usage
            span.set_attributes(
                {
                    "gen_ai.response.id": result.id,
                    "gen_ai.response.model": result.model,
                    "gen_ai.response.finish_reasons": [c.finish_reason for c in result.choices],
                    "gen_ai.usage.input_tokens": usage.prompt_tokens,
                    "gen_ai.usage.output_tokens": usage.completion_tokens,
                    "gen_ai.usage.cache_read.input_tokens": (
                        usage.prompt_tokens_details.cached_tokens
                    ),
                }
            )
            return result

    def call_no_policy() -> Any:
        return no_policy.chat.completions.create(model=MODEL, messages=MESSAGES)

    def call_full() -> Any:
        return full.chat.completions.create(model=MODEL, messages=MESSAGES)

    def call_full_no_sdk() -> Any:
        return full_no_sdk.chat.completions.create(model=MODEL, messages=MESSAGES)

    def call_unpriced() -> Any:
        return unpriced.chat.completions.create(model=MODEL, messages=MESSAGES)

    def call_budgeted() -> Any:
        return budgeted.chat.completions.create(model=MODEL, messages=MESSAGES)

    return [
        Case("bare", "plain openai.OpenAI client", call_bare),
        Case(
            "otel_span",
            "plain call inside one SDK span with 12 attributes (the floor)",
            call_otel_span,
            spans_per_call=1,
        ),
        Case(
            "wrap_no_policy",
            "aiguard.wrap(client, retry=None), SDK providers",
            call_no_policy,
            telemetry="sdk",
            spans_per_call=2,
        ),
        Case(
            "wrap_full_policy",
            "wrap with retry + fallback + timeout + breaker, SDK providers",
            call_full,
            telemetry="sdk",
            spans_per_call=2,
        ),
        Case(
            "wrap_full_policy_no_sdk",
            "same full policy, no SDK: global no-op API providers",
            call_full_no_sdk,
            telemetry="noop",
        ),
        Case(
            "wrap_full_policy_unpriced",
            "full policy, model without a price: no cost accounting",
            call_unpriced,
            telemetry="sdk",
            spans_per_call=2,
        ),
        Case(
            "wrap_full_policy_budget",
            "full policy + Budget + tag: estimate, reserve, settle",
            call_budgeted,
            telemetry="sdk",
            spans_per_call=2,
        ),
    ]


def stream_handler(chunks: int) -> Callable[[httpx2.Request], httpx2.Response]:
    """Answer with an SSE stream: a role chunk, ``chunks`` words, a finish chunk (and usage)."""

    def event(delta: dict[str, Any], finish: str | None, usage: Any = None) -> bytes:
        body = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": MODEL,
            "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if usage:
            body["usage"] = usage
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    head = event({"role": "assistant", "content": ""}, None)
    words = b"".join(event({"content": f"word{i} "}, None) for i in range(chunks))
    tail = event({}, "stop")
    usage = event({}, None, {"prompt_tokens": 38, "completion_tokens": chunks, "total_tokens": 1})

    def handler(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        wants_usage = (body.get("stream_options") or {}).get("include_usage")
        content = head + words + tail + (usage if wants_usage else b"") + b"data: [DONE]\n\n"
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=content)

    return handler


def stream_cases(sdk: Sdk) -> list[Case]:
    """``chat.completions.create(stream=True)`` read to the end, bare and guarded."""
    cases = []
    for n in STREAM_LENGTHS:
        bare = make_openai_client(stream_handler(n))
        guarded = aiguard.wrap(make_openai_client(stream_handler(n)), **full_policy())

        def read(client: Any = bare) -> int:
            stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
            return sum(1 for _ in stream)

        def read_guarded(client: Any = guarded) -> int:
            return read(client)

        def expect(count: int, n: int = n) -> bool:
            return count == n + 2

        chunks = n + 2
        cases.append(
            Case(
                f"stream_bare_{n}",
                f"bare stream of {chunks} chunks",
                read,
                unit="chunk",
                units_per_call=chunks,
                expect=expect,
            )
        )
        cases.append(
            Case(
                f"stream_wrap_{n}",
                f"wrapped stream of {chunks} chunks, full policy, SDK",
                read_guarded,
                telemetry="sdk",
                unit="chunk",
                units_per_call=chunks,
                spans_per_call=2,
                expect=expect,
            )
        )
    return cases


def build_cases(sdk: Sdk) -> list[Case]:
    return chat_cases(sdk) + stream_cases(sdk)


def check_cases(cases: list[Case], switch: TelemetrySwitch) -> None:
    """Every case must return the same parsed completion before anything is timed."""
    for case in cases:
        switch.use(case.telemetry)
        result = case.call()
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


def time_batch(call: Callable[[], Any], n: int, pause_gc: bool) -> int:
    """Nanoseconds for ``n`` back-to-back calls."""
    if pause_gc:
        gc.collect()
        gc.disable()
    try:
        start = time.perf_counter_ns()
        for _ in range(n):
            call()
        return time.perf_counter_ns() - start
    finally:
        if pause_gc:
            gc.enable()


@dataclass
class Samples:
    case: Case
    per_unit_us: list[float] = field(default_factory=list)
    calls: int = 0


def measure(
    cases: list[Case],
    switch: TelemetrySwitch,
    *,
    rounds: int,
    batch: int,
    warmup_rounds: int,
    pause_gc: bool,
    seed: int,
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
            elapsed = time_batch(case.call, batch, pause_gc)
            if round_no < warmup_rounds:
                continue
            sample = samples[case.name]
            sample.per_unit_us.append(elapsed / 1000 / (batch * case.units_per_call))
            sample.calls += batch
    return samples


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(samples: dict[str, Samples]) -> list[dict[str, Any]]:
    medians = {name: statistics.median(s.per_unit_us) for name, s in samples.items()}
    bare = medians.get("bare")
    floor = medians.get("otel_span")
    rows = []
    for name, s in samples.items():
        if name.startswith("stream_"):
            continue
        med = medians[name]
        row: dict[str, Any] = {
            "case": name,
            "description": s.case.description,
            "unit": s.case.unit,
            "median_us": med,
            "p25_us": quantile(s.per_unit_us, 0.25),
            "p75_us": quantile(s.per_unit_us, 0.75),
            "rounds": len(s.per_unit_us),
            "calls": s.calls,
        }
        if bare is not None:
            row["overhead_vs_bare_us"] = med - bare
            row["ratio_vs_bare"] = med / bare
            # Paired estimate: the same round's batches ran seconds apart, so their difference
            # is less exposed to slow drift of the machine than the difference of medians.
            diffs = [a - b for a, b in zip(s.per_unit_us, samples["bare"].per_unit_us, strict=True)]
            row["paired_overhead_vs_bare_us"] = {
                "median": statistics.median(diffs),
                "p25": quantile(diffs, 0.25),
                "p75": quantile(diffs, 0.75),
            }
        if floor is not None:
            row["overhead_vs_otel_span_us"] = med - floor
            row["ratio_vs_otel_span"] = med / floor
        rows.append(row)
    return rows


def summarize_streams(samples: dict[str, Samples]) -> dict[str, Any] | None:
    """What aiguard adds to a whole stream, and per chunk (measured on parsed chunks)."""
    medians = {name: statistics.median(s.per_unit_us) for name, s in samples.items()}
    out: dict[str, Any] = {"cases": {}}
    for n in STREAM_LENGTHS:
        bare, wrap = medians.get(f"stream_bare_{n}"), medians.get(f"stream_wrap_{n}")
        if bare is None or wrap is None:
            return None
        chunks = n + 2
        out["cases"][n] = {
            "chunks": chunks,
            "bare_us_per_stream": bare * chunks,
            "wrap_us_per_stream": wrap * chunks,
            "overhead_us_per_stream": (wrap - bare) * chunks,
        }
    out["per_chunk"] = per_chunk_overhead()
    return out


def per_chunk_overhead(chunks: int = 1000, rounds: int = 200) -> dict[str, float]:
    """µs per chunk of iterating parsed chunks bare and through aiguard's stream proxy."""
    from openai.types.chat import ChatCompletionChunk

    from aiguard._stream import GuardedStream, _Lifecycle
    from aiguard.adapters._openai import ChatReader

    parsed = [
        ChatCompletionChunk.model_validate(
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion.chunk",
                "created": 1_700_000_000,
                "model": MODEL,
                "choices": [{"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}],
            }
        )
        for i in range(chunks)
    ]

    class Quiet:  # a lifecycle whose end records nothing: only the iteration is timed
        done = False
        reader = ChatReader()
        run = None
        kept = None  # content capture off

        def end(self, how: Any) -> None:
            pass

        def got(self, item: Any) -> None:
            pass

        def truncated(self) -> None:
            return None

    def bare() -> None:
        for _ in iter(parsed):
            pass

    def proxied() -> None:
        life: Any = Quiet()
        life.reader = ChatReader()
        it = iter(parsed)
        for _ in GuardedStream(parsed, it, [next(it)], life):
            pass

    assert _Lifecycle  # the real lifecycle differs only in what happens once, at the end
    times: dict[str, list[float]] = {"bare": [], "aiguard": []}
    for _ in range(rounds):
        for name, fn in (("bare", bare), ("aiguard", proxied)):
            start = time.perf_counter_ns()
            fn()
            times[name].append((time.perf_counter_ns() - start) / 1000 / chunks)
    bare_us = statistics.median(times["bare"])
    guarded_us = statistics.median(times["aiguard"])
    return {"bare_us": bare_us, "aiguard_us": guarded_us, "overhead_us": guarded_us - bare_us}


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "implementation": platform.python_implementation()}
    dists = ("aiguard", "openai", "httpx2", "opentelemetry-api", "opentelemetry-sdk", "wrapt")
    for dist in (*dists, "pydantic"):
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


def print_report(rows: list[dict[str, Any]], info: dict[str, Any], out: TextIO) -> None:
    def print(*args: Any) -> None:  # the whole report goes to ``out``
        builtins.print(*args, file=out)

    v = info["versions"]
    m = info["machine"]
    print(
        f"Python {v['python']} ({v['implementation']}) | openai {v['openai']} | "
        f"httpx2 {v['httpx2']} | opentelemetry-sdk {v['opentelemetry-sdk']} "
        f"(api {v['opentelemetry-api']}) | aiguard {v['aiguard']} | wrapt {v['wrapt']} | "
        f"pydantic {v['pydantic']}"
    )
    print(f"{m['cpu']}, {m['cores']} cores usable, {m['os']}")
    r = info["run"]
    print(
        f"{r['rounds']} rounds x {r['batch']} calls per case (+{r['warmup_rounds']} warm-up "
        f"rounds), interleaved, gc paused during batches: {r['pause_gc']}; {r['seconds']:.1f} s"
    )
    print()
    header = (
        f"{'case':<25} {'median':>9} {'p25-p75':>15} {'vs bare':>9} {'ratio':>6} "
        f"{'vs otel_span':>12} {'ratio':>6}"
    )
    print(header)
    print(f"{'':<25} {'µs/unit':>9} {'µs':>15} {'µs':>9} {'':>6} {'µs':>12} {'':>6}")
    print("-" * len(header))
    for row in rows:
        spread = f"{row['p25_us']:.1f}-{row['p75_us']:.1f}"
        print(
            f"{row['case']:<25} {row['median_us']:>9.1f} {spread:>15} "
            f"{row.get('overhead_vs_bare_us', float('nan')):>+9.1f} "
            f"{row.get('ratio_vs_bare', float('nan')):>6.3f} "
            f"{row.get('overhead_vs_otel_span_us', float('nan')):>+12.1f} "
            f"{row.get('ratio_vs_otel_span', float('nan')):>6.3f}"
        )
    print()
    by_name = {row["case"]: row for row in rows}
    full = by_name.get("wrap_full_policy")
    if full is not None and "overhead_vs_bare_us" in full:
        x = full["overhead_vs_bare_us"]
        print(f"full-policy overhead: {x:.1f} µs per call (target <= {TARGET_US:.0f} µs)")
        extra = []
        if "overhead_vs_otel_span_us" in full:
            extra.append(f"{full['overhead_vs_otel_span_us']:.1f} µs above one bare SDK span")
        no_sdk = by_name.get("wrap_full_policy_no_sdk")
        if no_sdk is not None:
            extra.append(f"{no_sdk['overhead_vs_bare_us']:.1f} µs with no SDK configured")
        if extra:
            print("  (" + "; ".join(extra) + ")")
        paired = full["paired_overhead_vs_bare_us"]
        print(
            f"  paired per-round estimate: {paired['median']:.1f} µs "
            f"(p25-p75 {paired['p25']:.1f} to {paired['p75']:.1f})"
        )
    streams = info.get("streams")
    if streams:
        print()
        for c in streams["cases"].values():
            print(
                f"stream of {c['chunks']} chunks read to the end: bare "
                f"{c['bare_us_per_stream']:.0f} µs, wrapped {c['wrap_us_per_stream']:.0f} µs "
                f"(+{c['overhead_us_per_stream']:.0f} µs per stream, incl. the usage chunk)"
            )
        chunk = streams["per_chunk"]
        print(
            f"per chunk: +{chunk['overhead_us']:.2f} µs (target <= {TARGET_CHUNK_US:.0f} µs; "
            f"parsed chunks, bare loop {chunk['bare_us']:.2f} µs, through aiguard "
            f"{chunk['aiguard_us']:.2f} µs)"
        )
    checks = info.get("checks", {})
    if checks:
        print(
            f"spans exported: {checks['spans_exported']} (expected at least "
            f"{checks['spans_expected']})"
        )


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a ~10 s run with fewer rounds")
    parser.add_argument(
        "--json", action="store_true", help="print JSON on stdout (the table goes to stderr)"
    )
    parser.add_argument("--rounds", type=int, help="timed rounds (default 30, quick 16)")
    parser.add_argument(
        "--batch", type=int, help="calls per case per round (default 250, quick 100)"
    )
    parser.add_argument("--warmup", type=int, help="untimed warm-up rounds (default 3, quick 2)")
    parser.add_argument(
        "--keep-gc", action="store_true", help="leave the garbage collector on during batches"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed for the per-round case order")
    args = parser.parse_args(argv)
    rounds, batch, warmup = (16, 100, 2) if args.quick else (30, 250, 3)
    args.rounds = args.rounds or rounds
    args.batch = args.batch or batch
    args.warmup = args.warmup if args.warmup is not None else warmup
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_global_providers_are_noop()
    sdk = make_sdk()
    switch = TelemetrySwitch(sdk)
    cases = build_cases(sdk)
    check_cases(cases, switch)
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
    )
    seconds = time.perf_counter() - started

    sdk.tracer_provider.force_flush()
    spans_expected = sum(c.spans_per_call * (args.rounds + args.warmup) * args.batch for c in cases)
    info = {
        "versions": versions(),
        "machine": machine(),
        "run": {
            "rounds": args.rounds,
            "batch": args.batch,
            "warmup_rounds": args.warmup,
            "pause_gc": not args.keep_gc,
            "seed": args.seed,
            "seconds": seconds,
        },
        "checks": {"spans_exported": sdk.exporter.spans, "spans_expected": spans_expected},
    }
    rows = summarize(samples)
    info["streams"] = summarize_streams(samples)
    # With --json the table goes to stderr and stdout carries only the JSON document.
    print_report(rows, info, sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps({**info, "results": rows, "target_us": TARGET_US}, indent=2))
    sdk.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
