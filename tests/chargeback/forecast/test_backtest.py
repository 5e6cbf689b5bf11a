"""The backtest figure ``make bench`` prints is reproducible: the same seed writes the
same simulated ledger and gives the same MAPE, to the last bit (two full runs here, on
two ledgers). The months are February and March 2026 (the shortest pair) and one N."""

from __future__ import annotations

from pathlib import Path

from bench.bench_forecast import backtest


def test_same_seed_same_figure(tmp_path: Path) -> None:
    a = backtest(42, ("2026-02", "2026-03"), (14,), path=tmp_path / "a.db")
    b = backtest(42, ("2026-02", "2026-03"), (14,), path=tmp_path / "b.db")
    assert a == b
    assert a.cases > 0
    # an error of a forecast, not a constant: neither exact nor off by the whole month
    assert 0.0 < a.mape < 0.5
    assert a.by_days == {14: a.mape}
