"""The report's Budgets section (JSON and HTML) from a real ledger (SQLite and
PostgreSQL), with the hand-stated figures of ``tests/support/budget_ledger.py``: the month
under way (month to date and the forecast of its end) and a complete month (actual, the
forecast equal to it); a hostile cost-center name escaped; no budget, no section; a
budgets file gone bad is a note and the report is still written."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gpuledger.chargeback.costcenters.config import CostCenterRule, CostCentersConfig
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.chargeback.report.config import ReportConfig
from gpuledger.chargeback.report.model import Month
from gpuledger.chargeback.report.monthly import run_report
from tests.support.budget_ledger import CHAT_H, MTD_HOURS, NOW, fill
from tests.support.html_dom import number, parse

HOSTILE = '<img src=x onerror="alert(1)">'
CENTERS = CostCentersConfig(
    static=(
        CostCenterRule(namespace="prod", cost_center="chat-team"),
        CostCenterRule(namespace="lab", cost_center=HOSTILE),
    )
)


def _cfg(tmp_path: Path, **extra: object) -> ReportConfig:
    return ReportConfig(
        formats=("json", "html"),
        cost_centers=CENTERS,
        budgets=[
            {"cost_center": "chat-team", "monthly_usd": 800 * CHAT_H},
            {"namespace": "prod", "service": "chat", "monthly_usd": 400 * CHAT_H},
            {"cost_center": HOSTILE, "monthly_usd": 10},
        ],
        **extra,
    )


def test_month_under_way(ledger_store: AuditableLedgerStore, tmp_path: Path) -> None:
    fill(ledger_store)
    report, _paths = run_report(
        ledger_store, _cfg(tmp_path), Month(2026, 11), tmp_path / "out", now=NOW
    )
    doc = json.loads((tmp_path / "out" / "2026-11" / "chargeback-2026-11.json").read_text())
    assert doc["budgets_configured"] is True
    rows = {b["name"]: b for b in doc["budgets"]}
    team = rows["chat-team"]
    assert team["month_to_date_usd"] == pytest.approx(MTD_HOURS * CHAT_H)
    assert team["forecast_usd"] == pytest.approx(720 * CHAT_H)  # 466 + 14 + 240 hours
    assert team["status"] == "ok"
    assert rows["prod/chat"]["status"] == "over"
    # the report's own line for prod/chat is the month to date of its budget
    (chat,) = [line for line in report.lines if line.service == "chat"]
    assert chat.total_cost_usd == pytest.approx(rows["prod/chat"]["month_to_date_usd"])

    page = (tmp_path / "out" / "2026-11" / "chargeback-2026-11.html").read_text()
    assert HOSTILE not in page  # autoescaped
    dom = parse(page).root
    section = dom.find("section", id="budgets-section")
    assert "Month to date" in section.text()
    row = section.find("tr", **{"data-name": "chat-team"})
    cell = {td.attrs["data-col"]: td.text() for td in row.find_all("td")}
    assert number(cell["budget_usd"]) == pytest.approx(800 * CHAT_H, abs=0.005)
    assert number(cell["month_to_date_usd"]) == pytest.approx(MTD_HOURS * CHAT_H, abs=0.005)
    assert number(cell["forecast_usd"]) == pytest.approx(720 * CHAT_H, abs=0.005)
    assert number(cell["used_ratio"]) == pytest.approx(100 * MTD_HOURS / 800, abs=0.05)
    assert "ok" in cell["status"]
    over = section.find("tr", **{"data-name": "prod/chat"})
    assert over.attrs["data-status"] == "over"
    assert section.find("tr", **{"data-name": HOSTILE}).attrs["data-scope"] == "cost_center"


def test_complete_month(ledger_store: AuditableLedgerStore, tmp_path: Path) -> None:
    fill(ledger_store)  # October holds one day: the 31st, 24 hours
    later = datetime(2026, 11, 20, 10, 30, tzinfo=UTC)
    run_report(ledger_store, _cfg(tmp_path), Month(2026, 10), tmp_path / "out", now=later)
    doc = json.loads((tmp_path / "out" / "2026-10" / "chargeback-2026-10.json").read_text())
    team = next(b for b in doc["budgets"] if b["name"] == "chat-team")
    assert team["month_to_date_usd"] == pytest.approx(24 * CHAT_H)
    assert team["forecast_usd"] == pytest.approx(24 * CHAT_H)  # nothing left to forecast
    assert team["method"] == "run-rate"
    page = (tmp_path / "out" / "2026-10" / "chargeback-2026-10.html").read_text()
    assert "Actual" in parse(page).root.find("section", id="budgets-section").text()


def test_no_budget_no_section(ledger_store: AuditableLedgerStore, tmp_path: Path) -> None:
    fill(ledger_store)
    cfg = ReportConfig(formats=("json", "html"))
    report, _ = run_report(ledger_store, cfg, Month(2026, 11), tmp_path / "out", now=NOW)
    assert (report.budgets, report.budgets_configured) == ((), False)
    page = (tmp_path / "out" / "2026-11" / "chargeback-2026-11.html").read_text()
    assert 'id="budgets-section"' not in page


def test_a_budgets_file_gone_bad_is_a_note(
    ledger_store: AuditableLedgerStore, tmp_path: Path
) -> None:
    fill(ledger_store)
    path = tmp_path / "budgets.yaml"
    path.write_text("budgets:\n  - {namespace: lab, monthly_usd: 5}\n")
    cfg = ReportConfig(formats=("json",), budgets_file=path)
    path.write_text("budgets:\n  - {namespace: lab, monthly_usd: -5}\n")  # edited since
    report, paths = run_report(ledger_store, cfg, Month(2026, 11), tmp_path / "out", now=NOW)
    assert paths
    assert report.budgets == ()
    assert report.budgets_configured
    assert any(
        n.startswith("BUDGETS NOT SHOWN: budgets.yaml row 1 (namespace 'lab'): monthly_usd -5")
        for n in report.notes
    )


def test_forecasts_of_every_cost_center_and_service(
    ledger_store: AuditableLedgerStore, tmp_path: Path
) -> None:
    fill(ledger_store)
    cfg = ReportConfig(formats=("json", "html"), cost_centers=CENTERS, forecasts=True)
    report, _ = run_report(ledger_store, cfg, Month(2026, 11), tmp_path / "out", now=NOW)
    assert not report.budgets_configured  # forecasts need no budget
    got = {(f.scope, f.name): f for f in report.forecasts}
    assert list(got) == [
        ("cost_center", HOSTILE),  # lab/train, sorted byte-wise: '<' before '_' and 'c'
        ("cost_center", "__unassigned__"),  # the idle line
        ("cost_center", "chat-team"),
        ("service", "/__idle__"),
        ("service", "lab/train"),
        ("service", "prod/chat"),
    ]
    for key in (("cost_center", "chat-team"), ("service", "prod/chat")):
        assert got[key].month_to_date_usd == pytest.approx(MTD_HOURS * CHAT_H)
        assert got[key].forecast_usd == pytest.approx(720 * CHAT_H)
        assert got[key].next_month_forecast_usd == pytest.approx(744 * CHAT_H)
    assert got[("service", "lab/train")].forecast_usd == 0.0  # unpriced: no cost
    page = (tmp_path / "out" / "2026-11" / "chargeback-2026-11.html").read_text()
    assert 'id="budgets-section"' not in page
    row = parse(page).root.find("tr", **{"data-name": "prod/chat", "data-scope": "service"})
    cell = {td.attrs["data-col"]: td.text() for td in row.find_all("td")}
    assert number(cell["forecast_usd"]) == pytest.approx(720 * CHAT_H, abs=0.005)
    assert number(cell["next_month_forecast_usd"]) == pytest.approx(744 * CHAT_H, abs=0.005)
    assert HOSTILE not in page
    doc = json.loads((tmp_path / "out" / "2026-11" / "chargeback-2026-11.json").read_text())
    assert len(doc["forecasts"]) == 6
