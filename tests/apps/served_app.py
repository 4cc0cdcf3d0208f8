"""A served app with no flush of its own: aiguard's SIGTERM path must export its spans.

Serve with: uvicorn tests.apps.served_app:app (OPENAI_BASE_URL, OPENAI_API_KEY and
OTEL_EXPORTER_OTLP_ENDPOINT set).
"""

from __future__ import annotations

import openai
from fastapi import FastAPI

import aiguard

aiguard.configure(service_name="served-app", exporter="otlp")
client = aiguard.wrap(openai.AsyncOpenAI(), retry=aiguard.Retry(attempts=2, wait_initial=0.01))
app = FastAPI()


@app.get("/ask")
async def ask() -> dict[str, str]:
    reply = await client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=20
    )
    return {"model": reply.model}
