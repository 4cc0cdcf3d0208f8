"""Small inline-SVG charts for the HTML report: horizontal bars, columns over time, lines, and a
latency histogram. No JavaScript and no network: each chart is one ``<svg>`` element sized by its
``viewBox``, so the page's CSS scales it to the column it sits in.

Every string that comes from data (a model name, a tag) is escaped here; numbers are formatted
by the caller's ``fmt``. Each drawn value carries its exact number in ``data-value`` and a
``<title>`` (the browser's tooltip), so a test can read back what a chart shows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

# Okabe-Ito: told apart by people with the common colour-vision deficiencies.
PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#CC79A7",
    "#56B4E9",
    "#F0E442",
    "#666666",
)
WIDTH = 640
_LABEL_CHARS = 26  # longer labels are cut (the whole name stays in the tooltip)
_FONT = 'font-family="system-ui, sans-serif" font-size="12"'
_AXIS = "#888888"
_GRID = "#e4e4e4"

Fmt = Callable[[float], str]


@dataclass(frozen=True)
class Series:
    """One named row of values, one per x position (``None``: no value there)."""

    name: str
    values: Sequence[float | None]
    exact: Sequence[str] | None = None  # the values as the report writes them, for data-value


def esc(text: object) -> str:
    """``text`` safe in an element and in a double- or single-quoted attribute."""
    return escape(str(text), quote=True)


def short(label: str, limit: int = _LABEL_CHARS) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "\u2026"


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 4, 6 or 8 times a power of ten at or above ``value`` (1 for 0): its
    quarters, the grid lines, are round too."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 4.0, 6.0, 8.0):
        if value <= step * power * (1 + 1e-12):
            return step * power
    return 10.0 * power


def count_ceiling(value: float) -> float:
    """A top for a chart of counts whose four grid steps are whole numbers (4 for 0)."""
    power = 1
    while True:
        for k in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8):
            step = k * power
            if step == int(step) and step * 4 >= value:
                return float(step * 4)
        power *= 10


def _svg(height: int, body: list[str], label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'role="img" aria-label="{esc(label)}" {_FONT}>' + "".join(body) + "</svg>"
    )


def _text(x: float, y: float, text: str, anchor: str = "start", extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}>{esc(text)}</text>'


def _title(text: str) -> str:
    return f"<title>{esc(text)}</title>"


def empty(label: str, message: str = "nothing to draw") -> str:
    """A small placeholder chart saying there is nothing to draw."""
    return _svg(40, [_text(WIDTH / 2, 24, message, "middle", f' fill="{_AXIS}"')], label)


def hbars(rows: Sequence[tuple[str, float, str]], fmt: Fmt, label: str) -> str:
    """One horizontal bar per ``(name, value, exact)`` row, its value written at its end."""
    if not rows:
        return empty(label)
    top = max((value for _, value, _ in rows), default=0.0) or 1.0
    left, right, bar, gap = 190, 90, 18, 8
    span = WIDTH - left - right
    body: list[str] = []
    for i, (name, value, exact) in enumerate(rows):
        y = 8 + i * (bar + gap)
        width = max(0.0, value) / top * span
        body.append(_text(left - 8, y + bar * 0.72, short(name), "end"))
        body.append(
            f'<rect class="bar" x="{left}" y="{y}" width="{width:.1f}" height="{bar}" '
            f'fill="{colour(i)}" rx="2" data-value="{esc(exact)}">'
            f"{_title(f'{name}: {fmt(value)}')}</rect>"
        )
        body.append(_text(left + width + 6, y + bar * 0.72, fmt(value)))
    return _svg(16 + len(rows) * (bar + gap), body, label)


@dataclass(frozen=True)
class _Frame:
    """The plot area of a chart over x positions, and its y scale."""

    count: int
    top: float
    left: int = 64
    right: int = 16
    y0: int = 14
    height: int = 170

    @property
    def step(self) -> float:
        return (WIDTH - self.left - self.right) / max(1, self.count)

    def x(self, index: float) -> float:
        return self.left + self.step * index

    def y(self, value: float) -> float:
        return self.y0 + self.height * (1 - max(0.0, value) / self.top)

    @property
    def bottom(self) -> float:
        return self.y0 + self.height


def _axes(frame: _Frame, labels: Sequence[str], fmt: Fmt, edges: bool = False) -> list[str]:
    """Horizontal grid lines with their values, and x labels (thinned to fit) under the middle
    of each position, or (``edges``) under its left edge."""
    body = []
    for i in range(5):
        value = frame.top * i / 4
        y = frame.y(value)
        body.append(
            f'<line x1="{frame.left}" x2="{WIDTH - frame.right}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{_GRID if i else _AXIS}"/>'
        )
        body.append(_text(frame.left - 6, y + 4, fmt(value), "end", f' fill="{_AXIS}"'))
    every = max(1, math.ceil(len(labels) / 8))  # at most about 8 labels under the axis
    for i, text in enumerate(labels):
        if i % every == 0:
            x = frame.x(i if edges else i + 0.5)
            body.append(_text(x, frame.bottom + 16, text, "middle", f' fill="{_AXIS}"'))
    return body


def _legend(names: Sequence[str], y: float) -> tuple[list[str], float]:
    """Colour keys in rows under the chart; the y below them."""
    body: list[str] = []
    x = 64.0
    for i, name in enumerate(names):
        text = short(name, 22)
        width = 22 + 7 * len(text)
        if x + width > WIDTH - 8 and x > 64:
            x, y = 64.0, y + 18
        body.append(
            f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="12" height="12" fill="{colour(i)}"/>'
        )
        body.append(f'<text x="{x + 16:.1f}" y="{y + 1:.1f}">{_title(name)}{esc(text)}</text>')
        x += width + 12
    return body, y + 14


def columns(
    labels: Sequence[str], series: Sequence[Series], fmt: Fmt, label: str, whole: bool = False
) -> str:
    """Columns over ``labels`` (time windows), each stacked from ``series``, with a legend
    (``whole``: the values are counts, the grid steps whole numbers)."""
    if not labels or not series:
        return empty(label)
    totals = [sum(s.values[i] or 0.0 for s in series) for i in range(len(labels))]
    top = count_ceiling(max(totals)) if whole else nice_ceiling(max(totals))
    frame = _Frame(len(labels), top)
    body = _axes(frame, labels, fmt)
    width = frame.step * 0.72
    for i in range(len(labels)):
        base = 0.0
        for k, one in enumerate(series):
            value = one.values[i] or 0.0
            if value <= 0:
                continue
            y_top, y_base = frame.y(base + value), frame.y(base)
            exact = one.exact[i] if one.exact is not None else repr(value)
            body.append(
                f'<rect class="bar" x="{frame.x(i) + frame.step * 0.14:.1f}" y="{y_top:.1f}" '
                f'width="{width:.1f}" height="{y_base - y_top:.1f}" fill="{colour(k)}" '
                f'data-series="{esc(one.name)}" data-index="{i}" data-value="{esc(exact)}">'
                f"{_title(f'{one.name}, {labels[i]}: {fmt(value)}')}</rect>"
            )
            base += value
    legend, height = _legend([s.name for s in series], frame.bottom + 40)
    return _svg(int(height), body + legend, label)


def lines(labels: Sequence[str], series: Sequence[Series], fmt: Fmt, label: str) -> str:
    """One line per series over ``labels``, a dot at each value (gaps where a value is None)."""
    found = [v for s in series for v in s.values if v is not None]
    if not labels or not found:
        return empty(label)
    frame = _Frame(len(labels), nice_ceiling(max(found)))
    body = _axes(frame, labels, fmt)
    for k, one in enumerate(series):
        points = [
            (frame.x(i + 0.5), frame.y(v), i, v) for i, v in enumerate(one.values) if v is not None
        ]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in points)
        body.append(
            f'<polyline points="{path}" fill="none" stroke="{colour(k)}" stroke-width="2"/>'
        )
        for x, y, i, v in points:
            body.append(
                f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour(k)}" '
                f'data-series="{esc(one.name)}" data-index="{i}" data-value="{v!r}">'
                f"{_title(f'{one.name}, {labels[i]}: {fmt(v)}')}</circle>"
            )
    legend, height = _legend([s.name for s in series], frame.bottom + 40)
    return _svg(int(height), body + legend, label)


def latency_bins(durations_ms: Sequence[float]) -> list[tuple[float, float, int]]:
    """``(low, high, count)`` bins on a 1-2-5 scale covering the durations (low inclusive)."""
    if not durations_ms:
        return []
    fastest, slowest = max(min(durations_ms), 0.001), max(durations_ms)
    power = 10.0 ** math.floor(math.log10(fastest))
    edges = [power]  # at or below the fastest
    while edges[-1] <= slowest:
        for step in (2, 5, 10):
            edge = step * power
            if edge <= fastest:
                edges = [edge]
            elif edges[-1] <= slowest:
                edges.append(edge)
        power *= 10
    counts = [0] * (len(edges) - 1)
    for value in durations_ms:
        index = next((i for i in range(len(counts)) if value < edges[i + 1]), len(counts) - 1)
        counts[index] += 1
    return [(edges[i], edges[i + 1], n) for i, n in enumerate(counts)]


def histogram(
    durations_ms: Sequence[float], marks: Sequence[tuple[str, float]], fmt: Fmt, label: str
) -> str:
    """A latency histogram on 1-2-5 bins, with a dashed line at each ``(name, ms)`` mark (its
    value in the line's tooltip)."""
    bins = latency_bins(durations_ms)
    if not bins:
        return empty(label)
    frame = _Frame(len(bins), count_ceiling(max(n for _, _, n in bins)), height=130)
    body = _axes(frame, [fmt(a) for a, _, _ in bins], lambda v: f"{v:g}", edges=True)
    for i, (low, high, count) in enumerate(bins):
        y = frame.y(count)
        body.append(
            f'<rect class="bar" x="{frame.x(i) + 1:.1f}" y="{y:.1f}" '
            f'width="{frame.step - 2:.1f}" height="{frame.bottom - y:.1f}" fill="{PALETTE[0]}" '
            f'data-index="{i}" data-value="{count}">'
            f"{_title(f'{fmt(low)} to {fmt(high)} ms: {count} calls')}</rect>"
        )
    for k, (name, ms) in enumerate(marks):
        x = _mark_x(frame, bins, ms)
        body.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{frame.y0 - 4}" y2="{frame.bottom}" '
            f'stroke="{PALETTE[3]}" stroke-dasharray="4 3">{_title(f"{name}: {fmt(ms)} ms")}</line>'
        )
        body.append(
            _text(x + 3, frame.y0 + 6 + 12 * k, name, extra=f' fill="{PALETTE[3]}" font-size="11"')
        )
    return _svg(int(frame.bottom + 24), body, label)


def _mark_x(frame: _Frame, bins: Sequence[tuple[float, float, int]], ms: float) -> float:
    """Where ``ms`` falls on the histogram's x axis (log-interpolated inside its bin)."""
    for i, (low, high, _) in enumerate(bins):
        if ms < high or i == len(bins) - 1:
            if ms <= low:
                return frame.x(i)
            share = math.log(min(ms, high) / low) / math.log(high / low)
            return frame.x(i + share)
    return frame.x(len(bins))  # pragma: no cover
