"""``aiguard report --html``: one self-contained page whose numbers are ``--json``'s, drawn in
inline SVG, escaped, and rendered in a real headless Chromium (not blank, nothing overflowing)."""

from __future__ import annotations

import html
import io
import itertools
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import openai
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

import aiguard
from aiguard import _cli, _config, _report, _report_html, _svg, checks
from aiguard._jsonl import JsonlSpanExporter
from aiguard.testing import MockServer

MESSAGES: Any = [{"role": "user", "content": "What is the capital of France?"}]
FAST = aiguard.Retry(attempts=3, wait_initial=0.001, wait_max=0.01, wait_jitter=0)
EVIL = "<script>alert('x')</script>&"
LONG = "a-model-name-much-longer-than-any-column-" * 3  # no space to break at


@pytest.fixture(autouse=True)
def _reset_config() -> Iterator[None]:
    yield
    _config.reset()


def _spread(raw: Path, out: Path, every_s: int) -> None:
    """Copy a span file moving each trace ``every_s`` seconds after the one before (the calls'
    own durations kept): a day of traffic from a test that takes a second."""
    shift: dict[str, int] = {}
    with out.open("w", encoding="utf-8") as file:
        for line in raw.read_text("utf-8").splitlines():
            record = json.loads(line)
            span = record["span"]
            offset = shift.setdefault(span["traceId"], len(shift) * every_s * 10**9)
            for key in ("startTimeUnixNano", "endTimeUnixNano"):
                span[key] = str(int(span[key]) + offset)
            for event in span.get("events", []):
                event["timeUnixNano"] = str(int(event["timeUnixNano"]) + offset)
            file.write(json.dumps(record) + "\n")


def _calls(server: MockServer) -> None:
    """Real guarded calls: answered, retried, fallen back, refused by a budget and a check,
    streamed, under three tags, one of them and one model named to break a careless page."""
    server.reply("gpt-4o", prompt_tokens=1000, completion_tokens=500)
    server.reply("gpt-4o-mini", prompt_tokens=1000, completion_tokens=400, cached_tokens=200)
    raw = openai.OpenAI(base_url=server.url, api_key="sk-test")
    client = aiguard.wrap(raw, provider="openai", retry=FAST, fallback=["gpt-4o-mini"])
    tight = aiguard.wrap(raw, provider="openai", budget=aiguard.Budget(usd="0.000001"))
    checked = aiguard.wrap(raw, provider="openai", checks=[checks.NotEmpty()])
    for i in range(18):
        with aiguard.tag(("checkout", "chat-ui", EVIL)[i % 3]):
            if i % 6 == 1:
                server.fail("gpt-4o", status=429, headers={"retry-after": "0"})
            if i % 6 == 3:
                server.fail("gpt-4o", status=503, times=3)
            model = LONG if i % 5 == 4 else "gpt-4o"
            client.chat.completions.create(model=model, messages=MESSAGES)
            if i % 4 == 0:
                list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    with pytest.raises(aiguard.BudgetExceeded):
        tight.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=100)
    with pytest.raises(aiguard.CheckFailed):
        checked.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": ""}])


@pytest.fixture(scope="module")
def spans(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A span file of real guarded calls spread over about seven hours."""
    folder = tmp_path_factory.mktemp("report_html")
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonlSpanExporter(folder / "raw.jsonl")))
    aiguard.configure(tracer_provider=provider, meter_provider=MeterProvider())
    try:
        with MockServer() as server:
            _calls(server)
    finally:
        provider.shutdown()
        _config.reset()
    _spread(folder / "raw.jsonl", folder / "spans.jsonl", every_s=900)
    return folder / "spans.jsonl"


@pytest.fixture(scope="module")
def page(spans: Path) -> Path:
    out = spans.with_name("report.html")
    assert _cli.main(["report", str(spans), "--html", str(out)]) == 0
    return out


def _json(spans: Path) -> dict[str, Any]:
    out = io.StringIO()
    assert _report.report(str(spans), as_json=True, out=out) == 0
    data: dict[str, Any] = json.loads(out.getvalue())
    return data


class _Numbers(HTMLParser):
    """Each element's ``data-json`` place and its text; each chart mark's data attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.numbers: list[tuple[list[str], str]] = []
        self.marks: list[dict[str, str]] = []
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self._open: list[str] | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        found = {k: v or "" for k, v in attrs}
        self.attributes.update(found)
        if "data-json" in found:
            self._open, self._text = json.loads(found["data-json"]), ""
        if "data-value" in found:
            self.marks.append(found)

    def handle_data(self, data: str) -> None:
        self._text += data

    def handle_endtag(self, tag: str) -> None:
        if self._open is not None and tag in ("td", "b"):
            self.numbers.append((self._open, self._text))
            self._open = None


def _parse(page: Path) -> _Numbers:
    parser = _Numbers()
    parser.feed(page.read_text("utf-8"))
    return parser


def _at(data: Any, path: list[str]) -> Any:
    for key in path:
        data = data[key]
    return data


def _read_back(text: str) -> Any:
    """A table's text as the JSON value it shows: '-' null, '$0.015' the cost string, '1,200'
    an int, '12.5' a float."""
    if text == "-":
        return None
    if text.startswith("$"):
        return text[1:]
    plain = text.replace(",", "")
    return int(plain) if plain.isdigit() else float(plain)


# -- the numbers ---------------------------------------------------------------------------------


def test_every_number_on_the_page_is_the_json_reports(spans, page):
    data, numbers = _json(spans), _parse(page).numbers
    for path, text in numbers:
        assert _read_back(text) == _at(data, path), (path, text)
    shown = {tuple(path) for path, _ in numbers}
    usage = ("attempts", "errors", "input_tokens", "output_tokens", "cache_read_tokens", "cost_usd")
    for key in ("by_model", "by_tag"):
        for name in data[key]:
            assert {(key, name, field) for field in usage} <= shown
    assert {("total", field) for field in usage} <= shown
    for model in data["latency_ms"]["by_model"]:
        assert {
            ("latency_ms", "by_model", model, p) for p in ("count", "p50", "p95", "p99")
        } <= shown
    assert {("calls", "total"), ("calls", "retries"), ("calls", "fallbacks")} <= shown
    assert data["calls"]["fallbacks"] == 3 and data["calls"]["retries"] >= 9  # not a trivial file


def test_the_time_windows_add_up_to_the_whole_file(spans, page):
    data, marks = _json(spans), _parse(page).marks
    cost: dict[str, Decimal] = {}
    for mark in marks:
        name = mark.get("data-series", "")
        if name in data["by_model"] and mark.get("class") == "bar":
            cost[name] = cost.get(name, Decimal(0)) + Decimal(mark["data-value"])
    priced = {m: Decimal(u["cost_usd"]) for m, u in data["by_model"].items() if u["cost_usd"]}
    assert cost == priced
    whole, windows = _report_html.summarise_windows(str(spans))
    assert whole.as_json() == data
    assert 10 <= len(windows) <= 24  # six and a half hours in windows of half an hour
    for key in ("total", "ok", "errors", "retries", "fallbacks", "budget_refusals"):
        assert sum(w.as_json()["calls"][key] for _, _, w in windows) == data["calls"][key]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(windows))


def test_data_is_escaped_and_the_page_needs_nothing_from_outside(page):
    text = page.read_text("utf-8")
    parser = _parse(page)
    assert "script" not in parser.tags  # the evil tag is text, not an element
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;" in text
    assert not {"src", "href", "onload", "onclick"} & parser.attributes
    assert text.count("<svg") >= 8
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in text


def test_quality_numbers_are_shown_when_the_json_has_them_and_absence_is_fine(spans):
    whole, windows = _report_html.summarise_windows(str(spans))
    data = whole.as_json()
    plain = _report_html.render(data, whole.latency, _report_html._windows(windows))
    assert "Quality" not in plain
    data["quality"] = {
        "helpfulness": {"mean": 0.82, "pass_rate": 0.9, "count": 40},
        EVIL: {"mean": 0.5, "pass_rate": None, "count": 2},
    }
    shown = _report_html.render(data, whole.latency, _report_html._windows(windows))
    assert "<h2>Quality</h2>" in shown and "<script>" not in shown
    parser = _Numbers()
    parser.feed(shown)
    assert (["quality", "helpfulness", "mean"], "0.82") in parser.numbers
    assert (["quality", EVIL, "pass_rate"], "-") in parser.numbers
    odd = _report_html.render({**data, "quality": [1, "<i>"]}, whole.latency, [])
    assert "&lt;i&gt;" in odd  # any shape is shown, escaped


def test_command_line_errors_exit_2_with_a_message(spans, tmp_path, capsys):
    assert _cli.main(["report", str(tmp_path / "none.jsonl"), "--html", "x.html"]) == 2
    assert "no such file" in capsys.readouterr().err
    target = tmp_path / "missing-dir" / "r.html"
    assert _cli.main(["report", str(spans), "--html", str(target)]) == 2
    assert f"cannot write {target}" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert _cli.main(["report", str(empty), "--html", str(tmp_path / "r.html")]) == 1
    assert not (tmp_path / "r.html").exists()


# -- the charts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("durations", "edges"),
    [
        ([3.2, 4, 7, 12, 120], [2, 5, 10, 20, 50, 100, 200]),
        ([0.5], [0.5, 1]),
        ([1, 1, 1], [1, 2]),
        ([250, 800, 2100], [200, 500, 1000, 2000, 5000]),
    ],
)
def test_latency_bins_cover_every_duration_on_a_1_2_5_scale(durations, edges):
    bins = _svg.latency_bins(durations)
    assert [low for low, _, _ in bins] + [bins[-1][1]] == pytest.approx(edges)
    assert sum(n for _, _, n in bins) == len(durations)
    for value in durations:
        assert any(low <= value < high for low, high, _ in bins)


def test_chart_scales_and_windows_are_round():
    tops = [_svg.nice_ceiling(v) for v in (0, 0.03, 0.7, 3, 26, 900, 0.0001)]
    assert tops == pytest.approx([1, 0.04, 0.8, 4, 40, 1000, 0.0001])
    assert [_report_html._usd(v) for v in (0, 0.0025, 0.01, 0.5, 1234.5)] == [
        "$0", "$0.0025", "$0.01", "$0.5", "$1,234.50"
    ]  # fmt: skip
    assert [_svg.count_ceiling(v) for v in (0, 3, 5, 9, 25, 99)] == [4, 4, 8, 12, 32, 100]
    hour = 3600 * 10**9
    assert _report_html.window_ns(0, 7 * hour) == 1800 * 10**9
    assert _report_html.window_ns(0, 10**9) == 10**8
    assert _report_html.window_ns(0, 0) == 10**8


def test_an_empty_chart_says_so_and_labels_are_cut_with_the_whole_name_as_tooltip():
    assert "nothing to draw" in _svg.columns([], [], str, "x")
    svg = _svg.hbars([(LONG, 1.0, "1")], str, "x")
    assert f"<title>{LONG}: 1.0</title>" in svg and _svg.short(LONG) in svg
    assert len(_svg.short(LONG)) == 26


# -- in a real browser ---------------------------------------------------------------------------

_CHECK = """<script>
const root = document.documentElement, bad = [];
for (const el of document.querySelectorAll("body *")) {
  const box = el.getBoundingClientRect();
  if (box.width && (box.right > root.clientWidth + 0.5 || box.left < -0.5))
    bad.push(el.tagName + " " + (el.textContent || "").slice(0, 40));
}
const drawn = [...document.querySelectorAll("svg")].filter(
  s => s.getBoundingClientRect().height > 30 && s.querySelector(".bar, .point")).length;
document.body.setAttribute("data-check", JSON.stringify(
  {scroll: root.scrollWidth, client: root.clientWidth, bad: bad.slice(0, 10), drawn}));
</script></body>"""


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs it with apt-get)")
        pytest.skip("chromium is not installed: apt-get install chromium to run this test")
    return found


def _browse(page: Path, width: int, *flags: str) -> str:
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    command += [f"--window-size={width},2400", *flags, page.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize("width", [1280, 420])
def test_in_chromium_the_charts_are_drawn_and_nothing_overflows(page, tmp_path, width):
    checked = tmp_path / "checked.html"
    checked.write_text(page.read_text("utf-8").replace("</body>", _CHECK), "utf-8")
    dom = _browse(checked, width, "--dump-dom")
    marker = dom.split('data-check="', 1)[1].split('"', 1)[0]
    result = json.loads(html.unescape(marker))
    assert result["scroll"] <= result["client"], result
    assert result["bad"] == [], result
    assert result["drawn"] >= 8, result


def _pixels(png: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the rows of an 8-bit RGB(A), non-interlaced PNG (what Chromium writes)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, data, header = 8, b"", b""
    while pos < len(png):
        (length,), kind = struct.unpack(">I", png[pos : pos + 4]), png[pos + 4 : pos + 8]
        chunk = png[pos + 8 : pos + 8 + length]
        header = chunk if kind == b"IHDR" else header
        data += chunk if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, colour_type in (2, 6), interlace) == (8, True, 0)
    size = 3 if colour_type == 2 else 4
    raw, rows, previous = zlib.decompress(data), [], bytes(width * size)
    stride = width * size + 1
    for y in range(height):
        kind, line = raw[y * stride], bytearray(raw[y * stride + 1 : (y + 1) * stride])
        for i in range(len(line)):
            left = line[i - size] if i >= size else 0
            up, corner = previous[i], previous[i - size] if i >= size else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                near = min((abs(p - left), 0), (abs(p - up), 1), (abs(p - corner), 2))[1]
                line[i] = (line[i] + (left, up, corner)[near]) & 255
        previous = bytes(line)
        rows.append(bytes(rgb for j in range(0, len(line), size) for rgb in line[j : j + 3]))
    return width, height, rows


def test_in_chromium_the_screenshot_shows_the_charts(page, tmp_path):
    shot = tmp_path / "report.png"
    _browse(page, 1280, f"--screenshot={shot}")
    width, height, rows = _pixels(shot.read_bytes())
    assert (width, height) == (1280, 2400)
    pixels = [row[i : i + 3] for row in rows[::4] for i in range(0, len(row), 12)]
    background = max(set(pixels), key=pixels.count)
    assert sum(p != background for p in pixels) > len(pixels) * 0.2  # not blank
    blue = bytes.fromhex(_svg.PALETTE[0][1:])
    orange = bytes.fromhex(_svg.PALETTE[1][1:])
    assert pixels.count(blue) > 200 and pixels.count(orange) > 20  # bars in the palette's colours


def test_every_chart_is_well_formed_svg(page):
    text = page.read_text("utf-8")
    charts = re.findall(r"<svg .*?</svg>", text, re.S)
    assert len(charts) >= 8
    for chart in charts:
        root = ElementTree.fromstring(chart)  # raises on a stray '<' or '&'
        assert root.tag == "{http://www.w3.org/2000/svg}svg"


def test_beyond_seven_models_the_rest_are_one_series_and_nothing_is_lost():
    names = [f"model-{i}" for i in range(9)]
    windows = [
        _report_html.Window(0, 1, {"by_model": {n: {"cost_usd": f"0.00{i + 1}"} for i, n in
                                                enumerate(names)}}),
        _report_html.Window(1, 2, {"by_model": {"model-0": {"cost_usd": None}}}),
    ]  # fmt: skip
    series = _report_html._cost_series(windows, "by_model")
    assert [s.name for s in series] == [f"model-{i}" for i in range(8, 1, -1)] + ["2 others"]
    assert series[-1].exact == ["0.003", "0"]
    total = sum(Decimal(e) for s in series for e in s.exact or [])
    assert total == sum(Decimal(f"0.00{i + 1}") for i in range(9))


def test_the_demos_hint_makes_a_page_of_its_calls(tmp_path):
    code = "import sys; from aiguard._cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        env.pop(name, None)
    demo = subprocess.run(
        [sys.executable, "-c", code, "demo", "--jsonl", "spans.jsonl"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env, check=False,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stderr
    hint = "aiguard demo --jsonl spans.jsonl, then\naiguard report spans.jsonl --html report.html."
    assert hint in demo.stdout
    assert (
        _cli.main(["report", str(tmp_path / "spans.jsonl"), "--html", str(tmp_path / "r.html")])
        == 0
    )
    numbers = dict((tuple(path), text) for path, text in _parse(tmp_path / "r.html").numbers)
    assert numbers[("calls", "total")] == "8" and numbers[("calls", "fallbacks")] == "1"
