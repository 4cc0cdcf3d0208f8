"""``aiguard report``'s quality numbers: exact on a known file (per model, tag and window, the
cost of a well-rated answer, quality decay), and end to end from feedback and evaluators."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from tests.conftest import FAST, MESSAGES

import aiguard
from aiguard import _config, _report, _worker
from aiguard._jsonl import JsonlSpanExporter

HOUR = 3600 * 10**9
T0 = 1_700_000_000 * 10**9 - (1_700_000_000 * 10**9) % HOUR  # on a window's start


def _kv(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


def _call(n: int, model: str, tag: str, cost: str, start: int) -> dict[str, Any]:
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": model,
        "gen_ai.response.model": model,
        "gen_ai.response.id": f"resp-{n}",
        "aiguard.attempts": 1,
        "aiguard.outcome": "ok",
        "aiguard.cost.usd": float(cost),
        "aiguard.cost.total_usd": float(cost),
        "aiguard.tag": tag,
    }
    return {
        "scope": {"name": "aiguard"},
        "span": {
            "traceId": f"{n:032x}",
            "spanId": f"{n:016x}",
            "parentSpanId": "",
            "name": f"chat {model}",
            "kind": 3,
            "startTimeUnixNano": str(start),
            "endTimeUnixNano": str(start + 10**9),
            "attributes": [_kv(k, v) for k, v in attrs.items()],
            "status": {"code": 0},
        },
    }


def _result(n: int, name: str, at: int, linked: bool = True, **attrs: Any) -> dict[str, Any]:
    attributes = {"gen_ai.evaluation.name": name, **attrs}
    if not linked:
        attributes["gen_ai.response.id"] = f"resp-{n}"
    return {
        "evaluation": {
            "traceId": f"{n:032x}" if linked else "",
            "spanId": f"{n:016x}" if linked else "",
            "timeUnixNano": str(at),
            "attributes": [_kv(k, v) for k, v in attributes.items()],
        }
    }


def _known_file(path: Path) -> None:
    """Hour 0: calls 1-3 (gpt-4o, tag a), hour 1: calls 4-6 (gpt-4o-mini, tag b)."""
    lines = [
        _call(1, "gpt-4o", "a", "0.010", T0),
        _call(2, "gpt-4o", "a", "0.020", T0 + 60 * 10**9),
        _call(3, "gpt-4o", "a", "0.030", T0 + 120 * 10**9),
        _call(4, "gpt-4o-mini", "b", "0.001", T0 + HOUR),
        _call(5, "gpt-4o-mini", "b", "0.002", T0 + HOUR + 1),
        _call(6, "gpt-4o-mini", "b", "0.003", T0 + HOUR + 2),
        _result(1, "judge", T0 + 5, **{"gen_ai.evaluation.score.value": 1.0}),
        _result(2, "judge", T0 + 5, **{"gen_ai.evaluation.score.value": 0.75}),
        _result(3, "judge", T0 + 5, **{"gen_ai.evaluation.score.value": 0.5}),
        _result(4, "judge", T0 + HOUR + 5, **{"gen_ai.evaluation.score.value": 0.25}),
        _result(5, "judge", T0 + HOUR + 5, **{"gen_ai.evaluation.score.value": 0.5}),
        # by response id only (another process without the trace), then changed later
        _result(6, "judge", T0 + HOUR + 5, linked=False, **{"gen_ai.evaluation.score.value": 1.0}),
        _result(6, "judge", T0 + HOUR + 9, **{"gen_ai.evaluation.score.value": 0.0}),
        # a thumbs-down with an explicit verdict, a label alone (not judged), one for no call
        _result(
            1,
            "thumbs",
            T0 + 7,
            **{"gen_ai.evaluation.score.value": 0.9, "aiguard.evaluation.passed": False},
        ),
        _result(2, "thumbs", T0 + 7, **{"gen_ai.evaluation.score.label": "meh"}),
        _result(99, "thumbs", T0 + 7, **{"gen_ai.evaluation.score.value": 1.0}),
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + "not json\n")


def _stats(results, mean, rate, passed, cost, per_pass):
    return {
        "results": results,
        "mean_score": mean,
        "pass_rate": rate,
        "passed": passed,
        "cost_usd": cost,
        "cost_per_pass_usd": per_pass,
    }


def test_the_quality_numbers_are_exact_on_a_known_file(tmp_path):
    path = tmp_path / "spans.jsonl"
    _known_file(path)
    out = io.StringIO()
    assert _report.report(str(path), as_json=True, out=out, err=io.StringIO()) == 0
    data = json.loads(out.getvalue())
    assert data["calls"]["total"] == 6 and data["skipped"]["invalid_lines"] == 1
    quality = data["quality"]
    assert (quality["results"], quality["unmatched_results"]) == (8, 1)
    early = _stats(3, 0.75, 1.0, 3, "0.06", "0.020000000")
    late = _stats(3, 0.25, 0.333333, 1, "0.006", "0.006000000")
    thumbs = _stats(2, 0.9, 0.0, 0, "0.03", None)
    assert quality["by_model"] == {
        "gpt-4o": {"judge": early, "thumbs": thumbs},
        "gpt-4o-mini": {"judge": late},
    }
    assert quality["by_tag"] == {"a": {"judge": early, "thumbs": thumbs}, "b": {"judge": late}}
    windows = quality["by_window"]
    assert [w["start"] for w in windows] == [
        "2023-11-14T22:00:00+00:00",
        "2023-11-14T23:00:00+00:00",
    ]
    assert windows[1]["evaluations"] == {"judge": late}
    assert quality["decay"] == [
        {
            "evaluation": "judge",
            "last_mean_score": 0.25,
            "before_mean_score": 0.75,
            "drop": 0.5,
            "decayed": True,
        }
    ]
    text = io.StringIO()
    assert _report.report(str(path), out=text, err=io.StringIO()) == 0
    shown = text.getvalue()
    assert "QUALITY DECAY: judge mean score 0.250 in the last window, 0.750 before" in shown
    assert "  gpt-4o-mini       judge        3  0.250      33.3%       0.006000" in shown


def test_a_file_without_evaluations_has_an_empty_quality_part(tmp_path):
    path = tmp_path / "spans.jsonl"
    path.write_text(json.dumps(_call(1, "gpt-4o", "a", "0.01", T0)) + "\n")
    out = io.StringIO()
    assert _report.report(str(path), as_json=True, out=out, err=io.StringIO()) == 0
    quality = json.loads(out.getvalue())["quality"]
    assert quality["results"] == 0 and quality["by_model"] == {} and quality["decay"] == []
    text = io.StringIO()
    _report.report(str(path), out=text, err=io.StringIO())
    assert "Quality" not in text.getvalue()


@pytest.fixture
def jsonl_spans(tmp_path):
    path = tmp_path / "spans.jsonl"
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonlSpanExporter(path)))
    _config.reset()
    aiguard.configure(tracer_provider=provider)
    _worker.reset()
    yield path
    _worker.drain(5)
    provider.shutdown()
    _config.reset()


def test_feedback_and_evaluators_reach_the_report(jsonl_spans, server):
    raw = openai.OpenAI(base_url=server.url, api_key="sk-test")
    client = aiguard.wrap(raw, retry=FAST, evaluate=[aiguard.evaluators.Refusal()], tag="bot")
    replies = [client.chat.completions.create(model="gpt-4o", messages=MESSAGES) for _ in range(2)]
    aiguard.feedback(replies[0], "thumbs", score=1.0)
    aiguard.feedback(aiguard.call_ref(replies[1]), "thumbs", score=0.0)
    assert aiguard.flush(5)
    out = io.StringIO()
    assert _report.report(str(jsonl_spans), as_json=True, out=out, err=io.StringIO()) == 0
    data = json.loads(out.getvalue())
    assert data["skipped"]["invalid_lines"] == 0
    by_tag = data["quality"]["by_tag"]["bot"]
    assert by_tag["thumbs"]["pass_rate"] == 0.5 and by_tag["thumbs"]["results"] == 2
    assert by_tag["refusal"]["pass_rate"] == 1.0
    assert by_tag["thumbs"]["cost_per_pass_usd"] is not None


def test_evaluations_exported_by_a_collector_are_read_too(tmp_path):
    """The collector's file exporter writes OTLP/JSON logs exports: their evaluation events."""
    path = tmp_path / "collected.jsonl"
    evaluation = _result(1, "thumbs", T0 + 9, **{"gen_ai.evaluation.score.value": 0.0})
    record = {"eventName": "gen_ai.evaluation.result", **evaluation["evaluation"]}
    other = {"eventName": "gen_ai.client.operation.exception", "attributes": []}
    export = {"resourceLogs": [{"scopeLogs": [{"logRecords": [record, other]}]}]}
    path.write_text(json.dumps(_call(1, "gpt-4o", "a", "0.5", T0)) + "\n" + json.dumps(export))
    out = io.StringIO()
    assert _report.report(str(path), as_json=True, out=out, err=io.StringIO()) == 0
    data = json.loads(out.getvalue())
    assert data["skipped"]["invalid_lines"] == 0
    assert data["quality"]["by_model"] == {
        "gpt-4o": {"thumbs": _stats(1, 0.0, 0.0, 0, "0.5", None)}
    }
