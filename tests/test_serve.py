"""``aiguard serve``: the fault-injecting server as a process of its own, driven by the real
openai SDK over HTTP; it prints its URL first, injects what it was told, stops cleanly on
SIGTERM and Ctrl-C, and names the flag it cannot use."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

import aiguard
from aiguard.testing import Chaos, ChaosServer

SRC = str(Path(__file__).resolve().parents[1] / "src")
MESSAGES: Any = [{"role": "user", "content": "Hello?"}]
_CLI = "import sys; from aiguard._cli import main; sys.exit(main(sys.argv[1:]))"


def _start(*flags: str) -> tuple[subprocess.Popen[str], str, str]:
    """``aiguard serve`` with ``flags`` in a subprocess, the URL its first line prints, and its
    whole banner (read here: communicate() would not see what readline() buffered)."""
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen(
        [sys.executable, "-c", _CLI, "serve", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    first = process.stdout.readline()  # printed once it listens
    prefix = "aiguard serve: listening on "
    assert first.startswith(prefix), first + process.communicate(timeout=10)[1]
    banner = first
    while not banner.endswith("Ctrl-C stops it.\n"):
        banner += process.stdout.readline()
    return process, first[len(prefix) :].strip(), banner


@pytest.fixture
def serve() -> Iterator[Any]:
    started: list[subprocess.Popen[str]] = []

    def start(*flags: str) -> tuple[subprocess.Popen[str], str, str]:
        started.append((found := _start(*flags))[0])
        return found

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)


def _stop(process: subprocess.Popen[str], how: int) -> str:
    process.send_signal(how)
    out, err = process.communicate(timeout=10)
    assert (process.returncode, err) == (0, ""), err
    return out


def test_the_openai_sdk_meets_the_injected_faults_and_latency(serve):
    process, url, banner = serve(
        "--chaos", "0.5", "--status", "429", "--latency", "30ms", "--seed", "7"
    )  # fmt: skip
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="test", max_retries=0)
    seen: Counter[str] = Counter()
    started = time.perf_counter()
    for _ in range(20):
        try:
            reply = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            seen[reply.choices[0].message.content or ""] += 1
        except openai.RateLimitError:
            seen["429"] += 1
    assert time.perf_counter() - started >= 20 * 0.03  # every answer waited
    assert 3 <= seen["429"] <= 17 and seen["Hello from gpt-4o."] == 20 - seen["429"]
    out = _stop(process, signal.SIGTERM)
    assert f"stopped after 20 requests ({seen['429']} faults injected: 429 x{seen['429']})" in out
    assert f'openai.OpenAI(base_url="{url}/v1", api_key="test")' in banner
    assert "50% of requests fail (429); every answer waits 30 ms" in banner


def test_a_guarded_client_rides_out_the_chaos_and_ctrl_c_stops_the_server(serve):
    process, url, _ = serve(
        "--chaos", "0.3", "--status", "503", "--retry-after", "0s", "--seed", "1"
    )
    raw = openai.OpenAI(base_url=f"{url}/v1", api_key="test", max_retries=0)
    retry = aiguard.Retry(attempts=8, wait_initial=0.001, wait_max=0.01, wait_jitter=0)
    client = aiguard.wrap(raw, provider="openai", retry=retry)
    for _ in range(10):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    stopped = _stop(process, signal.SIGINT).strip()
    injected = int(stopped.split("(")[1].split()[0])
    assert injected > 0 and f"stopped after {10 + injected} requests" in stopped


def test_every_fault_kind_reaches_the_sdk():
    chaos = Chaos(rate=1.0, faults=("reset", "malformed", 500), seed=3)
    with ChaosServer(chaos) as server:
        client = openai.OpenAI(base_url=server.url, api_key="test", max_retries=0)
        errors: Counter[str] = Counter()
        for _ in range(12):
            with pytest.raises(Exception) as caught:  # the raw SDK: its own errors
                client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            errors[type(caught.value).__name__] += 1
        server.fail("gpt-4o", status=418)  # a scripted fault comes before the chaos
        with pytest.raises(openai.APIStatusError) as scripted:
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert scripted.value.status_code == 418
    assert set(server.injected) == {"reset", "malformed", "500"}
    assert errors["APIConnectionError"] == server.injected["reset"]
    assert errors["InternalServerError"] == server.injected["500"]
    assert errors["JSONDecodeError"] == server.injected["malformed"]  # as the SDK raises it
    assert server.served == 13


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--chaos", "1.5"], "argument --chaos: a share between 0 and 1, got '1.5'"),
        (["--chaos", "lots"], "argument --chaos: a share between 0 and 1 (0.2: a fifth"),
        (["--latency", "200"], "argument --latency: a time with its unit such as 200ms or 0.5s"),
        (["--latency", "300ms-100ms"], "argument --latency: a range runs from low to high"),
        (["--status", "200"], "argument --status: an HTTP error status is 400 to 599"),
        (["--fault", "fire"], "argument --fault: one of reset, malformed, cut, got 'fire'"),
        (["--port", "70000"], "argument --port: a port is 0 to 65535"),
    ],
)
def test_a_bad_flag_is_refused_naming_it(flags, message):
    done = subprocess.run(
        [sys.executable, "-c", _CLI, "serve", *flags],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": SRC},
        check=False,
    )
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_a_port_in_use_is_said_plainly(serve):
    _, url, _ = serve()
    port = url.rsplit(":", 1)[1]
    done = subprocess.run(
        [sys.executable, "-c", _CLI, "serve", "--port", port],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": SRC},
        check=False,
    )
    assert done.returncode == 2
    assert (
        f"aiguard serve: cannot listen on 127.0.0.1:{port}: Address already in use" in done.stderr
    )


def test_chaos_settings_are_checked():
    with pytest.raises(ValueError, match="rate="):
        Chaos(rate=2)
    with pytest.raises(ValueError, match="faults="):
        Chaos(faults=(200,))
    with pytest.raises(ValueError, match="latency="):
        Chaos(latency=(0.3, 0.1))
