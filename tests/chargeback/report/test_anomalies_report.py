"""The report's "What changed" section (issue 18, item 5): the run computes the month's
spend anomalies from the ledger (tests/support/anomaly_fixtures.py: three spikes planted
on 2026-11-10, figures worked by hand in tests/chargeback/anomalies/), and writes them to
JSON, ``-anomalies.csv`` and the HTML page (read back with html.parser, then opened in
headless Chromium). Expected cells are written out here (six-decimal CSV numbers)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gpuledger.chargeback.anomalies.model import Driver, SpendAnomaly
from gpuledger.chargeback.ledger.store.sqlite import SqliteLedgerStore
from gpuledger.chargeback.report.build import build_report
from gpuledger.chargeback.report.config import ReportConfig
from gpuledger.chargeback.report.console import anomalies_summary
from gpuledger.chargeback.report.model import Month, Report
from gpuledger.chargeback.report.monthly import report_file, run_report
from gpuledger.chargeback.report.writers.anomalies import ANOMALY_COLUMNS, anomalies_csv
from gpuledger.chargeback.report.writers.html import render_html
from tests.support import anomaly_fixtures as fx
from tests.support.findings_fixtures import H100, card
from tests.support.findings_report import EVIL_ATTR, EVIL_FORMULA, EVIL_SCRIPT
from tests.support.html_dom import Node, chromium, needs_chromium, number, parse

NOVEMBER = Month(2026, 11)
NOW = datetime(2026, 11, 11, tzinfo=UTC)  # 2026-11-10 is the last complete day
Z_VISION = 96.25 / (1.4826 * 1.175)
Z_CHAT = 96 / (1.4826 * 2.4)


def _store() -> SqliteLedgerStore:
    store = SqliteLedgerStore(":memory:")
    store.migrate()
    store.upsert(fx.usage_rows(), [])
    store.upsert_tenant_tokens(fx.tenant_rows())
    return store


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Report, Path]:
    out = tmp_path_factory.mktemp("reports")
    cfg = ReportConfig.model_validate({"formats": ["csv", "json", "html"]})
    with _store() as store:
        report, _ = run_report(store, cfg, NOVEMBER, out, card=card(), now=NOW)
    return report, out / "2026-11"


def test_the_run_carries_the_months_anomalies(written: tuple[Report, Path]) -> None:
    report, _ = written
    assert report.anomalies_computed
    assert [(a.day, a.service, a.direction) for a in report.anomalies] == [
        ("2026-11-10", "vision", "increase"),
        ("2026-11-10", "batch", "increase"),
        ("2026-11-10", "chat", "increase"),
    ]


def test_switched_off_the_report_says_not_computed(tmp_path: Path) -> None:
    cfg = ReportConfig.model_validate(
        {"formats": ["csv", "json", "html"], "anomalies": {"enabled": False}}
    )
    with _store() as store:
        report, _ = run_report(store, cfg, NOVEMBER, tmp_path, card=card(), now=NOW)
    assert (report.anomalies, report.anomalies_computed) == ((), False)
    month = tmp_path / "2026-11"
    assert (month / "chargeback-2026-11-anomalies.csv").read_text() == (
        ",".join(ANOMALY_COLUMNS) + "\n"
    )
    page = parse((month / "chargeback-2026-11.html").read_text()).root
    assert page.find("p", id="anomalies-empty").text() == (
        "spend anomalies were not computed for this report (report.anomalies.enabled)."
    )


def test_json_carries_each_anomaly_with_its_drivers(written: tuple[Report, Path]) -> None:
    _, month = written
    doc = json.loads((month / "chargeback-2026-11.json").read_text())
    assert doc["schema_version"] == 5
    assert doc["anomalies_computed"] is True
    vision = doc["anomalies"][0]
    assert vision == {
        "day": "2026-11-10", "namespace": "team", "service": "vision",
        "direction": "increase", "cost_usd": pytest.approx(119.75),
        "baseline_usd": pytest.approx(23.5), "change_usd": pytest.approx(96.25),
        "score": pytest.approx(Z_VISION), "mad_usd": pytest.approx(0.25), "baseline_days": 28,
        "drivers": [{"kind": "gpu_model", "name": H100, "day_usd": pytest.approx(96.0),
                     "baseline_usd": 0.0, "change_usd": pytest.approx(96.0)}],
    }  # fmt: skip
    chat = doc["anomalies"][2]
    assert [(d["kind"], d["name"]) for d in chat["drivers"]] == [("tenant", "tenant-b")]


def test_the_csv_has_a_row_per_anomaly(written: tuple[Report, Path]) -> None:
    report, month = written
    text = (month / "chargeback-2026-11-anomalies.csv").read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["service"] for r in rows] == ["vision", "batch", "chat"]
    assert rows[1] == {
        "month": "2026-11", "day": "2026-11-10", "namespace": "team", "service": "batch",
        "direction": "increase", "cost_usd": "144.000000", "baseline_usd": "48.000000",
        "change_usd": "96.000000", "robust_z": f"{Z_CHAT:.6f}", "mad_usd": "0.000000",
        "baseline_days": "28", "drivers": "idle +$96.00",
        "drivers_json": '[{"kind": "idle", "name": "idle", "day_usd": 96.0, '
                        '"baseline_usd": 0.0, "change_usd": 96.0}]',
        "rate_card_version": report.rate_card.version,
    }  # fmt: skip
    assert rows[0]["drivers"] == f"GPU model {H100} +$96.00"
    assert rows[2]["drivers"] == "tenant tenant-b +$96.00"
    found = report_file(month.parent, "2026-11", "chargeback-2026-11-anomalies.csv")
    assert found == month / "chargeback-2026-11-anomalies.csv"


# -- HTML -------------------------------------------------------------------------------------


def _rows(doc: Node) -> list[Node]:
    return doc.find("table", id="anomalies").find_all("tr", class_="anomaly")


def _cell(row: Node, col: str) -> str:
    return " ".join(row.find("td", **{"data-col": col}).text().split())


def test_the_section_lists_each_anomaly_after_the_findings(written: tuple[Report, Path]) -> None:
    _, month = written
    page = (month / "chargeback-2026-11.html").read_text()
    assert page.index('id="findings-section"') < page.index('id="anomalies-section"')
    assert page.index('id="anomalies-section"') < page.index('id="lines-section"')
    rows = _rows(parse(page).root)
    assert [r.attrs["data-service"] for r in rows] == ["team/vision", "team/batch", "team/chat"]
    vision = rows[0]
    assert number(_cell(vision, "cost_usd")) == 119.75
    assert _cell(vision, "baseline_usd") == "$23.50 28 days"
    assert _cell(vision, "change_usd") == "+$96.25"
    assert _cell(vision, "score") == f"+{Z_VISION:.2f}"
    (driver,) = vision.find_all("span", class_="driver")
    assert (driver.attrs["data-kind"], driver.attrs["data-name"]) == ("gpu_model", H100)
    assert "+$96.00" in driver.text()
    assert "idle +$96.00" in " ".join(_cell(rows[1], "drivers").split())


def _hostile(report: Report) -> Report:
    evil = SpendAnomaly(
        day="2026-11-10", namespace=EVIL_ATTR, service=EVIL_SCRIPT, direction="drop",
        cost_usd=10.0, baseline_usd=110.0, change_usd=-100.0, score=-6.5, mad_usd=3.0,
        baseline_days=28,
        drivers=(Driver("service", EVIL_FORMULA, 10.0, 110.0, -100.0),),
    )  # fmt: skip
    return replace(report, anomalies=(evil,), anomalies_computed=True)


def test_hostile_names_are_text_in_the_csv_and_the_page(written: tuple[Report, Path]) -> None:
    report = _hostile(written[0])
    (row,) = csv.DictReader(io.StringIO(anomalies_csv(report)))
    assert (row["namespace"], row["service"]) == (EVIL_ATTR, EVIL_SCRIPT)
    assert row["drivers"] == f"'{EVIL_FORMULA} −$100.00"  # a spreadsheet never runs it
    assert json.loads(row["drivers_json"])[0]["name"] == EVIL_FORMULA
    page = render_html(report)
    assert EVIL_SCRIPT not in page
    assert "<img src=x" not in page
    (r,) = _rows(parse(page).root)
    assert _cell(r, "service") == f"{EVIL_ATTR}/{EVIL_SCRIPT}"
    assert _cell(r, "change_usd") == "−$100.00 drop"


def test_an_empty_month_says_none_left_the_baseline(tmp_path: Path) -> None:
    with _store() as store:
        base = build_report(store, card(), NOVEMBER, now=NOW)
    page = parse(render_html(replace(base, anomalies_computed=True))).root
    assert page.find("p", id="anomalies-empty").text() == (
        "no day's spend left its service's baseline this month."
    )


@needs_chromium
def test_the_section_renders_in_chromium_with_a_clean_console(
    written: tuple[Report, Path], tmp_path: Path
) -> None:
    path = tmp_path / "chargeback-2026-11.html"
    path.write_text(render_html(_hostile(written[0])), encoding="utf-8")
    run = chromium(tmp_path, path, "--dump-dom", "--virtual-time-budget=2000")
    assert run.problems() == []
    dom = parse(run.stdout).root
    (row,) = _rows(dom)
    assert _cell(row, "service") == f"{EVIL_ATTR}/{EVIL_SCRIPT}"  # text, not markup
    assert not dom.find_all("img")
    total = dom.find("td", **{"data-col": "anomalies_total"}).text().split()
    assert total == ["+$0.00", "/", "−$100.00"]


def test_the_terminal_summary_names_the_largest(written: tuple[Report, Path]) -> None:
    report, _ = written
    assert anomalies_summary(report) == (
        "  spend anomalies: 3, the largest team/vision on 2026-11-10 "
        f"(+$96.25: GPU model {H100} +$96.00); see What changed"
    )
    assert anomalies_summary(replace(report, anomalies=())) == (
        "  spend anomalies: none (no day left its service's baseline)"
    )
    assert anomalies_summary(replace(report, anomalies_computed=False)).startswith(
        "  spend anomalies: not computed"
    )
