"""``aiguard review QUEUE.jsonl``: list the calls waiting for a human, and record verdicts.

Without an item id it lists the pending items (oldest first: id, model, tag, why, scores, cost,
and the content when it was captured). With ``ID good`` or ``ID bad`` it records the verdict:
a line in the queue and a ``human_review`` evaluation on the call's trace, exported as this
process's telemetry is (``--jsonl SPANS.jsonl`` appends it to a span file ``aiguard report``
reads; else it goes over OTLP, logs included, to ``OTEL_EXPORTER_OTLP_ENDPOINT``).

Exit codes: 0 done, 1 no such pending item, 2 the queue cannot be read.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
from typing import Any, TextIO

from aiguard import _review
from aiguard._exporters import _grpc

VERDICTS = ("good", "bad")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("queue", help="the review queue, a JSONL file written by review=")
    parser.add_argument("item", nargs="?", help="the id of the item to judge")
    parser.add_argument("verdict", nargs="?", choices=VERDICTS, help="good or bad")
    parser.add_argument("--score", type=float, help="the score to record (default 1 / 0)")
    parser.add_argument("--explanation", help="why: recorded with the verdict")
    parser.add_argument("--reviewer", help="who judged (default: $USER)")
    parser.add_argument("--jsonl", metavar="PATH", help="append the feedback to this span file")
    parser.add_argument("--json", action="store_true", dest="as_json", help="list as JSON")


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        if args.item is None:
            return _list(args.queue, args.as_json, out)
        if args.verdict is None:
            print("aiguard review: give the verdict after the id: good or bad", file=err)
            return 2
        return _judge(args, out, err)
    except OSError as exc:
        print(f"aiguard review: cannot read {args.queue}: {exc.strerror or exc}", file=err)
        return 2
    except ImportError as exc:  # the OTLP exporter is not installed: say which extra
        print(f"aiguard review: {exc}", file=err)
        return 2


def _list(path: str, as_json: bool, out: TextIO) -> int:
    items = _review.pending(path)
    if as_json:
        json.dump(items, out, indent=2, ensure_ascii=False)
        out.write("\n")
        return 0
    if not items:
        print(f"nothing to review in {path}", file=out)
        return 0
    print(f"{len(items)} call(s) to review in {path}:", file=out)
    for item in items:
        print(_line(item), file=out)
        for key in ("messages", "answer"):
            if key in item:
                print(f"    {key}: {json.dumps(item[key], ensure_ascii=False)[:400]}", file=out)
    print("judge one with: aiguard review QUEUE ID good|bad [--explanation TEXT]", file=out)
    return 0


def _line(item: dict[str, Any]) -> str:
    scores = ", ".join(f"{k}={v}" for k, v in (item.get("scores") or {}).items()) or "-"
    cost = item.get("cost_usd")
    shown_cost = f"${cost:.6f}" if isinstance(cost, int | float) else "-"
    why = ", ".join(item.get("reasons") or [])
    return (
        f"  {item.get('id')}  {item.get('created', '')}  model={item.get('model') or '-'}  "
        f"tag={item.get('tag') or '-'}  why: {why}  scores: {scores}  cost: {shown_cost}"
    )


def _judge(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    import aiguard

    logs = None
    if args.jsonl:
        aiguard.configure(exporter=f"jsonl:{args.jsonl}")
    elif os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        aiguard.configure(exporter="otlp")
        logs = _otlp_logs()
    else:
        print(
            "aiguard review: the verdict goes to the queue only: give --jsonl SPANS.jsonl or set "
            "OTEL_EXPORTER_OTLP_ENDPOINT to put it on the call's trace",
            file=err,
        )
    try:
        item = _review.verdict(
            args.queue,
            args.item,
            args.verdict == "good",
            args.score,
            args.explanation,
            args.reviewer,
        )
    except LookupError as exc:
        print(f"aiguard review: {exc.args[0]}", file=err)
        return 1
    finally:
        aiguard.shutdown()
        if logs is not None:
            logs.shutdown()
    print(f"recorded {args.verdict} for {item['id']} (model {item.get('model')})", file=out)
    return 0


def _otlp_logs() -> Any:
    """An OTLP logs pipeline for this process: the verdict is a log event (the application's
    own pipeline does this job in a served app)."""
    from opentelemetry import _logs
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    protocol = "grpc" if _grpc("LOGS") else "http"
    module = importlib.import_module(f"opentelemetry.exporter.otlp.proto.{protocol}._log_exporter")
    provider = LoggerProvider()
    provider.add_log_record_processor(BatchLogRecordProcessor(module.OTLPLogExporter()))
    _logs.set_logger_provider(provider)
    return provider
