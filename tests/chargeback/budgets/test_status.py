"""Budgets against a real ledger (SQLite and PostgreSQL): month to date, forecasts, % used
and status per cost center, namespace and service, against the hand-stated figures of
``tests/support/budget_ledger.py``.

chat's series is flat (24 × CHAT_H a day for 20 complete days), so the trend + weekday
model predicts 24 × CHAT_H a day: the month's end is 466 hours done + 14 hours left of
the 20th + 10 whole days (the 21st to the 30th) = 720 × CHAT_H; December 744 × CHAT_H.
Budgets are set as multiples of CHAT_H so each status shows once: 800 h (ok), 600 h
(forecast over), 400 h (over month to date).
"""

from __future__ import annotations

import pytest

from gpuledger.chargeback.budgets.config import parse_rows
from gpuledger.chargeback.budgets.status import budget_report
from gpuledger.chargeback.costcenters.config import CostCenterRule, CostCentersConfig
from gpuledger.chargeback.costcenters.resolve import CostCenterMap
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.chargeback.report.ratecard import load_rate_card
from tests.support.budget_ledger import CHAT_H, IDLE_H, MTD_HOURS, NOW, fill

CENTERS = CostCenterMap(
    CostCentersConfig(
        static=(
            CostCenterRule(namespace="prod", cost_center="chat-team"),
            CostCenterRule(namespace="lab", service="train", cost_center="research"),
        )
    )
)


def test_budget_lines_on_both_backends(ledger_store: AuditableLedgerStore) -> None:
    fill(ledger_store)
    budgets = parse_rows(
        [
            {"cost_center": "chat-team", "monthly_usd": 800 * CHAT_H},
            {"namespace": "prod", "monthly_usd": 600 * CHAT_H},
            {"namespace": "prod", "service": "chat", "monthly_usd": 400 * CHAT_H},
            {"cost_center": "research", "monthly_usd": 100},
            {"cost_center": "__unassigned__", "monthly_usd": 1000},
            {"cost_center": "ghost", "monthly_usd": 50},
        ],
        "test",
    )
    report = budget_report(ledger_store, load_rate_card(None), budgets, CENTERS, NOW)
    assert report.month == "2026-11"
    assert report.as_of == "2026-11-20T10:00:00Z"
    lines = {line.name: line for line in report.lines}
    for name, budget_h, status in (
        ("chat-team", 800, "ok"),
        ("prod", 600, "forecast-over"),
        ("prod/chat", 400, "over"),
    ):
        line = lines[name]
        assert line.month_to_date_usd == pytest.approx(MTD_HOURS * CHAT_H)
        assert line.forecast_usd == pytest.approx(720 * CHAT_H)
        assert line.next_month_forecast_usd == pytest.approx(744 * CHAT_H)
        assert line.used_ratio == pytest.approx(MTD_HOURS / budget_h)
        assert line.forecast_ratio == pytest.approx(720 / budget_h)
        assert line.status == status
        assert line.method == "trend+weekday"
        assert line.history_days == 20
    research = lines["research"]
    assert research.month_to_date_usd == 0.0
    assert research.unpriced_gpu_hours == pytest.approx(MTD_HOURS)
    assert research.status == "ok"
    idle = lines["__unassigned__"]  # the idle line: nothing assigns it a cost center
    assert idle.month_to_date_usd == pytest.approx(MTD_HOURS * IDLE_H)
    assert idle.forecast_usd == pytest.approx(720 * IDLE_H)
    ghost = lines["ghost"]
    assert ghost.month_to_date_usd == 0.0
    assert ghost.forecast_usd is None
    assert ghost.status == "no-forecast"
    assert len(report.warnings) == 1
    assert "'ghost' is not known" in report.warnings[0]
    assert "test row 6" in report.warnings[0]


class _Counting:
    """The store, counting its ``usage()`` reads."""

    def __init__(self, store: AuditableLedgerStore) -> None:
        self.store = store
        self.reads = 0

    def usage(self, *args: object, **kwargs: object) -> object:
        self.reads += 1
        return self.store.usage(*args, **kwargs)  # type: ignore[arg-type]


def test_reads_depend_on_the_window_not_on_the_budgets(
    ledger_store: AuditableLedgerStore,
) -> None:
    fill(ledger_store)
    many = parse_rows(
        [{"namespace": f"ns-{i}", "monthly_usd": 1} for i in range(300)]
        + [{"cost_center": "chat-team", "monthly_usd": 1}],
        "test",
    )
    for budgets in (many[:1], many):
        counting = _Counting(ledger_store)
        budget_report(counting, load_rate_card(None), budgets, CENTERS, NOW, history_days=10)  # type: ignore[arg-type]
        # the 1st of November (the month's start is before 10 days back) to the 20th
        # 10:00: 19 whole days and the 20th's complete hours, one read each
        assert counting.reads == 20
