"""The daily cost series read from a real ledger (SQLite and PostgreSQL), against figures
computed here from the shipped rate card's YAML (``tests/support/rates.py``).

Every hour from 2026-10-31 00:00 to 2026-11-20 10:00 UTC (now is 10:30, so ten hours of
the 20th are complete): on GPU ``h1`` (H100) ``prod/chat`` holds 2700 s (busy 1800 s,
1.8 MJ = 0.5 kWh) and ``__idle__`` 900 s (0.09 MJ = 0.025 kWh); on GPU ``b1`` (B200, no
cost-of-ownership row: unpriced) ``lab/train`` holds 3600 s.

- chat, one hour: 0.75 GPU-h × capacity(H100) + 0.5 kWh × energy(H100); a day is 24 of
  them; month to date is 19 × 24 + 10 = 466 of them (October's day is history, not MTD);
- idle, one hour: 0.25 × capacity + 0.025 × energy (policy ``separate``: its own line);
  under ``share-weighted`` chat is the only H100 taker, so it carries idle's cost too;
- train: cost 0 with 466 unpriced GPU-hours month to date.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from gpuledger.chargeback.attribution.claims import IDLE
from gpuledger.chargeback.forecast.series import read_series
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.chargeback.ledger.tables import CoverageRow, UsageRow
from gpuledger.chargeback.report.ratecard import load_rate_card
from tests.support.rates import capacity_rate, energy_rate

H100 = "NVIDIA H100 80GB HBM3"
B200 = "NVIDIA B200"
START = datetime(2026, 10, 31, tzinfo=UTC)
NOW = datetime(2026, 11, 20, 10, 30, tzinfo=UTC)
CHAT_H = 0.75 * capacity_rate("H100-80GB") + 0.5 * energy_rate("H100-80GB")
IDLE_H = 0.25 * capacity_rate("H100-80GB") + 0.025 * energy_rate("H100-80GB")
MTD_HOURS = 19 * 24 + 10


def _fill(store: AuditableLedgerStore) -> None:
    hours = int((NOW.replace(minute=0) - START).total_seconds() // 3600) + 1  # 10:00 too
    for h in range(hours):
        hs = int(START.timestamp()) + 3600 * h
        store.upsert(
            [
                UsageRow(hs, "n1", "h1", "prod", "chat", H100, "", 2700.0, 1800.0, 1.8e6),
                UsageRow(hs, "n1", "h1", "", IDLE, H100, "", 900.0, 0.0, 0.09e6),
                UsageRow(hs, "n1", "b1", "lab", "train", B200, "", 3600.0, 3600.0, 3.6e6),
            ],
            [CoverageRow(hs, "n1", "h1", H100, 3600.0), CoverageRow(hs, "n1", "b1", B200, 3600.0)],
        )


def test_daily_series_and_month_to_date(ledger_store: AuditableLedgerStore) -> None:
    _fill(ledger_store)
    card = load_rate_card(None)
    s = read_series(ledger_store, card, NOW, policy="separate", history_days=56)
    chat, idle, train = ("prod", "chat"), ("", IDLE), ("lab", "train")
    days = [date(2026, 10, 31) + timedelta(days=i) for i in range(20)]  # to the 19th
    assert sorted(s.daily[chat]) == days  # the 20th is not complete
    for d in days:
        assert s.daily[chat][d] == pytest.approx(24 * CHAT_H)
        assert s.daily[idle][d] == pytest.approx(24 * IDLE_H)
        assert s.daily[train][d] == 0.0
    assert s.month_to_date[chat] == pytest.approx(MTD_HOURS * CHAT_H)
    assert s.month_to_date[idle] == pytest.approx(MTD_HOURS * IDLE_H)
    assert s.unpriced_gpu_hours == {train: pytest.approx(MTD_HOURS)}


def test_the_idle_policy_moves_idle_cost_onto_its_takers(
    ledger_store: AuditableLedgerStore,
) -> None:
    _fill(ledger_store)
    s = read_series(ledger_store, load_rate_card(None), NOW, policy="share-weighted")
    chat = ("prod", "chat")
    assert s.daily[chat][date(2026, 11, 5)] == pytest.approx(24 * (CHAT_H + IDLE_H))
    assert s.month_to_date[chat] == pytest.approx(MTD_HOURS * (CHAT_H + IDLE_H))
    assert s.month_to_date[("", IDLE)] == pytest.approx(0.0, abs=1e-9)


def test_the_window_starts_history_days_before_today(ledger_store: AuditableLedgerStore) -> None:
    _fill(ledger_store)
    s = read_series(ledger_store, load_rate_card(None), NOW, history_days=3)
    # 3 days before the 20th is the 17th, but month to date needs all of November
    assert min(s.daily[("prod", "chat")]) == date(2026, 11, 1)
    assert s.month_to_date[("prod", "chat")] == pytest.approx(MTD_HOURS * CHAT_H)
