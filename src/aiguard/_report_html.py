"""``aiguard report FILE.jsonl --html report.html``: the report as one self-contained page.

The page has no script, no stylesheet or font from the network: inline CSS and inline SVG charts
(:mod:`aiguard._svg`), readable offline and attachable to a ticket. Its numbers come from the same
computation as ``aiguard report --json``: the whole file's :class:`~aiguard._report.Summary`,
and one summary per time window, each made by the same code from the calls that started in it
(so the windows add up to the whole). Every number in a table carries its place in the JSON
document (``data-json``); every string from the file is escaped.

Sections: calls at a glance; latency per model (percentiles and a histogram); cost by model and
by tag over time; error, retry and fallback rates over time; refusals by kind and failed attempts
by error type; quality scores when the JSON has them (``quality``), shown as given.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TextIO

from aiguard import _report, _report_quality, _svg
from aiguard._report_read import ReportError
from aiguard._svg import Series, esc

# Window widths in seconds, the smallest giving at most _MOST_WINDOWS windows is used.
_STEPS_S: tuple[float, ...] = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900)
_STEPS_S += (1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800, 2592000)
_MOST_WINDOWS = 24
_TOP_SERIES = 7  # more models or tags than this: the rest are drawn as one "other"
QUALITY_KEY = "quality"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--html PATH`` on ``report``'s parser (the command line calls :func:`write` with it)."""
    parser.add_argument(
        "--html", metavar="PATH", help="write the report as one self-contained HTML page to PATH"
    )


class Window:
    """The calls that started in ``[start, end)`` (ns since the epoch), summed as in --json."""

    def __init__(self, start: int, end: int, data: dict[str, Any]) -> None:
        self.start, self.end, self.data = start, end, data


def write(path: str, html_path: str, err: TextIO) -> int:
    """Write the HTML report of ``path`` to ``html_path``; the exit code as :func:`report`'s."""
    try:
        summary, windows = summarise_windows(path)
    except ReportError as exc:
        print(f"aiguard report: {exc}", file=err)
        return 2
    if summary.calls == 0 and summary.attempts == 0:
        print(f"aiguard report: no aiguard spans in {path}", file=err)
        return 1
    page = render(summary.as_json(), summary.latency, _windows(windows))
    try:
        with open(html_path, "w", encoding="utf-8") as out:
            out.write(page)
    except OSError as exc:
        print(f"aiguard report: cannot write {html_path}: {exc.strerror or exc}", file=err)
        return 2
    return 0


def summarise_windows(
    path: str, window_s: float = 3600.0
) -> tuple[_report.Summary, list[tuple[int, int, _report.Summary]]]:
    """The whole file's summary, and one per time window of the calls that started in it (a
    span without a start time counts in the first). Raises :class:`~aiguard._report.ReportError`."""
    skipped, spans = _report.collect(path)
    whole = _report.Summary(path, skipped)
    _report.add_up(whole, spans.values(), spans)
    whole.quality = _report_quality.summarise(path, spans, window_s)
    starts = [span.start for span in spans.values() if span.start > 0]
    if not starts:
        return whole, []
    width = window_ns(min(starts), max(starts))
    first = min(starts) // width * width
    members: list[list[Any]] = [[] for _ in range((max(starts) - first) // width + 1)]
    for span in spans.values():
        members[max(0, span.start - first) // width if span.start > 0 else 0].append(span)
    windows = []
    for index, some in enumerate(members):
        summary = _report.Summary(path, type(skipped)())
        _report.add_up(summary, some, spans)
        windows.append((first + index * width, first + (index + 1) * width, summary))
    return whole, windows


def window_ns(first: int, last: int) -> int:
    """The window width for calls from ``first`` to ``last`` (ns): a round number of seconds."""
    seconds = max(0, last - first) / 1e9
    for step in _STEPS_S:
        if seconds / step < _MOST_WINDOWS:
            return int(step * 1e9)
    return int(_STEPS_S[-1] * 1e9)


def _windows(found: Sequence[tuple[int, int, _report.Summary]]) -> list[Window]:
    return [Window(start, end, summary.as_json()) for start, end, summary in found]


def render(
    data: dict[str, Any], latency_ns: dict[str, list[int]], windows: Sequence[Window]
) -> str:
    """The page for ``data`` (the --json document), the calls' durations by model (ns; "" for
    all) and the time windows."""
    labels = _labels(windows)
    parts = [
        _head(data, windows),
        _overview(data),
        _latency(data, latency_ns),
        _cost(data, windows, labels),
        _reliability(windows, labels),
        _refusals(data, windows, labels),
        _quality(data.get(QUALITY_KEY)),
        _skipped(data),
        "</main></body></html>\n",
    ]
    return "".join(parts)


# -- formatting ----------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _usd(value: float) -> str:
    if value >= 1:
        return f"${value:,.2f}"
    return "$" + (f"{value:.6f}".rstrip("0").rstrip(".") or "0")


def _count(value: float) -> str:
    return f"{value:g}"


def _percent(value: float) -> str:
    return f"{value:.3g}%"


def _show(value: Any) -> str:
    """A JSON value as a table shows it: costs as dollars with every decimal, ints grouped."""
    if value is None:
        return "-"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _cell(path: Sequence[str], value: Any, cost: bool = False) -> str:
    text = _show(value)
    if cost and value is not None:
        text = "$" + text
    return f'<td class="num" data-json="{esc(json.dumps(list(path)))}">{esc(text)}</td>'


def _table(headers: Sequence[str], rows: Iterator[str] | list[str]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _figure(title: str, svg: str, note: str = "") -> str:
    caption = f"<figcaption>{esc(title)}</figcaption>"
    small = f'<p class="note">{esc(note)}</p>' if note else ""
    return f"<figure>{caption}{svg}{small}</figure>"


def _labels(windows: Sequence[Window]) -> list[str]:
    if not windows:
        return []
    width_s = (windows[0].end - windows[0].start) / 1e9
    days = {_time(w.start).date() for w in windows}
    if width_s >= 86400:
        pattern = "%m-%d"
    elif len(days) > 1:
        pattern = "%m-%d %H:%M"
    else:
        pattern = "%H:%M" if width_s >= 60 else "%H:%M:%S"
    labels = [_time(w.start).strftime(pattern) for w in windows]
    if width_s < 1:
        labels = [
            f"{_time(w.start).strftime('%M:%S')}.{_time(w.start).microsecond // 100000}"
            for w in windows
        ]
    return labels


def _time(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, UTC)


# -- sections ------------------------------------------------------------------------------------

_CSS = """
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d1d1f;
background:#f6f7f9}
main{max-width:1120px;margin:0 auto;padding:24px 20px 48px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:32px 0 12px}
.meta{color:#666;margin:0;overflow-wrap:anywhere}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(130px,1fr));gap:12px;
margin-top:20px}
.card{background:#fff;border:1px solid #e2e4e8;border-radius:8px;padding:10px 12px}
.card b{display:block;font-size:clamp(15px,1.6vw,20px);font-variant-numeric:tabular-nums;
overflow-wrap:anywhere}
.card span{color:#666;font-size:12px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,460px),1fr));
gap:16px}
figure{margin:0;background:#fff;border:1px solid #e2e4e8;border-radius:8px;padding:12px;
min-width:0}
figcaption{font-weight:600;margin-bottom:6px;overflow-wrap:anywhere}
svg{display:block;width:100%;height:auto}
.note{color:#666;font-size:12px;margin:6px 0 0}
table{width:100%;border-collapse:collapse;background:#fff;border:1px solid #e2e4e8;
margin-top:12px;table-layout:auto}
th,td{padding:6px 10px;border-bottom:1px solid #eceef1;text-align:left;
overflow-wrap:anywhere;word-break:break-word}
th{background:#fafbfc;font-weight:600;font-size:12px;color:#555}
td.num,th+th{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
@media (max-width:640px){main{padding:16px 8px}th,td{padding:4px 3px;font-size:11px}
th+th{white-space:normal;overflow-wrap:normal;word-break:normal}}
"""


def _head(data: dict[str, Any], windows: Sequence[Window]) -> str:
    span = ""
    if windows:
        first, last = _time(windows[0].start), _time(windows[-1].end)
        span = f"{first:%Y-%m-%d %H:%M:%S} to {last:%Y-%m-%d %H:%M:%S} UTC"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>aiguard report: {esc(data['file'])}</title><style>{_CSS}</style></head>"
        f'<body><main><h1>aiguard report</h1><p class="meta">{esc(data["file"])}'
        f"{esc(' · ' + span) if span else ''}</p>"
    )


def _overview(data: dict[str, Any]) -> str:
    calls, total = data["calls"], data["total"]
    p95 = data["latency_ms"]["all"]["p95"]
    cards = [
        (("calls", "total"), calls["total"], "guarded calls"),
        (("calls", "ok"), calls["ok"], "ok"),
        (("calls", "errors"), calls["errors"], "errors"),
        (("calls", "retries"), calls["retries"], "retries"),
        (("calls", "fallbacks"), calls["fallbacks"], "fallbacks"),
        (("latency_ms", "all", "p95"), p95, "p95 latency (ms)"),
        (("total", "cost_usd"), total["cost_usd"], "cost"),
    ]
    body = "".join(
        f'<div class="card"><b data-json="{esc(json.dumps(list(path)))}">'
        f"{esc(('$' if what == 'cost' and value is not None else '') + _show(value))}"
        f"</b><span>{esc(what)}</span></div>"
        for path, value, what in cards
    )
    return f'<div class="cards">{body}</div>'


def _latency(data: dict[str, Any], latency_ns: dict[str, list[int]]) -> str:
    latency = data["latency_ms"]
    rows: list[tuple[str, tuple[str, ...], Any, str]] = [
        ("all", ("latency_ms", "all"), latency["all"], "all calls")
    ]
    rows += [(m, ("latency_ms", "by_model", m), p, m) for m, p in latency["by_model"].items()]
    rows += [
        (f, ("latency_ms", "by_function", f), p, f"{f}()")
        for f, p in latency["by_function"].items()
    ]
    table = _table(
        ["", "calls", "p50 ms", "p95 ms", "p99 ms"],
        [
            f"<tr><td>{esc(name)}</td>"
            + "".join(_cell((*path, key), p[key]) for key in ("count", "p50", "p95", "p99"))
            + "</tr>"
            for _, path, p, name in rows
        ],
    )
    figures = []
    for model, p in latency["by_model"].items():
        durations = [ns / 1e6 for ns in latency_ns.get(model, [])]
        marks = [(f"p{n}", p[f"p{n}"]) for n in (50, 95, 99) if p[f"p{n}"] is not None]
        svg = _svg.histogram(durations, marks, _ms, f"latency of {model}")
        figures.append(_figure(f"{model}: calls by latency (ms, log scale)", svg))
    return (
        "<h2>Latency of guarded calls</h2>"
        f'<div class="grid">{"".join(figures)}</div>{table}'
        '<p class="note">Percentiles by nearest rank: always a duration that was observed.</p>'
    )


def _top(names: Sequence[str], totals: dict[str, float]) -> list[str]:
    ranked = sorted(names, key=lambda n: -totals.get(n, 0.0))
    return ranked[:_TOP_SERIES]


def _cost_series(windows: Sequence[Window], key: str) -> list[Series]:
    """Cost per window of each model or tag (``key``: by_model or by_tag), the top ones named."""
    totals: dict[str, Decimal] = {}
    for window in windows:
        for name, usage in window.data[key].items():
            if usage["cost_usd"] is not None:
                totals[name] = totals.get(name, Decimal(0)) + Decimal(usage["cost_usd"])
    named = _top(list(totals), {n: float(v) for n, v in totals.items()})
    series = []
    for name in named:
        exact = [_exact_cost(w.data[key].get(name)) for w in windows]
        series.append(Series(name, [float(e) for e in exact], [str(e) for e in exact]))
    rest = [n for n in totals if n not in named]
    if rest:
        exact = [sum((_exact_cost(w.data[key].get(n)) for n in rest), Decimal(0)) for w in windows]
        series.append(
            Series(f"{len(rest)} others", [float(e) for e in exact], [str(e) for e in exact])
        )
    return series


def _exact_cost(usage: dict[str, Any] | None) -> Decimal:
    return Decimal(usage["cost_usd"]) if usage and usage["cost_usd"] is not None else Decimal(0)


def _usage_table(data: dict[str, Any], key: str, label: str) -> str:
    columns = ("attempts", "errors", "input_tokens", "output_tokens", "cache_read_tokens")
    headers = [label, "attempts", "errors", "input tok", "output tok", "cache read", "cost USD"]
    rows: list[tuple[str, tuple[str, ...], Any]] = [
        (name, (key, name), usage) for name, usage in data[key].items()
    ]
    rows.append(("total", ("total",), data["total"]))
    return _table(
        headers,
        [
            f"<tr><td>{esc(name)}</td>"
            + "".join(_cell((*path, c), usage[c]) for c in columns)
            + _cell((*path, "cost_usd"), usage["cost_usd"], cost=True)
            + "</tr>"
            for name, path, usage in rows
        ],
    )


def _cost(data: dict[str, Any], windows: Sequence[Window], labels: list[str]) -> str:
    by_model = _svg.columns(labels, _cost_series(windows, "by_model"), _usd, "cost by model")
    by_tag = _svg.columns(labels, _cost_series(windows, "by_tag"), _usd, "cost by tag")
    return (
        "<h2>Cost</h2>"
        f'<div class="grid">{_figure("Cost by model over time (USD)", by_model)}'
        f"{_figure('Cost by tag over time (USD)', by_tag)}</div>"
        f"{_usage_table(data, 'by_model', 'model')}{_usage_table(data, 'by_tag', 'tag')}"
    )


def _rate(part: int, whole: int) -> float | None:
    return None if whole == 0 else 100.0 * part / whole


def _reliability(windows: Sequence[Window], labels: list[str]) -> str:
    calls = [w.data["calls"] for w in windows]
    outcomes = [
        Series("ok", [c["ok"] for c in calls]),
        Series("errors", [c["errors"] for c in calls]),
        Series("abandoned streams", [c["abandoned"] for c in calls]),
    ]
    rates = [
        Series("errors %", [_rate(c["errors"], c["total"]) for c in calls]),
        Series("retries per 100 calls", [_rate(c["retries"], c["total"]) for c in calls]),
        Series("fallbacks %", [_rate(c["fallbacks"], c["total"]) for c in calls]),
    ]
    return (
        '<h2>Errors, retries and fallbacks</h2><div class="grid">'
        + _figure(
            "Calls over time", _svg.columns(labels, outcomes, _count, "calls over time", whole=True)
        )
        + _figure(
            "Rates over time",
            _svg.lines(labels, rates, _percent, "error, retry and fallback rates"),
            "No point where a window has no call.",
        )
        + "</div>"
    )


def _refusals(data: dict[str, Any], windows: Sequence[Window], labels: list[str]) -> str:
    calls, attempts = data["calls"], data["attempts"]
    kinds = [
        ("budget", calls["budget_refusals"], str(calls["budget_refusals"])),
        ("check", calls["check_refusals"], str(calls["check_refusals"])),
    ]
    over_time = [
        Series("budget", [w.data["calls"]["budget_refusals"] for w in windows]),
        Series("check", [w.data["calls"]["check_refusals"] for w in windows]),
    ]
    failed = [(kind, n, str(n)) for kind, n in attempts["errors_by_type"].items()]
    errors = [(kind, n, str(n)) for kind, n in calls["errors_by_type"].items()]
    return (
        '<h2>Refusals and errors</h2><div class="grid">'
        + _figure(
            "Refusals by kind",
            _svg.hbars(kinds, _count, "refusals by kind"),
            "Refused before anything was sent: a budget that could be overspent, a check.",
        )
        + _figure(
            "Refusals over time", _svg.columns(labels, over_time, _count, "refusals", whole=True)
        )
        + _figure("Failed calls by error type", _svg.hbars(errors, _count, "failed calls"))
        + _figure(
            "Failed attempts by error type",
            _svg.hbars(failed, _count, "failed attempts"),
            "Attempts a retry or a fallback recovered from count here too.",
        )
        + "</div>"
    )


def _quality(quality: Any) -> str:
    """Quality numbers as the JSON gives them (their shape is the evaluations' own): nested
    objects as tables, numbers in the ``mean`` column as bars."""

    if not quality or (isinstance(quality, dict) and not quality.get("results", True)):
        return ""  # no evaluation recorded
    return "<h2>Quality</h2>" + _any_value(quality, (QUALITY_KEY,), 0)


def _any_value(value: Any, path: tuple[str, ...], depth: int) -> str:
    if isinstance(value, dict) and value and depth < 4:
        if all(
            isinstance(v, dict) and v and all(_scalar(x) for x in v.values())
            for v in value.values()
        ):
            return _dict_table(value, path)
        parts = [
            f"<h3>{esc(key)}</h3>{_any_value(item, (*path, str(key)), depth + 1)}"
            if isinstance(item, dict | list)
            else f'<p>{esc(key)}: <b data-json="{esc(json.dumps([*path, str(key)]))}">'
            f"{esc(_show(item))}</b></p>"
            for key, item in value.items()
        ]
        return "".join(parts)
    text = json.dumps(value, indent=1, default=str)
    return f"<pre>{esc(text[:4000])}</pre>"


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _dict_table(rows: dict[str, dict[str, Any]], path: tuple[str, ...]) -> str:
    columns: list[str] = []
    for row in rows.values():
        columns += [c for c in row if c not in columns]
    table = _table(
        ["", *columns],
        [
            f"<tr><td>{esc(name)}</td>"
            + "".join(_cell((*path, str(name), c), row.get(c)) for c in columns)
            + "</tr>"
            for name, row in rows.items()
        ],
    )
    mean = next((c for c in columns if "mean" in c), None)
    if mean is None:
        return table
    bars = [
        (str(name), float(row[mean]), str(row[mean]))
        for name, row in rows.items()
        if isinstance(row.get(mean), int | float) and math.isfinite(row[mean])
    ]
    return _figure(f"{path[-1]}: {mean}", _svg.hbars(bars, _count, mean)) + table


def _skipped(data: dict[str, Any]) -> str:
    skipped = data["skipped"]
    total = sum(skipped.values())
    if not total:
        return ""
    what = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in skipped.items() if n)
    return f'<p class="note">Skipped {total} lines or spans: {esc(what)}.</p>'
