"""The daily cost series read from a real ledger (SQLite and PostgreSQL), against figures
computed from the shipped rate card's YAML: the ledger and its hand-stated figures are in
``tests/support/budget_ledger.py``. Under ``share-weighted`` chat is the only H100 taker,
so it carries idle's cost too."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from gpuledger.chargeback.attribution.claims import IDLE
from gpuledger.chargeback.forecast.series import read_series
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.chargeback.report.ratecard import load_rate_card
from tests.support.budget_ledger import CHAT_H, IDLE_H, MTD_HOURS, NOW
from tests.support.budget_ledger import fill as _fill


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
