"""The JSONL span exporter and ``aiguard report``: real spans from guarded calls, summed exactly."""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import os
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

import aiguard
from aiguard import _config, _report, _report_read, checks
from aiguard._jsonl import JsonlSpanExporter
from aiguard.testing import MockServer

MESSAGES: Any = [{"role": "user", "content": "What is the capital of France?"}]
FAST = aiguard.Retry(attempts=3, wait_initial=0.001, wait_max=0.01, wait_jitter=0)
HEX = set("0123456789abcdef")


@pytest.fixture(autouse=True)
def _reset_config() -> Iterator[None]:
    yield
    _config.reset()


def _configure(provider: TracerProvider) -> None:
    # A meter provider of its own too: configure() would otherwise set a global SDK one, and
    # later tests that expect none would see it.
    aiguard.configure(tracer_provider=provider, meter_provider=MeterProvider())


@pytest.fixture
def spans_file(tmp_path: Path) -> Iterator[Path]:
    """aiguard's spans, written by the JSONL exporter to a file in this test's directory."""
    path = tmp_path / "traces" / "spans.jsonl"  # the directory does not exist yet
    exporter = JsonlSpanExporter(path)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _configure(provider)
    yield path
    provider.shutdown()


@pytest.fixture
def client(server: MockServer) -> Any:
    raw = openai.OpenAI(base_url=server.url, api_key="sk-test")
    return aiguard.wrap(raw, provider="openai", retry=FAST, fallback=["gpt-4o-mini"])


def _run(path: Path | str, as_json: bool = True) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = _report.report(str(path), as_json=as_json, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def _summary(path: Path) -> dict[str, Any]:
    code, out, err = _run(path)
    assert (code, err) == (0, "")
    summary: dict[str, Any] = json.loads(out)
    return summary


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def _usage(attempts: int, errors: int, tokens: tuple[int, int, int], cost: str | None) -> Any:
    return {
        "attempts": attempts,
        "errors": errors,
        "input_tokens": tokens[0],
        "output_tokens": tokens[1],
        "cache_read_tokens": tokens[2],
        "cost_usd": cost,
    }


def _scenario(server: MockServer, client: Any) -> None:
    """Seven guarded calls: ok, retried, fallen back, refused twice, streamed, abandoned."""
    server.reply("gpt-4o", prompt_tokens=1000, completion_tokens=500)  # $0.0075 a call
    server.reply("gpt-4o-mini", prompt_tokens=1000, completion_tokens=500, cached_tokens=200)
    raw = openai.OpenAI(base_url=server.url, api_key="sk-test")

    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    with aiguard.tag("checkout"):
        server.fail("gpt-4o", status=429, headers={"retry-after": "0"})
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        server.fail("gpt-4o", status=503, times=3)
        reply = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert reply.model == "gpt-4o-mini"
    tight = aiguard.wrap(raw, provider="openai", budget=aiguard.Budget(usd="0.000001"))
    with pytest.raises(aiguard.BudgetExceeded):
        tight.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=100)
    checked = aiguard.wrap(raw, provider="openai", checks=[checks.NotEmpty()])
    with pytest.raises(aiguard.CheckFailed):
        checked.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": ""}])
    with aiguard.tag("chat-ui"):
        list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    with client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True) as stream:
        next(iter(stream))  # left early: abandoned, its usage never arrives


# -- the report ----------------------------------------------------------------------------------


def test_report_counts_calls_attempts_tokens_and_costs_exactly(spans_file, server, client):
    _scenario(server, client)
    summary = _summary(spans_file)  # read while the exporter still has the file open

    assert summary["skipped"] == {"invalid_lines": 0, "foreign_spans": 0, "duplicate_spans": 0}
    assert summary["calls"] == {
        "total": 7,
        "ok": 4,
        "errors": 2,
        "errors_by_type": {"aiguard.BudgetExceeded": 1, "aiguard.CheckFailed": 1},
        "abandoned": 1,
        "retries": 3,  # one after the 429, two on gpt-4o before the fallback
        "fallbacks": 1,
        "budget_refusals": 1,
        "check_refusals": 1,
        "rate_limit_refusals": 0,
        "rate_limit_waits": 0,
        "rate_limit_wait_s": 0,
        "nested": 0,
    }
    assert summary["attempts"] == {
        "total": 9,
        "errors": 4,
        "errors_by_type": {"openai.InternalServerError": 3, "openai.RateLimitError": 1},
    }
    assert summary["by_model"] == {
        "gpt-4o": _usage(8, 4, (3000, 1500, 0), "0.0225"),
        "gpt-4o-mini": _usage(1, 0, (1000, 500, 200), "0.000435"),
    }
    assert summary["by_tag"] == {
        "chat-ui": _usage(1, 0, (1000, 500, 0), "0.0075"),
        "checkout": _usage(6, 4, (2000, 1000, 200), "0.007935"),
        "(none)": _usage(2, 0, (1000, 500, 0), "0.0075"),
    }
    assert list(summary["by_tag"])[-1] == "(none)"  # the untagged last
    assert summary["total"] == _usage(9, 4, (4000, 2000, 200), "0.022935")
    assert sum(Decimal(u["cost_usd"]) for u in summary["by_model"].values()) == Decimal("0.022935")

    latency = summary["latency_ms"]
    assert set(latency) == {"all", "by_model", "by_function"}
    assert set(latency["by_model"]) == {"gpt-4o"}  # the requested model, fallbacks included
    assert latency["by_function"] == {}
    for percentiles in (latency["all"], latency["by_model"]["gpt-4o"]):
        assert percentiles["count"] == 7
        assert 0 < percentiles["p50"] <= percentiles["p95"] <= percentiles["p99"]


def test_table_shows_the_same_numbers_aligned_without_colour(spans_file, server, client):
    _scenario(server, client)
    code, out, err = _run(spans_file, as_json=False)
    assert (code, err) == (0, "")
    assert "\033" not in out
    lines = out.splitlines()
    assert lines[1] == "7 guarded calls, 9 inference attempts"
    start = lines.index("Guarded calls") + 1
    block = lines[start : lines.index("", start)]
    counts = {line.rsplit(maxsplit=1)[0].strip(): line.split()[-1] for line in block}
    assert counts["budget refusals"] == counts["abandoned streams"] == "1"
    assert counts["aiguard.BudgetExceeded"] == counts["aiguard.CheckFailed"] == "1"
    assert counts["retries"] == "3"
    model_header = lines.index("By model") + 1
    rows = lines[model_header : model_header + 4]
    assert rows[1].split() == ["gpt-4o", "8", "4", "3000", "1500", "0", "0.022500"]
    assert rows[2].split() == ["gpt-4o-mini", "1", "0", "1000", "500", "200", "0.000435"]
    assert rows[3].split() == ["total", "9", "4", "4000", "2000", "200", "0.022935"]
    assert len({len(row) for row in rows}) == 1  # right-aligned: every row ends in one column
    assert "(none)" in out and "nearest rank" in out


def test_decorated_function_nests_its_client_calls_and_lends_them_its_tag(spans_file, server):
    raw = openai.OpenAI(base_url=server.url, api_key="sk-test")
    client = aiguard.wrap(raw, provider="openai", retry=FAST)
    server.reply("gpt-4o", prompt_tokens=1000, completion_tokens=500)

    @aiguard.guard(tag="search", retry=FAST)
    def ask(question: str) -> str:
        content = [{"role": "user", "content": question}]
        reply = client.chat.completions.create(model="gpt-4o", messages=content)
        return reply.choices[0].message.content or ""

    ask("Where is Paris?")
    ask("Where is Rome?")
    summary = _summary(spans_file)
    assert summary["calls"]["total"] == 4 and summary["calls"]["nested"] == 2
    (function,) = summary["latency_ms"]["by_function"]
    assert function.endswith("<locals>.ask")
    assert summary["latency_ms"]["by_function"][function]["count"] == 2
    assert summary["latency_ms"]["by_model"]["gpt-4o"]["count"] == 2
    assert summary["by_tag"] == {"search": _usage(2, 0, (2000, 1000, 0), "0.015")}


# -- lines the report does not count -------------------------------------------------------------


def _foreign_span_line(tmp_path: Path) -> str:
    """A GenAI span of another instrumentation, in the same line format."""
    path = tmp_path / "foreign.jsonl"
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonlSpanExporter(path)))
    tracer = provider.get_tracer("opentelemetry.instrumentation.openai")
    with tracer.start_as_current_span("chat gpt-4o", attributes={"gen_ai.operation.name": "chat"}):
        pass
    provider.shutdown()
    return path.read_text("utf-8")


def test_garbage_and_foreign_spans_are_skipped_and_counted(spans_file, server, client, tmp_path):
    server.reply("gpt-4o", prompt_tokens=1000, completion_tokens=500)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    ours = spans_file.read_text("utf-8")
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(
        b"\n".join(
            [
                b"not json at all",
                b"",
                b"   ",
                b"[1, 2, 3]",
                b'{"hello": "world"}',
                b'{"span": {"name": "no ids"}}',
                b"\xff\xfe invalid utf-8",
                _foreign_span_line(tmp_path).encode(),
                ours.encode(),
                ours.splitlines()[0].encode(),  # a line appended twice
                b'{"truncated": ',
            ]
        )
    )
    summary = _summary(mixed)
    assert summary["skipped"] == {"invalid_lines": 6, "foreign_spans": 1, "duplicate_spans": 1}
    assert summary["calls"]["total"] == 1 and summary["attempts"]["total"] == 1
    assert summary["total"]["cost_usd"] == "0.0075"

    code, out, _ = _run(mixed, as_json=False)
    assert code == 0
    assert "(skipped 8: 6 not a JSON span, 1 not aiguard's, 1 repeated)" in out


def test_a_whole_otlp_export_request_on_a_line_is_read(spans_file, server, client, tmp_path):
    server.reply("gpt-4o", prompt_tokens=1000, completion_tokens=500)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    records = _lines(spans_file)
    request = {
        "resourceSpans": [
            {
                "resource": records[0]["resource"],
                "scopeSpans": [
                    {"scope": records[0]["scope"], "spans": [r["span"] for r in records]}
                ],
            }
        ]
    }
    collected = tmp_path / "collector.jsonl"
    collected.write_text(json.dumps(request) + "\n", "utf-8")
    summary = _summary(collected)
    assert summary["calls"]["total"] == 1
    assert summary["by_model"]["gpt-4o"] == _usage(1, 0, (1000, 500, 0), "0.0075")


def _guard_line(start_ns: int, duration_ms: int, model: str = "gpt-4o") -> str:
    span = {
        "traceId": f"{duration_ms:032x}",
        "spanId": f"{duration_ms:016x}",
        "parentSpanId": "",
        "name": f"chat {model}",
        "kind": 1,
        "startTimeUnixNano": str(start_ns),
        "endTimeUnixNano": str(start_ns + duration_ms * 1_000_000),
        "attributes": [
            {"key": "aiguard.operation", "value": {"stringValue": "chat"}},
            {"key": "aiguard.request.model", "value": {"stringValue": model}},
            {"key": "aiguard.retries", "value": {"intValue": 0}},  # a number: other writers
            {"key": "aiguard.outcome", "value": {"stringValue": "ok"}},
        ],
        "status": {"code": 0},
    }
    return json.dumps({"scope": {"name": "aiguard"}, "span": span})


@pytest.mark.parametrize(
    ("durations", "expected"),
    [
        (range(1, 101), (50, 95, 99)),
        (range(1, 11), (5, 10, 10)),
        ([7], (7, 7, 7)),
        ([30, 10, 20], (20, 30, 30)),
    ],
)
def test_latency_percentiles_are_nearest_rank(tmp_path, durations, expected):
    path = tmp_path / "spans.jsonl"
    start = 1_700_000_000_000_000_000
    path.write_text("".join(_guard_line(start, ms) + "\n" for ms in durations), "utf-8")
    latency = _summary(path)["latency_ms"]["all"]
    assert (latency["p50"], latency["p95"], latency["p99"]) == expected


# -- errors --------------------------------------------------------------------------------------


def test_missing_file_exits_2_with_a_message_on_stderr(tmp_path):
    code, out, err = _run(tmp_path / "nope.jsonl")
    assert (code, out) == (2, "")
    assert err == f"aiguard report: no such file: {tmp_path / 'nope.jsonl'}\n"


def test_directory_exits_2(tmp_path):
    code, out, err = _run(tmp_path)
    assert (code, out) == (2, "")
    assert "is a directory" in err and "Traceback" not in err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_exits_2(tmp_path):
    path = tmp_path / "secret.jsonl"
    path.write_text("{}\n")
    path.chmod(0)
    try:
        code, out, err = _run(path)
    finally:
        path.chmod(0o600)
    assert (code, out) == (2, "")
    assert "permission denied" in err


def test_permission_denied_exits_2_even_as_root(tmp_path, monkeypatch):
    def denied(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(_report_read, "open", denied, raising=False)
    code, out, err = _run(tmp_path / "spans.jsonl")
    assert (code, out) == (2, "")
    assert err == f"aiguard report: cannot read {tmp_path / 'spans.jsonl'}: permission denied\n"


def test_empty_file_exits_1_saying_there_are_no_aiguard_spans(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    code, out, err = _run(path, as_json=False)
    assert (code, out) == (1, "")
    assert err == f"aiguard report: no aiguard spans in {path}\n"


def test_a_file_of_foreign_spans_exits_1_and_says_what_it_skipped(tmp_path):
    path = tmp_path / "foreign-only.jsonl"
    path.write_text(_foreign_span_line(tmp_path) + "garbage\n", "utf-8")
    code, out, err = _run(path)
    assert (code, out) == (1, "")
    assert "no aiguard spans" in err and "1 not a JSON span, 1 not aiguard's" in err


def test_command_line_arguments(spans_file, server, client, capsys):
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    parser = argparse.ArgumentParser()
    _report.add_arguments(parser)
    assert _report.run(parser.parse_args([str(spans_file), "--json"])) == 0
    assert json.loads(capsys.readouterr().out)["calls"]["total"] == 1
    assert _report.run(parser.parse_args([str(spans_file)])) == 0
    assert "Guarded calls" in capsys.readouterr().out


# -- the exporter --------------------------------------------------------------------------------


def test_every_line_is_one_self_contained_otlp_json_span(spans_file, server, client):
    server.fail("gpt-4o", status=429, headers={"retry-after": "0"})
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    records = _lines(spans_file)
    assert [r["span"]["name"] for r in records] == ["chat gpt-4o"]  # one span per call
    for record in records:
        assert set(record) == {"resource", "scope", "span"}
        assert record["scope"] == {"name": "aiguard", "version": aiguard.__version__}
        assert {"key": "telemetry.sdk.language", "value": {"stringValue": "python"}} in record[
            "resource"
        ]["attributes"]
        span = record["span"]
        assert set(span) == {
            "traceId", "spanId", "parentSpanId", "name", "kind", "startTimeUnixNano",
            "endTimeUnixNano", "attributes", "events", "links", "status",
        }  # fmt: skip
        assert len(span["traceId"]) == 32 and set(span["traceId"]) <= HEX
        assert len(span["spanId"]) == 16 and set(span["spanId"]) <= HEX
        assert span["startTimeUnixNano"].isdigit() and span["endTimeUnixNano"].isdigit()
        assert int(span["startTimeUnixNano"]) <= int(span["endTimeUnixNano"])
        assert set(span["status"]) == {"code", "message"}

    (call,) = (r["span"] for r in records)
    assert call["parentSpanId"] == ""  # a root: the retried attempt is no span of its own
    assert call["kind"] == 3  # CLIENT
    assert call["status"] == {"code": 0, "message": ""}

    attrs = {a["key"]: a["value"] for a in call["attributes"]}
    assert attrs["gen_ai.request.model"] == {"stringValue": "gpt-4o"}
    assert attrs["aiguard.attempts"] == {"intValue": "2"}
    assert attrs["gen_ai.response.finish_reasons"] == {
        "arrayValue": {"values": [{"stringValue": "stop"}]}
    }
    assert isinstance(attrs["aiguard.cost.usd"]["doubleValue"], float)
    assert attrs["aiguard.fallback.used"] == {"boolValue": False}
    failed, retry = call["events"]
    assert failed["name"] == "aiguard.attempt.failed" and failed["timeUnixNano"].isdigit()
    assert {"key": "error.type", "value": {"stringValue": "openai.RateLimitError"}} in failed[
        "attributes"
    ]
    assert retry["name"] == "aiguard.retry" and retry["timeUnixNano"].isdigit()
    assert {"key": "aiguard.attempt", "value": {"intValue": "1"}} in retry["attributes"]


def _sdk_spans() -> Any:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("aiguard", "0.1.0")
    with tracer.start_as_current_span("outer") as outer:
        link = Link(outer.get_span_context(), {"why": "test"})
        with tracer.start_as_current_span("inner", kind=SpanKind.CLIENT, links=[link]) as inner:
            inner.set_attributes(
                {
                    "s": "ünïcode",
                    "i": -5,
                    "big": 2**62,
                    "f": 0.25,
                    "nan": float("nan"),
                    "inf": float("-inf"),
                    "b": True,
                    "ints": [1, 2],
                    "strs": ["a", "b"],
                    "empty": [],
                }
            )
            inner.add_event("ev", {"k": 1.5})
            inner.set_status(Status(StatusCode.ERROR, "Boom"))
    return memory.get_finished_spans()


def test_encoding_matches_the_official_otlp_protobuf_encoder(tmp_path):
    common = pytest.importorskip("opentelemetry.exporter.otlp.proto.common.trace_encoder")
    json_format = pytest.importorskip("google.protobuf.json_format")
    from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan

    spans = _sdk_spans()
    path = tmp_path / "spans.jsonl"
    exporter = JsonlSpanExporter(path)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    request = common.encode_spans(spans)
    official = [s for r in request.resource_spans for ss in r.scope_spans for s in ss.spans]

    def b64(hex_id: str) -> str:  # protobuf's own JSON writes bytes as base64, OTLP as hex
        return base64.b64encode(bytes.fromhex(hex_id)).decode()

    for record, expected in zip(_lines(path), official, strict=True):
        span = record["span"]
        for item in (span, *span["links"]):
            item["traceId"], item["spanId"] = b64(item["traceId"]), b64(item["spanId"])
        span["parentSpanId"] = b64(span["parentSpanId"])
        ours = json_format.ParseDict(span, ProtoSpan())
        expected.ClearField("flags")  # optional trace flags, not written
        for link in expected.links:
            link.ClearField("flags")
        assert ours == expected


def test_export_writes_a_valid_file_from_many_threads(tmp_path):
    path = tmp_path / "spans.jsonl"
    exporter = JsonlSpanExporter(path)
    spans = _sdk_spans()

    def write() -> None:
        for _ in range(50):
            assert exporter.export(spans) is SpanExportResult.SUCCESS

    threads = [threading.Thread(target=write) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    exporter.shutdown()
    records = _lines(path)
    assert len(records) == 8 * 50 * 2
    assert {r["span"]["name"] for r in records} == {"outer", "inner"}


def test_export_appends_to_an_existing_file(tmp_path):
    path = tmp_path / "spans.jsonl"
    path.write_text(_guard_line(1_700_000_000_000_000_000, 5) + "\n")
    exporter = JsonlSpanExporter(path)
    exporter.export(_sdk_spans())
    exporter.shutdown()
    assert len(_lines(path)) == 3


def test_export_after_shutdown_fails_without_raising(tmp_path):
    exporter = JsonlSpanExporter(tmp_path / "spans.jsonl")
    exporter.shutdown()
    assert exporter.export(_sdk_spans()) is SpanExportResult.FAILURE
    exporter.shutdown()  # twice is fine
    assert exporter.force_flush()


def test_unwritable_path_fails_without_raising_and_logs_once(tmp_path, caplog):
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a directory")
    exporter = JsonlSpanExporter(blocker / "x.jsonl")
    with caplog.at_level(logging.WARNING, logger="aiguard"):
        assert exporter.export(_sdk_spans()) is SpanExportResult.FAILURE
        assert exporter.export(_sdk_spans()) is SpanExportResult.FAILURE
    faults = [r for r in caplog.records if "x.jsonl" in r.getMessage()]
    assert len(faults) == 1
    exporter.shutdown()


def test_a_guarded_call_succeeds_when_its_span_file_cannot_be_written(server, client, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("")
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonlSpanExporter(blocker / "x.jsonl")))
    _configure(provider)
    reply = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert reply.choices[0].message.content


def test_after_a_failed_write_the_next_span_starts_on_a_new_line(tmp_path):
    path = tmp_path / "spans.jsonl"
    exporter = JsonlSpanExporter(path)
    spans = _sdk_spans()
    assert exporter.export(spans) is SpanExportResult.SUCCESS

    class Full(io.StringIO):
        def write(self, text: str) -> int:
            with path.open("a") as real:
                real.write(text[:10])  # part of a line, then the disk is full
            raise OSError(28, "No space left on device")

    real_file = exporter._file
    exporter._file = Full()
    assert exporter.export(spans) is SpanExportResult.FAILURE
    exporter._file = real_file
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    exporter.shutdown()
    lines = path.read_text("utf-8").splitlines()
    assert len(lines) == 5 and lines[2] == lines[0][:10]  # the fragment is a line of its own
    assert all(json.loads(line) for line in lines[:2] + lines[3:])
