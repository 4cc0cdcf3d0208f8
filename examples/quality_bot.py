"""A FastAPI bot whose users' thumbs-up/down and a sampled LLM judge land on the call's traces,
with a human review queue worked through on the command line (docs/quality.md).

Each answer is returned with its call reference (``aiguard.call_ref``); the page sends it back
with the user's thumbs to ``/feedback``, which records it on the call's trace. Cheap evaluators
judge every answer, an LLM judge a sample of them, all off the request's path; answers the judge
scores low or the model refuses go to ``review.jsonl``. Runs offline: the models are the
testing kit's server and requests go through FastAPI's TestClient. The spans and the
evaluations go to a JSONL file, and ``aiguard report`` shows quality next to cost.

Run: python examples/quality_bot.py
"""

from __future__ import annotations

import random
import sys
import tempfile
from pathlib import Path

import openai
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

import aiguard
from aiguard._cli import main as aiguard_cli
from aiguard.testing import MockServer


class Question(BaseModel):
    text: str


class Thumbs(BaseModel):
    ref: str
    up: bool


def build_app(client: openai.OpenAI, queue: Path) -> FastAPI:
    judge = aiguard.evaluators.Judge(
        aiguard.wrap(client),  # the judge's own client: no evaluate= of its own
        "Does the answer address the question, correctly and politely?",
        model="judge-model",
        sample=0.5,  # the judge costs a call: it grades half of the answers
    )
    bot = aiguard.wrap(
        client,
        tag="support-bot",
        evaluate=[aiguard.evaluators.Refusal(), aiguard.evaluators.EmptyAnswer(), judge],
        review=aiguard.Review(queue, below=0.5, refusal=True),
    )
    app = FastAPI()

    @app.post("/ask")
    def ask(question: Question) -> dict[str, str]:
        reply = bot.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": question.text}]
        )
        return {"answer": reply.choices[0].message.content or "", "ref": aiguard.call_ref(reply)}

    @app.post("/feedback")
    def feedback(thumbs: Thumbs) -> dict[str, bool]:
        aiguard.feedback(thumbs.ref, "thumbs", score=1.0 if thumbs.up else 0.0)
        return {"recorded": True}

    return app


def main() -> None:
    random.seed(5)  # which answers the judge samples: the same on every run of this example
    folder = Path(tempfile.mkdtemp(prefix="aiguard-quality-"))
    spans, queue = folder / "spans.jsonl", folder / "review.jsonl"
    aiguard.configure(service_name="quality-bot", exporter=f"jsonl:{spans}")
    with MockServer() as server:
        server.answer("gpt-4o", "Paris.", "I'm sorry, but I can't help with that.", "Lyon.")
        server.answer("judge-model", "5 - right.", "1 - refused.", "2 - wrong city.")
        client = openai.OpenAI(base_url=server.url, api_key="sk-example")
        with TestClient(build_app(client, queue)) as http:
            for text, up in (("Capital of France?", True), ("And of Italy?", False)):
                answer = http.post("/ask", json={"text": text}).json()
                print(f"{text} -> {answer['answer']!r}")
                http.post("/feedback", json={"ref": answer["ref"], "up": up})
            print(http.post("/ask", json={"text": "Capital of France, again?"}).json()["answer"])
        aiguard.flush(timeout=5)  # the evaluations still queued run now
    print("\n$ aiguard review", queue.name)
    aiguard_cli(["review", str(queue)])
    pending = aiguard._review.pending(str(queue))
    if pending:
        print(f"\n$ aiguard review {queue.name} {pending[0]['id']} bad --jsonl {spans.name}")
        aiguard_cli(["review", str(queue), pending[0]["id"], "bad", "--jsonl", str(spans)])
    print("\n$ aiguard report", spans.name)
    sys.exit(aiguard_cli(["report", str(spans)]))


if __name__ == "__main__":
    main()
