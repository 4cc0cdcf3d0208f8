"""A FastAPI service whose model calls are guarded and exported to the collector you run.

Each request gets its own budget and a tag for its route; a prompt carrying a secret is refused
with a 422 before anything is sent. With OTEL_EXPORTER_OTLP_ENDPOINT set, spans and metrics go
to that collector; otherwise nothing is exported. Runs with no API key: the model is the
testing kit's server, and requests are sent with FastAPI's TestClient.

The lifespan flushes aiguard's telemetry when the server stops: uvicorn re-raises SIGTERM after
its shutdown, which ends the process without running ``atexit``, so without this flush a pod
stop would lose the last batch of spans.

Serve it for real with (OPENAI_API_KEY and, for another server, OPENAI_BASE_URL set):
    uvicorn --factory examples.fastapi_service:create_app
Run: python examples/fastapi_service.py
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import openai
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from pydantic import BaseModel

import aiguard
from aiguard.testing import MockServer

aiguard.configure(
    service_name="support-api",
    exporter="otlp" if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") else None,
)


class Ticket(BaseModel):
    text: str


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    aiguard.flush(timeout=5)  # export the last spans before the process ends


def build_app(client: openai.OpenAI) -> FastAPI:
    app = FastAPI(lifespan=lifespan)
    guarded = aiguard.wrap(
        client,
        retry=aiguard.Retry(attempts=3, wait_initial=0.05),
        fallback=["gpt-4o-mini"],
        timeout=20,
        checks=[aiguard.checks.NotEmpty(), aiguard.checks.NoSecrets()],
    )

    @app.post("/summaries")
    def summarise(ticket: Ticket) -> dict[str, str]:
        messages = [{"role": "user", "content": f"Summarise: {ticket.text}"}]
        try:
            with aiguard.budget(usd="0.05"), aiguard.tag("summaries"):
                reply = guarded.chat.completions.create(
                    model="gpt-4o", messages=messages, max_tokens=200
                )
        except aiguard.CheckFailed as refusal:
            raise HTTPException(status_code=422, detail=str(refusal)) from None
        except aiguard.BudgetExceeded as refusal:
            raise HTTPException(status_code=402, detail=str(refusal)) from None
        return {"summary": reply.choices[0].message.content or "", "model": reply.model}

    return app


def create_app() -> FastAPI:
    """The served app (``uvicorn --factory``): the OpenAI client reads its key and base URL from
    the environment."""
    return build_app(openai.OpenAI())


def main() -> None:
    with MockServer() as server:
        app = build_app(openai.OpenAI(base_url=server.url, api_key="sk-example"))
        with TestClient(app) as http:  # runs the lifespan: the flush at the end
            server.fail("gpt-4o", status=503, times=3)  # an outage: the fallback answers
            for text in ("My invoice is wrong.", "Refund please"):
                response = http.post("/summaries", json={"text": text})
                print(response.status_code, response.json())
            leaked = http.post("/summaries", json={"text": "key sk-proj-" + "ab12" * 12})
            print(leaked.status_code, leaked.json()["detail"][:60], "...")


if __name__ == "__main__":
    main()
