#!/usr/bin/env python
"""What a shared store (Redis) adds to a guarded call, next to the in-process store.

Run from the repository root with the project's virtualenv active (needs ``redis-server`` on
the PATH; the script starts its own on a free port of 127.0.0.1 and stops it)::

    python benchmarks/fleet.py            # about a minute
    python benchmarks/fleet.py --quick    # a smoke run, a few seconds
    python benchmarks/fleet.py --json     # JSON on stdout, the table on stderr

Every case calls the real ``openai.OpenAI`` client answered in-process (the transport of
``benchmarks/overhead.py``: no network to the model), wrapped by aiguard with ``retry=None``.
Cases: ``local`` (a budget, a rate limit and a breaker in the process), and on Redis the
budget alone, the rate limit alone, the breaker alone, and all three. The figure is wall-clock
time (the store's round trips are waiting, not CPU), the median over interleaved rounds of
(case - local) within each round: what sharing the state costs per call.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from overhead import chat_handler, make_openai_client

import aiguard

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def start_redis() -> tuple[subprocess.Popen[bytes], str, str]:
    """A redis-server of this run's own: (process, URL, its directory)."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("benchmarks/fleet.py needs redis-server (apt-get install -y redis-server)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    folder = tempfile.mkdtemp(prefix="aiguard-bench-")
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            folder,
        ],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.02)
    return process, f"redis://127.0.0.1:{port}/0", folder


def cases(url: str | None) -> dict[str, Callable[[], Any]]:
    """The guarded calls to time, by name."""

    def client(shared: set[str]) -> Callable[[], Any]:
        def store(kind: str) -> dict[str, Any]:
            return {"name": f"bench-{kind}", "store": url} if kind in shared else {}

        policy: dict[str, Any] = {"retry": None}
        if "budget" in shared or not shared:
            policy["budget"] = aiguard.Budget(usd=10**9, **store("budget"))
        if "rate_limit" in shared or not shared:
            policy["rate_limit"] = aiguard.RateLimit(rpm=10**9, tpm=10**12, **store("rate_limit"))
        if "breaker" in shared or not shared:
            policy["breaker"] = aiguard.Breaker(failures=5, **store("breaker"))
        guarded = aiguard.wrap(make_openai_client(chat_handler), **policy)
        return lambda: guarded.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, max_tokens=100
        )

    out = {"local": client(set())}
    if url is not None:
        out["redis_budget"] = client({"budget"})
        out["redis_rate_limit"] = client({"rate_limit"})
        out["redis_breaker"] = client({"breaker"})
        out["redis_all_three"] = client({"budget", "rate_limit", "breaker"})
    return out


def measure(calls: dict[str, Callable[[], Any]], rounds: int, batch: int) -> dict[str, list[float]]:
    """Per round, each case's mean µs per call over ``batch`` calls, in a shuffled order."""
    for call in calls.values():
        for _ in range(20):
            call()  # warm up: connections, scripts loaded, caches
    samples: dict[str, list[float]] = {name: [] for name in calls}
    order = list(calls)
    for _ in range(rounds):
        random.shuffle(order)
        for name in order:
            call = calls[name]
            started = time.perf_counter_ns()
            for _ in range(batch):
                call()
            samples[name].append((time.perf_counter_ns() - started) / batch / 1000)
    return samples


def round_trip(url: str, n: int) -> float:
    """The median µs of one PING to the same server: one round trip, for scale."""
    import redis

    client = redis.Redis.from_url(url)
    times = []
    for _ in range(n):
        started = time.perf_counter_ns()
        client.ping()
        times.append((time.perf_counter_ns() - started) / 1000)
    return round(statistics.median(times), 1)


def summarize(samples: dict[str, list[float]]) -> dict[str, Any]:
    local = samples["local"]
    out: dict[str, Any] = {"local_us_per_call": round(statistics.median(local), 1)}
    for name, values in samples.items():
        if name != "local":
            added = [v - base for v, base in zip(values, local, strict=True)]
            out[f"{name}_added_us"] = round(statistics.median(added), 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--json", action="store_true", help="JSON on stdout")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 15)
    batch = args.batch or (20 if args.quick else 200)
    process, url, folder = start_redis()
    try:
        result = summarize(measure(cases(url), rounds, batch))
        result["redis_round_trip_us"] = round_trip(url, 200 if args.quick else 2000)
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)
    table = sys.stderr if args.json else sys.stdout
    print(f"{'case':<28} {'µs per call':>12}", file=table)
    for key, value in result.items():
        print(f"{key:<28} {value:>12}", file=table)
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
