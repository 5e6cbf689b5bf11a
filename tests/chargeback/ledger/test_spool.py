"""The spool keeps running totals until the store confirms them."""

from __future__ import annotations

from pathlib import Path

from gpuledger.chargeback.ledger.spool import Spool
from gpuledger.chargeback.ledger.tables import CoverageRow, UsageRow

H = 1_767_225_600


def u(alloc: float, hour: int = H, service: str = "chat") -> UsageRow:
    return UsageRow(hour, "n", "GPU-0", "llm", service, "H100", "", alloc, alloc / 2, alloc * 10)


def c(obs: float, hour: int = H) -> CoverageRow:
    return CoverageRow(hour, "n", "GPU-0", "H100", obs)


def test_pending_until_marked_and_rewrites_stay_pending(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "spool.db")
    sp.write([u(10.0)], [c(10.0)])
    usage, coverage, seq = sp.pending()
    assert usage == [u(10.0)]
    assert coverage == [c(10.0)]
    assert sp.pending_count() == 2
    sp.write([u(20.0)], [c(20.0)])  # rewritten while the flush is in flight
    sp.mark_flushed(usage, coverage, seq)
    assert sp.pending_count() == 2  # the newer totals still need sending
    usage, coverage, seq = sp.pending()
    assert usage == [u(20.0)]
    sp.mark_flushed(usage, coverage, seq)
    assert sp.pending_count() == 0
    assert sp.pending() == ([], [], seq)


def test_survives_reopen_and_loads_for_resume(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    sp = Spool(path)
    sp.write([u(5.0, H - 7200), u(7.0)], [c(7.0)])
    sp.close()
    again = Spool(path)
    usage, coverage = again.load(H - 3600)
    assert usage == [u(7.0)]
    assert coverage == [c(7.0)]
    assert again.pending_count() == 3


def test_prune_keeps_unflushed_rows(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "spool.db")
    sp.write([u(1.0, H - 7200)], [])
    assert sp.prune(H) == 0  # not flushed: kept whatever its age
    usage, coverage, seq = sp.pending()
    sp.mark_flushed(usage, coverage, seq)
    assert sp.prune(H) == 1
