"""The quality part of ``aiguard report``: evaluation results next to the calls they judge.

A span file holds, besides spans, the evaluation results of its calls (lines
``{"evaluation": {"traceId", "spanId", "timeUnixNano", "attributes"}}``, written by the JSONL
exporter for ``aiguard.feedback``, online evaluators and ``aiguard review`` verdicts; or the
``gen_ai.evaluation.result`` events of OTLP/JSON logs exports, ``{"resourceLogs": [...]}``, as
the collector's file exporter writes them). Each is
joined to its call by trace and span id (else by ``gen_ai.response.id``); per call and
evaluation name the **latest** result counts (a user may change their thumbs).

For each evaluation, per model (``gen_ai.response.model``, else the request's), per tag and per
time window (of the calls' start, ``--window`` minutes):

- ``results``: calls with a result; ``mean_score``: the mean of their scores (6 decimals);
- ``pass_rate``: passed / judged, where passed is ``aiguard.evaluation.passed`` (else score
  >= 0.5; a label alone is not judged);
- ``cost_usd``: what those calls cost (exact decimal string); ``cost_per_pass_usd``: that cost
  divided by the calls that passed (9 decimals): the cost of a well-rated answer.

``decay`` compares each evaluation's mean score in the last window with its mean over the
windows before (windows with at least ``MIN_RESULTS`` results); a drop of ``DECAY_DROP`` or
more is flagged ``decayed``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TextIO

from aiguard import _semconv as sc
from aiguard._report_read import _attributes, _decimal, _dicts, _exact, _int, _Span

NO_TAG = "(none)"
PASS_AT = 0.5
MIN_RESULTS = 3
DECAY_DROP = 0.1
_NAME = "gen_ai.evaluation.name"
_SCORE = "gen_ai.evaluation.score.value"
_PASSED = "aiguard.evaluation.passed"


@dataclass(slots=True)
class _Result:
    key: tuple[str, str]
    response_id: str | None
    at: int
    name: str
    score: float | None
    passed: bool | None


def read(path: str) -> Iterator[_Result]:
    """The evaluation lines of a span file (others are the span reader's business)."""
    with open(path, "rb") as file:
        for raw in file:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(line, dict):
                continue
            for raw_result in _raw_results(line):
                found = _result(raw_result)
                if found is not None:
                    yield found


def _raw_results(line: dict[str, Any]) -> Iterator[Any]:
    """aiguard's evaluation line, or the evaluation events of an OTLP/JSON logs export (the
    collector's file exporter writes ``{"resourceLogs": [...]}``)."""
    if "evaluation" in line:
        yield line["evaluation"]
        return
    for resource in _dicts(line.get("resourceLogs")):
        for scope in _dicts(resource.get("scopeLogs")):
            for record in _dicts(scope.get("logRecords")):
                if record.get("eventName") == "gen_ai.evaluation.result":
                    yield record


def _result(raw: Any) -> _Result | None:
    if not isinstance(raw, dict):
        return None
    attrs = _attributes(raw.get("attributes"))
    name = attrs.get(_NAME)
    if not isinstance(name, str):
        return None
    score = attrs.get(_SCORE)
    score = float(score) if isinstance(score, int | float) and not isinstance(score, bool) else None
    passed = attrs.get(_PASSED)
    if not isinstance(passed, bool):
        passed = None if score is None else score >= PASS_AT
    response_id = attrs.get(sc.RESPONSE_ID)
    return _Result(
        (str(raw.get("traceId") or ""), str(raw.get("spanId") or "")),
        response_id if isinstance(response_id, str) else None,
        _int(raw.get("timeUnixNano") or raw.get("observedTimeUnixNano")),
        name,
        score,
        passed,
    )


@dataclass
class _Stats:
    results: int = 0
    scores: list[float] = field(default_factory=list)
    judged: int = 0
    passed: int = 0
    cost: Decimal | None = None

    def add(self, result: _Result, cost: Decimal | None) -> None:
        self.results += 1
        if result.score is not None:
            self.scores.append(result.score)
        if result.passed is not None:
            self.judged += 1
            self.passed += result.passed
        if cost is not None:
            self.cost = cost if self.cost is None else self.cost + cost

    def mean(self) -> float | None:
        return round(sum(self.scores) / len(self.scores), 6) if self.scores else None

    def as_json(self) -> dict[str, Any]:
        per_pass = None
        if self.cost is not None and self.passed:
            per_pass = str((self.cost / self.passed).quantize(Decimal("1e-9")))
        return {
            "results": self.results,
            "mean_score": self.mean(),
            "pass_rate": round(self.passed / self.judged, 6) if self.judged else None,
            "passed": self.passed,
            "cost_usd": _exact(self.cost),
            "cost_per_pass_usd": per_pass,
        }


Groups = dict[str, dict[str, _Stats]]  # group (model, tag, window) -> evaluation -> stats


def summarise(path: str, spans: dict[tuple[str, str], _Span], window_s: float) -> dict[str, Any]:
    """The ``quality`` part of the report's JSON document."""
    by_response = {s.attrs[sc.RESPONSE_ID]: s for s in spans.values() if sc.RESPONSE_ID in s.attrs}
    latest: dict[tuple[tuple[str, str], str], tuple[_Result, _Span]] = {}
    unmatched = 0
    for result in read(path):
        span = spans.get(result.key) or by_response.get(result.response_id or "")
        if span is None:
            unmatched += 1
            continue
        before = latest.get((span.key, result.name))
        if before is None or result.at >= before[0].at:
            latest[(span.key, result.name)] = (result, span)
    window_ns = max(int(window_s * 1e9), 1)
    by_model: Groups = {}
    by_tag: Groups = {}
    by_window: dict[int, dict[str, _Stats]] = {}
    for result, span in latest.values():
        cost = _decimal(span.attrs.get(sc.COST_TOTAL_USD))
        model = span.attrs.get(sc.RESPONSE_MODEL) or span.attrs.get(sc.REQUEST_MODEL) or "?"
        tag = span.attrs.get(sc.TAG) or NO_TAG
        for groups, key in ((by_model, str(model)), (by_tag, str(tag))):
            groups.setdefault(key, {}).setdefault(result.name, _Stats()).add(result, cost)
        slot = by_window.setdefault(span.start // window_ns, {})
        slot.setdefault(result.name, _Stats()).add(result, cost)
    return {
        "results": len(latest),
        "unmatched_results": unmatched,
        "window_minutes": window_s / 60,
        "by_model": _json(by_model),
        "by_tag": _json(by_tag),
        "by_window": [
            {"start": _iso(slot * window_ns), "evaluations": _stats_json(by_window[slot])}
            for slot in sorted(by_window)
        ],
        "decay": _decay([by_window[slot] for slot in sorted(by_window)]),
    }


def _json(groups: Groups) -> dict[str, Any]:
    return {group: _stats_json(stats) for group, stats in sorted(groups.items())}


def _stats_json(stats: dict[str, _Stats]) -> dict[str, Any]:
    return {name: value.as_json() for name, value in sorted(stats.items())}


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="seconds")


def _decay(windows: list[dict[str, _Stats]]) -> list[dict[str, Any]]:
    out = []
    names = sorted({name for window in windows for name in window})
    for name in names:
        kept = [w[name] for w in windows if name in w and len(w[name].scores) >= MIN_RESULTS]
        if len(kept) < 2:
            continue
        earlier = [score for stats in kept[:-1] for score in stats.scores]
        before = round(sum(earlier) / len(earlier), 6)
        last = kept[-1].mean()
        assert last is not None
        drop = round(before - last, 6)
        out.append(
            {
                "evaluation": name,
                "last_mean_score": last,
                "before_mean_score": before,
                "drop": drop,
                "decayed": drop >= DECAY_DROP,
            }
        )
    return out


Table = Callable[[TextIO, list[str] | None, list[list[str]]], None]


def print_quality(quality: dict[str, Any], out: TextIO, table: Table) -> None:
    """The quality tables of the text report (nothing when the file holds no evaluation)."""
    if not quality["results"]:
        return
    headers = ["", "evaluation", "results", "mean", "pass rate", "cost/pass USD"]
    for title, key in (("By model", "by_model"), ("By tag", "by_tag")):
        print(f"\nQuality {title.lower()} (latest result per call)", file=out)
        rows = [
            [group, name, *_cells(stats)]
            for group, evaluations in quality[key].items()
            for name, stats in evaluations.items()
        ]
        table(out, headers, rows)
    print(f"\nQuality per {quality['window_minutes']:g}-minute window", file=out)
    rows = [
        [window["start"], name, *_cells(stats)]
        for window in quality["by_window"]
        for name, stats in window["evaluations"].items()
    ]
    table(out, headers, rows)
    for decay in quality["decay"]:
        if decay["decayed"]:
            print(
                f"QUALITY DECAY: {decay['evaluation']} mean score {decay['last_mean_score']:.3f} "
                f"in the last window, {decay['before_mean_score']:.3f} before",
                file=out,
            )


def _cells(stats: dict[str, Any]) -> list[str]:
    mean, rate, per_pass = stats["mean_score"], stats["pass_rate"], stats["cost_per_pass_usd"]
    return [
        str(stats["results"]),
        "-" if mean is None else f"{mean:.3f}",
        "-" if rate is None else f"{rate:.1%}",
        "-" if per_pass is None else f"{Decimal(per_pass):.6f}",
    ]
