"""``aiguard.configure(exporter=[...])``: several destinations at once, each receiving every span
of real guarded calls exactly once, however often configure names them; a bad list is refused
before anything changes. Global providers are set once per process: each case runs in its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import aiguard

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": SRC, "NO_COLOR": "1"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_each_exporter_receives_every_span_once(tmp_path):
    path = tmp_path / "calls.jsonl"
    done = _run(
        f"""
        import openai
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        import aiguard
        from aiguard.testing import MockServer

        memory = InMemorySpanExporter()
        both = ["pretty", "jsonl:{path}", memory]
        aiguard.configure(service_name="svc", exporter=both)
        aiguard.configure(exporter=both)  # again: nothing added twice
        aiguard.configure(exporter="pretty")
        with MockServer() as server:
            raw = openai.OpenAI(base_url=server.url, api_key="sk-test", max_retries=0)
            retry = aiguard.Retry(attempts=3, wait_initial=0.001, wait_jitter=0)
            client = aiguard.wrap(raw, retry=retry, fallback=["gpt-4o-mini"])
            messages = [{{"role": "user", "content": "hi"}}]
            server.fail("gpt-4o", status=429, headers={{"retry-after": "0"}})
            client.chat.completions.create(model="gpt-4o", messages=messages)
            server.fail("gpt-4o", status=503, times=3)
            client.chat.completions.create(model="gpt-4o", messages=messages)
            list(client.chat.completions.create(model="gpt-4o", messages=messages, stream=True))
        aiguard.flush()
        for span in memory.get_finished_spans():
            print(format(span.context.span_id, "016x"))
        """
    )
    in_memory = done.stdout.split()
    in_file = [json.loads(line)["span"]["spanId"] for line in path.read_text().splitlines()]
    printed = [line for line in done.stderr.splitlines() if line.startswith("ok chat gpt-4o")]
    assert len(in_memory) == 3 and len(set(in_memory)) == 3
    assert sorted(in_file) == sorted(in_memory)
    assert len(printed) == 3, done.stderr
    assert "attempts=2" in printed[0] and "fallback=gpt-4o-mini" in printed[1]


@pytest.mark.parametrize(
    ("exporter", "error", "message"),
    [
        ([], ValueError, "exporter=[] names no exporter"),
        (["pretty", "pretty"], ValueError, "names a destination twice"),
        (["pretty", 5], TypeError, "a list of these, or None; got 5"),
        ([None], TypeError, "got None"),
        (["pretty", "zipkin"], ValueError, "exporter='zipkin' is not known"),
        (["jsonl:"], ValueError, "needs a file path after 'jsonl:'"),
    ],
)
def test_a_bad_list_is_refused_naming_the_parameter(exporter, error, message):
    with pytest.raises(error, match="exporter=") as caught:
        aiguard.configure(exporter=exporter)
    assert message in str(caught.value)


def test_a_missing_extra_in_the_list_changes_nothing(tmp_path):
    done = _run(
        f"""
        import sys
        sys.modules["opentelemetry.exporter.otlp.proto.http.trace_exporter"] = None
        from opentelemetry import trace
        import aiguard
        try:
            aiguard.configure(exporter=["jsonl:{tmp_path / "x.jsonl"}", "otlp"])
        except ImportError as e:
            print(e)
        print(type(trace.get_tracer_provider()).__name__)
        """
    )
    message, provider = done.stdout.splitlines()
    assert "pip install 'opentelemetry-exporter-otlp-proto-http'" in message
    assert provider == "ProxyTracerProvider"
