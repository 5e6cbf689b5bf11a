"""The HTML report's Tenants section: a table and a chart per shared service, the
figures of the stated tenant shares (tests/support/tenant_report.py), hostile
tenant names as inert text, and the page still clean in a real Chromium."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from gpuledger.chargeback.report.model import Report
from gpuledger.chargeback.report.writers.html import render_html
from tests.support.html_dom import Node, chromium, needs_chromium, number, parse
from tests.support.report_expected import CHAT_COST, CHAT_H, CHAT_KWH, EMBED_COST
from tests.support.tenant_report import (
    EVIL_FORMULA,
    EVIL_SCRIPT,
    INPUT_PART,
    tenant_report,
)


@pytest.fixture(scope="module")
def report() -> Report:
    return tenant_report()


@pytest.fixture(scope="module")
def page(report: Report) -> str:
    return render_html(report)


@pytest.fixture(scope="module")
def doc(page: str) -> Node:
    return parse(page).root


def tenant_rows(doc: Node, table_id: str) -> dict[str, Node]:
    table = doc.find("table", id=table_id)
    return {tr.attrs["data-tenant"]: tr for tr in table.find_all("tr") if "data-tenant" in tr.attrs}


def col(row: Node, name: str) -> str:
    return " ".join(row.find("td", **{"data-col": name}).text().split())


def test_a_table_and_a_chart_per_shared_service(doc: Node) -> None:
    section = doc.find("section", id="tenants-section")
    tables = section.find_all("table")
    assert [(t.attrs["id"], t.attrs["data-line"]) for t in tables] == [
        ("tenants-1", "prod/chat"),
        ("tenants-2", "search/embed"),
        ("tenants-3", "lab/train"),
    ]
    for i in (1, 2, 3):
        fig = section.find("figure", id=f"chart-tenants-{i}")
        assert len(fig.find_all("svg")) == 1
        assert fig.find_all("path") or fig.find_all("rect")
    # named tenants by cost, then the special lines
    assert list(tenant_rows(doc, "tenants-1")) == [
        "team-a", EVIL_SCRIPT, EVIL_FORMULA, "__untenanted__", "__probes__", "TOTAL",
    ]  # fmt: skip


def test_team_a_row_is_its_stated_half(doc: Node) -> None:
    a = tenant_rows(doc, "tenants-1")["team-a"]
    assert number(col(a, "share_ratio")) == 50.0
    assert number(col(a, "allocated_gpu_hours")) == pytest.approx(CHAT_H / 2)  # 465.0
    assert number(col(a, "energy_kwh")) == pytest.approx(CHAT_KWH / 2, abs=0.05)
    assert number(col(a, "total_cost_usd")) == pytest.approx(CHAT_COST / 2, abs=0.005)
    assert col(a, "prompt_tokens") == "600.00 M"
    assert col(a, "cached_prompt_tokens") == "100.00 M"
    assert col(a, "generation_tokens") == "150.00 M"
    per_in = CHAT_COST / 2 * INPUT_PART / 600.0  # $ per 1M of its 600 M prompt tokens
    assert number(col(a, "cost_per_1m_input_usd")) == pytest.approx(per_in, abs=0.005)
    assert col(a, "cost_per_1m_input_usd") == f"${per_in:.3f} API $0.590"  # 3 significant digits
    assert col(a, "cost_per_1m_output_usd").endswith("API $0.790")
    assert number(col(a, "token_api_usd")) == pytest.approx(600 * 0.59 + 150 * 0.79, abs=0.005)
    assert col(a, "weights") == "measured"
    total = tenant_rows(doc, "tenants-1")["TOTAL"]
    assert number(col(total, "total_cost_usd")) == pytest.approx(CHAT_COST, abs=0.005)
    assert number(col(total, "share_ratio")) == 100.0
    embed = tenant_rows(doc, "tenants-2")
    assert number(col(embed["__headroom__"], "total_cost_usd")) == pytest.approx(
        EMBED_COST / 4, abs=0.005
    )
    assert col(embed["__headroom__"], "cost_per_1m_input_usd") == "n/a"  # no tokens


def test_fixed_ratio_lines_are_marked(doc: Node) -> None:
    rows = tenant_rows(doc, "tenants-1")
    assert col(rows[EVIL_SCRIPT], "weights") == "fixed-ratio †"
    title = rows[EVIL_FORMULA].find("td", **{"data-col": "weights"}).attrs["title"]
    assert title.startswith("25.0% of its weighted tokens are from hours weighted with the conf")
    assert col(rows[EVIL_FORMULA], "weights") == "mixed †"
    assert "†" not in col(rows["team-a"], "weights")
    legends = [p.text() for p in doc.find("section", id="tenants-section").find_all("p")]
    assert any(t.startswith("† token weights from the configured fixed") for t in legends)


def test_unpriced_service_tenants_read_unpriced_never_zero(doc: Node) -> None:
    r = tenant_rows(doc, "tenants-3")["research"]
    for name in ("total_cost_usd", "cost_per_1m_input_usd", "cost_per_1m_output_usd"):
        assert col(r, name) == "unpriced", name
    assert not re.search(r"\$0(?![\d,.])|\$0\.00", r.text())
    fig = doc.find("figure", id="chart-tenants-3")
    assert "GPU-hours per tenant (unpriced" in fig.text()
    assert "744.0 GPU-h · 100.0%" in fig.text()


def test_hostile_tenant_names_are_text(page: str, doc: Node) -> None:
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    tb = parse(page)
    assert "script" not in tb.tags
    rows = tenant_rows(doc, "tenants-1")
    assert col(rows[EVIL_SCRIPT], "tenant") == EVIL_SCRIPT
    assert col(rows[EVIL_FORMULA], "tenant") == EVIL_FORMULA
    chart = doc.find("figure", id="chart-tenants-1").text()
    assert EVIL_SCRIPT in chart
    assert EVIL_FORMULA in chart
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids)), "duplicate element ids across the inline SVGs"


def test_a_report_without_tenants_has_no_tenant_section(report: Report) -> None:
    bare = replace(report, lines=tuple(replace(ln, tenants=()) for ln in report.lines))
    page = render_html(bare)
    assert 'id="tenants-section"' not in page
    assert "chart-tenants" not in page


@needs_chromium
def test_tenant_page_renders_clean_in_chromium(tmp_path: Path, page: str) -> None:
    path = tmp_path / "chargeback-2026-10.html"
    path.write_text(page, encoding="utf-8")
    run = chromium(tmp_path, path, "--dump-dom", "--virtual-time-budget=2000")
    assert run.problems() == []
    assert run.stdout.count("<svg") == 5 + 3  # the page's five charts, one per shared service
    assert "<script" not in run.stdout
    assert 'data-tenant="&lt;script&gt;alert(1)&lt;/script&gt;"' in run.stdout
