"""The reporter role: last month's report on a schedule, caught up at start, served from
``/reports/`` and ``/api/v1/reports`` behind the API token."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import gpuledger.chargeback.report.monthly as monthly
from gpuledger.agent.config import load_config
from gpuledger.agent.main import Agent
from gpuledger.agent.reporter import Reporter
from gpuledger.chargeback.ledger.store.sqlite import SqliteLedgerStore
from gpuledger.chargeback.report.config import ReportConfig
from gpuledger.chargeback.report.model import Month
from gpuledger.chargeback.report.writers.anomalies import ANOMALY_COLUMNS
from gpuledger.sim.month import simulate_month
from tests.support import report_fixtures as fx
from tests.support.findings_report import RANKED, Provider, wired

NOV_2 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def fixture_store() -> Iterator[SqliteLedgerStore]:
    store = SqliteLedgerStore(":memory:")
    store.migrate()
    fx.fill(store)
    yield store
    store.close()


def _reporter(store: SqliteLedgerStore, out: Path, clock: datetime, **cfg: object) -> Reporter:
    config = ReportConfig.model_validate({"formats": ["csv", "json"], **cfg})
    return Reporter(config, store, out, store_label="sqlite:///test", clock=lambda: clock)


def test_run_writes_last_month(fixture_store: SqliteLedgerStore, tmp_path: Path) -> None:
    reporter = _reporter(fixture_store, tmp_path, NOV_2)
    paths = reporter.run()
    names = sorted(p.name for p in paths)
    assert names == [
        "chargeback-2026-10-anomalies.csv",
        "chargeback-2026-10-clusters.csv",
        "chargeback-2026-10-cost-centers.csv",
        "chargeback-2026-10-coverage.csv",
        "chargeback-2026-10-findings.csv",
        "chargeback-2026-10-tenants.csv",
        "chargeback-2026-10.csv",
        "chargeback-2026-10.json",
    ]
    doc = json.loads((tmp_path / "2026-10" / "chargeback-2026-10.json").read_text())
    assert doc["month"] == "2026-10"
    assert doc["store"] == "sqlite:///test"
    status = reporter.status()
    assert (status.runs, status.failures, status.last_month) == (1, 0, "2026-10")


def test_month_without_data_counts_a_failure(
    fixture_store: SqliteLedgerStore, tmp_path: Path
) -> None:
    reporter = _reporter(fixture_store, tmp_path, datetime(2026, 9, 3, tzinfo=UTC))
    assert reporter.run() == []  # August: nothing in the ledger
    status = reporter.status()
    assert status.failures == 1
    assert status.last_error is not None
    assert "2026-08" in status.last_error
    assert not (tmp_path / "2026-08").exists()


def test_catch_up_only_after_the_schedule_and_when_missing(
    fixture_store: SqliteLedgerStore, tmp_path: Path
) -> None:
    before = _reporter(fixture_store, tmp_path, datetime(2026, 11, 1, 1, 30, tzinfo=UTC))
    assert not before.catch_up_due()  # the 1st at 01:30: the 02:00 run is still ahead
    after = _reporter(fixture_store, tmp_path, datetime(2026, 11, 1, 2, 5, tzinfo=UTC))
    assert after.catch_up_due()
    after.run()
    assert not after.catch_up_due()  # written now
    fifth = _reporter(fixture_store, tmp_path, NOV_2, schedule="0 6 5 * *")
    assert not fifth.catch_up_due()


def test_keep_months_prunes_old_reports(fixture_store: SqliteLedgerStore, tmp_path: Path) -> None:
    for month in ("2026-06", "2026-07", "2026-08"):
        (tmp_path / month).mkdir()
        (tmp_path / month / f"chargeback-{month}.json").write_text("{}")
    _reporter(fixture_store, tmp_path, NOV_2, keep_months=2).run()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2026-08", "2026-10"]


def test_bad_schedule_is_refused_with_the_key() -> None:
    from gpuledger.agent.config import ConfigError

    with pytest.raises(ConfigError) as exc:
        load_config(None, environ={"GPULEDGER_REPORT__SCHEDULE": "0 25 1 * *"})
    assert exc.value.problems[0][0] == "report.schedule"


# -- the agent in the reporter role -----------------------------------------------------------


@pytest.fixture
def reporter_agent(tmp_path: Path) -> Iterator[tuple[Agent, TestClient, Month]]:
    last = Month.of(datetime.now(UTC)).previous()
    ledger = tmp_path / "fleet-ledger.db"
    with SqliteLedgerStore(ledger) as store:
        store.migrate()
        simulate_month(store, last)
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    cfg = load_config(
        None,
        environ={
            "GPULEDGER_ROLES": '["reporter"]',
            "GPULEDGER_STATE_DIR": str(tmp_path / "state"),
            "GPULEDGER_LEDGER__URL": f"sqlite:///{ledger}",
            "GPULEDGER_HTTP__API_TOKEN_FILE": str(token),
            "GPULEDGER_REPORT__SCHEDULE": "0 0 1 * *",  # fired already this month
            "GPULEDGER_REPORT__FORMATS": '["csv", "json"]',
        },
    )
    agent = Agent(cfg)
    assert agent.ledger is None
    assert agent.runtime.runners == []
    agent.start()
    try:
        yield agent, TestClient(agent.app), last
    finally:
        agent.stop()


def test_reporter_role_catches_up_and_serves(
    reporter_agent: tuple[Agent, TestClient, Month],
) -> None:
    agent, client, last = reporter_agent
    auth = {"Authorization": "Bearer s3cret-token"}
    assert agent.reporter is not None
    deadline = time.monotonic() + 60
    while agent.reporter.status().last_month != last.label:
        assert time.monotonic() < deadline, agent.reporter.status()
        time.sleep(0.2)

    assert client.get("/reports/").status_code == 401
    assert client.get(f"/api/v1/reports/{last.label}").status_code == 401
    index = client.get("/reports/", headers=auth)
    assert index.status_code == 200
    assert f"chargeback-{last.label}.csv" in index.text

    listed = client.get("/api/v1/reports", headers=auth).json()["reports"]
    assert [r["month"] for r in listed] == [last.label]

    doc = client.get(f"/api/v1/reports/{last.label}", headers=auth).json()
    assert doc["month"] == last.label
    assert doc["complete"] is True
    assert {n["node"] for n in doc["coverage"]} == {"gpu-node-01", "gpu-node-02", "gpu-node-03"}

    raw = client.get(f"/api/v1/reports/{last.label}?format=csv", headers=auth)
    assert raw.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(raw.text)))
    total = next(r for r in rows if r["service"] == "TOTAL")
    assert float(total["total_cost_usd"]) == pytest.approx(doc["totals"]["total_cost_usd"])
    assert client.get("/readyz").status_code == 200  # nothing to wait for without collectors
    metrics = client.get("/metrics").text
    node = agent.cfg.node_name
    assert f'gpuledger_report_runs_total{{cluster="default",node="{node}"}} 1.0' in metrics
    assert f'gpuledger_report_failures_total{{cluster="default",node="{node}"}} 0.0' in metrics
    assert (
        f'gpuledger_report_last_success_timestamp_seconds{{cluster="default",node="{node}"}} '
        in metrics
    )


def test_the_anomalies_csv_is_served_with_the_reports_anomalies(
    reporter_agent: tuple[Agent, TestClient, Month],
) -> None:
    """Issue 18: ``?format=anomalies`` serves ``chargeback-YYYY-MM-anomalies.csv``, a row
    per anomaly the report's JSON holds."""
    agent, client, last = reporter_agent
    auth = {"Authorization": "Bearer s3cret-token"}
    deadline = time.monotonic() + 60
    while agent.reporter is not None and agent.reporter.status().last_month != last.label:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    doc = client.get(f"/api/v1/reports/{last.label}", headers=auth).json()
    assert doc["anomalies_computed"] is True
    raw = client.get(f"/api/v1/reports/{last.label}?format=anomalies", headers=auth)
    assert raw.status_code == 200
    assert raw.headers["content-type"].startswith("text/csv")
    header, *rows = list(csv.reader(io.StringIO(raw.text)))
    assert tuple(header) == ANOMALY_COLUMNS
    assert [(r[1], r[3]) for r in rows] == [(a["day"], a["service"]) for a in doc["anomalies"]]


def test_reports_refuse_unknown_files_and_traversal(
    reporter_agent: tuple[Agent, TestClient, Month],
) -> None:
    _, client, last = reporter_agent
    auth = {"Authorization": "Bearer s3cret-token"}
    for path in (
        f"/reports/{last.label}/secret.txt",
        "/reports/2026-99/chargeback-2026-99.json",
        "/reports/..%2f..%2fetc/passwd",
        f"/reports/{last.label}/..%2f..%2fagent.yaml",
        "/api/v1/reports/1999-01",
    ):
        assert client.get(path, headers=auth).status_code == 404, path
    assert client.get(f"/api/v1/reports/{last.label}?format=exe", headers=auth).status_code == 400


def test_the_agent_hands_its_reporter_the_findings_provider(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """The reporter role gets monthly.findings_provider's engine: its findings reach the
    files served and /metrics (issue 17)."""
    provider = Provider(RANKED)
    monkeypatch.setattr(monthly, "findings_provider", wired(provider))
    agent, client, last = request.getfixturevalue("reporter_agent")
    auth = {"Authorization": "Bearer s3cret-token"}
    deadline = time.monotonic() + 60
    while agent.reporter.status().last_month != last.label:
        assert time.monotonic() < deadline, agent.reporter.status()
        time.sleep(0.2)
    assert [month for _, month, _ in provider.calls] == [last]
    raw = client.get(f"/api/v1/reports/{last.label}?format=findings", headers=auth)
    assert raw.status_code == 200
    assert raw.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(raw.text)))
    assert [(r["rank"], r["kind"], r["monthly_savings_usd"]) for r in rows] == [
        ("1", "over_provisioned", "3600.500000"), ("2", "zombie", "1200.250000"),
        ("3", "idle_capacity", "800.000000"), ("4", "mig_fit", "90.125000"),
    ]  # fmt: skip
    metrics = client.get("/metrics").text
    node = agent.cfg.node_name
    assert (
        f'gpuledger_finding_savings_usd{{cluster="default",node="{node}",kind="over_provisioned",'
        'namespace="prod",service="chat"} 3600.5' in metrics
    )
    assert (
        f'gpuledger_findings{{cluster="default",node="{node}",kind="smaller_gpu_class"}} 0.0'
        in metrics
    )
