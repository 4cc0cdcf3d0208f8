"""``aiguard report``'s tables, printed from the report's JSON document."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any, TextIO

from aiguard import _report_quality

PERCENTILES = (50, 95, 99)


def print_table(data: dict[str, Any], path: str, skipped_note: str, out: TextIO) -> None:
    """The report as tables, from its JSON document ``data``."""
    calls = data["calls"]
    print(f"aiguard report: {path}", file=out)
    print(
        f"{calls['total']} guarded calls, {data['attempts']['total']} inference attempts"
        f"{skipped_note}",
        file=out,
    )

    print("\nGuarded calls", file=out)
    rows: list[list[str]] = [["total", str(calls["total"])]]
    if calls["nested"]:
        rows.append(["  nested in another", str(calls["nested"])])
    rows += [["ok", str(calls["ok"])], ["errors", str(calls["errors"])]]
    rows += [[f"  {kind}", str(n)] for kind, n in calls["errors_by_type"].items()]
    rows += [
        ["abandoned streams", str(calls["abandoned"])],
        ["retries", str(calls["retries"])],
        ["fallbacks", str(calls["fallbacks"])],
        ["budget refusals", str(calls["budget_refusals"])],
        ["check refusals", str(calls["check_refusals"])],
        ["rate-limit refusals", str(calls["rate_limit_refusals"])],
        [
            "rate-limit waits",
            f"{calls['rate_limit_waits']} ({calls['rate_limit_wait_s']:g} s)",
        ],
    ]
    _table(out, None, rows)

    latency = data["latency_ms"]
    rows = [["all calls", *_latency_cells(latency["all"])]]
    rows += [[model, *_latency_cells(p)] for model, p in latency["by_model"].items()]
    rows += [[f"{name}()", *_latency_cells(p)] for name, p in latency["by_function"].items()]
    print("\nLatency of guarded calls (ms, nearest rank)", file=out)
    _table(out, ["", "calls", "p50", "p95", "p99"], rows)

    attempts = data["attempts"]
    print(f"\nInference attempts: {attempts['total']}, failed {attempts['errors']}", file=out)
    _table(out, None, [[f"  {kind}", str(n)] for kind, n in attempts["errors_by_type"].items()])

    headers = ["", "attempts", "errors", "input tok", "output tok", "cache read", "cost USD"]
    total = ["total", *_usage_cells(data["total"])]
    print("\nBy model", file=out)
    _table(out, headers, [[m, *_usage_cells(u)] for m, u in data["by_model"].items()] + [total])
    print("\nBy tag", file=out)
    _table(out, headers, [[t, *_usage_cells(u)] for t, u in data["by_tag"].items()] + [total])
    _report_quality.print_quality(data["quality"], out, _table)


def _latency_cells(p: dict[str, Any]) -> list[str]:
    return [str(p["count"])] + [
        "-" if p[f"p{n}"] is None else f"{p[f'p{n}']:.1f}" for n in PERCENTILES
    ]


def _usage_cells(usage: dict[str, Any]) -> list[str]:
    cost = usage["cost_usd"]
    return [
        str(usage["attempts"]),
        str(usage["errors"]),
        str(usage["input_tokens"]),
        str(usage["output_tokens"]),
        str(usage["cache_read_tokens"]),
        "-" if cost is None else f"{Decimal(cost):.6f}",
    ]


def _table(out: TextIO, headers: list[str] | None, rows: Iterable[list[str]]) -> None:
    """Columns aligned with two spaces between them: the first to the left, numbers right."""
    lines = ([headers] if headers else []) + list(rows)
    if not lines:
        return
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        cells = [line[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)
        ]
        print(("  " + "  ".join(cells)).rstrip(), file=out)
