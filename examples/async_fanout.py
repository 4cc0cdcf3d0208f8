"""Many concurrent guarded calls on AsyncOpenAI, each traced under its own request span, under
one hard budget that the fan-out can never overspend.

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
            provider="openai",  # priced as OpenAI's models
        )
        server.fail("gpt-4o", status=500, times=4)  # some calls retry, one falls back
        tracer = telemetry.tracer_provider.get_tracer("example")

        async def handle(ticket: int) -> str:
            with tracer.start_as_current_span(f"ticket {ticket}"):
                messages = [{"role": "user", "content": f"Summarise ticket {ticket}"}]
                reply = await client.chat.completions.create(
                    model="gpt-4o", messages=messages, max_tokens=300
                )
                return reply.model

        models = await asyncio.gather(*(handle(i) for i in range(10)))
        print(f"10 tickets answered by: {sorted(set(models))}")
        print(f"{len(server.requests)} requests, {len(telemetry.spans())} spans")

        # Twenty more tickets under $0.01: each call reserves its worst case before it is sent.
        async def capped(ticket: int) -> bool:
            try:
                await handle(ticket)
            except aiguard.BudgetExceeded:
                return False
            return True

        async with aiguard.budget(usd="0.01") as budget:
            answered = sum(await asyncio.gather(*(capped(i) for i in range(20))))
        print(
            f"budget: {answered} of 20 answered for ${budget.spent:.5f} of ${budget.limit}, "
            f"{budget.refusals} refused before sending"
        )


if __name__ == "__main__":
    asyncio.run(main())
