"""The human review queue: items sent by ``review=`` rules, and reviewers' verdicts.

A JSONL queue file holds two kinds of lines, appended only:

- an **item** (``{"kind": "item", "id": ..., "ref": ..., "model": ..., "tag": ..., "scores":
  {...}, "cost_usd": ..., "reasons": [...], "created": ...}``), plus ``"messages"`` and
  ``"answer"`` only when content capture is on for the call (scrubbed and cut as captured
  content is);
- a **verdict** (``{"kind": "verdict", "id": ..., "verdict": "good" | "bad", "score": ...,
  "explanation": ..., "reviewer": ..., "created": ...}``), written by ``aiguard review``.

An item without a verdict is pending. A callable sink receives each item as a dict instead.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiguard import _calls, _capture
from aiguard._evaluation import Result
from aiguard._messages import Message, Part
from aiguard._telemetry import report_fault
from aiguard.evaluators import is_refusal

if TYPE_CHECKING:
    from aiguard._online import Job

_lock = threading.Lock()


def reasons(job: Job, answer: str, results: list[tuple[str, Result]]) -> list[str]:
    """Why the call goes to review (empty: it does not)."""
    from aiguard._online import sampled

    rules = job.review
    assert rules is not None
    found = []
    if rules.below is not None:
        below = rules.below
        found += [
            f"{n} scored {r.score:g}" for n, r in results if r.score is not None and r.score < below
        ]
    if rules.refusal and is_refusal(answer):
        found.append("refusal")
    if rules.redacted and job.redacted:
        found.append("redacted")
    if not found and sampled(rules.sample) and rules.sample > 0:
        found.append("sample")
    return found


def consider(
    job: Job, messages: list[Message], answer: str, results: list[tuple[str, Result]]
) -> None:
    """Send the call to review when a rule holds."""
    why = reasons(job, answer, results)
    if not why:
        return
    facts = job.facts
    item: dict[str, Any] = {
        "kind": "item",
        "id": uuid.uuid4().hex[:12],
        "ref": _calls.encode(facts),
        "model": facts.model,
        "tag": facts.tag,
        "scores": {name: _shown(r) for name, r in results},
        "cost_usd": facts.cost_usd,
        "reasons": why,
        "created": _now(),
    }
    if job.capture is not None:
        item["messages"] = _capture.structured(_capture.input_attributes(messages, job.capture))
        said = Message("assistant", [Part("text", answer)])
        item["answer"] = _capture.structured(_capture.output_attributes([(said, "")], job.capture))
    assert job.review is not None
    send(job.review.to, item)


def _shown(result: Result) -> Any:
    return result.score if result.score is not None else result.label


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def send(to: Any, item: dict[str, Any]) -> None:
    try:
        if isinstance(to, str):
            append(to, item)
        else:
            to(item)
    except Exception as exc:
        report_fault("sending a call to review", exc)


def append(path: str, line: dict[str, Any]) -> None:
    text = json.dumps(line, ensure_ascii=False, separators=(",", ":"), default=str) + "\n"
    with _lock, open(path, "a", encoding="utf-8") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())


def lines(path: str) -> Iterator[dict[str, Any]]:
    """The queue's lines that are JSON objects (others are skipped)."""
    with open(path, encoding="utf-8") as source:
        for raw in source:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict):
                yield line


def pending(path: str) -> list[dict[str, Any]]:
    """The items that have no verdict yet, oldest first."""
    items: dict[str, dict[str, Any]] = {}
    judged: set[str] = set()
    for line in lines(path):
        if line.get("kind") == "item" and isinstance(line.get("id"), str):
            items[line["id"]] = line
        elif line.get("kind") == "verdict":
            judged.add(str(line.get("id")))
    return [item for key, item in items.items() if key not in judged]


def verdict(
    path: str,
    item_id: str,
    good: bool,
    score: float | None = None,
    explanation: str | None = None,
    reviewer: str | None = None,
) -> dict[str, Any]:
    """Record a verdict on a pending item: a line in the queue and feedback on the call's trace
    (evaluation ``human_review``). Returns the item; ``LookupError`` for an unknown or already
    judged id."""
    from aiguard._evaluation import feedback

    item = next((i for i in pending(path) if i["id"] == item_id), None)
    if item is None:
        raise LookupError(f"no pending review item {item_id!r} in {path}")
    if score is None:
        score = 1.0 if good else 0.0
    label = "good" if good else "bad"
    feedback(item["ref"], "human_review", score, label, explanation, passed=good)
    line = {
        "kind": "verdict",
        "id": item_id,
        "verdict": label,
        "score": score,
        "explanation": explanation,
        "reviewer": reviewer or os.environ.get("USER") or None,
        "created": _now(),
        "at": time.time(),
    }
    append(path, line)
    return item
