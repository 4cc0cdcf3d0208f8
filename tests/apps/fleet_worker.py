"""One process of a fleet: the real openai SDK through aiguard, with state shared in Redis.

Run by tests/fleet_support.py with one JSON argument (the job); prints one JSON line (what it
saw). Jobs: ``budget`` (threads and asyncio tasks calling until the shared budget refuses),
``hold`` (calls that hang, holding reservations, until the process is killed), ``rate``
(calls under a shared rate limit), ``breaker`` (calls to a failing target).
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from typing import Any

import openai

import aiguard

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def _policy(job: dict[str, Any]) -> dict[str, Any]:
    policy: dict[str, Any] = {"retry": aiguard.Retry(attempts=1)}
    if "budget" in job:
        policy["budget"] = aiguard.Budget(**job["budget"], store=job["redis"])
    if "rate" in job:
        policy["rate_limit"] = aiguard.RateLimit(**job["rate"], store=job["redis"])
    if "breaker" in job:
        policy["breaker"] = aiguard.Breaker(**job["breaker"], store=job["redis"])
    for key in ("timeout", "fallback"):
        if key in job:
            policy[key] = job[key]
    return policy


def _outcome(error: BaseException | None) -> str:
    return "ok" if error is None else type(error).__name__


def run_threads(job: dict[str, Any]) -> dict[str, Any]:
    client = aiguard.wrap(openai.OpenAI(base_url=job["url"], api_key="sk-test"), **_policy(job))
    counts: dict[str, int] = {}
    lock = threading.Lock()

    def work() -> None:
        for _ in range(job.get("calls", 1)):
            error: BaseException | None = None
            try:
                client.chat.completions.create(
                    model=job.get("model", "gpt-4o"), messages=MESSAGES, max_tokens=100
                )
            except Exception as exc:
                error = exc
            with lock:
                counts[_outcome(error)] = counts.get(_outcome(error), 0) + 1
            if isinstance(error, aiguard.BudgetExceeded):
                return

    threads = [threading.Thread(target=work) for _ in range(job.get("threads", 1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return counts


def run_tasks(job: dict[str, Any]) -> dict[str, Any]:
    counts: dict[str, int] = {}

    async def main() -> None:
        raw = openai.AsyncOpenAI(base_url=job["url"], api_key="sk-test")
        client = aiguard.wrap(raw, **_policy(job))

        async def work() -> None:
            for _ in range(job.get("calls", 1)):
                error: BaseException | None = None
                try:
                    await client.chat.completions.create(
                        model="gpt-4o", messages=MESSAGES, max_tokens=100
                    )
                except Exception as exc:
                    error = exc
                counts[_outcome(error)] = counts.get(_outcome(error), 0) + 1
                if isinstance(error, aiguard.BudgetExceeded):
                    return

        await asyncio.gather(*(work() for _ in range(job.get("tasks", 1))))

    asyncio.run(main())
    return counts


def main() -> None:
    job = json.loads(sys.argv[1])
    counts = run_tasks(job) if job.get("asyncio") else run_threads(job)
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main()
