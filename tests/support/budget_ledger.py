"""A small ledger for the forecast and budget tests, with its figures computed from the
shipped rate card's YAML (``tests/support/rates.py``), independently of gpuledger.

Every hour from 2026-10-31 00:00 to 2026-11-20 10:00 UTC (``NOW`` is 10:30, so ten hours
of the 20th are complete): on GPU ``h1`` (H100) ``prod/chat`` holds 2700 s (busy 1800 s,
1.8 MJ = 0.5 kWh) and ``__idle__`` 900 s (0.09 MJ = 0.025 kWh); on GPU ``b1`` (B200, no
cost-of-ownership row: unpriced) ``lab/train`` holds 3600 s.

- chat, one hour: 0.75 GPU-h × capacity(H100) + 0.5 kWh × energy(H100) = ``CHAT_H``; a
  day is 24 of them; month to date is 19 × 24 + 10 = 466 of them (October's day is
  history, not month to date);
- idle, one hour: 0.25 × capacity + 0.025 × energy = ``IDLE_H`` (policy ``separate``);
- train: cost 0 with 466 unpriced GPU-hours month to date.
"""

from __future__ import annotations

from datetime import UTC, datetime

from gpuledger.chargeback.attribution.claims import IDLE
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.chargeback.ledger.tables import CoverageRow, UsageRow
from tests.support.rates import capacity_rate, energy_rate

H100 = "NVIDIA H100 80GB HBM3"
B200 = "NVIDIA B200"
START = datetime(2026, 10, 31, tzinfo=UTC)
NOW = datetime(2026, 11, 20, 10, 30, tzinfo=UTC)
CHAT_H = 0.75 * capacity_rate("H100-80GB") + 0.5 * energy_rate("H100-80GB")
IDLE_H = 0.25 * capacity_rate("H100-80GB") + 0.025 * energy_rate("H100-80GB")
MTD_HOURS = 19 * 24 + 10


def fill(store: AuditableLedgerStore) -> None:
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
