"""The HTML chargeback report: its content read back with html.parser, then opened in a real
headless Chromium (screenshot, DOM, console, print to PDF).

Expected figures come from tests/support/report_fixtures.py's ledger, worked out by hand here (GPU-
seconds × hours ÷ 3600, the rate card's own rates), not from the report code.
Chromium is Debian's ``chromium`` (the Makefile installs it); without it those tests skip.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

import tests.support.report_fixtures as fx
from gpuledger.chargeback.attribution.claims import IDLE
from gpuledger.chargeback.ledger.store.sqlite import SqliteLedgerStore
from gpuledger.chargeback.ledger.tables import CoverageRow
from gpuledger.chargeback.ledger.tables import UsageRow as U
from gpuledger.chargeback.report.build import ReportOptions, build_report
from gpuledger.chargeback.report.model import Month, Report
from gpuledger.chargeback.report.ratecard import RateCard, load_rate_card
from gpuledger.chargeback.report.writers.html import render_html
from tests.support.html_dom import Node, chromium, needs_chromium, number, parse

CHART_IDS = ("chart-cost", "chart-hours", "chart-counterfactual", "chart-trend", "chart-idle")
OCTOBER = Month.parse("2026-10")
# From the fixture's docstring: who is flagged (validation != validated), by hand.
# Issue 16: a counterfactual is flagged by what it rests on. In this month no line's is
# unvalidated: chat's probes validate its tokens; embed, train and __unattributed__ have
# rentals on fully observed hours (or none) and no priced tokens; idle has none.
NOT_FLAGGED = {"prod/chat", "__idle__", "search/embed", "lab/train", "__unattributed__"}
CHAT_ALLOCATED = (2700 + 1800) * fx.HOURS / 3600  # 930.0
CHAT_BUSY = (1800 + 900) * fx.HOURS / 3600  # 558.0
CHAT_KWH = (1.8e6 + 0.9e6) * fx.HOURS / 3.6e6  # 558.0
FLEET_ALLOCATED = (4 * 3600 * fx.HOURS + 3600 * fx.A1_HOURS) / 3600  # 3076.0


def rows_of(doc: Node, table_id: str) -> dict[str, Node]:
    table = doc.find("table", id=table_id)
    return {tr.attrs["data-line"]: tr for tr in table.find_all("tr") if "data-line" in tr.attrs}


def cell(row: Node, col: str) -> str:
    return " ".join(row.find("td", **{"data-col": col}).text().split())


# -- ledgers --------------------------------------------------------------------------------


def _store() -> SqliteLedgerStore:
    store = SqliteLedgerStore(":memory:")
    store.migrate()
    return store


def fixture_report(policy: str = "separate") -> Report:
    store = _store()
    fx.fill(store)
    opts = ReportOptions(idle_policy=policy)  # type: ignore[arg-type]
    return build_report(store, load_rate_card(), OCTOBER, options=opts, now=fx.NOW)


def one_hour_report(services: list[tuple[str, str]], alloc: float = 3600.0) -> Report:
    """One October hour: one H100 per (namespace, service), plus an idle half GPU."""
    store = _store()
    usage = [
        U(fx.OCT, "n1", f"GPU-{i}", ns, svc, fx.H100, "", alloc - i, alloc / 2, 1.0e6)
        for i, (ns, svc) in enumerate(services)
    ]
    usage.append(U(fx.OCT, "n1", "GPU-idle", "", IDLE, fx.H100, "", 1800.0, 0.0, 1.0e5))
    cov = [CoverageRow(fx.OCT, "n1", f"GPU-{i}", fx.H100, 3600.0) for i in range(len(services))]
    store.upsert(usage, cov)
    return build_report(store, load_rate_card(), OCTOBER, now=fx.NOW)


@pytest.fixture(scope="module")
def card() -> RateCard:
    return load_rate_card()


@pytest.fixture(scope="module")
def report() -> Report:
    return fixture_report()


@pytest.fixture(scope="module")
def page(report: Report) -> str:
    return render_html(report)


@pytest.fixture(scope="module")
def doc(page: str) -> Node:
    return parse(page).root


# -- content --------------------------------------------------------------------------------


def test_five_charts_each_a_figure_with_inline_svg(doc: Node, page: str) -> None:
    figures = {f.attrs.get("id"): f for f in doc.find_all("figure")}
    assert set(CHART_IDS) <= set(figures)
    for chart_id in CHART_IDS:
        fig = figures[chart_id]
        svgs = fig.find_all("svg")
        assert len(svgs) == 1, chart_id
        assert "viewBox" in svgs[0].attrs or "viewbox" in svgs[0].attrs
        assert fig.find_all("path") or fig.find_all("rect"), f"{chart_id} draws nothing"
        assert fig.find("figcaption").text().strip()
    # real <text>, so the names are searchable; each SVG's ids are its own
    assert "prod/chat" in figures["chart-cost"].text()
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids)), "duplicate element ids across the inline SVGs"
    assert not re.search(r'(?:src|href)="(?!#)', page), "the page must not load anything"


def test_main_table_has_a_row_per_line_and_totals(doc: Node) -> None:
    rows = rows_of(doc, "lines")
    assert list(rows) == [
        "prod/chat",
        "search/embed",
        "lab/train",
        "__unattributed__",
        "__idle__",
        "TOTAL",
    ]
    assert "kind-idle" in rows["__idle__"].classes()
    assert "kind-unattributed" in rows["__unattributed__"].classes()
    assert "totals" in rows["TOTAL"].classes()
    assert number(cell(rows["TOTAL"], "allocated_gpu_hours")) == pytest.approx(FLEET_ALLOCATED)


def test_prod_chat_figures(doc: Node, card: RateCard) -> None:
    chat = rows_of(doc, "lines")["prod/chat"]
    assert number(cell(chat, "allocated_gpu_hours")) == pytest.approx(930.0)
    assert number(cell(chat, "allocated_gpu_hours")) == pytest.approx(CHAT_ALLOCATED)
    assert number(cell(chat, "busy_gpu_hours")) == pytest.approx(CHAT_BUSY)
    assert number(cell(chat, "utilization")) == pytest.approx(60.0)
    assert number(cell(chat, "energy_kwh")) == pytest.approx(CHAT_KWH)
    tco = card.tco_for(fx.H100)
    assert tco is not None
    internal = CHAT_ALLOCATED * tco.capacity_usd_per_gpu_hour + CHAT_KWH * tco.energy_usd_per_kwh
    assert number(cell(chat, "internal_cost_usd")) == pytest.approx(internal, abs=0.005)
    hyper = card.cheapest_rental(fx.H100, "hyperscaler")
    assert hyper is not None
    assert number(cell(chat, "rental_hyperscaler_usd")) == pytest.approx(
        CHAT_ALLOCATED * hyper.usd_per_gpu_hour, abs=0.005
    )
    assert number(cell(chat, "savings_vs_hyperscaler_usd")) == pytest.approx(
        CHAT_ALLOCATED * hyper.usd_per_gpu_hour - internal, abs=0.01
    )
    # p99 of the 990 ok TTFTs (0.040 + i·1e-5 s: 40.00 … 49.89 ms) is ≈ 49.8 ms
    assert number(cell(chat, "p99_ttft")) == pytest.approx(49.8, abs=0.1)
    assert number(cell(chat, "probe_success")) == pytest.approx(99.0)
    assert "validated" in cell(chat, "validation")


def test_b200_line_is_unpriced_never_zero(doc: Node) -> None:
    train = rows_of(doc, "lines")["lab/train"]
    for col in ("internal_cost_usd", "total_cost_usd", "cost_per_1m_tokens_usd"):
        assert "unpriced" in cell(train, col), col
    text = " ".join(train.text().split())
    assert not re.search(r"\$0(?![\d,])|\$0\.00", text), text
    assert "B200" in cell(train, "total_cost_usd")  # the reason beside it
    assert all(cell(train, c) == "n/a" for c in ("rental_hyperscaler_usd", "token_api_usd"))
    model_row = doc.find("table", id="models").find("tr", **{"data-gpu-model": fx.B200})
    assert "unpriced" in model_row.text()
    assert "$0" not in model_row.text()
    assert "unpriced" in doc.find("figure", id="chart-cost").text()


def test_flag_marks_exactly_the_unvalidated_figures(doc: Node) -> None:
    rows = rows_of(doc, "lines")
    for label in NOT_FLAGGED:
        assert "flagged" not in rows[label].classes(), label
    # embed's probes failed (80 of 100 < 95 %): its latency figures carry the flag, its
    # rental counterfactuals (hours fully observed) do not
    embed = rows["search/embed"]
    assert "⚑" in cell(embed, "p99_ttft")
    assert "⚑" not in cell(embed, "rental_hyperscaler_usd")
    assert "⚑" not in cell(embed, "rental_specialist_usd")
    for label in NOT_FLAGGED - {"search/embed"}:
        assert "⚑" not in rows[label].text(), label
    legend = " ".join(doc.find("section", id="lines-section").find("p").text().split())
    assert "⚑" in legend
    assert "unvalidated" in legend


def test_missing_counterfactuals_read_na(doc: Node) -> None:
    embed = rows_of(doc, "lines")["search/embed"]
    assert cell(embed, "token_api_usd") == "n/a"  # bge-m3 has no API class
    basis = rows_of(doc, "basis")["search/embed"]
    assert "BAAI/bge-m3" in basis.text()
    chart = doc.find("figure", id="chart-counterfactual").text()
    assert "n/a: per-token API" in chart
    assert "⚑ search/embed" not in chart  # issue 16: its rentals rest on whole hours
    assert "⚑ prod/chat" not in chart


def test_header_notes_and_cards(doc: Node, report: Report) -> None:
    header = " ".join(doc.find("header").text().split())
    assert "2026-11" in header  # the rate card version
    assert report.rate_card.digest in header
    assert "2026-10" in header
    assert "complete month" in header
    assert "separate" in header
    assert "USD" in header
    notes = doc.find("ul", id="notes").find_all("li")
    unpriced = [n for n in notes if n.text().startswith("UNPRICED")]
    assert len(unpriced) == 1
    assert "bad" in unpriced[0].classes()
    assert any(n.text().startswith("Coverage is 82.7%") for n in notes)
    cards = {
        c.find("h3").text(): c.find("div", class_="value").text()
        for c in doc.find("section", id="summary").find_all("div")
        if "card" in c.classes()
    }
    assert number(cards["Idle GPU-hours"]) == pytest.approx((900 + 600) * fx.HOURS / 3600)
    # observed ÷ expected = (4·744 + 100) ÷ (5·744) GPU-hours
    assert number(cards["Coverage"]) == pytest.approx(round(3076 / 3720 * 100, 1))
    assert "unpriced" not in cards["Total internal cost"]


def test_coverage_and_model_tables(doc: Node) -> None:
    n2 = doc.find("table", id="coverage").find("tr", **{"data-node": "n2"})
    cells = [" ".join(td.text().split()) for td in n2.find_all("td")]
    assert number(cells[2]) == pytest.approx(2 * fx.HOURS + fx.A1_HOURS)
    assert number(cells[3]) == pytest.approx(3 * fx.HOURS)
    models = doc.find("table", id="models")
    embed = [tr for tr in models.find_all("tr") if tr.attrs.get("data-line") == "search/embed"]
    assert {tr.attrs["data-gpu-model"] for tr in embed} == {fx.A100, fx.H100}
    a100 = next(tr for tr in embed if tr.attrs["data-gpu-model"] == fx.A100)
    assert number(a100.find_all("td")[2].text()) == pytest.approx(fx.A1_HOURS)
    assert "as of" in a100.text()
    assert doc.find("ol", class_="sources").find_all("li")


def test_idle_shared_policy_shows_shares(card: RateCard) -> None:
    report = fixture_report("share-weighted")
    rows = rows_of(parse(render_html(report)).root, "lines")
    tco = card.tco_for(fx.H100)
    assert tco is not None
    r, e = tco.capacity_usd_per_gpu_hour, tco.energy_usd_per_kwh
    idle_cost = 310 * r + 31 * e  # H100 idle: 1500 s × 744 h, 0.15 MJ × 744 h
    weights = {
        "prod/chat": 930 * r + 558 * e,
        "search/embed": 248 * r + 124 * e,  # its H100 part only
        "__unattributed__": 744 * r + 74.4 * e,
    }
    chat_share = idle_cost * weights["prod/chat"] / sum(weights.values())
    assert number(cell(rows["prod/chat"], "idle_share_usd")) == pytest.approx(chat_share, abs=0.01)
    assert number(cell(rows["__idle__"], "total_cost_usd")) == pytest.approx(0.0, abs=0.005)


def test_untrusted_names_are_escaped() -> None:
    evil = "<script>alert(1)</script>"
    attr = '"><img src=x onerror=alert(2)>'
    page = render_html(one_hour_report([("prod", evil), (attr, "svc"), ("fin", "$a_b$")]))
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    tb = parse(page)
    assert "script" not in tb.tags
    assert "img" not in tb.tags
    for node in tb.root.iter():
        assert not any(k.startswith("on") for k in node.attrs), node.attrs
    rows = rows_of(tb.root, "lines")
    assert f"prod/{evil}" in rows
    assert f"{attr}/svc" in rows
    assert evil in tb.root.find("figure", id="chart-cost").text()  # as text, in the SVG too
    assert "fin/$a_b$" in tb.root.find("figure", id="chart-cost").text()  # no mathtext


def test_fifty_services_capped_and_deterministic() -> None:
    # how long it takes is bench_report's (the write time of each size), not a unit test's
    report = one_hour_report([(f"team{i % 7}", f"svc-{i:02d}") for i in range(50)])
    page = render_html(report)
    assert render_html(report) == page
    doc = parse(page).root
    assert len(rows_of(doc, "lines")) == 50 + 1 + 1  # services, idle, TOTAL
    cost_chart = doc.find("figure", id="chart-cost").text()
    assert "others (30 services)" in cost_chart
    # svc-00 holds the most GPU-seconds (alloc − i): the costliest is charted, the cheapest is not
    assert "team0/svc-00" in cost_chart
    assert "team0/svc-49" not in cost_chart


# -- in a real browser ----------------------------------------------------------------------


@pytest.fixture
def report_file(tmp_path: Path, page: str) -> Path:
    path = tmp_path / "chargeback-2026-10.html"
    path.write_text(page, encoding="utf-8")
    return path


def _pixels(png: Path) -> np.ndarray:
    img = imread(png)  # floats in [0, 1], H × W × 3|4
    return np.asarray(img[..., :3] * 255).round().astype(np.int16)


def _has_color(rgb: np.ndarray, hex_color: str, min_pixels: int = 200) -> bool:
    target = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)
    near = (np.abs(rgb - target) <= 6).all(axis=-1)
    return int(near.sum()) >= min_pixels


@needs_chromium
def test_screenshot_is_not_blank_and_console_is_clean(tmp_path: Path, report_file: Path) -> None:
    shot = tmp_path / "report.png"
    run = chromium(
        tmp_path, report_file, f"--screenshot={shot}", "--window-size=1400,4000",
        "--hide-scrollbars",
    )  # fmt: skip
    assert run.problems() == []
    rgb = _pixels(shot)
    assert rgb.shape[:2] == (4000, 1400)
    non_white = (rgb < 245).any(axis=-1).mean()
    assert non_white > 0.10, f"only {non_white:.1%} of the page is not white"
    q = rgb // 8  # 32 levels a channel: anti-aliasing noise aside
    colors = len(np.unique(q[..., 0] * 1024 + q[..., 1] * 32 + q[..., 2]))
    assert colors > 200, f"{colors} distinct colors"
    assert _has_color(rgb, "#1f4e79")  # the table header band


@needs_chromium
def test_every_chart_is_painted(tmp_path: Path, report_file: Path) -> None:
    shot = tmp_path / "full.png"
    chromium(tmp_path, report_file, f"--screenshot={shot}", "--window-size=1400,7000",
             "--hide-scrollbars")  # fmt: skip
    rgb = _pixels(shot)
    signature = {
        "cost (energy)": "#56b4e9",
        "hours (allocated)": "#c9d9ea",
        "counterfactual (specialist)": "#009e73",
        "counterfactual (token API)": "#cc79a7",
        "trend + idle (idle)": "#d55e00",
    }
    missing = [name for name, color in signature.items() if not _has_color(rgb, color)]
    assert missing == []


@needs_chromium
def test_rendered_dom_has_every_chart(tmp_path: Path, report_file: Path) -> None:
    run = chromium(tmp_path, report_file, "--dump-dom", "--virtual-time-budget=2000")
    assert run.problems() == []
    dom = run.stdout
    assert dom.count("<svg") == len(CHART_IDS)
    for chart_id in CHART_IDS:
        assert f'<figure id="{chart_id}">' in dom
    assert "<script" not in dom


@needs_chromium
def test_console_detector_catches_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><body><h1>bad</h1><img src='missing.png'>"
        "<script>console.error('boom')</script>"
        "<script>throw new Error('kaboom')</script></body></html>",
        encoding="utf-8",
    )
    problems = chromium(tmp_path, bad, "--dump-dom", "--virtual-time-budget=2000").problems()
    joined = "\n".join(problems)
    assert "boom" in joined
    assert "Uncaught Error: kaboom" in joined
    assert "missing.png" in joined
    # the report's own Content-Security-Policy refuses scripts and says so on the console
    good = tmp_path / "good.html"
    good.write_text("<!DOCTYPE html><html><body><h1>ok</h1></body></html>", encoding="utf-8")
    assert chromium(tmp_path, good, "--dump-dom").problems() == []
    csp = tmp_path / "csp.html"
    head = render_html(fixture_report()).split("</head>", 1)[0]
    csp.write_text(
        f"{head}</head><body><script>document.title='x'</script></body></html>", encoding="utf-8"
    )
    refused = chromium(tmp_path, csp, "--dump-dom", "--virtual-time-budget=2000").problems()
    assert any("Content Security Policy" in p for p in refused), refused


@needs_chromium
def test_prints_to_a4_landscape_pdf(tmp_path: Path, report_file: Path) -> None:
    pdf = tmp_path / "report.pdf"
    run = chromium(tmp_path, report_file, f"--print-to-pdf={pdf}", "--no-pdf-header-footer")
    assert run.problems() == []
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-")
    assert len(data) > 20_000
    pages = re.findall(rb"/Type\s*/Page\b", data)
    assert 2 <= len(pages) <= 20
    boxes = {
        tuple(float(v) for v in m.split()) for m in re.findall(rb"/MediaBox\s*\[([^\]]+)\]", data)
    }
    assert boxes, "no page size in the PDF"
    for _x0, _y0, width, height in boxes:
        assert width == pytest.approx(841.9, abs=1.5)
        assert height == pytest.approx(595.3, abs=1.5)


def test_generated_at_is_the_reports() -> None:
    report = fixture_report()
    page = render_html(report)
    assert datetime(2026, 12, 1, 3, tzinfo=UTC).strftime("%Y-%m-%d %H:%M UTC") in page
