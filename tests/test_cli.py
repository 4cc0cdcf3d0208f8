"""`aiguard demo` works offline, in seconds, and shows retries, fallbacks and the breaker."""

from __future__ import annotations

import subprocess
import sys
import time


def test_demo_runs_offline_and_shows_the_guarded_calls():
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "aiguard._cli", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "", "OPENAI_API_KEY": ""},
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert time.monotonic() - started < 30
    assert "aiguard.retry" in out and "wait_s=0.200" in out
    assert "fallback=gpt-4o-mini" in out
    assert "breaker skipped 1" in out
    assert "openai.BadRequestError raised to the caller" in out
    assert "\033[" not in out  # no colour when not on a terminal
    assert "sk-demo" not in out


def test_cli_without_a_command_explains_usage():
    result = subprocess.run(
        [sys.executable, "-m", "aiguard._cli"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "demo" in result.stderr
