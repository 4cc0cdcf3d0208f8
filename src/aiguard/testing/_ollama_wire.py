"""The Ollama wire: chat and generate (NDJSON streams), embed and embeddings."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiguard.testing._wire import (
    Fault,
    Reply,
    Wire,
    _count_tokens,
    _inputs,
    _pieces,
    _token_counts,
    _vector,
)


def _ndjson(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode() + b"\n"


def error_body(status: int, message: str, fault: Fault | None) -> dict[str, Any]:
    return {"error": message}


class OllamaWire(Wire):
    def _ollama_chat(self, body: dict[str, Any], reply: Reply, fault: Fault | None) -> None:
        self._ollama_answer(
            body, reply, fault, lambda text: {"message": {"role": "assistant", "content": text}}
        )

    def _ollama_generate(self, body: dict[str, Any], reply: Reply, fault: Fault | None) -> None:
        self._ollama_answer(body, reply, fault, lambda text: {"response": text})

    def _ollama_answer(
        self,
        body: dict[str, Any],
        reply: Reply,
        fault: Fault | None,
        payload: Callable[[str], dict[str, Any]],
    ) -> None:
        content = self._content(body, reply)
        model = reply.response_model or body.get("model")

        def line(text: str) -> dict[str, Any]:
            created = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            return {"model": model, "created_at": created, **payload(text), "done": False}

        prompt, completion = _token_counts(body, reply, content)
        done: dict[str, Any] = {"done": True, "done_reason": reply.finish_reason}
        # Plausible nanosecond timings: 1 ms to load, 0.1 ms a prompt token, 10 ms an output one.
        timings = {"load": 1_000_000, "prompt": prompt * 100_000, "eval": completion * 10_000_000}
        done["total_duration"] = sum(timings.values())
        done["load_duration"] = timings["load"]
        if reply.usage:
            done["prompt_eval_count"] = prompt
            done["eval_count"] = completion
        done["prompt_eval_duration"] = timings["prompt"]
        done["eval_duration"] = timings["eval"]
        headers = fault.headers if fault else None
        # The raw API streams unless told not to (the Python client always says which).
        if not body.get("stream", True):
            self._json(200, {**line(content), **done}, headers)
            return
        frames = [(_ndjson(line(p)), True) for p in _pieces(content)]
        if not (fault and fault.truncate):
            frames.append((_ndjson({**line(""), **done}), True))
        error = None
        if fault and fault.stream_error:
            error = _ndjson({"error": f"mock stream error: {fault.stream_error}"})
        self._stream("application/x-ndjson", frames, fault, error, headers)

    def _ollama_embed(self, body: dict[str, Any], reply: Reply, fault: Fault | None) -> None:
        items = _inputs(body.get("input"))
        dims = int(body.get("dimensions") or 8)
        text = " ".join(str(i) for i in items)
        answer = {
            "model": reply.response_model or body.get("model"),
            "embeddings": [_vector(dims) for _ in items],
            "total_duration": 2_000_000,
            "load_duration": 1_000_000,
            "prompt_eval_count": _count_tokens(text),
        }
        self._json(200, answer, fault.headers if fault else None)

    def _ollama_embeddings(self, body: dict[str, Any], reply: Reply, fault: Fault | None) -> None:
        """The older single-prompt embeddings endpoint."""
        self._json(200, {"embedding": _vector(8)}, fault.headers if fault else None)
