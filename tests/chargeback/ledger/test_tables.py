"""The ledger tables' single declaration: what it derives, and that the migrations (which
are history and never change) build exactly the schema it declares, on both backends and
in the spool."""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gpuledger.chargeback.ledger.spool import Spool
from gpuledger.chargeback.ledger.sqlite_sql import q
from gpuledger.chargeback.ledger.store import sqlite as store_sqlite
from gpuledger.chargeback.ledger.store import sqlite_ddl
from gpuledger.chargeback.ledger.store.deliveries_sql import DELIVERIES
from gpuledger.chargeback.ledger.tables import (
    COST_CENTERS,
    COVERAGE,
    ENGINE_TIME,
    PROBES,
    ROLLUPS,
    STORAGE,
    TABLES,
    TENANT_TOKENS,
    TOKENS,
    USAGE,
    CostCenterRow,
    CoverageRow,
    EngineTimeRow,
    ProbeRecord,
    Role,
    StorageSample,
    TenantTokenRow,
    TokenRow,
    UsageRow,
)
from tests.support.migrations import ALL_VERSIONS
from tests.support.paths import FIXTURES

SAMPLES: list[tuple[Any, Any]] = [
    (USAGE, UsageRow(3600, "n1", "g1", "ns", "svc", "H100", "", 1, 2.5, 3)),
    (COVERAGE, CoverageRow(3600, "n1", "g1", "H100", 3600)),
    (TOKENS, TokenRow(3600, "n1", "ns", "svc", "m", 10, 5.0, 1, 0)),
    (
        PROBES,
        ProbeRecord(
            12.5,
            "n1",
            "http://e",
            "ns",
            "svc",
            "m",
            True,
            None,
            0.1,
            None,
            0.5,
            40.0,
            8,
            16,
            True,
            None,
            False,
        ),
    ),
    (STORAGE, StorageSample(60.5, "n1", "db", "public", "t", 1024)),
    (TENANT_TOKENS, TenantTokenRow(3600, "n1", "ns", "svc", "m", "team-a", 3, 100, 40.0, 7)),
    (ENGINE_TIME, EngineTimeRow(3600, "n1", "ns", "svc", "m", 1.5, 12.25, 3, 3, 300, 128)),
    (COST_CENTERS, CostCenterRow(3600, "n1", "ns", "svc", "ml-platform", "pod_label")),
]


def _sqlite_schema(conn: sqlite3.Connection, names: list[str]) -> dict[str, object]:
    """Per table: columns (name, type, NOT NULL, default, key position), WITHOUT ROWID,
    and each index's name, uniqueness, origin and columns."""
    out: dict[str, object] = {}
    for name in names:
        columns = conn.execute(f"PRAGMA table_xinfo({q(name)})").fetchall()
        (wr,) = conn.execute("SELECT wr FROM pragma_table_list WHERE name = ?", (name,)).fetchone()
        indexes = []
        for _, index, unique, origin, partial in conn.execute(f"PRAGMA index_list({q(name)})"):
            cols = conn.execute(f"PRAGMA index_xinfo({q(index)})").fetchall()
            label = "(primary key)" if origin == "pk" else index
            indexes.append((label, unique, origin, partial, cols))
        out[name] = (columns, wr, sorted(indexes))
    return out


def test_declared_keys_are_the_rows_keys() -> None:
    """The table's key is the row's bucket key (within its cluster) with ``cluster``."""
    for table, row in SAMPLES:
        row = replace(row, cluster="east")
        in_cluster = [v for c, v in zip(table.key, table.key_values(row), strict=True)
                      if c.attr != "cluster"]  # fmt: skip
        assert tuple(in_cluster) == row.key
        assert table.by_attr["cluster"] in table.key
        assert table.key_values(row)[[c.attr for c in table.key].index("cluster")] == "east"
        assert isinstance(row, table.row)


def test_values_round_trip_in_column_order() -> None:
    for table, row in SAMPLES:
        values = table.values(row)
        assert len(values) == len(table.columns)
        assert table.from_values(values) == row
        for column, value in zip(table.columns, values, strict=True):
            if column.type.python is float and value is not None:
                assert type(value) is float  # ints passed for a float column go out as float


def test_merge_is_two_sequential_upserts() -> None:
    a = UsageRow(0, "n", "g", "ns", "s", "H100", "", 100, 90, 5.0)
    b = UsageRow(0, "n", "g", "ns", "s", "H100-SXM", "1g", 80, 95, 7.0)
    other = replace(a, service="t")
    assert USAGE.merge([a, other, b]) == [
        UsageRow(0, "n", "g", "ns", "s", "H100-SXM", "1g", 100, 95, 7.0),
        other,
    ]
    p = ProbeRecord(1.0, "n", "e", "ns", "s", "m", True, tokens_counted=True, ttft_agrees=False)
    bare = replace(p, tokens_counted=None, ttft_agrees=None, ttft_s=0.2)
    assert PROBES.merge([p, bare]) == [replace(bare, tokens_counted=True, ttft_agrees=False)]


def test_roles_are_the_documented_semantics() -> None:
    assert USAGE.names(Role.TOTAL) == ("allocated_gpu_seconds", "busy_gpu_seconds",
                                       "energy_joules")  # fmt: skip
    assert USAGE.names(Role.LABEL) == ("gpu_model", "mig_profile")
    assert PROBES.names(Role.VERDICT) == ("tokens_counted", "ttft_histogram_moved", "ttft_agrees")
    assert STORAGE.names() == ("cluster", "node", "database", "schema", "table_name", "ts",
                               "bytes")  # fmt: skip
    assert STORAGE.names(spool=True) == ("cluster", "node", "database", "schema", "tbl",
                                         "ts_unix", "bytes")  # fmt: skip
    assert TENANT_TOKENS.names(Role.KEY) == ("hour_start", "cluster", "node", "namespace",
                                             "service", "model_name", "tenant")  # fmt: skip
    tenant_totals = ("requests", "prompt_tokens", "cached_prompt_tokens", "generation_tokens")
    assert TENANT_TOKENS.names(Role.TOTAL) == tenant_totals
    assert ENGINE_TIME.names(Role.KEY) == TOKENS.names(Role.KEY)
    assert ENGINE_TIME.names(Role.TOTAL) == (
        "prefill_seconds", "decode_seconds", "prefill_requests", "decode_requests",
        "prefix_cache_queries", "prefix_cache_hits",
    )  # fmt: skip


def test_sqlite_migrations_build_the_declared_schema(tmp_path: Path) -> None:
    migrated = store_sqlite.SqliteLedgerStore(tmp_path / "migrated.db")
    migrated.migrate()
    migrated.close()
    with sqlite3.connect(tmp_path / "declared.db") as conn:
        for table in TABLES:
            for statement in sqlite_ddl.create_statements(table):
                conn.execute(statement)
    names = [t.store for t in TABLES]
    with (
        sqlite3.connect(tmp_path / "migrated.db") as a,
        sqlite3.connect(tmp_path / "declared.db") as b,
    ):
        assert _sqlite_schema(a, names) == _sqlite_schema(b, names)
        tables = "SELECT name FROM sqlite_master WHERE type = 'table' AND name <> ? ORDER BY 1"
        # ledger_deliveries is no running total: a plain table (store/deliveries_sql.py)
        assert [r[0] for r in a.execute(tables, ("schema_migrations",))] == sorted(
            [*names, DELIVERIES]
        )


def test_a_fresh_spool_has_the_previous_releases_schema(tmp_path: Path) -> None:
    """The spool's tables are derived now; in a new spool file every table the previous
    release had must be laid out exactly as that release laid it out (the format does not
    change) but for the columns added since (``since``: spool_usage's peak_memory_bytes,
    every table's cluster), which come after its last column, and the key (which gained
    cluster); the tables added since (tenant tokens, engine time
    and their counter baselines, when the tenant baselines were last seen) come on top.
    The old file, once opened, is laid out exactly as the new one."""
    old = tmp_path / "old.db"
    shutil.copy(FIXTURES / "ledger-prev" / "spool.db", old)
    Spool(tmp_path / "new.db").close()
    query = "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1"
    with sqlite3.connect(old) as a, sqlite3.connect(tmp_path / "new.db") as b:
        names = [r[0] for r in a.execute(query)]
        added = ["spool_cost_centers", "spool_engine_baselines", "spool_engine_time",
                 "spool_tenant_baselines", "spool_tenant_seen", "spool_tenant_tokens"]  # fmt: skip
        assert [r[0] for r in b.execute(query)] == sorted([*names, *added])
        assert {t.spool for t in TABLES} <= {*names, *added}
        was, now = _sqlite_schema(a, names), _sqlite_schema(b, names)
        for table in TABLES:
            if table.spool not in was:
                continue
            old_cols, new_cols = was[table.spool][0], now[table.spool][0]  # type: ignore[index]
            # the previous release's columns, in their places (the key positions aside:
            # the key gained cluster, migration 12), then the columns added since
            assert [c[:5] for c in new_cols[: len(old_cols)]] == [c[:5] for c in old_cols]
            tail = [(c[1], c[2], c[3], c[4]) for c in new_cols[len(old_cols) :]]
            peak = [("peak_memory_bytes", "REAL", 0, None)] if table is USAGE else []
            assert tail == [*peak, ("cluster", "TEXT", 1, "'default'")]
            key = [c[1] for c in sorted((c for c in new_cols if c[5]), key=lambda c: c[5])]
            assert key == list(table.names(Role.KEY, spool=True))
    Spool(old).close()  # opening an old spool adds what it lacks, once
    Spool(old).close()
    with sqlite3.connect(old) as a, sqlite3.connect(tmp_path / "new.db") as b:
        every = [r[0] for r in b.execute(query)]
        assert _sqlite_schema(a, every) == _sqlite_schema(b, every)


def _pg_schema(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """The schema of the tables (not their month partitions, which follow the calendar)."""
    import psycopg

    tables = (
        "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        " AND relkind IN ('r', 'p') AND NOT relispartition AND relname <> 'schema_migrations'"
    )
    with psycopg.connect(url) as conn:
        return {
            "columns": conn.execute(
                "SELECT table_name, ordinal_position, column_name, data_type, is_nullable,"
                " column_default FROM information_schema.columns WHERE table_schema = 'public'"
                f" AND table_name IN ({tables}) ORDER BY 1, 2"
            ).fetchall(),
            "indexes": conn.execute(
                "SELECT tablename, indexname, indexdef FROM pg_indexes"
                f" WHERE schemaname = 'public' AND tablename IN ({tables}) ORDER BY 1, 2"
            ).fetchall(),
            "constraints": conn.execute(
                "SELECT conrelid::regclass::text, conname, contype, pg_get_constraintdef(oid)"
                " FROM pg_constraint WHERE connamespace = 'public'::regnamespace"
                f" AND conrelid::regclass::text IN ({tables}) ORDER BY 1, 2"
            ).fetchall(),
            "partitioning": conn.execute(
                "SELECT relname, pg_get_partkeydef(oid) FROM pg_class"
                " WHERE relnamespace = 'public'::regnamespace AND relkind = 'p' ORDER BY 1"
            ).fetchall(),
        }


def test_postgres_migrations_build_the_declared_schema(postgres_db_url: str) -> None:
    pytest.importorskip("psycopg")
    import psycopg

    from gpuledger.chargeback.ledger.store import postgres_sql as store_pg
    from gpuledger.chargeback.ledger.store.postgres import PostgresLedgerStore
    from gpuledger.chargeback.ledger.store.postgres_rollup import create_rollup

    store = PostgresLedgerStore(postgres_db_url)
    try:
        store.migrate()
    finally:
        store.close()
    migrated = _pg_schema(postgres_db_url)
    rollups = {r.store for r in ROLLUPS}
    assert {r[0] for r in migrated["columns"]} == {t.store for t in TABLES} | rollups | {DELIVERIES}
    assert migrated["partitioning"] == sorted(
        [(t.store, "RANGE (hour_start)") for t in TABLES if t.monthly]
        + [(r.store, "RANGE (hour_start)") for r in ROLLUPS if r.partitioned]
    )
    with psycopg.connect(postgres_db_url, autocommit=True) as conn:
        for name in [*(t.store for t in TABLES), *rollups]:
            conn.execute(psycopg.sql.SQL("DROP TABLE {}").format(psycopg.sql.Identifier(name)))
        for table in TABLES:
            for statement in store_pg.create_statements(table):
                conn.execute(statement)
        for rollup in ROLLUPS:
            for statement in create_rollup(rollup):
                conn.execute(statement)
    assert _pg_schema(postgres_db_url) == migrated


def test_both_backends_define_the_same_versions() -> None:
    """One SCHEMA_VERSION for both stores: a version only one backend needs is recorded
    on the other as an empty migration (SQLite's 7 and 8)."""
    pytest.importorskip("psycopg")
    from gpuledger.chargeback.ledger.store import postgres_migrations, sqlite_migrations

    # 12 (clusters) is built from the migrating agent's cluster: the lists' full form
    assert [v for v, _ in postgres_migrations.migrations("default")] == ALL_VERSIONS
    assert [v for v, _ in sqlite_migrations.migrations("default")] == ALL_VERSIONS
