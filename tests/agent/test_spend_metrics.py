"""The reporter's hourly spend-anomaly families (issue 18, item 5):
``gpuledger_spend_anomaly_score``, ``gpuledger_spend_daily_cost_usd`` and
``gpuledger_spend_daily_baseline_usd`` per (namespace, service), read back from the
exposition text with prometheus_client's parser.

The ledger is tests/support/anomaly_fixtures.py (three spikes planted on 2026-11-10, the
last complete day at the clock below); the expected figures are worked by hand in
tests/chargeback/anomalies/test_anomalies_store.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gpuledger import schema
from gpuledger.agent.reporter import Reporter
from gpuledger.chargeback.ledger.store.sqlite import SqliteLedgerStore
from gpuledger.chargeback.report.config import ReportConfig
from tests.support import anomaly_fixtures as fx
from tests.support.findings_fixtures import CARD_YAML
from tests.support.reporter_metrics import exposed

CLOCK = datetime(2026, 11, 11, 5, 7, tzinfo=UTC)
Z_VISION = 96.25 / (1.4826 * 1.175)
Z_SPIKE = 96 / (1.4826 * 2.4)  # chat and batch
Z_SEARCH = 2 / (1.4826 * 2.2)


@pytest.fixture
def store() -> Iterator[SqliteLedgerStore]:
    s = SqliteLedgerStore(":memory:")
    s.migrate()
    s.upsert(fx.usage_rows(), [])
    s.upsert_tenant_tokens(fx.tenant_rows())
    yield s
    s.close()


def _reporter(store: SqliteLedgerStore, tmp_path: Path, **anomalies: object) -> Reporter:
    card = tmp_path / "card.yaml"
    card.write_text(CARD_YAML)
    cfg = ReportConfig.model_validate(
        {"formats": ["json"], "rate_card": str(card), "anomalies": anomalies}
    )
    return Reporter(cfg, store, tmp_path / "reports", clock=lambda: CLOCK)


def _svc(name: str) -> tuple[tuple[str, str], ...]:
    return (("namespace", fx.NS), ("service", name))


def test_the_latest_complete_day_is_scored_per_service(
    store: SqliteLedgerStore, tmp_path: Path
) -> None:
    reporter = _reporter(store, tmp_path)
    assert schema.SPEND_ANOMALY_SCORE.name not in exposed(reporter)  # nothing before
    reporter.refresh_spend()
    got = exposed(reporter)
    assert got[schema.SPEND_ANOMALY_SCORE.name] == pytest.approx(
        {_svc("vision"): Z_VISION, _svc("chat"): Z_SPIKE, _svc("batch"): Z_SPIKE,
         _svc("search"): Z_SEARCH}
    )  # fmt: skip
    assert got[schema.SPEND_DAILY_COST.name] == pytest.approx(
        {_svc("vision"): 119.75, _svc("chat"): 144, _svc("batch"): 144, _svc("search"): 46}
    )
    assert got[schema.SPEND_DAILY_BASELINE.name] == pytest.approx(
        {_svc("vision"): 23.5, _svc("chat"): 48, _svc("batch"): 48, _svc("search"): 44}
    )
    day = datetime(2026, 11, 10, tzinfo=UTC).timestamp()
    assert got[schema.SPEND_SCORED_DAY.name] == {(): day}


def test_a_failed_refresh_keeps_the_previous_scores(
    store: SqliteLedgerStore, tmp_path: Path
) -> None:
    reporter = _reporter(store, tmp_path)
    reporter.refresh_spend()
    before = exposed(reporter)[schema.SPEND_ANOMALY_SCORE.name]
    (tmp_path / "card.yaml").write_text("version: [broken\n")  # a card that no longer loads
    reporter.refresh_spend()
    assert reporter.spend is not None
    assert reporter.spend.failures == 1
    assert exposed(reporter)[schema.SPEND_ANOMALY_SCORE.name] == before


def test_switched_off_there_is_no_refresh_and_no_family(
    store: SqliteLedgerStore, tmp_path: Path
) -> None:
    reporter = _reporter(store, tmp_path, enabled=False)
    reporter.refresh_spend()
    assert reporter.spend is None
    assert schema.SPEND_ANOMALY_SCORE.name not in exposed(reporter)


def test_the_refresh_runs_at_start_and_every_hour(store: SqliteLedgerStore, tmp_path: Path) -> None:
    reporter = _reporter(store, tmp_path)
    written = tmp_path / "reports" / "2026-10" / "chargeback-2026-10.json"
    written.parent.mkdir(parents=True)
    written.write_text("{}")  # October's report is there: no catch-up run
    reporter.start()
    try:
        job = reporter._scheduler.get_job("spend-anomalies")
        assert job is not None
        assert str(job.trigger) == "cron[minute='7']"
        deadline = time.monotonic() + 30
        while reporter.status().spend is None and time.monotonic() < deadline:
            time.sleep(0.05)
        spend = reporter.status().spend
        assert spend is not None
        assert spend.day.isoformat() == "2026-11-10"
    finally:
        reporter.stop()


def test_a_store_that_fails_mid_life_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The reporter's store closed under it (an agent stopping): the hourly job logs one
    line and keeps the scores it had, twice in a row without a second line."""
    s = SqliteLedgerStore(":memory:")
    s.migrate()
    s.upsert(fx.usage_rows(), [])
    reporter = _reporter(s, tmp_path)
    reporter.refresh_spend()
    before = exposed(reporter)[schema.SPEND_DAILY_COST.name]
    s.close()
    with caplog.at_level("WARNING", logger="gpuledger.agent.anomaly_refresh"):
        reporter.refresh_spend()
        reporter.refresh_spend()
    assert reporter.spend is not None
    assert reporter.spend.failures == 2
    assert len([r for r in caplog.records if "not refreshed" in r.getMessage()]) == 1
    assert exposed(reporter)[schema.SPEND_DAILY_COST.name] == before
