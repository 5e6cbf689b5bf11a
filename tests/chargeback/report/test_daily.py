"""The days the forecast and the spend anomalies price (``report/daily.py``) add up to the
bill, with two clusters, on SQLite and PostgreSQL. Per hour, on one H100 of a node named
alike in both clusters (no energy, so a GPU-hour costs the shipped card's capacity rate):

- east: ``prod/chat`` holds 2,700 s and 900 s sit idle;
- west: ``prod/embed`` holds the whole 3,600 s.

Under ``share-weighted`` the bill gives east's idle to chat, east's only taker: idle is
shared within its own (GPU model, cluster). A day grouped without the cluster pooled it
with west's and handed embed 4/7 of it."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from gpuledger.chargeback.anomalies.daily import Pricing
from gpuledger.chargeback.anomalies.daily import read_days as anomaly_days
from gpuledger.chargeback.attribution.claims import IDLE
from gpuledger.chargeback.forecast.series import read_series
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.chargeback.ledger.tables import CoverageRow, UsageRow
from gpuledger.chargeback.report.build import ReportOptions, build_report
from gpuledger.chargeback.report.model import Month
from gpuledger.chargeback.report.ratecard import load_rate_card
from tests.support.rates import capacity_rate

H100 = "NVIDIA H100 80GB HBM3"
RH = capacity_rate("H100-80GB")
FIRST = datetime(2026, 10, 1, tzinfo=UTC)
DAYS = 3
NOW = datetime(2026, 10, 4, tzinfo=UTC)
CHAT, EMBED, IDLE_KEY = ("prod", "chat"), ("prod", "embed"), ("", IDLE)
CHAT_DAY = 24 * (2700 + 900) / 3600 * RH  # its GPU-hours and east's idle
EMBED_DAY = 24 * RH


def _fill(store: AuditableLedgerStore) -> None:
    start = int(FIRST.timestamp())
    for h in range(DAYS * 24):
        hs = start + 3600 * h
        store.upsert(
            [
                UsageRow(hs, "n1", "GPU-1", "prod", "chat", H100, "", 2700.0, 900.0, 0.0,
                         cluster="east"),
                UsageRow(hs, "n1", "GPU-1", "", IDLE, H100, "", 900.0, 0.0, 0.0,
                         cluster="east"),
                UsageRow(hs, "n1", "GPU-1", "prod", "embed", H100, "", 3600.0, 1800.0, 0.0,
                         cluster="west"),
            ],
            [CoverageRow(hs, "n1", "GPU-1", H100, 3600.0, cluster=c) for c in ("east", "west")],
        )  # fmt: skip


def test_the_days_share_idle_within_its_cluster_as_the_bill_does(
    ledger_store: AuditableLedgerStore,
) -> None:
    _fill(ledger_store)
    card = load_rate_card(None)
    days = [date(2026, 10, d) for d in range(1, DAYS + 1)]

    series = read_series(ledger_store, card, NOW, policy="share-weighted")
    assert sorted(series.daily[CHAT]) == days
    for d in days:
        assert series.daily[CHAT][d] == pytest.approx(CHAT_DAY)
        assert series.daily[EMBED][d] == pytest.approx(EMBED_DAY)
        assert series.daily[IDLE_KEY][d] == pytest.approx(0.0, abs=1e-9)
    assert series.month_to_date[CHAT] == pytest.approx(DAYS * CHAT_DAY)

    costs = anomaly_days(
        ledger_store, Pricing(card, "share-weighted"), days[0], date(2026, 10, DAYS + 1)
    )
    assert sorted(costs) == days
    for d in days:
        assert costs[d][CHAT].total_usd == pytest.approx(CHAT_DAY)
        assert costs[d][CHAT].by_model == {H100: pytest.approx(CHAT_DAY)}
        assert costs[d][EMBED].total_usd == pytest.approx(EMBED_DAY)

    bill = build_report(
        ledger_store, card, Month(2026, 10), now=datetime(2026, 12, 1, tzinfo=UTC),
        options=ReportOptions(idle_policy="share-weighted"),
    )  # fmt: skip
    lines = {(line.namespace, line.service): line.total_cost_usd for line in bill.lines}
    assert lines[CHAT] == pytest.approx(DAYS * CHAT_DAY)
    assert lines[EMBED] == pytest.approx(DAYS * EMBED_DAY)
