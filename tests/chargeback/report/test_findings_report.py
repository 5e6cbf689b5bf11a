"""The report's Findings section (issue 17): carried by the report run from a findings
provider, ranked by monthly savings, written to JSON, ``-findings.csv`` and the HTML page
(read back with html.parser, then opened in headless Chromium).

The findings are hand-built (tests/support/findings_report.py); expected cells are
written out here by hand (six-decimal CSV numbers, UTC hours), not by the writers.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from pathlib import Path

import pytest

import tests.support.report_fixtures as fx
from gpuledger.chargeback.ledger.store.sqlite import SqliteLedgerStore
from gpuledger.chargeback.report.build import build_report
from gpuledger.chargeback.report.config import ReportConfig
from gpuledger.chargeback.report.console import findings_summary
from gpuledger.chargeback.report.model import Month, Report
from gpuledger.chargeback.report.monthly import report_file, run_report
from gpuledger.chargeback.report.ratecard import load_rate_card
from gpuledger.chargeback.report.writers.csv_json import report_json
from gpuledger.chargeback.report.writers.files import write_report
from gpuledger.chargeback.report.writers.findings import FINDING_COLUMNS, findings_csv
from gpuledger.chargeback.report.writers.html import render_html
from tests.support.findings_report import (
    EVIL_ATTR,
    EVIL_FORMULA,
    EVIL_SCRIPT,
    IDLE,
    MIG,
    OVER,
    RANKED,
    TIE,
    TOTAL_USD,
    UNRANKED,
    ZOMBIE,
    Provider,
)
from tests.support.html_dom import Node, chromium, needs_chromium, number, parse

OCTOBER = Month.parse("2026-10")


@pytest.fixture(scope="module")
def base() -> Report:
    store = SqliteLedgerStore(":memory:")
    store.migrate()
    fx.fill(store)
    return build_report(store, load_rate_card(), OCTOBER, now=fx.NOW)


@pytest.fixture(scope="module")
def report(base: Report) -> Report:
    return replace(base, findings=RANKED, findings_computed=True)


# -- the run ----------------------------------------------------------------------------------


def _store() -> SqliteLedgerStore:
    store = SqliteLedgerStore(":memory:")
    store.migrate()
    fx.fill(store)
    return store


def test_run_report_ranks_the_providers_findings(tmp_path: Path) -> None:
    provider = Provider(UNRANKED)
    card = load_rate_card()
    cfg = ReportConfig.model_validate({"formats": ["csv", "json"]})
    with _store() as store:
        report, _ = run_report(store, cfg, OCTOBER, tmp_path, card=card, now=fx.NOW,
                               findings=provider)  # fmt: skip
        assert provider.calls == [(store, OCTOBER, card)]
    assert report.findings_computed
    # 3600.5, 1200.25, then the two 800.0 in the order given (IDLE before TIE), 90.125
    assert report.findings == (OVER, ZOMBIE, IDLE, TIE, MIG)
    doc = json.loads((tmp_path / "2026-10" / "chargeback-2026-10.json").read_text())
    assert [f["monthly_savings_usd"] for f in doc["findings"]] == [3600.5, 1200.25, 800.0,
                                                                   800.0, 90.125]  # fmt: skip


def test_run_report_without_a_provider_says_not_computed(tmp_path: Path) -> None:
    cfg = ReportConfig.model_validate({"formats": ["csv", "json", "html"]})
    with _store() as store:
        report, paths = run_report(store, cfg, OCTOBER, tmp_path, now=fx.NOW)
    assert (report.findings, report.findings_computed) == ((), False)
    month = tmp_path / "2026-10"
    assert month / "chargeback-2026-10-findings.csv" in paths
    assert (month / "chargeback-2026-10-findings.csv").read_text() == (
        ",".join(FINDING_COLUMNS) + "\n"
    )
    doc = json.loads((month / "chargeback-2026-10.json").read_text())
    assert (doc["findings"], doc["findings_computed"]) == ([], False)
    page = parse((month / "chargeback-2026-10.html").read_text()).root
    empty = page.find("p", id="findings-empty").text()
    assert empty == "findings were not computed: no findings engine is wired into this run."


# -- JSON -------------------------------------------------------------------------------------


def test_json_carries_every_field(report: Report) -> None:
    doc = json.loads(report_json(report))
    assert doc["schema_version"] == 5  # 5 (issue 18) adds the cost centers and anomalies
    assert doc["findings_computed"] is True
    assert doc["findings"][0] == {
        "kind": "over_provisioned", "namespace": "prod", "service": "chat",
        "gpu_model": "NVIDIA H100 80GB HBM3", "title": "prod/chat: 2 GPUs instead of 4",
        "recommendation": "Run prod/chat on 2 replicas instead of 4.",
        "current_gpus": 4.0, "recommended_gpus": 2.0, "monthly_savings_usd": 3600.5,
        "hours_of_evidence": 744, "assumption": "The next month's load is like this one's p95.",
        "evidence": {"p95_busy_gpus": 1.4, "target_utilization": 0.7, "usd_per_gpu_hour": 2.42},
        "gpus": ["GPU-h1", "GPU-h2"],
        "peak_hours": [fx.OCT + 13 * 3600, fx.OCT + 37 * 3600],
        "peak_hours_utc": ["2026-10-01T13:00:00Z", "2026-10-02T13:00:00Z"],
    }  # fmt: skip
    assert [(f["kind"], f["service"]) for f in doc["findings"]] == [
        ("over_provisioned", "chat"), ("zombie", EVIL_SCRIPT), ("idle_capacity", ""),
        ("mig_fit", EVIL_FORMULA),
    ]  # fmt: skip
    assert doc["findings"][1]["evidence"] == {
        "held_gpu_hours": 496.0, "busy_ratio": 0.0, "pod": "gone-pod-7"
    }  # fmt: skip
    assert doc["findings"][1]["namespace"] == EVIL_ATTR


# -- CSV --------------------------------------------------------------------------------------


def test_findings_csv_has_a_row_per_finding_ranked(report: Report) -> None:
    rows = list(csv.DictReader(io.StringIO(findings_csv(report))))
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4"]
    version = report.rate_card.version
    assert rows[0] == {
        "month": "2026-10", "rank": "1", "kind": "over_provisioned", "namespace": "prod",
        "service": "chat", "gpu_model": "NVIDIA H100 80GB HBM3",
        "title": "prod/chat: 2 GPUs instead of 4",
        "recommendation": "Run prod/chat on 2 replicas instead of 4.",
        "current_gpus": "4.000000", "recommended_gpus": "2.000000",
        "monthly_savings_usd": "3600.500000", "hours_of_evidence": "744",
        "assumption": "The next month's load is like this one's p95.",
        "evidence": '{"p95_busy_gpus": 1.4, "target_utilization": 0.7, "usd_per_gpu_hour": 2.42}',
        "gpus": "GPU-h1;GPU-h2", "peak_hours_utc": "2026-10-01T13:00:00Z;2026-10-02T13:00:00Z",
        "rate_card_version": version,
    }  # fmt: skip
    zombie, idle, mig = rows[1], rows[2], rows[3]
    assert (zombie["service"], zombie["namespace"]) == (EVIL_SCRIPT, EVIL_ATTR)
    assert json.loads(zombie["evidence"]) == {"held_gpu_hours": 496.0, "busy_ratio": 0.0,
                                              "pod": "gone-pod-7"}  # fmt: skip
    assert (zombie["monthly_savings_usd"], zombie["peak_hours_utc"]) == ("1200.250000", "")
    assert (idle["namespace"], idle["service"], idle["gpus"]) == ("", "", "GPU-a1;GPU-a2;GPU-a3")
    assert idle["peak_hours_utc"] == "2026-10-05T04:00:00Z"  # hour 100 of October
    assert mig["service"] == "'" + EVIL_FORMULA  # a spreadsheet shows it, never runs it
    assert (mig["recommended_gpus"], mig["monthly_savings_usd"]) == ("0.430000", "90.125000")


def test_findings_csv_is_written_with_the_csv_and_served_by_name(
    report: Report, tmp_path: Path
) -> None:
    paths = write_report(report, tmp_path, formats=("csv",))
    month = tmp_path / "2026-10"
    assert month / "chargeback-2026-10-findings.csv" in paths
    assert (month / "chargeback-2026-10-findings.csv").read_text() == findings_csv(report)
    found = report_file(tmp_path, "2026-10", "chargeback-2026-10-findings.csv")
    assert found == month / "chargeback-2026-10-findings.csv"
    focus_only = write_report(report, tmp_path / "f", formats=("focus",))
    assert [p.name for p in focus_only] == ["chargeback-2026-10-focus.csv"]


# -- HTML -------------------------------------------------------------------------------------


def _rows(doc: Node) -> list[Node]:
    return doc.find("table", id="findings").find_all("tr", class_="finding")


def _cell(row: Node, col: str) -> str:
    return " ".join(row.find("td", **{"data-col": col}).text().split())


def test_section_sits_after_the_totals_before_the_service_lines(report: Report) -> None:
    page = render_html(report)
    cards, section, lines = (page.index(f'id="{i}"') for i in
                             ("summary", "findings-section", "lines-section"))  # fmt: skip
    assert cards < section < lines


def test_rows_in_rank_order_with_their_figures(report: Report) -> None:
    doc = parse(render_html(report)).root
    rows = _rows(doc)
    assert [r.attrs["data-rank"] for r in rows] == ["1", "2", "3", "4"]
    assert [r.attrs["data-kind"] for r in rows] == ["over_provisioned", "zombie",
                                                    "idle_capacity", "mig_fit"]  # fmt: skip
    # 90.125 is exact in binary: to cents it rounds half to even, $90.12
    assert [number(_cell(r, "monthly_savings_usd")) for r in rows] == [3600.5, 1200.25, 800.0,
                                                                       90.12]  # fmt: skip
    over = rows[0]
    assert _cell(over, "service") == "prod/chat"
    assert _cell(over, "gpu_model") == "H100 80GB HBM3"
    assert _cell(over, "gpus_change") == "4 → 2"
    assert _cell(rows[3], "gpus_change") == "1 → 0.43"
    evidence = {
        s.attrs["data-name"]: " ".join(s.text().split()) for s in over.find_all("span", class_="ev")
    }
    assert evidence == {
        "p95_busy_gpus": "p95_busy_gpus 1.4",
        "target_utilization": "target_utilization 0.7",
        "usd_per_gpu_hour": "usd_per_gpu_hour 2.42",
    }
    assert over.find("span", **{"data-col": "gpus"}).text() == "GPU-h1, GPU-h2"
    assert over.find("span", **{"data-col": "peak_hours"}).text() == (
        "2026-10-01 13:00 UTC, 2026-10-02 13:00 UTC"
    )
    assumption = over.find("small", **{"data-col": "assumption"}).text()
    assert " ".join(assumption.split()) == "Assumes: The next month's load is like this one's p95."
    assert "Evidence (744 h):" in _cell(over, "recommendation")
    assert _cell(rows[2], "service") == "fleet"
    total = doc.find("td", **{"data-col": "findings_total"}).text()
    assert number(total) == pytest.approx(round(TOTAL_USD, 2))
    assert "Savings identified (4 findings)" in doc.find("table", id="findings").text()


def test_hostile_names_are_escaped(report: Report) -> None:
    page = render_html(report)
    tb = parse(page)
    assert "script" not in tb.tags
    assert "img" not in tb.tags
    for node in tb.root.iter():
        assert not any(k.startswith("on") for k in node.attrs), node.attrs
    zombie = _rows(tb.root)[1]
    assert zombie.attrs["data-service"] == f"{EVIL_ATTR}/{EVIL_SCRIPT}"
    assert _cell(zombie, "service") == f"{EVIL_ATTR}/{EVIL_SCRIPT}"
    assert f"Stop the process of {EVIL_SCRIPT}" in _cell(zombie, "recommendation")


def test_no_findings_above_the_thresholds_is_said(base: Report) -> None:
    doc = parse(render_html(replace(base, findings_computed=True))).root
    assert not doc.find_all("table", id="findings")
    assert doc.find("p", id="findings-empty").text() == "no findings above the thresholds."


# -- in a real browser --------------------------------------------------------------------------


@needs_chromium
def test_section_renders_in_chromium_with_a_clean_console(report: Report, tmp_path: Path) -> None:
    path = tmp_path / "chargeback-2026-10.html"
    path.write_text(render_html(report), encoding="utf-8")
    run = chromium(tmp_path, path, "--dump-dom", "--virtual-time-budget=2000")
    assert run.problems() == []
    dom = parse(run.stdout).root
    rows = _rows(dom)
    assert [r.attrs["data-kind"] for r in rows] == ["over_provisioned", "zombie",
                                                    "idle_capacity", "mig_fit"]  # fmt: skip
    assert _cell(rows[1], "service") == f"{EVIL_ATTR}/{EVIL_SCRIPT}"  # text, not markup
    assert not dom.find_all("img")
    assert number(dom.find("td", **{"data-col": "findings_total"}).text()) == pytest.approx(5690.88)


def test_the_terminal_summary_names_the_findings(report: Report, base: Report) -> None:
    assert findings_summary(report) == (
        "  findings: 4, savings identified $5,690.88/month (gpuledger findings --month 2026-10)"
    )
    assert findings_summary(replace(base, findings_computed=True)) == (
        "  findings: none above the thresholds"
    )
    assert findings_summary(base).startswith("  findings: not computed")
