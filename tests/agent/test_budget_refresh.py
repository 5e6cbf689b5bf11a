"""The reporter's hourly budget refresh and its metrics, read back from the exposition
text with prometheus_client's parser, against the hand-stated figures of
``tests/support/budget_ledger.py`` (SQLite): the first refresh runs at start; a failing
refresh is counted and keeps the last good figures; an edited budgets file applies at the
next refresh; no budget, no budget metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gpuledger import schema
from gpuledger.agent.reporter import Reporter
from gpuledger.chargeback.ledger.model import StoreError
from gpuledger.chargeback.ledger.store.sqlite import SqliteLedgerStore
from gpuledger.chargeback.report.config import ReportConfig
from tests.support.budget_ledger import CHAT_H, IDLE_H, MTD_HOURS, NOW, fill
from tests.support.reporter_metrics import exposed

# label sets as exposed: a scope without a namespace or service has them empty (absent
# to Prometheus)
TEAM = (("name", "chat-team"), ("namespace", ""), ("scope", "cost_center"), ("service", ""))
CHAT = (("name", "prod/chat"), ("namespace", "prod"), ("scope", "service"), ("service", "chat"))
IDLE = (("name", "__unassigned__"), ("namespace", ""), ("scope", "cost_center"), ("service", ""))
LAB = (("name", "lab"), ("namespace", "lab"), ("scope", "namespace"), ("service", ""))


@pytest.fixture
def store() -> Iterator[SqliteLedgerStore]:
    s = SqliteLedgerStore(":memory:")
    s.migrate()
    fill(s)
    yield s
    s.close()


def _cfg(budgets_file: Path | None = None) -> ReportConfig:
    return ReportConfig.model_validate(
        {
            "formats": ["json"],
            "cost_centers": {"static": [{"namespace": "prod", "cost_center": "chat-team"}]},
            "budgets": [
                {"cost_center": "chat-team", "monthly_usd": 800 * CHAT_H},
                {"namespace": "prod", "service": "chat", "monthly_usd": 400 * CHAT_H},
                {"cost_center": "__unassigned__", "monthly_usd": 5000},
            ],
            "budgets_file": budgets_file,
        }
    )


def test_refresh_exports_budget_month_to_date_and_forecast(
    store: SqliteLedgerStore, tmp_path: Path
) -> None:
    reporter = Reporter(_cfg(), store, tmp_path, clock=lambda: NOW)
    assert reporter.budgets.refresh()
    got = exposed(reporter)
    assert got[schema.BUDGET.name] == {
        TEAM: pytest.approx(800 * CHAT_H),
        CHAT: pytest.approx(400 * CHAT_H),
        IDLE: 5000.0,
    }
    assert got[schema.BUDGET_MONTH_TO_DATE.name] == {
        TEAM: pytest.approx(MTD_HOURS * CHAT_H),
        CHAT: pytest.approx(MTD_HOURS * CHAT_H),
        IDLE: pytest.approx(MTD_HOURS * IDLE_H),
    }
    assert got[schema.BUDGET_FORECAST.name] == {
        TEAM: pytest.approx(720 * CHAT_H),
        CHAT: pytest.approx(720 * CHAT_H),
        IDLE: pytest.approx(720 * IDLE_H),
    }
    assert got[schema.BUDGET_REFRESH_FAILURES.name] == {(): 0.0}
    assert got[schema.BUDGET_REFRESH_LAST_SUCCESS.name][()] == pytest.approx(time.time(), abs=60)
    assert got[schema.BUDGET_REFRESH_DURATION.name][()] > 0


class _Down:
    """A ledger that cannot be read (what a PostgreSQL outage looks like to the reads)."""

    def usage(self, *args: object, **kwargs: object) -> object:
        raise StoreError("connection refused")


def test_a_failed_refresh_is_counted_and_keeps_the_last_figures(
    store: SqliteLedgerStore, tmp_path: Path
) -> None:
    reporter = Reporter(_cfg(), store, tmp_path, clock=lambda: NOW)
    assert reporter.budgets.refresh()
    reporter.budgets.store = _Down()  # type: ignore[assignment]
    assert not reporter.budgets.refresh()
    assert not reporter.budgets.refresh()
    status = reporter.budgets.status()
    assert (status.runs, status.failures) == (3, 2)
    assert status.last_error == "connection refused"
    got = exposed(reporter)
    assert got[schema.BUDGET_REFRESH_FAILURES.name] == {(): 2.0}
    assert got[schema.BUDGET_MONTH_TO_DATE.name][TEAM] == pytest.approx(MTD_HOURS * CHAT_H)


def test_an_edited_budgets_file_applies_at_the_next_refresh(
    store: SqliteLedgerStore, tmp_path: Path
) -> None:
    path = tmp_path / "budgets.yaml"
    path.write_text("budgets:\n  - {namespace: lab, monthly_usd: 50}\n")
    reporter = Reporter(_cfg(path), store, tmp_path, clock=lambda: NOW)
    assert reporter.budgets.refresh()
    assert exposed(reporter)[schema.BUDGET.name][LAB] == 50.0
    path.write_text("budgets:\n  - {namespace: lab, monthly_usd: 75}\n")
    assert reporter.budgets.refresh()
    assert exposed(reporter)[schema.BUDGET.name][LAB] == 75.0
    path.write_text("budgets:\n  - {namespace: lab, monthly_usd: -1}\n")
    assert not reporter.budgets.refresh()  # refused, counted; 75 stays exported
    assert "budgets.yaml row 1 (namespace 'lab')" in (reporter.budgets.status().last_error or "")
    assert exposed(reporter)[schema.BUDGET.name][LAB] == 75.0


def test_the_first_refresh_runs_at_start(store: SqliteLedgerStore, tmp_path: Path) -> None:
    # the reporter's catch-up would write last month's report too: a clock in November
    # with October's report on disk keeps it out of this test
    (tmp_path / "2026-10").mkdir()
    (tmp_path / "2026-10" / "chargeback-2026-10.json").write_text("{}")
    reporter = Reporter(_cfg(), store, tmp_path, clock=lambda: NOW)
    reporter.start()
    try:
        deadline = time.monotonic() + 30
        while not reporter.budgets.status().refreshed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reporter.budgets.status().refreshed
        assert (
            reporter._scheduler.get_job("budget-refresh").trigger.interval.total_seconds() == 3600
        )
    finally:
        reporter.stop()


def test_no_budget_no_budget_metrics(store: SqliteLedgerStore, tmp_path: Path) -> None:
    reporter = Reporter(ReportConfig(formats=("json",)), store, tmp_path, clock=lambda: NOW)
    assert not reporter.budgets.configured
    assert reporter.status().budgets is None
    got = exposed(reporter)
    assert not [name for name in got if name.startswith("gpuledger_budget")]


def test_the_clock_is_the_reporters(store: SqliteLedgerStore, tmp_path: Path) -> None:
    # the ledger's last bucket is the 20th's 10:00 hour, incomplete at NOW (10:30) and
    # complete a day later: one hour more month to date, nothing else new
    later = datetime(2026, 11, 21, 10, 30, tzinfo=UTC)
    reporter = Reporter(_cfg(), store, tmp_path, clock=lambda: later)
    assert reporter.budgets.refresh()
    line = next(b for b in reporter.budgets.status().lines if b.name == "chat-team")
    assert line.month_to_date_usd == pytest.approx((MTD_HOURS + 1) * CHAT_H)


def test_a_hostile_cost_center_name_is_exposed_exactly(
    store: SqliteLedgerStore, tmp_path: Path
) -> None:
    # control characters are refused with the row (tests/chargeback/budgets/test_config);
    # quotes, backslashes and braces are legal in a name and must survive the exposition
    hostile = 'a"b\\c} x{y="z"'
    cfg = ReportConfig.model_validate(
        {"formats": ["json"], "budgets": [{"cost_center": hostile, "monthly_usd": 7}]}
    )
    reporter = Reporter(cfg, store, tmp_path, clock=lambda: NOW)
    assert reporter.budgets.refresh()
    got = exposed(reporter)[schema.BUDGET.name]
    assert got == {
        (("name", hostile), ("namespace", ""), ("scope", "cost_center"), ("service", "")): 7.0
    }


def test_the_refresh_knows_the_recorded_labels(store: SqliteLedgerStore, tmp_path: Path) -> None:
    # no static rule: prod/chat's cost center is only what the agent recorded this month
    from gpuledger.chargeback.ledger.tables import CostCenterRow

    hour = int(datetime(2026, 11, 3, tzinfo=UTC).timestamp())
    store.upsert_cost_centers(
        [CostCenterRow(hour, "n1", "prod", "chat", "labelled-team", "pod_label")]
    )
    cfg = ReportConfig.model_validate(
        {"formats": ["json"], "budgets": [{"cost_center": "labelled-team", "monthly_usd": 9}]}
    )
    reporter = Reporter(cfg, store, tmp_path, clock=lambda: NOW)
    assert reporter.budgets.refresh()
    status = reporter.budgets.status()
    (line,) = status.lines
    assert line.month_to_date_usd == pytest.approx(MTD_HOURS * CHAT_H)
    assert status.warnings == ()


class _CountingLabels:
    """The store's ``cost_centers`` reads, their ranges recorded."""

    def __init__(self, store: SqliteLedgerStore) -> None:
        self.store = store
        self.ranges: list[tuple[datetime, datetime]] = []

    def cost_centers(self, start: datetime, end: datetime) -> dict[tuple[str, str], str]:
        self.ranges.append((start, end))
        return self.store.cost_centers(start, end)


def test_recorded_labels_are_read_whole_once_a_month_then_incrementally(
    store: SqliteLedgerStore,
) -> None:
    from gpuledger.agent.budget_refresh import RecordedLabels
    from gpuledger.chargeback.ledger.tables import CostCenterRow

    def label(day: int, hour: int, service: str, team: str) -> CostCenterRow:
        t = int(datetime(2026, 11, day, hour, tzinfo=UTC).timestamp())
        return CostCenterRow(t, "n1", "prod", service, team, "pod_label")

    store.upsert_cost_centers([label(2, 0, "chat", "a"), label(3, 0, "embed", "b")])
    counting = _CountingLabels(store)
    labels = RecordedLabels(counting)  # type: ignore[arg-type]
    nov, dec = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    t1 = datetime(2026, 11, 10, 5, 30, tzinfo=UTC)
    assert labels.get(t1) == {("prod", "chat"): "a", ("prod", "embed"): "b"}
    assert counting.ranges == [(nov, datetime(2026, 11, 10, 5, tzinfo=UTC))]
    # an hour later: chat relabelled at 05:00, and a row for 01:00 flushed late
    store.upsert_cost_centers([label(10, 5, "chat", "c"), label(10, 1, "late", "d")])
    t2 = datetime(2026, 11, 10, 6, 30, tzinfo=UTC)
    got = labels.get(t2)
    assert got == {("prod", "chat"): "c", ("prod", "embed"): "b", ("prod", "late"): "d"}
    # read from the last end minus the 24 h overlap, not from the month's start
    assert counting.ranges[-1] == (
        datetime(2026, 11, 9, 5, tzinfo=UTC),
        datetime(2026, 11, 10, 6, tzinfo=UTC),
    )
    assert labels.get(t2) == got  # the same hour: no read
    assert len(counting.ranges) == 2
    # a new month: read whole again, November's labels gone
    assert labels.get(datetime(2026, 12, 1, 3, 10, tzinfo=UTC)) == {}
    assert counting.ranges[-1] == (dec, datetime(2026, 12, 1, 3, tzinfo=UTC))
