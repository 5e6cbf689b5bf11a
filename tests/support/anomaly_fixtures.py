"""A hand-stated ledger for the spend-anomaly tests: 28 ordinary days and one day (D,
2026-11-10) with three planted spikes, each with a different driver, and a noisy service
without one. The rate card is the findings tests' (H100 $2.00, L4 $0.25 per GPU-hour, no
energy price), so every cost below is GPU-hours × rate, worked out in the test modules.

Day i (0 = 2026-10-13, 28 = D), namespace ``team``, every GPU fully busy unless said:

- ``vision``: 3 L4 all day + a 4th L4 for 92 + i % 5 − 72 = 20 + i % 5 hours; on D also
  2 H100 all day (a new GPU model).
- ``chat``: 1 H100 all day, tenants ``tenant-a`` and ``tenant-b`` 100 prompt tokens an
  hour each; on D 3 H100, and ``tenant-b`` 500 tokens an hour (one tenant).
- ``batch``: 1 H100 all day; on D 3 H100 with the same 24 busy GPU-hours (idle).
- ``search``: 1 H100 for 24 − (7·i mod 5) hours a day (noise, never an anomaly).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from gpuledger.chargeback.ledger.tables import TenantTokenRow, UsageRow
from tests.support.findings_fixtures import H100, L4

FIRST = date(2026, 10, 13)
D = date(2026, 11, 10)
DAYS = 29  # FIRST .. D
NODE = "node-a"
NS = "team"


def day_of(i: int) -> date:
    return FIRST + timedelta(days=i)


def hour_of(i: int, h: int) -> int:
    d = day_of(i)
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()) + 3600 * h


def _held(rows: list[UsageRow], i: int, gpu: str, model: str, service: str,
          hours: int, busy_ratio: float = 1.0) -> None:  # fmt: skip
    for h in range(hours):
        rows.append(
            UsageRow(hour_of(i, h), NODE, gpu, NS, service, model, "", 3600.0,
                     3600.0 * busy_ratio, 0.0)
        )  # fmt: skip


def search_hours(i: int) -> int:
    return 24 - (7 * i) % 5


def usage_rows() -> list[UsageRow]:
    rows: list[UsageRow] = []
    for i in range(DAYS):
        spike = i == DAYS - 1
        for g in range(3):
            _held(rows, i, f"L4-{g}", L4, "vision", 24)
        _held(rows, i, "L4-3", L4, "vision", 20 + i % 5)
        if spike:
            for g in range(2):
                _held(rows, i, f"H100-V{g}", H100, "vision", 24)
        for g in range(3 if spike else 1):
            _held(rows, i, f"H100-C{g}", H100, "chat", 24)
        for g in range(3 if spike else 1):
            _held(rows, i, f"H100-B{g}", H100, "batch", 24, 1 / 3 if spike else 1.0)
        _held(rows, i, "H100-S", H100, "search", search_hours(i))
    return rows


def tenant_rows() -> list[TenantTokenRow]:
    rows: list[TenantTokenRow] = []
    for i in range(DAYS):
        b = 500.0 if i == DAYS - 1 else 100.0
        for h in range(24):
            for tenant, prompt in (("tenant-a", 100.0), ("tenant-b", b)):
                rows.append(
                    TenantTokenRow(hour_of(i, h), NODE, NS, "chat", "llama", tenant, 1.0,
                                   prompt, 0.0, 0.0)
                )  # fmt: skip
    return rows
