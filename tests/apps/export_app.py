"""A short-lived app for the export tests: guarded calls, then exit (the exit flush exports).

Prints one line of JSON: the app's root span ids and whether every call answered.
"""

from __future__ import annotations

import json
import time

import openai
from opentelemetry import trace

import aiguard
from aiguard.testing import MockServer

aiguard.configure(service_name="aiguard-e2e", exporter="otlp")
tracer = trace.get_tracer("export-app")
started = time.perf_counter()
with MockServer() as server:
    client = aiguard.wrap(
        openai.OpenAI(base_url=server.url, api_key="sk-e2e-SECRET-0123456789"),
        retry=aiguard.Retry(attempts=2, wait_initial=0.01, wait_jitter=0),
        fallback=["gpt-4o-mini"],
        provider="openai",
    )
    server.reply("gpt-4o", prompt_tokens=1000, completion_tokens=500)
    server.fail("gpt-4o", status=429, headers={"retry-after": "0"})  # the first call retries
    with tracer.start_as_current_span("handle request") as root:
        first = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
        server.fail("gpt-4o", status=503, times=2)  # the second falls back
        second = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    context = root.get_span_context()
print(
    json.dumps(
        {
            "trace_id": format(context.trace_id, "032x"),
            "root_id": format(context.span_id, "016x"),
            "answered": [first.model, second.model],
            "calls_seconds": time.perf_counter() - started,
        }
    ),
    flush=True,
)
