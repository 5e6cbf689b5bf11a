"""The report grouped by cost center (issue 18), against figures worked out by hand from
the fixture month (tests/support/report_fixtures.py, tests/support/report_expected.py)
and the cost centers stated here, on SQLite and PostgreSQL: each line's cost center by
the documented precedence (static service rule, then the label the agents recorded --
the latest hour of the month --, then the static namespace rule, then
``__unassigned__``), a shared service's tenant lines each to their own, subtotals that add
up to the totals; the CSV column, the JSON, the FOCUS tag (the official validator still
passes), the HTML section (hostile names escaped, clean in headless Chromium) and
``gpuledger report --by cost-center``."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpuledger.chargeback.costcenters.config import UNASSIGNED, CostCentersConfig
from gpuledger.chargeback.costcenters.resolve import CostCenterMap
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.chargeback.ledger.store.sqlite import SqliteLedgerStore
from gpuledger.chargeback.ledger.tables import CostCenterRow
from gpuledger.chargeback.report.config import ReportConfig
from gpuledger.chargeback.report.cost_centers import assign
from gpuledger.chargeback.report.model import CostCenterTotal, Month, Report
from gpuledger.chargeback.report.monthly import run_report
from gpuledger.chargeback.report.writers.focus import APPLICABILITY_CRITERIA, focus_csv
from gpuledger.chargeback.report.writers.html import render_html
from gpuledger.cli import app
from tests.support import report_fixtures as fx
from tests.support.focus_validator import VALIDATE_VERSION, find_validator, run_validator
from tests.support.html_dom import chromium, needs_chromium, parse
from tests.support.report_expected import (
    CHAT_BUSY,
    CHAT_COST,
    CHAT_H,
    CHAT_KWH,
    EMBED_A100_H,
    EMBED_COST,
    EMBED_H100_H,
    IDLE_COST,
    IDLE_H,
    UNATTR_COST,
)
from tests.support.tenant_report import EVIL_SCRIPT, tenant_report

H = fx.HOURS
HOUR = 3600
MONTH = Month.parse("2026-10")
HOSTILE = '<img src=x onerror="alert(1)">'  # a label value clean_cost_center accepts

CONFIG = CostCentersConfig.model_validate(
    {
        "static": [
            {"namespace": "search", "service": "embed", "cost_center": "finance-override"},
            {"namespace": "lab", "cost_center": "research"},
            {"namespace": "prod", "cost_center": "prod-default"},  # loses to prod/chat's label
        ]
    }
)
RECORDED = [
    CostCenterRow(fx.SEP, "n1", "prod", "chat", "september", "pod_label"),  # not October
    CostCenterRow(fx.OCT, "n1", "prod", "chat", "chat-old", "pod_label"),
    CostCenterRow(fx.OCT + 700 * HOUR, "n1", "prod", "chat", "ml-platform", "pod_annotation"),
    CostCenterRow(fx.OCT + 5 * HOUR, "n2", "search", "embed", "search", "namespace_label"),
]


def _sum(centers: tuple[CostCenterTotal, ...], name: str) -> float:
    return sum(float(getattr(c, name)) for c in centers)


def test_grouping_against_hand_computed_figures(
    ledger_store: AuditableLedgerStore, tmp_path: Path
) -> None:
    fx.fill(ledger_store)
    ledger_store.upsert_cost_centers(RECORDED)
    cfg = ReportConfig(cost_centers=CONFIG, formats=("csv", "json"))
    report, _ = run_report(ledger_store, cfg, MONTH, tmp_path, now=fx.NOW)

    assert {ln.label: ln.cost_center for ln in report.lines} == {
        "prod/chat": "ml-platform",  # the latest hour's label beats the namespace rule
        "search/embed": "finance-override",  # a static service rule beats the label
        "lab/train": "research",  # a static namespace rule, nothing recorded
        "__unattributed__": UNASSIGNED,
        "__idle__": UNASSIGNED,
    }
    centers = report.cost_centers
    assert [(c.cost_center, c.lines) for c in centers] == [
        ("ml-platform", ("prod/chat",)),
        ("finance-override", ("search/embed",)),
        ("research", ("lab/train",)),  # $0 and 744 GPU-h unpriced (B200)
        (UNASSIGNED, ("__unattributed__", "__idle__")),  # listed last
    ]
    by = {c.cost_center: c for c in centers}
    assert by["ml-platform"].allocated_gpu_hours == pytest.approx(CHAT_H)
    assert by["ml-platform"].busy_gpu_hours == pytest.approx(CHAT_BUSY)
    assert by["ml-platform"].energy_kwh == pytest.approx(CHAT_KWH)
    assert by["ml-platform"].total_cost_usd == pytest.approx(CHAT_COST)
    assert by["finance-override"].allocated_gpu_hours == pytest.approx(EMBED_H100_H + EMBED_A100_H)
    assert by["finance-override"].total_cost_usd == pytest.approx(EMBED_COST)
    assert by["research"].allocated_gpu_hours == pytest.approx(H)
    assert (by["research"].total_cost_usd, by["research"].unpriced_gpu_hours) == (0.0, H)
    assert by[UNASSIGNED].allocated_gpu_hours == pytest.approx(IDLE_H + H)
    assert by[UNASSIGNED].total_cost_usd == pytest.approx(IDLE_COST + UNATTR_COST)
    assert by[UNASSIGNED].unpriced_gpu_hours == 0.0
    total = CHAT_COST + EMBED_COST + IDLE_COST + UNATTR_COST
    assert by["ml-platform"].share_ratio == pytest.approx(CHAT_COST / total)
    # the subtotals add up to the totals, figure by figure
    t = report.totals
    assert t.total_cost_usd == pytest.approx(total)
    assert _sum(centers, "total_cost_usd") == pytest.approx(t.total_cost_usd, rel=1e-12)
    assert _sum(centers, "allocated_gpu_hours") == pytest.approx(t.allocated_gpu_hours, rel=1e-12)
    assert _sum(centers, "busy_gpu_hours") == pytest.approx(t.busy_gpu_hours, rel=1e-12)
    assert _sum(centers, "energy_kwh") == pytest.approx(t.energy_kwh, rel=1e-12)
    assert _sum(centers, "unpriced_gpu_hours") == t.unpriced_gpu_hours == H
    assert _sum(centers, "share_ratio") == pytest.approx(1.0)

    out = tmp_path / "2026-10"
    rows = list(csv.DictReader(io.StringIO((out / "chargeback-2026-10.csv").read_text())))
    assert {r["service"]: r["cost_center"] for r in rows} == {
        "chat": "ml-platform", "embed": "finance-override", "train": "research",
        "__unattributed__": UNASSIGNED, "__idle__": UNASSIGNED, "TOTAL": "",
    }  # fmt: skip
    subtotals = list(
        csv.DictReader(io.StringIO((out / "chargeback-2026-10-cost-centers.csv").read_text()))
    )
    assert [r["cost_center"] for r in subtotals] == [c.cost_center for c in centers] + ["TOTAL"]
    assert float(subtotals[0]["total_cost_usd"]) == pytest.approx(CHAT_COST, abs=1e-6)
    assert subtotals[2]["unpriced_gpu_hours"] == f"{H:.6f}"
    assert subtotals[3]["lines"] == "__unattributed__;__idle__"
    assert sum(float(r["total_cost_usd"]) for r in subtotals[:-1]) == pytest.approx(
        float(subtotals[-1]["total_cost_usd"]), abs=1e-5
    )
    assert float(subtotals[-1]["total_cost_usd"]) == pytest.approx(total, abs=1e-6)
    doc = json.loads((out / "chargeback-2026-10.json").read_text())
    assert doc["schema_version"] == 5
    assert [c["cost_center"] for c in doc["cost_centers"]] == [c.cost_center for c in centers]
    assert doc["cost_centers"][0]["total_cost_usd"] == pytest.approx(CHAT_COST)
    assert [ln["cost_center"] for ln in doc["lines"]] == [ln.cost_center for ln in report.lines]


def test_without_labels_or_rules_everything_is_unassigned_and_listed(tmp_path: Path) -> None:
    store = SqliteLedgerStore(":memory:")
    store.migrate()
    fx.fill(store)
    report, _ = run_report(store, ReportConfig(formats=("json",)), MONTH, tmp_path, now=fx.NOW)
    store.close()
    (only,) = report.cost_centers
    assert only.cost_center == UNASSIGNED
    assert len(only.lines) == len(report.lines) == 5
    assert only.total_cost_usd == pytest.approx(report.totals.total_cost_usd, rel=1e-12)


TENANT_CONFIG = CostCentersConfig.model_validate(
    {
        "static": [
            {"namespace": "prod", "cost_center": "ml-platform"},
            {"namespace": "search", "service": "embed", "cost_center": "search"},
        ],
        "tenants": {"team-a": "alpha", "search-ui": "ui-team", "research": "équipe-ü"},
    }
)


@pytest.fixture(scope="module")
def shared() -> Report:
    """The fixture month with hand-stated tenant lines (tests/support/tenant_report.py:
    chat ½ team-a, ¼ <script>, ⅛ formula, 1/16 probes, 1/16 untenanted; embed ¾ search-ui,
    ¼ headroom; train 1 research, unpriced), assigned with TENANT_CONFIG."""
    return assign(tenant_report(), CostCenterMap(TENANT_CONFIG))


def test_tenant_lines_each_go_to_their_own_cost_center(shared: Report) -> None:
    chat = next(ln for ln in shared.lines if ln.service == "chat")
    assert {t.tenant: t.cost_center for t in chat.tenants} == {
        "team-a": "alpha", EVIL_SCRIPT: "ml-platform", "=cmd|' /C calc'!A0": "ml-platform",
        "__probes__": "ml-platform", "__untenanted__": "ml-platform",
    }  # fmt: skip
    by = {c.cost_center: c for c in shared.cost_centers}
    # alpha and ml-platform tie at half of chat each (powers of two: exact): by name
    assert list(by) == ["alpha", "ml-platform", "ui-team", "search", "équipe-ü", UNASSIGNED]
    assert by["alpha"].total_cost_usd == pytest.approx(CHAT_COST / 2)
    assert by["ml-platform"].total_cost_usd == pytest.approx(CHAT_COST / 2)
    assert by["ml-platform"].allocated_gpu_hours == pytest.approx(CHAT_H / 2)
    assert len(by["ml-platform"].lines) == 4
    assert by["ui-team"].total_cost_usd == pytest.approx(EMBED_COST * 3 / 4)
    assert by["search"].total_cost_usd == pytest.approx(EMBED_COST / 4)
    assert by["search"].lines == ("search/embed tenant __headroom__",)
    assert by["équipe-ü"].unpriced_gpu_hours == H  # lab/train's tenant: unpriced
    assert by[UNASSIGNED].total_cost_usd == pytest.approx(IDLE_COST + UNATTR_COST)
    assert _sum(shared.cost_centers, "total_cost_usd") == pytest.approx(
        shared.totals.total_cost_usd, rel=1e-12
    )
    assert _sum(shared.cost_centers, "allocated_gpu_hours") == pytest.approx(
        shared.totals.allocated_gpu_hours, rel=1e-12
    )


# -- FOCUS ------------------------------------------------------------------------------


def test_focus_rows_carry_the_cost_center_tag(shared: Report) -> None:
    rows = list(csv.DictReader(io.StringIO(focus_csv(shared))))
    tags = [json.loads(r["Tags"]) for r in rows]
    got = {
        (t["gpuledger/service"], t.get("gpuledger/tenant", "")): t["gpuledger/cost-center"]
        for t in tags
    }
    assert got[("chat", "team-a")] == "alpha"
    assert got[("chat", EVIL_SCRIPT)] == "ml-platform"
    assert got[("embed", "__headroom__")] == "search"
    assert got[("train", "research")] == "équipe-ü"
    assert got[("__idle__", "")] == got[("__unattributed__", "")] == UNASSIGNED
    assert all(r["Tags"].isascii() for r in rows)  # the validator holds strings to ASCII
    cost = {}
    for r, t in zip(rows, tags, strict=True):
        center = t["gpuledger/cost-center"]
        cost[center] = cost.get(center, 0.0) + float(r["BilledCost"])
    for c in shared.cost_centers:
        assert cost[c.cost_center] == pytest.approx(c.total_cost_usd, abs=1e-6)


def test_official_validator_passes_with_cost_centers(shared: Report, tmp_path: Path) -> None:
    binary = find_validator()
    if binary is None:
        pytest.skip("focus-validator not found: set FOCUS_VALIDATOR_BIN (make focus-validator)")
    sites = [p for p in binary.parent.parent.glob("lib/python3.*/site-packages")
             if (p / "focus_validator").is_dir()]  # fmt: skip
    (tmp_path / "focus_validator").symlink_to(sites[0] / "focus_validator")
    data = tmp_path / "chargeback-2026-10-focus.csv"
    data.write_text(focus_csv(shared), encoding="utf-8")
    assert VALIDATE_VERSION
    v = run_validator(binary, tmp_path, data, APPLICABILITY_CRITERIA)
    assert set(v.failing) <= {"InvoiceId-C-005-C"}, v.failure_lines()
    assert v.passed > 100


# -- HTML -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile() -> Report:
    """The plain fixture month with a hostile cost-center name recorded for prod/chat."""
    store = SqliteLedgerStore(":memory:")
    store.migrate()
    fx.fill(store)
    store.upsert_cost_centers([CostCenterRow(fx.OCT, "n1", "prod", "chat", HOSTILE, "pod_label")])
    cfg = ReportConfig(cost_centers=CONFIG, formats=("json",))
    import tempfile

    report, _ = run_report(store, cfg, MONTH, Path(tempfile.mkdtemp()), now=fx.NOW)
    store.close()
    return report


def test_html_has_a_by_cost_center_section_with_the_figures(hostile: Report) -> None:
    page = render_html(hostile)
    doc = parse(page).root
    section = doc.find("section", id="cost-centers-section")
    assert section.find("h2").text().startswith("By cost center")
    rows = {r.attrs["data-cost-center"]: r for r in section.find_all("tr")
            if "data-cost-center" in r.attrs}  # fmt: skip
    assert list(rows) == [HOSTILE, "finance-override", "research", UNASSIGNED, "TOTAL"]

    def col(name: str, key: str) -> str:
        return rows[name].find("td", **{"data-col": key}).text().strip()

    assert col(HOSTILE, "cost_center") == HOSTILE  # text, not markup
    assert col(HOSTILE, "total_cost_usd") == f"${CHAT_COST:,.2f}"
    assert col("research", "total_cost_usd").startswith("$0.00")
    assert "744.0 GPU-h unpriced" in col("research", "total_cost_usd")
    assert col(UNASSIGNED, "lines") == "__unattributed____idle__"
    assert col("TOTAL", "total_cost_usd").startswith(f"${hostile.totals.total_cost_usd:,.2f}")
    assert "<img" not in page.split('id="cost-centers-section"')[1].split("</section>")[0]


@needs_chromium
def test_the_page_renders_clean_in_chromium(hostile: Report, tmp_path: Path) -> None:
    path = tmp_path / "chargeback-2026-10.html"
    path.write_text(render_html(hostile), encoding="utf-8")
    run = chromium(tmp_path, path, "--dump-dom", "--virtual-time-budget=2000")
    assert run.problems() == []
    assert 'id="cost-centers-section"' in run.stdout
    assert "<img" not in run.stdout  # the hostile name stayed text
    assert 'data-cost-center="&lt;img src=x onerror=&quot;alert(1)&quot;&gt;"' in run.stdout


# -- the command ------------------------------------------------------------------------


def test_report_by_cost_center(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    store = SqliteLedgerStore(path)
    store.migrate()
    fx.fill(store)
    store.upsert_cost_centers(RECORDED)
    store.close()
    config = tmp_path / "agent.yaml"
    config.write_text(
        "report:\n  cost_centers:\n    static:\n"
        "      - {namespace: search, service: embed, cost_center: finance-override}\n"
        "      - {namespace: lab, cost_center: research}\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(
        app,
        ["report", "--month", "2026-10", "--config", str(config), "--ledger",
         f"sqlite:///{path}", "--out", str(tmp_path / "out"), "--format", "json",
         "--by", "cost-center"],
        env={"COLUMNS": "250"},
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    rows = [ln.split("│") for ln in result.stderr.splitlines() if "│" in ln]
    names = [r[1].strip() for r in rows]
    assert names == ["ml-platform", "finance-override", "research", UNASSIGNED, "TOTAL"]
    assert rows[0][6].strip() == f"${CHAT_COST:,.2f}"
    assert "744.0 GPU-h unpriced" in rows[2][6]
    total = CHAT_COST + EMBED_COST + IDLE_COST + UNATTR_COST
    assert rows[4][6].strip() == f"${total:,.2f}"
    assert "by cost center" in result.stderr
