"""The report grouped by cluster (issue 18), on SQLite and PostgreSQL, against figures
computed by hand from the shipped rate card's YAML (tests/support/rates.py): each cluster's
GPU-hours and cost, idle capacity shared only within its own cluster, the clusters adding
up to the report's total, and the cluster in the JSON, the clusters CSV and FOCUS."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import pytest

from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.chargeback.ledger.tables import CoverageRow, UsageRow
from gpuledger.chargeback.report.build import ReportOptions, build_report
from gpuledger.chargeback.report.model import Month
from gpuledger.chargeback.report.ratecard import load_rate_card
from gpuledger.chargeback.report.writers.clusters import clusters_csv
from gpuledger.chargeback.report.writers.csv_json import report_json
from gpuledger.chargeback.report.writers.focus import focus_csv
from tests.support.rates import capacity_rate, energy_rate

H100 = "NVIDIA H100 80GB HBM3"
OCT = int(datetime(2026, 10, 1, tzinfo=UTC).timestamp())
NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
HOURS = 10
RH, EH = capacity_rate("H100-80GB"), energy_rate("H100-80GB")
NODE = "gpu-node-01"  # in both clusters


def _fill(store: AuditableLedgerStore) -> None:
    """Per hour: east's node runs chat 2700 s and idles 900 s (3.6 MJ, 0.9 MJ); west's
    node of the same name and GPU UUID runs chat 1800 s and embed 1800 s (1.8 MJ each)."""
    for h in range(HOURS):
        hs = OCT + 3600 * h
        store.upsert(
            [
                UsageRow(hs, NODE, "GPU-1", "prod", "chat", H100, "", 2700.0, 1350.0, 3.6e6,
                         cluster="east"),
                UsageRow(hs, NODE, "GPU-1", "", "__idle__", H100, "", 900.0, 0.0, 0.9e6,
                         cluster="east"),
                UsageRow(hs, NODE, "GPU-1", "prod", "chat", H100, "", 1800.0, 1800.0, 1.8e6,
                         cluster="west"),
                UsageRow(hs, NODE, "GPU-1", "prod", "embed", H100, "", 1800.0, 900.0, 1.8e6,
                         cluster="west"),
            ],
            [CoverageRow(hs, NODE, "GPU-1", H100, 3600.0, cluster=c) for c in ("east", "west")],
        )  # fmt: skip


def _cost(seconds: float, joules: float) -> float:
    return seconds / 3600 * RH + joules / 3.6e6 * EH


@pytest.mark.parametrize("idle_policy", ["separate", "share-weighted"])
def test_report_grouped_by_cluster(ledger_store: AuditableLedgerStore, idle_policy: str) -> None:
    _fill(ledger_store)
    report = build_report(
        ledger_store, load_rate_card(), Month(2026, 10), now=NOW,
        options=ReportOptions(idle_policy=idle_policy),  # type: ignore[arg-type]
    )  # fmt: skip
    east_chat = HOURS * _cost(2700.0, 3.6e6)
    east_idle = HOURS * _cost(900.0, 0.9e6)
    west = HOURS * (_cost(1800.0, 1.8e6) + _cost(1800.0, 1.8e6))
    east, west_total = report.clusters
    assert (east.cluster, west_total.cluster) == ("east", "west")
    assert east.allocated_gpu_hours == pytest.approx(HOURS * 1.0)
    assert west_total.allocated_gpu_hours == pytest.approx(HOURS * 1.0)
    assert east.busy_gpu_hours == pytest.approx(HOURS * 1350 / 3600)
    assert (east.services, west_total.services) == (1, 2)
    # a cluster's cost is its GPUs' cost whatever the idle policy: east's idle stays in east
    assert east.total_cost_usd == pytest.approx(east_chat + east_idle)
    assert west_total.total_cost_usd == pytest.approx(west)
    assert report.totals.total_cost_usd == pytest.approx(east_chat + east_idle + west)
    (chat,) = [line for line in report.lines if line.service == "chat"]
    by_cluster = {m.cluster: m for m in chat.models}
    assert set(by_cluster) == {"east", "west"}
    shared = east_idle if idle_policy == "share-weighted" else 0.0  # chat is east's only taker
    assert by_cluster["east"].total_cost_usd == pytest.approx(east_chat + shared)
    assert by_cluster["west"].total_cost_usd == pytest.approx(HOURS * _cost(1800.0, 1.8e6))
    assert chat.total_cost_usd == pytest.approx(east_chat + shared + HOURS * _cost(1800, 1.8e6))
    # the rental counterfactual prices both clusters' hours and names its offering once
    for basis in (chat.rental_hyperscaler_basis, chat.rental_specialist_basis):
        assert basis.count("/GPU-h") == 1, basis

    doc = json.loads(report_json(report))
    assert [c["cluster"] for c in doc["clusters"]] == ["east", "west"]
    assert {m["cluster"] for line in doc["lines"] for m in line["models"]} == {"east", "west"}
    rows = list(csv.DictReader(io.StringIO(clusters_csv(report))))
    assert [r["cluster"] for r in rows] == ["east", "west", "TOTAL"]
    assert float(rows[0]["total_cost_usd"]) + float(rows[1]["total_cost_usd"]) == pytest.approx(
        float(rows[2]["total_cost_usd"]), abs=2e-6
    )
    focus = list(csv.DictReader(io.StringIO(focus_csv(report))))
    assert {r["x_Cluster"] for r in focus} == {"east", "west"}
    for r in focus:
        assert json.loads(r["Tags"])["gpuledger/cluster"] == r["x_Cluster"]
    east_focus = sum(float(r["BilledCost"]) for r in focus if r["x_Cluster"] == "east")
    assert east_focus == pytest.approx(east_chat + east_idle, abs=1e-4)


def test_summary_by_cluster(
    ledger_store: AuditableLedgerStore, capsys: pytest.CaptureFixture[str]
) -> None:
    """``gpuledger report --by cluster``: a row per cluster and the total they add up to."""
    from gpuledger.chargeback.report.console import print_summary

    _fill(ledger_store)
    report = build_report(ledger_store, load_rate_card(), Month(2026, 10), now=NOW)
    print_summary(report, by="cluster")
    err = capsys.readouterr().err
    east = HOURS * (_cost(2700.0, 3.6e6) + _cost(900.0, 0.9e6))
    west = HOURS * 2 * _cost(1800.0, 1.8e6)
    rows = {line.split("│")[1].strip(): line for line in err.splitlines() if "│" in line}
    assert f"${east:,.2f}" in rows["east"]
    assert f"${west:,.2f}" in rows["west"]
    assert f"${east + west:,.2f}" in rows["TOTAL"]


def test_html_has_a_cluster_section_that_adds_up(ledger_store: AuditableLedgerStore) -> None:
    from gpuledger.chargeback.report.writers.html import render_html
    from tests.support.html_dom import number, parse

    _fill(ledger_store)
    report = build_report(ledger_store, load_rate_card(), Month(2026, 10), now=NOW)
    doc = parse(render_html(report)).root
    table = doc.find("table", id="clusters")
    rows = {r.attrs["data-cluster"]: r for r in table.find_all("tr") if "data-cluster" in r.attrs}
    assert list(rows) == ["east", "west"]
    east = HOURS * (_cost(2700.0, 3.6e6) + _cost(900.0, 0.9e6))
    west = HOURS * 2 * _cost(1800.0, 1.8e6)
    for name, want in (("east", east), ("west", west)):
        assert number(rows[name].find_all("td")[-1].text()) == pytest.approx(want, abs=0.01)
    models = doc.find("table", id="models").find_all("tr")
    assert {r.attrs.get("data-cluster") for r in models if "data-line" in r.attrs} == {
        "east",
        "west",
    }


def test_html_of_a_one_cluster_ledger_has_no_cluster_section(
    ledger_store: AuditableLedgerStore,
) -> None:
    from gpuledger.chargeback.report.writers.html import render_html

    ledger_store.upsert(
        [UsageRow(OCT, NODE, "GPU-1", "prod", "chat", H100, "", 3600.0, 1800.0, 1e6)], []
    )
    report = build_report(ledger_store, load_rate_card(), Month(2026, 10), now=NOW)
    assert [c.cluster for c in report.clusters] == ["default"]
    assert 'id="clusters"' not in render_html(report)


def test_a_services_model_lines_merge_across_clusters_for_the_tenant_split(
    ledger_store: AuditableLedgerStore,
) -> None:
    """The tenant split divides a service per GPU model: its lines of one model in two
    clusters merge into one whose hours, costs and idle share are the two added (the
    rates are the card's, the same in both)."""
    from gpuledger.chargeback.report.clusters import by_gpu_model

    _fill(ledger_store)
    report = build_report(
        ledger_store, load_rate_card(), Month(2026, 10), now=NOW,
        options=ReportOptions(idle_policy="share-weighted"),
    )  # fmt: skip
    (chat,) = [line for line in report.lines if line.service == "chat"]
    assert len(chat.models) == 2
    merged = by_gpu_model(chat.models)
    assert list(merged) == [H100]
    ml = merged[H100]
    assert ml.allocated_gpu_hours == pytest.approx(HOURS * (2700 + 1800) / 3600)
    assert ml.idle_share_usd == pytest.approx(HOURS * _cost(900.0, 0.9e6))  # east's idle
    assert ml.total_cost_usd == pytest.approx(chat.total_cost_usd)
    assert ml.capacity_usd_per_gpu_hour == pytest.approx(RH)
