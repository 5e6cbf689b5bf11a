"""Storage growth, the pure part: a least-squares slope of sampled sizes, days until full.

Growth is the ordinary least-squares slope of bytes over time across a window's samples --
robust to the scrape jitter and the VACUUM dips that make "last minus first" misleading.
Days until full = (capacity − current database size) / growth per day, only when a
capacity is configured and growth is positive (a shrinking or flat database never fills).

Keeping the samples is the ledger's business (its node-local spool holds them for the
window: :class:`gpuledger.chargeback.ledger.storage_growth.StorageGrowth`); the pgvector
source sees that only through :class:`GrowthTracker`, so this package imports nothing
from the ledger.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from gpuledger.collectors.pgvector.types import PgTelemetry

DAY = 86400.0

GrowthKey = tuple[str, str, str]  # database, schema, table ("" schema/table: whole database)


@dataclass(frozen=True, slots=True)
class Growth:
    bytes_per_day: float
    samples: int


def slope_from_sums(n: int, sx: float, sy: float, sxx: float, sxy: float) -> float | None:
    """Least-squares slope (y per x) from the usual sums; None when x does not vary."""
    denominator = n * sxx - sx * sx
    if n < 2 or denominator <= 0:
        return None
    return (n * sxy - sx * sy) / denominator


def days_until_full(
    capacity: int | None, current: int | None, per_day: float | None
) -> float | None:
    if capacity is None or current is None or per_day is None or per_day <= 0:
        return None
    return max(0.0, (capacity - current) / per_day)


class GrowthTracker(Protocol):
    """Keeps each collection's sizes for the growth window and answers the growth over
    it; the ledger's spool-backed ``StorageGrowth`` is one."""

    def record(self, telemetry: PgTelemetry) -> None: ...

    def compute(self, now: float) -> Mapping[GrowthKey, Growth]: ...
