"""Many concurrent guarded calls on AsyncOpenAI, each traced under its own request span.

Run: python examples/async_fanout.py
"""

from __future__ import annotations

import asyncio

import openai

import aiguard
from aiguard.testing import Capture, MockServer


async def main() -> None:
    with MockServer() as server, Capture() as telemetry:
        client = aiguard.wrap(
            openai.AsyncOpenAI(base_url=server.url, api_key="sk-example"),
            retry=aiguard.Retry(attempts=3, wait_initial=0.01),
            fallback=["gpt-4o-mini"],
        )
        server.fail("gpt-4o", status=500, times=4)  # some calls retry, one falls back
        tracer = telemetry.tracer_provider.get_tracer("example")

        async def handle(ticket: int) -> str:
            with tracer.start_as_current_span(f"ticket {ticket}"):
                messages = [{"role": "user", "content": f"Summarise ticket {ticket}"}]
                reply = await client.chat.completions.create(model="gpt-4o", messages=messages)
                return reply.model

        models = await asyncio.gather(*(handle(i) for i in range(10)))
        print(f"10 tickets answered by: {sorted(set(models))}")
        print(f"{len(server.requests)} requests, {len(telemetry.spans())} spans")


if __name__ == "__main__":
    asyncio.run(main())
