"""Issue 16: monthly partitions on PostgreSQL (migration 7 converts a version-6 ledger
without losing or merging a row; writes create the month they need) and retention (keep
N months, archive to gzip CSV, drop; never the current or previous month) on both
backends. Expected figures are hand-stated rows and their sums, not the stores' reads."""

from __future__ import annotations

import csv
import gzip
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gpuledger.chargeback.attribution.claims import IDLE
from gpuledger.chargeback.ledger.model import StoreError
from gpuledger.chargeback.ledger.store import open_store
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.chargeback.ledger.store.retention import (
    RetiredMonth,
    add_months,
    check_cutoff,
    retention_cutoff,
)
from gpuledger.chargeback.ledger.tables import (
    CoverageRow,
    EngineTimeRow,
    ProbeRecord,
    StorageSample,
    TenantTokenRow,
    TokenRow,
    UsageRow,
)
from tests.support.migrations import ALL_VERSIONS


def _h(y: int, m: int, d: int, hh: int) -> int:
    return int(datetime(y, m, d, hh, tzinfo=UTC).timestamp())


# Hours on both sides of month boundaries (UTC): Oct 31 23:00 is October, Nov 1 00:00 is
# November; Dec 31 23:00 is December, Jan 1 00:00 is January.
HOURS = {
    "2025-10": [_h(2025, 10, 1, 0), _h(2025, 10, 31, 23)],
    "2025-11": [_h(2025, 11, 1, 0), _h(2025, 11, 15, 12), _h(2025, 11, 30, 23)],
    "2025-12": [_h(2025, 12, 1, 0), _h(2025, 12, 31, 23)],
    "2026-01": [_h(2026, 1, 1, 0)],
}
ALLOC = 3000.0  # per usage row; 600 s idle beside it
NOW = datetime(2026, 1, 20, 8, 30, tzinfo=UTC)  # January: December is the previous month


def _usage(hour: int) -> list[UsageRow]:
    return [
        UsageRow(hour, "node-a", "GPU-0", "team", "svc", "H100", "", ALLOC, 1500.0, 9e5),
        UsageRow(hour, "node-a", "GPU-0", "", IDLE, "H100", "", 600.0, 0.0, 4e4),
    ]


def _fill(store: AuditableLedgerStore) -> None:
    for hours in HOURS.values():
        for hour in hours:
            store.upsert(_usage(hour), [CoverageRow(hour, "node-a", "GPU-0", "H100", 3600.0)])
            store.upsert_tokens(
                [TokenRow(hour, "node-a", "team", "svc", "llama", 10.0, 5.0, 0.0, 0.0)]
            )
            store.upsert_tenant_tokens(
                [TenantTokenRow(hour, "node-a", "team", "svc", "llama", "acme", 2, 10, 0, 5)]
            )
            store.upsert_engine_time(
                [EngineTimeRow(hour, "node-a", "team", "svc", "llama", 1, 2, 3, 3, 0, 0)]
            )
            store.upsert_probes(
                [ProbeRecord(float(hour + 60), "node-a", "http://svc:8000", "team", "svc",
                             "llama", True, None, 0.1, 0.01, 0.5, 40.0, 10, 5)]
            )  # fmt: skip
            store.insert_storage_samples(
                [StorageSample(float(hour + 30), "node-a", "db", "public", "items", 1000)]
            )


def _month_sum(store: AuditableLedgerStore, month: str) -> float:
    y, m = int(month[:4]), int(month[5:])
    start = datetime(y, m, 1, tzinfo=UTC)
    groups = store.usage(start, add_months(start, 1), [])
    return sum(g.allocated_gpu_seconds for g in groups)


@pytest.fixture
def filled(ledger_store: AuditableLedgerStore) -> AuditableLedgerStore:
    _fill(ledger_store)
    return ledger_store


# -- the cut-off policy -------------------------------------------------------------------


def test_cutoff_keeps_the_current_and_previous_month() -> None:
    assert retention_cutoff(NOW, 1) == datetime(2025, 12, 1, tzinfo=UTC)
    assert retention_cutoff(NOW, 3) == datetime(2025, 10, 1, tzinfo=UTC)
    assert retention_cutoff(datetime(2026, 3, 31, 23, tzinfo=UTC), 14) == datetime(
        2025, 1, 1, tzinfo=UTC
    )
    with pytest.raises(ValueError, match="keep_months must be >= 1"):
        retention_cutoff(NOW, 0)
    assert check_cutoff(datetime(2025, 12, 1, tzinfo=UTC), NOW)
    with pytest.raises(ValueError, match="current or previous month"):
        check_cutoff(datetime(2026, 1, 1, tzinfo=UTC), NOW)
    with pytest.raises(ValueError, match="not the start of a month"):
        check_cutoff(datetime(2025, 11, 2, tzinfo=UTC), NOW)


# -- retention on both backends -----------------------------------------------------------


def _read_archive(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def test_retention_archives_then_drops_old_months(
    filled: AuditableLedgerStore, tmp_path: Path
) -> None:
    store = filled
    before = retention_cutoff(NOW, 1)  # 2025-12: October and November go
    retired = store.retire_before(before, archive_dir=tmp_path, now=NOW)

    got = {(r.table, r.month): r.rows for r in retired}
    expected: dict[tuple[str, str], int] = {}
    for month, n in (("2025-10", 2), ("2025-11", 3)):
        expected[("ledger_usage", month)] = 2 * n
        for table in ("ledger_coverage", "ledger_tokens", "ledger_tenant_tokens",
                      "ledger_engine_time", "probe_results", "storage_samples"):  # fmt: skip
            expected[(table, month)] = n
    assert got == expected
    # the archive holds exactly the rows that left
    usage_nov = _read_archive(tmp_path / "2025-11" / "ledger_usage.csv.gz")
    assert len(usage_nov) == 6
    assert sum(float(r["allocated_gpu_seconds"]) for r in usage_nov) == 3 * (ALLOC + 600.0)
    assert {r["service"] for r in usage_nov} == {"svc", IDLE}
    probes_oct = _read_archive(tmp_path / "2025-10" / "probe_results.csv.gz")
    assert sorted(float(r["started_unix"]) for r in probes_oct) == [
        h + 60.0 for h in HOURS["2025-10"]
    ]
    assert all(isinstance(r.archive, Path) and r.archive.exists() for r in retired)
    assert not list(tmp_path.rglob("*.tmp"))
    # what stays is untouched, what left is gone
    assert _month_sum(store, "2025-10") == 0.0
    assert _month_sum(store, "2025-11") == 0.0
    assert _month_sum(store, "2025-12") == 2 * (ALLOC + 600.0)
    assert _month_sum(store, "2026-01") == 1 * (ALLOC + 600.0)
    dec = datetime(2025, 12, 1, tzinfo=UTC)
    assert store.probes(dec, add_months(dec, 2))[0].probes == 3
    # a second run finds nothing
    assert store.retire_before(before, archive_dir=tmp_path, now=NOW) == []


def test_retention_without_archive_and_refusals(filled: AuditableLedgerStore) -> None:
    store = filled
    with pytest.raises(ValueError, match="current or previous month"):
        store.retire_before(datetime(2026, 1, 1, tzinfo=UTC), archive_dir=None, now=NOW)
    assert _month_sum(store, "2026-01") == ALLOC + 600.0  # the refusal removed nothing
    retired = store.retire_before(datetime(2025, 11, 1, tzinfo=UTC), archive_dir=None, now=NOW)
    assert {r.month for r in retired} == {"2025-10"}
    assert [r for r in retired if r.table == "ledger_usage"] == [
        RetiredMonth("ledger_usage", "2025-10", 4, None)
    ]
    assert _month_sum(store, "2025-10") == 0.0
    assert _month_sum(store, "2025-11") == 3 * (ALLOC + 600.0)


def test_a_write_into_a_month_retired_elsewhere_is_stored_on_retry(
    filled: AuditableLedgerStore, ledger_store_url: str
) -> None:
    """Retention run by another process (``gpuledger retention``) while an agent's store
    still remembers the month's partition: that agent's next write fails as a StoreError
    (its rows stay in the spool), and the flusher's retry creates the partition again, so
    a late replay into a retired month is not lost."""
    other = open_store(ledger_store_url)
    try:
        other.retire_before(datetime(2025, 11, 1, tzinfo=UTC), archive_dir=None, now=NOW)
    finally:
        other.close()
    assert _month_sum(filled, "2025-10") == 0.0
    hour = HOURS["2025-10"][1]
    try:
        filled.upsert(_usage(hour), [])
    except StoreError:  # PostgreSQL: the partition this store had checked is gone
        filled.upsert(_usage(hour), [])
    assert _month_sum(filled, "2025-10") == ALLOC + 600.0


# -- PostgreSQL: migration 7 --------------------------------------------------------------


def _v6_database(url: str) -> None:
    """A ledger at schema version 6 (migrations 1-6 as released) holding HOURS' rows."""
    import psycopg

    from tests.support.postgres import migrate_to

    with psycopg.connect(url) as conn, conn.transaction():
        migrate_to(conn, 6)
        for hours in HOURS.values():
            for hour in hours:
                for ns, svc, alloc in (("team", "svc", ALLOC), ("", IDLE, 600.0)):
                    conn.execute(
                        "INSERT INTO ledger_usage (hour_start, node, gpu_uuid, namespace,"
                        " service, gpu_model, mig_profile, allocated_gpu_seconds,"
                        " busy_gpu_seconds, energy_joules) VALUES"
                        " (to_timestamp(%s), 'node-a', 'GPU-0', %s, %s, 'H100', '', %s, 1, 2)",
                        (hour, ns, svc, alloc),
                    )
                conn.execute(
                    "INSERT INTO ledger_coverage (hour_start, node, gpu_uuid, gpu_model,"
                    " observed_seconds) VALUES (to_timestamp(%s), 'node-a', 'GPU-0', 'H100', 3600)",
                    (hour,),
                )
                conn.execute(
                    "INSERT INTO ledger_tokens (hour_start, node, namespace, service, model_name,"
                    " prompt_tokens) VALUES (to_timestamp(%s), 'node-a', 'team', 'svc', 'l', 7)",
                    (hour,),
                )


def _partitions(url: str) -> dict[str, list[tuple[str, int]]]:
    """Each monthly table's partitions with their row counts."""
    import psycopg
    from psycopg import sql

    out: dict[str, list[tuple[str, int]]] = {}
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT p.relname, c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_class p ON p.oid = i.inhparent WHERE c.relkind = 'r' ORDER BY 1, 2"
        ).fetchall()
        for parent, part in rows:
            got = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(part))
            ).fetchone()
            assert got is not None
            out.setdefault(parent, []).append((part, int(got[0])))
    return out


def test_migration_7_partitions_a_version_6_ledger_without_losing_a_row(
    postgres_db_url: str,
) -> None:
    pytest.importorskip("psycopg")
    _v6_database(postgres_db_url)
    store = open_store(postgres_db_url)
    try:
        store.migrate()
        assert store.applied_versions() == ALL_VERSIONS
        parts = _partitions(postgres_db_url)
        # every month present became one partition holding exactly that month's rows
        # (the migration also opens the calendar's current and next month, empty)
        for table, per_hour in (("ledger_usage", 2), ("ledger_coverage", 1), ("ledger_tokens", 1)):
            held = {name: n for name, n in parts[table] if n}
            assert held == {
                f"{table}_p{month.replace('-', '_')}": per_hour * len(hours)
                for month, hours in HOURS.items()
            }
        for table in ("ledger_tenant_tokens", "ledger_engine_time"):
            assert all(n == 0 for _, n in parts[table])
        # and reads give the same month sums as the rows inserted
        for month, hours in HOURS.items():
            assert _month_sum(store, month) == len(hours) * (ALLOC + 600.0)
        # the key still merges: a replay of an October hour with a larger total replaces it
        hour = HOURS["2025-10"][0]
        bigger = [UsageRow(hour, "node-a", "GPU-0", "team", "svc", "H100", "", 3100.0, 1, 2)]
        store.upsert(bigger, [])
        assert _month_sum(store, "2025-10") == 2 * (ALLOC + 600.0) + 100.0
        # a month never seen before gets its partition on write
        far = _h(2024, 2, 29, 23)
        store.upsert(_usage(far), [CoverageRow(far, "node-a", "GPU-0", "H100", 3600.0)])
        assert ("ledger_usage_p2024_02", 2) in _partitions(postgres_db_url)["ledger_usage"]
        assert _month_sum(store, "2024-02") == ALLOC + 600.0
    finally:
        store.close()


# -- config and command -------------------------------------------------------------------


def test_retention_months_config_is_validated() -> None:
    from gpuledger.agent.config import AgentConfig

    assert AgentConfig().ledger.retention_months is None  # default: keep everything
    assert (
        AgentConfig.model_validate({"ledger": {"retention_months": 13}}).ledger.retention_months
        == 13
    )
    with pytest.raises(ValueError, match="retention_months"):
        AgentConfig.model_validate({"ledger": {"retention_months": 0}})


def test_retention_command_archives_and_drops_old_months(tmp_path: Path) -> None:
    """``gpuledger retention`` against a SQLite ledger holding four months up to today's:
    with one month kept, the two oldest are archived and gone, the last two untouched."""
    from typer.testing import CliRunner

    from gpuledger.cli import app

    this = datetime.now(UTC)
    months = [add_months(this, k) for k in (-3, -2, -1, 0)]
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    store = open_store(url)
    store.migrate()
    for m in months:
        store.upsert(_usage(int(m.timestamp())), [])
    store.close()
    archive = tmp_path / "archive"
    no_keep = CliRunner().invoke(app, ["retention", "--ledger", url])
    assert no_keep.exit_code == 2, no_keep.output
    result = CliRunner().invoke(
        app, ["retention", "--ledger", url, "--keep-months", "1", "--archive-dir", str(archive)]
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.relative_to(archive).as_posix() for p in archive.rglob("*.gz")) == [
        f"{m:%Y-%m}/ledger_usage.csv.gz" for m in months[:2]
    ]
    store = open_store(url)
    try:
        for m in months:
            expected = 0.0 if m in months[:2] else ALLOC + 600.0
            assert _month_sum(store, f"{m:%Y-%m}") == expected
    finally:
        store.close()


def test_migration_and_retention_are_not_cut_by_the_statement_timeout(
    postgres_db_url: str, tmp_path: Path
) -> None:
    """An agent's store runs with a 30 s statement timeout; migration 7 on a large ledger
    and a month's archive copy take longer. Both lift it for their own transaction (here a
    50 ms timeout against 240,000 rows moved, then archived and dropped)."""
    pytest.importorskip("psycopg")
    import psycopg

    from gpuledger.chargeback.ledger.store.postgres import PostgresLedgerStore

    _v6_database(postgres_db_url)
    jan = _h(2025, 1, 1, 0)
    with psycopg.connect(postgres_db_url) as conn:
        conn.execute(
            "INSERT INTO ledger_usage (hour_start, node, gpu_uuid, namespace, service,"
            " allocated_gpu_seconds) SELECT to_timestamp(h), 'node-b', 'GPU-' || g, 'team',"
            " 'svc', 3600 FROM generate_series(%s::bigint, %s::bigint, 3600) AS h,"
            " generate_series(1, 10000) AS g",
            (jan, jan + 23 * 3600),
        )
    store = PostgresLedgerStore(postgres_db_url, statement_timeout_ms=50)
    try:
        store.migrate()
        assert store.applied_versions() == ALL_VERSIONS
        assert ("ledger_usage_p2025_01", 240_000) in _partitions(postgres_db_url)["ledger_usage"]
        retired = store.retire_before(
            datetime(2025, 2, 1, tzinfo=UTC), archive_dir=tmp_path, now=NOW
        )
        assert (
            RetiredMonth(
                "ledger_usage", "2025-01", 240_000, tmp_path / "2025-01" / "ledger_usage.csv.gz"
            )
            in retired
        )
    finally:
        store.close()


def test_writers_opening_the_same_month_at_once_all_succeed(postgres_db_url: str) -> None:
    """Eight agents flush the first rows of a month at the same instant: each must find or
    create the month's partition. Until migration 8 replaced the partition function, the
    ones that waited for the creator's lock still saw no partition and failed with
    DuplicateTable (their flush retried later; a fleet logged it every month)."""
    pytest.importorskip("psycopg")
    import threading

    from gpuledger.chargeback.ledger.store.postgres import PostgresLedgerStore

    store = PostgresLedgerStore(postgres_db_url, max_size=8)
    try:
        store.migrate()
        start = threading.Barrier(8)
        errors: list[str] = []

        def agent(i: int) -> None:
            start.wait()
            try:
                store.upsert([UsageRow(_h(2024, 7, 1, i), f"node-{i}", "GPU-0", "team", "svc",
                                       "H100", "", 3600.0, 1.0, 2.0)], [])  # fmt: skip
            except StoreError as err:
                errors.append(str(err))

        threads = [threading.Thread(target=agent, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert errors == []
        got = store.usage(datetime(2024, 7, 1, tzinfo=UTC), datetime(2024, 8, 1, tzinfo=UTC), [])
        assert [g.allocated_gpu_seconds for g in got] == [8 * 3600.0]
    finally:
        store.close()
