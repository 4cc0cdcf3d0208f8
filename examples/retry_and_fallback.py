"""A rate-limited primary that retries, then an outage that falls back, with no API key.

Run: python examples/retry_and_fallback.py
"""

from __future__ import annotations

import openai

import aiguard
from aiguard.testing import Capture, MockServer

MESSAGES = [{"role": "user", "content": "Say hello."}]


def main() -> None:
    with MockServer() as server, Capture() as telemetry:
        client = aiguard.wrap(
            openai.OpenAI(base_url=server.url, api_key="sk-example"),
            retry=aiguard.Retry(attempts=3, wait_initial=0.05),
            fallback=["gpt-4o-mini"],
            timeout=10,
        )

        server.fail("gpt-4o", status=429, headers={"retry-after": "0.1"})
        reply = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        print(f"rate limited once, then answered by {reply.model}")

        server.fail("gpt-4o", status=503, times=3)
        reply = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        print(f"outage on gpt-4o, answered by the fallback {reply.model}")

        print(f"{len(server.requests)} requests reached the server; the spans recorded:")
        for span in telemetry.spans():
            attrs = span.attributes or {}
            print(f"  {span.name:<24} {attrs.get('error.type', 'ok')}")


if __name__ == "__main__":
    main()
