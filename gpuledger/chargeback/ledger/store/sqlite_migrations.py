"""The SQLite store's migrations: frozen history, one entry per schema version.

Each creates what its version had, in literal names, and never changes once released;
what the newest version must look like is derived from the table declarations
(``sqlite_ddl.create_statements``), and ``tests/chargeback/ledger/test_tables.py`` checks
that both agree. Kept apart from the store so that history grows without the store
module growing.
"""

# SQL text here is built only from literal names quoted by q(); no value is interpolated,
# so S608 (string-built SQL) does not apply:
# ruff: noqa: S608

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from gpuledger.chargeback.ledger.sqlite_sql import cols, q
from gpuledger.chargeback.ledger.store.deliveries_sql import sqlite_migration_11
from gpuledger.cluster import sql_literal

_cols = cols

_USAGE_KEY = ("hour_start", "node", "gpu_uuid", "namespace", "service")
_COVERAGE_KEY = ("hour_start", "node", "gpu_uuid")
_TOKENS_KEY = ("hour_start", "node", "namespace", "service", "model_name")
_PROBES_KEY_V2 = ("node", "endpoint", "started_unix")
_PROBES_COLUMNS_V2 = (
    "node", "endpoint", "started_unix", "namespace", "service", "model_name", "ok", "reason",
    "ttft_s", "tpot_s", "e2e_s", "output_tokens_per_s", "prompt_tokens", "completion_tokens",
    "tokens_counted", "ttft_histogram_moved", "ttft_agrees", "updated_at",
)  # fmt: skip
_STORAGE_KEY = ("node", "database", "schema", "table_name", "ts")

MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            f"""CREATE TABLE {q("ledger_usage")} (
                {q("hour_start")} INTEGER NOT NULL,
                {q("node")} TEXT NOT NULL,
                {q("gpu_uuid")} TEXT NOT NULL,
                {q("namespace")} TEXT NOT NULL,
                {q("service")} TEXT NOT NULL,
                {q("gpu_model")} TEXT NOT NULL DEFAULT '',
                {q("mig_profile")} TEXT NOT NULL DEFAULT '',
                {q("allocated_gpu_seconds")} REAL NOT NULL DEFAULT 0,
                {q("busy_gpu_seconds")} REAL NOT NULL DEFAULT 0,
                {q("energy_joules")} REAL NOT NULL DEFAULT 0,
                {q("updated_at")} INTEGER NOT NULL,
                PRIMARY KEY ({_cols(_USAGE_KEY)})
            ) WITHOUT ROWID""",
            f"CREATE INDEX {q('ledger_usage_node_hour_idx')} "
            f"ON {q('ledger_usage')} ({q('node')}, {q('hour_start')})",
            f"""CREATE TABLE {q("ledger_coverage")} (
                {q("hour_start")} INTEGER NOT NULL,
                {q("node")} TEXT NOT NULL,
                {q("gpu_uuid")} TEXT NOT NULL,
                {q("gpu_model")} TEXT NOT NULL DEFAULT '',
                {q("observed_seconds")} REAL NOT NULL DEFAULT 0,
                {q("updated_at")} INTEGER NOT NULL,
                PRIMARY KEY ({_cols(_COVERAGE_KEY)})
            ) WITHOUT ROWID""",
        ),
    ),
)
MIGRATIONS += (
    (
        2,
        (
            f"""CREATE TABLE {q("ledger_tokens")} (
                {q("hour_start")} INTEGER NOT NULL,
                {q("node")} TEXT NOT NULL,
                {q("namespace")} TEXT NOT NULL,
                {q("service")} TEXT NOT NULL,
                {q("model_name")} TEXT NOT NULL,
                {q("prompt_tokens")} REAL NOT NULL DEFAULT 0,
                {q("generation_tokens")} REAL NOT NULL DEFAULT 0,
                {q("probe_prompt_tokens")} REAL NOT NULL DEFAULT 0,
                {q("probe_generation_tokens")} REAL NOT NULL DEFAULT 0,
                {q("updated_at")} INTEGER NOT NULL,
                PRIMARY KEY ({_cols(_TOKENS_KEY)})
            ) WITHOUT ROWID""",
            f"""CREATE TABLE {q("probe_results")} (
                {q("node")} TEXT NOT NULL,
                {q("endpoint")} TEXT NOT NULL,
                {q("started_unix")} REAL NOT NULL,
                {q("namespace")} TEXT NOT NULL,
                {q("service")} TEXT NOT NULL,
                {q("model_name")} TEXT NOT NULL,
                {q("ok")} INTEGER NOT NULL,
                {q("reason")} TEXT,
                {q("ttft_s")} REAL, {q("tpot_s")} REAL, {q("e2e_s")} REAL,
                {q("output_tokens_per_s")} REAL,
                {q("prompt_tokens")} INTEGER, {q("completion_tokens")} INTEGER,
                {q("tokens_counted")} INTEGER, {q("ttft_histogram_moved")} INTEGER,
                {q("ttft_agrees")} INTEGER,
                {q("updated_at")} INTEGER NOT NULL,
                PRIMARY KEY ({_cols(_PROBES_KEY_V2)})
            ) WITHOUT ROWID""",
            f"CREATE INDEX {q('probe_results_started_idx')} "
            f"ON {q('probe_results')} ({q('started_unix')})",
        ),
    ),
)
MIGRATIONS += (
    (
        3,
        (
            f"""CREATE TABLE {q("storage_samples")} (
                {q("node")} TEXT NOT NULL,
                {q("database")} TEXT NOT NULL,
                {q("schema")} TEXT NOT NULL,
                {q("table_name")} TEXT NOT NULL,
                {q("ts")} REAL NOT NULL,
                {q("bytes")} INTEGER NOT NULL,
                PRIMARY KEY ({_cols(_STORAGE_KEY)})
            ) WITHOUT ROWID""",
        ),
    ),
)
MIGRATIONS += (
    (
        4,
        (
            # Probe records keyed by time first: every report reads a month of them by
            # started_unix, and through the old (node, endpoint, started_unix) key each of a
            # month's millions of index hits cost a second lookup into the table. Same key
            # columns, so every ON CONFLICT target still matches.
            f"""CREATE TABLE {q("probe_results_v4")} (
                {q("node")} TEXT NOT NULL,
                {q("endpoint")} TEXT NOT NULL,
                {q("started_unix")} REAL NOT NULL,
                {q("namespace")} TEXT NOT NULL,
                {q("service")} TEXT NOT NULL,
                {q("model_name")} TEXT NOT NULL,
                {q("ok")} INTEGER NOT NULL,
                {q("reason")} TEXT,
                {q("ttft_s")} REAL, {q("tpot_s")} REAL, {q("e2e_s")} REAL,
                {q("output_tokens_per_s")} REAL,
                {q("prompt_tokens")} INTEGER, {q("completion_tokens")} INTEGER,
                {q("tokens_counted")} INTEGER, {q("ttft_histogram_moved")} INTEGER,
                {q("ttft_agrees")} INTEGER,
                {q("updated_at")} INTEGER NOT NULL,
                PRIMARY KEY ({q("started_unix")}, {q("node")}, {q("endpoint")})
            ) WITHOUT ROWID""",
            f"INSERT INTO {q('probe_results_v4')} SELECT {_cols(_PROBES_COLUMNS_V2)} "
            f"FROM {q('probe_results')}",
            f"DROP TABLE {q('probe_results')}",  # and probe_results_started_idx with it
            f"ALTER TABLE {q('probe_results_v4')} RENAME TO {q('probe_results')}",
        ),
    ),
)
MIGRATIONS += (
    (
        5,
        (
            # Tenants of shared endpoints (issue 14): per-tenant token and request running
            # totals from a gateway's counters or `gpuledger meter`.
            f"""CREATE TABLE {q("ledger_tenant_tokens")} (
                {q("hour_start")} INTEGER NOT NULL,
                {q("node")} TEXT NOT NULL,
                {q("namespace")} TEXT NOT NULL,
                {q("service")} TEXT NOT NULL,
                {q("model_name")} TEXT NOT NULL,
                {q("tenant")} TEXT NOT NULL,
                {q("requests")} REAL NOT NULL DEFAULT 0,
                {q("prompt_tokens")} REAL NOT NULL DEFAULT 0,
                {q("cached_prompt_tokens")} REAL NOT NULL DEFAULT 0,
                {q("generation_tokens")} REAL NOT NULL DEFAULT 0,
                {q("updated_at")} INTEGER NOT NULL,
                PRIMARY KEY ({_cols((*_TOKENS_KEY, "tenant"))})
            ) WITHOUT ROWID""",
        ),
    ),
)
"""Versioned migrations, applied in order, each once, inside one write transaction."""
MIGRATIONS += (
    (
        6,
        (
            # The engine's cost weights (issue 14): per (hour, service, model) the prefill
            # and decode seconds and prefix-cache tokens from vLLM's own histograms.
            f"""CREATE TABLE {q("ledger_engine_time")} (
                {q("hour_start")} INTEGER NOT NULL,
                {q("node")} TEXT NOT NULL,
                {q("namespace")} TEXT NOT NULL,
                {q("service")} TEXT NOT NULL,
                {q("model_name")} TEXT NOT NULL,
                {q("prefill_seconds")} REAL NOT NULL DEFAULT 0,
                {q("decode_seconds")} REAL NOT NULL DEFAULT 0,
                {q("prefill_requests")} REAL NOT NULL DEFAULT 0,
                {q("decode_requests")} REAL NOT NULL DEFAULT 0,
                {q("prefix_cache_queries")} REAL NOT NULL DEFAULT 0,
                {q("prefix_cache_hits")} REAL NOT NULL DEFAULT 0,
                {q("updated_at")} INTEGER NOT NULL,
                PRIMARY KEY ({_cols(_TOKENS_KEY)})
            ) WITHOUT ROWID""",
        ),
    ),
)
MIGRATIONS += (
    (
        7,
        (
            # Monthly partitions (issue 16) are PostgreSQL's: SQLite has no partitioning,
            # and its hour-keyed tables and probes are keyed time-first already
            # (hour_start; started_unix since v4), so a month's read and retention's range
            # DELETE walk one key range (storage samples are few). The version is
            # recorded so both backends stay at one SCHEMA_VERSION.
        ),
    ),
)
MIGRATIONS += (
    (
        8,
        (
            # Rollups (issue 16) are PostgreSQL's: a SQLite ledger holds one node (a
            # month of 8 GPUs is ~30 k usage rows, summed in milliseconds), and SQLite has
            # no statement triggers with transition tables to keep one exact. The version
            # is recorded so both backends stay at one SCHEMA_VERSION.
        ),
    ),
)
MIGRATIONS += (
    (
        9,
        (
            # Peak GPU memory per usage bucket (issue 17): a running maximum, NULL (not
            # measured) on the rows already there. ADD COLUMN appends it after updated_at,
            # where the declaration's DDL puts columns added later.
            f"ALTER TABLE {q('ledger_usage')} ADD COLUMN {q('peak_memory_bytes')} REAL",
        ),
    ),
)
MIGRATIONS += (
    (
        10,
        (
            # Cost centers (issue 18): per (hour, node, owner) the cost center the agent
            # saw on the workload or its namespace, and where it read it.
            f"""CREATE TABLE {q("ledger_cost_centers")} (
                {q("hour_start")} INTEGER NOT NULL,
                {q("node")} TEXT NOT NULL,
                {q("namespace")} TEXT NOT NULL,
                {q("service")} TEXT NOT NULL,
                {q("cost_center")} TEXT NOT NULL,
                {q("source")} TEXT NOT NULL,
                {q("updated_at")} INTEGER NOT NULL,
                PRIMARY KEY ({_cols(("hour_start", "node", "namespace", "service"))})
            ) WITHOUT ROWID""",
        ),
    ),
    (11, sqlite_migration_11()),  # the monthly report's delivery record (issue 18)
)

# -- migration 12: clusters (issue 18) -------------------------------------------------------

V12_KEYS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ledger_usage", ("hour_start", "cluster", "node", "gpu_uuid", "namespace", "service")),
    ("ledger_coverage", ("hour_start", "cluster", "node", "gpu_uuid")),
    ("ledger_tokens", ("hour_start", "cluster", "node", "namespace", "service", "model_name")),
    ("probe_results", ("started_unix", "cluster", "node", "endpoint")),
    ("storage_samples", ("cluster", "node", "database", "schema", "table_name", "ts")),
    ("ledger_tenant_tokens",
     ("hour_start", "cluster", "node", "namespace", "service", "model_name", "tenant")),
    ("ledger_engine_time",
     ("hour_start", "cluster", "node", "namespace", "service", "model_name")),
    ("ledger_cost_centers", ("hour_start", "cluster", "node", "namespace", "service")),
)  # fmt: skip
"""Each table migration 12 rekeys, and its (physical) primary key from version 12 on."""

Statements = tuple[str, ...] | Callable[[sqlite3.Connection], tuple[str, ...]]
"""A migration's statements, or (12 only) a function of the database that returns them."""


def _column_sql(name: str, type_: str, notnull: int, default: object) -> str:
    out = f"{q(name)} {type_}"
    if notnull:
        out += " NOT NULL"
    if default is not None:
        out += f" DEFAULT {default}"
    return out


def migration_12(default_cluster: str) -> Callable[[sqlite3.Connection], tuple[str, ...]]:
    """Clusters (issue 18): every table gains a ``cluster`` key column, appended after
    its last column (where the declaration's DDL puts columns added later), holding
    ``default_cluster`` on every row already there (the store's own cluster: a SQLite
    ledger is one agent's). The key grows, and SQLite cannot change a WITHOUT ROWID
    table's key in place, so each table is rebuilt as migration 4 did: created anew,
    every row copied once (a longer key merges no two rows), the old table dropped, the
    new one renamed and the old one's indexes created again.

    The rebuilt table keeps the columns the database has (``PRAGMA table_xinfo``: names,
    types, NOT NULL, defaults, in order), not a list written here, so a column another
    migration of the same release added (10 and 11 were written in parallel) survives
    it. The value enters as a checked literal (:func:`~gpuledger.cluster.sql_literal`):
    the column's DDL default of a fresh ledger is ``'default'``, not the configured name."""
    value = sql_literal(default_cluster)

    def statements(conn: sqlite3.Connection) -> tuple[str, ...]:
        out: list[str] = []
        for name, key in V12_KEYS:
            columns = [
                (str(r[1]), str(r[2]), int(r[3]), r[4])
                for r in conn.execute(f"PRAGMA table_xinfo({q(name)})")
            ]
            names = [c[0] for c in columns]
            indexes = [
                str(r[0])
                for r in conn.execute(
                    "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ?"
                    " AND sql IS NOT NULL ORDER BY name",
                    (name,),
                )
            ]
            new = f"{name}_v12"
            defs = [_column_sql(*c) for c in columns]
            defs.append(f"{q('cluster')} TEXT NOT NULL DEFAULT 'default'")
            out += [
                f"CREATE TABLE {q(new)} ({', '.join(defs)}, "
                f"PRIMARY KEY ({_cols(key)})) WITHOUT ROWID",
                f"INSERT INTO {q(new)} ({_cols((*names, 'cluster'))}) "
                f"SELECT {_cols(names)}, {value} FROM {q(name)}",
                f"DROP TABLE {q(name)}",  # and its indexes, created again below
                f"ALTER TABLE {q(new)} RENAME TO {q(name)}",
                *indexes,
            ]
        return tuple(out)

    return statements


def migrations(default_cluster: str) -> tuple[tuple[int, Statements], ...]:
    """Every migration in order; 12 gives existing rows ``default_cluster``."""
    return (*MIGRATIONS, (12, migration_12(default_cluster)))
