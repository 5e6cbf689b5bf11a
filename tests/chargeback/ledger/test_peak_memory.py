"""Issue 17: peak GPU memory per usage bucket (hour, node, GPU, namespace, service), a
running maximum kept under the ledger's running-total rules: the accumulator raises it and
never lowers it within an hour, a restart resumes it from the spool, a replay (twice, or an
older one) changes nothing, both stores keep the larger value and never let NULL (not
measured) erase one, the PostgreSQL rollups ignore it, and migration 9 adds it to a ledger
that holds rows. Every expected peak is stated by hand from the readings written.
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuledger.chargeback.attribution.claims import IDLE, IDLE_OWNER, Claim, Owner
from gpuledger.chargeback.attribution.shares import GpuAllocation, OwnerShare
from gpuledger.chargeback.ledger.accumulator import Accumulator
from gpuledger.chargeback.ledger.flusher import Ledger
from gpuledger.chargeback.ledger.model import PeakMemoryGroup
from gpuledger.chargeback.ledger.spool import Spool
from gpuledger.chargeback.ledger.sqlite_sql import q
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.chargeback.ledger.store.sqlite import SqliteLedgerStore
from gpuledger.chargeback.ledger.store.sqlite_migrations import MIGRATIONS as SQLITE_MIGRATIONS
from gpuledger.chargeback.ledger.tables import USAGE, CoverageRow, Role, UsageRow, merge_peak
from gpuledger.collectors.gpu.readings import GpuReading
from tests.support.migrations import ALL_VERSIONS

GIB = 1024.0**3
A = Owner("llm", "chat")
B = Owner("search", "embed")
H = 1_767_225_600  # 2026-01-01T00:00:00Z, an hour boundary
KEYS = ["hour", "node", "gpu_uuid", "namespace", "service"]


def _dt(t: int) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _alloc(memory: float | None, uuid: str = "GPU-0") -> GpuAllocation:
    return GpuAllocation(
        uuid=uuid, index=0, model="H100", energy_joules=None, power_watts=100.0,
        shares=(OwnerShare(A, 0.75, 0.5, memory_bytes=memory), OwnerShare(IDLE_OWNER, 0.25, 0.0)),
    )  # fmt: skip


def _peaks(rows: list[UsageRow]) -> dict[tuple[int, str], float | None]:
    return {(r.hour_start, r.service): r.peak_memory_bytes for r in rows}


# -- the declaration ------------------------------------------------------------------------


def test_the_peak_is_its_own_role_never_summed_by_a_rollup() -> None:
    from gpuledger.chargeback.ledger.tables import ROLLUPS

    assert USAGE.names(Role.PEAK) == ("peak_memory_bytes",)
    assert "peak_memory_bytes" not in USAGE.names(Role.TOTAL)
    assert USAGE.by_attr["peak_memory_bytes"].nullable
    for rollup in ROLLUPS:
        assert "peak_memory_bytes" not in rollup.measure_names()
    assert [merge_peak(a, b) for a, b in ((5.0, 3.0), (3.0, 5.0), (None, 2.0), (2.0, None))] == [
        5.0,
        5.0,
        2.0,
        2.0,
    ]
    assert merge_peak(None, None) is None


def test_in_batch_merge_keeps_the_larger_peak_and_never_lets_null_win() -> None:
    a = UsageRow(H, "n", "g", "ns", "s", "H100", "", 10, 5, 1.0, 5 * GIB)
    assert USAGE.merge([a, replace(a, allocated_gpu_seconds=20, peak_memory_bytes=3 * GIB)]) == [
        replace(a, allocated_gpu_seconds=20, peak_memory_bytes=5 * GIB)
    ]
    assert USAGE.merge([a, replace(a, peak_memory_bytes=None)]) == [a]
    bare = replace(a, peak_memory_bytes=None)
    assert USAGE.merge([bare, replace(a, peak_memory_bytes=2 * GIB)]) == [
        replace(a, peak_memory_bytes=2 * GIB)
    ]


# -- the accumulator ------------------------------------------------------------------------


def test_accumulator_peak_per_hour_across_the_boundary_and_a_restart() -> None:
    acc = Accumulator("n", max_gap_s=60)
    acc.observe(H - 20, 1000.0, [_alloc(9 * GIB)])  # baseline: nothing integrated, no peak
    acc.observe(H - 10, 1010.0, [_alloc(4 * GIB)])
    usage, _ = acc.drain_dirty()
    assert _peaks(usage) == {(H - 3600, "chat"): 4 * GIB, (H - 3600, IDLE): None}
    # 10 s that straddle the boundary: the memory held now raises both hours
    acc.observe(H + 5, 1025.0, [_alloc(6 * GIB)])
    acc.observe(H + 15, 1035.0, [_alloc(2 * GIB)])  # less held: the hour's peak stays
    usage, coverage = acc.drain_dirty()
    assert _peaks(usage) == {
        (H - 3600, "chat"): 6 * GIB, (H, "chat"): 6 * GIB,
        (H - 3600, IDLE): None, (H, IDLE): None,
    }  # fmt: skip
    # a restart resumes the peak from the spooled rows; a lower reading does not lower it
    again = Accumulator("n", max_gap_s=60)
    again.restore(usage, coverage)
    again.observe(H + 100, 5.0, [_alloc(3 * GIB)])  # baseline of the new process
    again.observe(H + 110, 15.0, [_alloc(3 * GIB)])
    usage2, _ = again.drain_dirty()
    assert _peaks(usage2)[(H, "chat")] == 6 * GIB
    again.observe(H + 120, 25.0, [_alloc(8 * GIB)])
    again.observe(H + 130, 35.0, [_alloc(None)])  # not measured this time: nothing changes
    usage3, _ = again.drain_dirty()
    assert _peaks(usage3) == {(H, "chat"): 8 * GIB, (H, IDLE): None}


def test_an_owner_on_two_mig_instances_or_in_two_pods_holds_both(tmp_path: Path) -> None:
    """A bucket is (GPU, namespace, service): what its owner holds on the GPU at one
    instant is the sum over its shares -- two MIG instances of one board, two pods of
    one service on a time-sliced GPU -- and the peak is the largest such sum."""
    pod2 = Owner("llm", "chat", "chat-1")
    mig = GpuAllocation(
        uuid="GPU-7", index=7, model="H100", energy_joules=None, power_watts=None,
        shares=(OwnerShare(A, 3 / 7, 0.0, 1, "3g.40gb", 30 * GIB),
                OwnerShare(A, 1 / 7, 0.0, 5, "1g.10gb", 8 * GIB),
                OwnerShare(B, 1 / 7, 0.0, 9, "1g.10gb", None),
                OwnerShare(IDLE_OWNER, 2 / 7, 0.0)),
    )  # fmt: skip
    sliced = GpuAllocation(
        uuid="GPU-0", index=0, model="H100", energy_joules=None, power_watts=None,
        shares=(OwnerShare(A, 0.5, 0.0, memory_bytes=20 * GIB),
                OwnerShare(pod2, 0.5, 0.0, memory_bytes=25 * GIB)),
    )  # fmt: skip
    acc = Accumulator("n", max_gap_s=60)
    acc.observe(H + 10, 1.0, [mig, sliced])
    acc.observe(H + 20, 11.0, [mig, sliced])
    usage, _ = acc.drain_dirty()
    peaks = {(r.gpu_uuid, r.service): r.peak_memory_bytes for r in usage}
    assert peaks == {
        ("GPU-7", "chat"): 38 * GIB, ("GPU-7", "embed"): None, ("GPU-7", IDLE): None,
        ("GPU-0", "chat"): 45 * GIB,
    }  # fmt: skip


def test_restoring_from_the_spool_twice_gives_the_same_peaks(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    acc = Accumulator("n", max_gap_s=60)
    acc.observe(H + 10, 100.0, [_alloc(1 * GIB)])
    acc.observe(H + 20, 110.0, [_alloc(7 * GIB)])
    acc.observe(H + 30, 120.0, [_alloc(5 * GIB)])
    spool.write(*acc.drain_dirty())
    rows = []
    for _ in range(2):
        resumed = Accumulator("n", max_gap_s=60)
        resumed.restore(*spool.load(H))
        resumed.restore(*spool.load(H))  # a second replay of the same rows
        resumed.observe(H + 40, 1.0, [_alloc(2 * GIB)])
        resumed.observe(H + 50, 11.0, [_alloc(2 * GIB)])
        usage, _ = resumed.drain_dirty()
        rows.append(usage)
    assert rows[0] == rows[1]
    assert _peaks(rows[0]) == {(H, "chat"): 7 * GIB, (H, IDLE): None}
    spool.close()


# -- the stores -----------------------------------------------------------------------------


def _row(
    gpu: str, svc: str, peak: float | None, *, hour: int = H, alloc: float = 100.0
) -> UsageRow:
    return UsageRow(hour, "n1", gpu, "ns", svc, "H100", "", alloc, alloc / 2, alloc * 3, peak)


def _stored_peaks(store: AuditableLedgerStore) -> dict[tuple[str, str], float]:
    got = store.peak_memory(_dt(H - 7200), _dt(H + 7200), ["gpu_uuid", "service"])
    assert all(g.buckets == 1 for g in got)
    return {(str(g.gpu_uuid), str(g.service)): g.peak_memory_bytes for g in got}


def test_upserts_keep_the_larger_peak_and_null_never_erases_one(
    ledger_store: AuditableLedgerStore,
) -> None:
    ledger_store.upsert([_row("g1", "a", 5 * GIB), _row("g1", "b", None),
                         _row("g1", "c", 2 * GIB), _row("g1", "d", None)], [])  # fmt: skip
    ledger_store.upsert([_row("g1", "a", 3 * GIB), _row("g1", "b", 2 * GIB),
                         _row("g1", "c", None), _row("g1", "d", None)], [])  # fmt: skip
    # 5 then 3 → 5; NULL then 2 → 2; 2 then NULL → 2; never measured → absent
    assert _stored_peaks(ledger_store) == {("g1", "a"): 5 * GIB, ("g1", "b"): 2 * GIB,
                                           ("g1", "c"): 2 * GIB}  # fmt: skip
    # one batch holding both readings of a key: the same as two upserts
    ledger_store.upsert([_row("g2", "a", 4 * GIB), _row("g2", "a", 1 * GIB)], [])
    assert _stored_peaks(ledger_store)[("g2", "a")] == 4 * GIB
    # totals are untouched by the peak's rule: the larger total of the two writes
    (total,) = ledger_store.usage(_dt(H), _dt(H + 3600), [], node="n1")
    assert total.allocated_gpu_seconds == pytest.approx(5 * 100.0)  # g1: a-d, g2: a


def test_replaying_the_spool_twice_gives_the_same_rows(
    ledger_store: AuditableLedgerStore, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool.db")
    first = [_row("g1", "a", 3 * GIB, alloc=50.0), _row("g1", "b", None, alloc=10.0)]
    spool.write(first, [CoverageRow(H, "n1", "g1", "H100", 60.0)])
    older, _, _ = spool.pending()
    later = [_row("g1", "a", 6 * GIB, alloc=80.0), _row("g1", "b", 1 * GIB, alloc=20.0)]
    spool.write(later, [CoverageRow(H, "n1", "g1", "H100", 100.0)])
    usage, coverage, _ = spool.pending()
    snapshots = []
    for _ in range(2):  # the flush replayed, then an older replay arriving late
        ledger_store.upsert(usage, coverage)
        ledger_store.upsert(older, [])
        snapshots.append(
            (
                ledger_store.peak_memory(_dt(H), _dt(H + 3600), KEYS),
                ledger_store.usage(_dt(H), _dt(H + 3600), KEYS),
            )
        )
    assert snapshots[0] == snapshots[1]
    assert _stored_peaks(ledger_store) == {("g1", "a"): 6 * GIB, ("g1", "b"): 1 * GIB}
    assert [u.allocated_gpu_seconds for u in snapshots[0][1]] == [80.0, 20.0]
    spool.close()


def test_peak_memory_is_the_max_over_each_group(ledger_store: AuditableLedgerStore) -> None:
    """Per service and GPU model per hour, per GPU over the range, overall: the largest
    measured bucket (not a sum), counting only measured buckets."""
    rows = [
        UsageRow(H, "n1", "g1", "ns", "chat", "H100", "", 3600, 900, 1, 30 * GIB),
        UsageRow(H, "n1", "g2", "ns", "chat", "H100", "", 3600, 900, 1, 50 * GIB),
        UsageRow(H, "n2", "g3", "ns", "chat", "L40S", "", 3600, 900, 1, 20 * GIB),
        UsageRow(H, "n1", "g4", "ns", "chat", "H100", "3g.40gb", 1543, 900, 1, 35 * GIB),
        UsageRow(H + 3600, "n1", "g1", "ns", "chat", "H100", "", 3600, 900, 1, 70 * GIB),
        UsageRow(H + 3600, "n1", "g2", "ns", "chat", "H100", "", 3600, 900, 1, None),
        UsageRow(H, "n1", "g1", "ns", "embed", "H100", "", 0, 0, 0, 2 * GIB),
        UsageRow(H, "n1", "g2", "", IDLE, "H100", "", 100, 0, 1, None),
    ]
    ledger_store.upsert(rows, [])
    start, end = _dt(H), _dt(H + 7200)
    got = ledger_store.peak_memory(start, end, ["service", "gpu_model", "hour"])
    h0, h1 = "2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z"
    assert got == [
        PeakMemoryGroup(50 * GIB, 3, gpu_model="H100", service="chat", hour=h0),
        PeakMemoryGroup(70 * GIB, 1, gpu_model="H100", service="chat", hour=h1),
        PeakMemoryGroup(20 * GIB, 1, gpu_model="L40S", service="chat", hour=h0),
        PeakMemoryGroup(2 * GIB, 1, gpu_model="H100", service="embed", hour=h0),
    ]
    by_gpu = ledger_store.peak_memory(start, end, ["service", "gpu_uuid", "mig_profile"])
    assert [(g.service, g.gpu_uuid, g.mig_profile, g.peak_memory_bytes / GIB, g.buckets)
            for g in by_gpu] == [
        ("chat", "g1", "", 70, 2), ("chat", "g2", "", 50, 1), ("chat", "g3", "", 20, 1),
        ("chat", "g4", "3g.40gb", 35, 1), ("embed", "g1", "", 2, 1),
    ]  # fmt: skip
    assert ledger_store.peak_memory(start, end, []) == [PeakMemoryGroup(70 * GIB, 6)]
    assert ledger_store.peak_memory(start, end, [], node="n2") == [PeakMemoryGroup(20 * GIB, 1)]
    assert ledger_store.peak_memory(_dt(H + 7200), _dt(H + 10800), ["service"]) == []
    with pytest.raises(ValueError, match="'pod'"):
        ledger_store.peak_memory(start, end, ["pod"])
    # both reads of one grouping at once (one scan on SQLite, rollup + rows on PostgreSQL):
    # the same groups as each read alone -- the peaks stated above, the sums by hand
    keys = ["service", "gpu_model", "hour"]
    usage, peaks = ledger_store.usage_and_peaks(start, end, keys)
    assert peaks == got
    assert usage == ledger_store.usage(start, end, keys)
    sums = {(u.service, u.gpu_model, u.hour): u.allocated_gpu_seconds for u in usage}
    assert sums == {("__idle__", "H100", h0): 100, ("chat", "H100", h0): 3600 + 3600 + 1543,
                    ("chat", "H100", h1): 7200, ("chat", "L40S", h0): 3600,
                    ("embed", "H100", h0): 0}  # fmt: skip
    assert ledger_store.usage_and_peaks(start, end, [], node="n2") == (
        ledger_store.usage(start, end, [], node="n2"),
        [PeakMemoryGroup(20 * GIB, 1)],
    )
    with pytest.raises(ValueError, match="'pod'"):
        ledger_store.usage_and_peaks(start, end, ["pod"])


def test_the_agent_path_writes_peaks_from_process_memory(
    ledger_store: AuditableLedgerStore, tmp_path: Path
) -> None:
    """Readings → claims → shares → accumulator → spool → flush → store: the owner's
    processes' memory becomes its bucket's peak; the idle remainder has none."""
    clock = {"wall": float(H + 10), "mono": 100.0}
    memory = {"now": 12 * GIB}

    def claims(reading: GpuReading) -> list[Claim]:
        return [Claim(A, 0.5, int(memory["now"]))]

    ledger = Ledger(
        "n1", spool=Spool(tmp_path / "spool.db"), store=ledger_store, claims_for=claims,
        wall=lambda: clock["wall"], mono=lambda: clock["mono"],
    )  # fmt: skip
    gpu = GpuReading(uuid="GPU-0", index=0, model="H100", memory_used_bytes=79 * GIB)
    for step, held in enumerate((12 * GIB, 30 * GIB, 20 * GIB)):
        memory["now"] = held
        clock["wall"], clock["mono"] = H + 10 + 10 * step, 100.0 + 10 * step
        ledger.observe([gpu])
    assert ledger.flush_once()
    assert _stored_peaks(ledger_store) == {("GPU-0", "chat"): 30 * GIB}
    ledger.spool.close()


# -- PostgreSQL: the flush path, the rollups, migration 9 --------------------------------


def test_postgres_copy_batch_keeps_the_max_and_the_rollups_ignore_peak_only_updates(
    postgres_db_url: str,
) -> None:
    psycopg = pytest.importorskip("psycopg")
    from gpuledger.chargeback.ledger.store.postgres import COPY_THRESHOLD, PostgresLedgerStore

    n = COPY_THRESHOLD + 200  # a COPY-sized batch, through the staging table
    rows = [_row(f"g{i:04d}", "a", (i % 7) * GIB if i % 3 else None) for i in range(n)]
    small = [_row("x1", "a", 1 * GIB), _row("x2", "a", None)]  # updated through unnest()
    store = PostgresLedgerStore(postgres_db_url)
    try:
        store.migrate()
        store.upsert(rows + small, [])
        usage_before = store.usage(_dt(H), _dt(H + 3600), ["service", "gpu_model"])
        # the same totals again, only the peaks move: up, down, to NULL, from NULL
        moved = [replace(r, peak_memory_bytes=(i % 5) * GIB if i % 4 else None)
                 for i, r in enumerate(rows)]  # fmt: skip
        store.upsert(moved, [])
        store.upsert([replace(small[0], peak_memory_bytes=9 * GIB),
                      replace(small[1], peak_memory_bytes=4 * GIB)], [])  # fmt: skip
        want = {}
        for old, new in zip(rows, moved, strict=True):
            peak = merge_peak(old.peak_memory_bytes, new.peak_memory_bytes)
            if peak is not None:
                want[(old.gpu_uuid, "a")] = peak
        want[("x1", "a")], want[("x2", "a")] = 9 * GIB, 4 * GIB
        got = store.peak_memory(_dt(H - 7200), _dt(H + 7200), ["gpu_uuid", "service"])
        assert {(g.gpu_uuid, g.service): g.peak_memory_bytes for g in got} == want
        # the rollups: not one measure moved, no drift, and no peak column
        assert store.usage(_dt(H), _dt(H + 3600), ["service", "gpu_model"]) == usage_before
        assert store.rollup_drift(_dt(H), _dt(H + 3600)) == []
        with psycopg.connect(postgres_db_url) as conn:
            cols = conn.execute(
                "SELECT table_name FROM information_schema.columns"
                " WHERE column_name = 'peak_memory_bytes' AND table_name LIKE '%%rollup%%'"
            ).fetchall()
        assert cols == []
    finally:
        store.close()


def test_migration_9_on_a_version_8_ledger_with_rows(postgres_db_url: str) -> None:
    psycopg = pytest.importorskip("psycopg")
    from gpuledger.chargeback.ledger.store.postgres import PostgresLedgerStore
    from tests.support.postgres import migrate_to, write_usage_before_v9

    old = [_row(f"g{i}", svc, None, hour=h, alloc=10.0 * (i + 1))
           for i in range(3) for svc in ("a", "b") for h in (H - 3600, H)]  # fmt: skip
    with psycopg.connect(postgres_db_url) as conn, conn.transaction():
        migrate_to(conn, 8)
        for month in ("2025-12-01", "2026-01-01"):
            for parent in ("ledger_usage", "ledger_usage_rollup", "ledger_usage_month_rollup"):
                conn.execute("SELECT gpuledger_month_partition(%s, %s::timestamptz)",
                             (parent, month))  # fmt: skip
        write_usage_before_v9(conn, old)
    store = PostgresLedgerStore(postgres_db_url)
    try:
        store.migrate()
        assert store.applied_versions() == ALL_VERSIONS
        start, end = _dt(H - 3600), _dt(H + 3600)
        assert store.peak_memory(start, end, ["gpu_uuid"]) == []  # every old row: NULL
        (total,) = store.usage(start, end, [])
        assert total.allocated_gpu_seconds == pytest.approx(
            sum(r.allocated_gpu_seconds for r in old)
        )
        assert store.rollup_drift(start, end) == []
        # the old rows, written again with peaks by this release (the same totals)
        store.upsert([replace(r, peak_memory_bytes=3 * GIB) for r in old[:4]], [])
        got = store.peak_memory(start, end, ["gpu_uuid", "service", "hour"])
        assert [(g.gpu_uuid, g.service, g.peak_memory_bytes) for g in got] == [
            ("g0", "a", 3 * GIB), ("g0", "a", 3 * GIB), ("g0", "b", 3 * GIB),
            ("g0", "b", 3 * GIB),
        ]  # fmt: skip
        (again,) = store.usage(start, end, [])
        assert again == total
        assert store.rollup_drift(start, end) == []
        with psycopg.connect(postgres_db_url) as conn:
            have = conn.execute(
                "SELECT c.relname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
                " WHERE a.attname = 'peak_memory_bytes' AND c.relkind = 'r' ORDER BY 1"
            ).fetchall()
            parts = conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = 'ledger_usage'::regclass ORDER BY 1"
            ).fetchall()
        # every month partition, old or created since, has the column (inherited)
        assert have == parts
        assert {"ledger_usage_p2025_12", "ledger_usage_p2026_01"} <= {p[0] for p in parts}
    finally:
        store.close()


# -- SQLite: migration 9 on a version-8 file -------------------------------------------------


def test_sqlite_migration_9_keeps_a_version_8_ledgers_rows(tmp_path: Path) -> None:
    path = tmp_path / "v8.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
                     " applied_at INTEGER NOT NULL)")  # fmt: skip
        for version, statements in SQLITE_MIGRATIONS:
            if version > 8:
                break
            for statement in statements:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations VALUES (?, 0)", (version,))
        conn.execute(
            f"INSERT INTO {q('ledger_usage')} VALUES (?, 'n1', 'g1', 'ns', 'a', 'H100', '',"
            " 3600, 1800, 5000, 1)",
            (H,),
        )
    with SqliteLedgerStore(path) as store:
        store.migrate()
        assert store.applied_versions() == ALL_VERSIONS
        assert store.peak_memory(_dt(H), _dt(H + 3600), ["service"]) == []
        (total,) = store.usage(_dt(H), _dt(H + 3600), ["service"])
        assert (total.allocated_gpu_seconds, total.busy_gpu_seconds) == (3600.0, 1800.0)
        store.upsert([_row("g1", "a", 11 * GIB, alloc=3600.0)], [])
        assert store.peak_memory(_dt(H), _dt(H + 3600), ["service"]) == [
            PeakMemoryGroup(11 * GIB, 1, service="a")
        ]


# -- property: the peak is the max of what was held, never lowered, across restarts --------

_STEP = st.tuples(
    st.integers(min_value=1, max_value=1500),  # seconds since the previous observation
    st.one_of(st.none(), st.integers(min_value=0, max_value=80).map(lambda g: g * GIB)),
    st.booleans(),  # the agent restarts before this observation
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(_STEP, min_size=1, max_size=40))
def test_peak_is_the_max_held_in_each_hour_across_restarts(
    steps: list[tuple[int, float | None, bool]],
) -> None:
    """Random observations (some not measured, some after a gap, some after a restart that
    resumes from the spooled rows): each hour's peak is the largest memory of the
    observations whose interval touches it, computed here from the intervals, and no
    drained row ever shows an hour's peak lower than before."""
    max_gap = 600
    acc = Accumulator("n", max_gap_s=max_gap)
    wall, mono = float(H - 1800), 0.0
    acc.observe(wall, mono, [_alloc(None)])
    want: dict[int, float] = {}
    seen: dict[int, float | None] = {}
    spooled: dict[tuple[int, str, str, str, str], UsageRow] = {}
    baseline = False
    for dt, held, restart in steps:
        if restart:
            acc = Accumulator("n", max_gap_s=max_gap)
            acc.restore(list(spooled.values()), [])
            mono = 0.0
            baseline = True
        wall, mono = wall + dt, mono + dt
        acc.observe(wall, mono, [_alloc(held)])
        if not baseline and dt <= max_gap and held is not None:
            hour = int((wall - dt) // 3600) * 3600
            while hour < wall:  # every hour the interval touches
                want[hour] = max(want.get(hour, 0.0), held)
                hour += 3600
        baseline = False
        usage, _ = acc.drain_dirty()
        for r in usage:
            spooled[r.key] = r
            if r.service == "chat":
                before = seen.get(r.hour_start)
                assert before is None or (r.peak_memory_bytes or 0.0) >= before
                seen[r.hour_start] = r.peak_memory_bytes
    got = {h: p for h, p in seen.items() if p is not None}
    assert got == want
