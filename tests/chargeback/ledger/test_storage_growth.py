"""Growth is the least-squares slope of sampled sizes; days until full follows from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuledger.chargeback.ledger.spool import Spool
from gpuledger.chargeback.ledger.storage_growth import StorageGrowth
from gpuledger.collectors.pgvector.growth import days_until_full, slope_from_sums
from gpuledger.collectors.pgvector.types import DatabaseStats, PgTelemetry, TableStats

T0 = 1_767_225_600.0
DAY = 86400.0


def table(total: int) -> TableStats:
    return TableStats("public", "docs", heap_bytes=total // 2, toast_bytes=0,
                      index_bytes=total // 2, total_bytes=total, rows_estimate=1.0,
                      dead_tuples=0)  # fmt: skip


def telemetry(ts: float, db_bytes: int, table_bytes: int, *, up: bool = True) -> PgTelemetry:
    return PgTelemetry(
        (
            DatabaseStats(
                "rag",
                up=up,
                database_bytes=db_bytes,
                capacity_bytes=10**11,
                tables=(table(table_bytes),),
                collected_unix=ts,
            ),
        )
    )


def test_slope_from_sums_on_a_known_line() -> None:
    xs = [0.0, 1.0, 2.0, 3.0, 4.0]
    ys = [1000 + 50 * x for x in xs]  # y = 1000 + 50x
    n = len(xs)
    slope = slope_from_sums(
        n, sum(xs), sum(ys), sum(x * x for x in xs), sum(x * y for x, y in zip(xs, ys, strict=True))
    )
    assert slope == pytest.approx(50.0)
    assert slope_from_sums(1, 0, 0, 0, 0) is None
    assert slope_from_sums(3, 6, 3, 12, 6) is None  # every x equal (x = 2): no slope


def test_growth_per_day_from_samples_and_window(tmp_path: Path) -> None:
    growth = StorageGrowth(Spool(tmp_path / "s.db"), "n1", window_s=7 * DAY, min_samples=4)
    # a stale sample outside the window that would bend the line if it were used
    growth.record(telemetry(T0 - 30 * DAY, 1, 1))
    # 12 hourly samples on exact lines: the database +100 B/s, the table +10 B/s
    for i in range(12):
        ts = T0 + i * 3600
        growth.record(telemetry(ts, 10**9 + int(100 * (ts - T0)), 5 * 10**8 + int(10 * (ts - T0))))
    now = T0 + 11 * 3600
    got = growth.compute(now)
    assert got[("rag", "", "")].bytes_per_day == pytest.approx(100 * DAY)
    assert got[("rag", "", "")].samples == 12
    assert got[("rag", "public", "docs")].bytes_per_day == pytest.approx(10 * DAY)


def test_no_growth_reported_below_min_samples_or_when_down(tmp_path: Path) -> None:
    growth = StorageGrowth(Spool(tmp_path / "s.db"), "n1", window_s=7 * DAY, min_samples=5)
    for i in range(4):
        growth.record(telemetry(T0 + i * 3600, 10**9 + i * 1000, 10**8))
    growth.record(telemetry(T0 + 5 * 3600, 0, 0, up=False))  # a failed collection adds nothing
    assert growth.compute(T0 + 5 * 3600) == {}


def test_days_until_full() -> None:
    assert days_until_full(10**11, 4 * 10**10, 10**9) == pytest.approx(60.0)
    assert days_until_full(10**11, 4 * 10**10, 0.0) is None  # flat: never fills
    assert days_until_full(10**11, 4 * 10**10, -5.0) is None  # shrinking
    assert days_until_full(None, 4 * 10**10, 10**9) is None  # no capacity configured
    assert days_until_full(10**11, 2 * 10**11, 10**9) == 0.0  # already over
