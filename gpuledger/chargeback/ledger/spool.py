"""The node-local spool: every bucket's running total, on disk, until the store has it.

Written every cycle (one SQLite transaction in WAL mode), so an agent killed with SIGKILL
loses at most the cycle in flight, and a central database that is down for an hour only
makes the spool's pending count grow. Each write stamps the row with a fresh sequence
number; the flusher sends rows whose sequence is newer than what the store confirmed and,
after the store committed them, records that sequence as flushed. A row rewritten while a
flush was under way keeps its newer sequence and is sent again next time -- as a running
total, so sending it twice is harmless.
"""

# Every statement below is built from the table declarations' constant names; values
# always travel as parameters, so S608 (string-built SQL) does not apply:
# ruff: noqa: S608

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from gpuledger.chargeback.ledger.sqlite_sql import cols, column_def, insert, key_where, q
from gpuledger.chargeback.ledger.tables import (
    COST_CENTERS,
    COVERAGE,
    ENGINE_TIME,
    PROBES,
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
    Table,
    TenantTokenRow,
    TokenRow,
    UsageRow,
)
from gpuledger.chargeback.ledger.tokens import Baseline
from gpuledger.cluster import DEFAULT_CLUSTER, check_cluster_name

R = TypeVar("R")


def create_statement(table: Table[Any]) -> str:
    """The spool's table for ``table``: its columns (no defaults: the spool is always
    given every value), the write's sequence and the sequence the store confirmed."""
    defs = [column_def(c, c.spool, with_default=False) for c in table.created()]
    defs += ["seq INTEGER NOT NULL", "flushed_seq INTEGER NOT NULL DEFAULT 0"]
    defs += [column_def(c, c.spool, with_default=True) for c in table.added()]
    defs.append(f"PRIMARY KEY ({cols(table.names(Role.KEY, spool=True))})")
    return f"CREATE TABLE IF NOT EXISTS {q(table.spool)} ({', '.join(defs)})"


def add_columns(db: sqlite3.Connection, table: Table[Any]) -> None:
    """Bring a spool file an earlier release wrote up to ``table``: each column added
    since (``since``) that the file's table lacks, appended (NULL, or its default, on the
    rows it holds), so an old spool opens and keeps every row. A fresh file already has
    them, in the same place."""
    have = {str(r[1]) for r in db.execute(f"PRAGMA table_info({q(table.spool)})")}
    for c in table.added():
        if c.spool not in have:
            db.execute(
                f"ALTER TABLE {q(table.spool)} ADD COLUMN "
                + column_def(c, c.spool, with_default=True)
            )


def rekey(db: sqlite3.Connection, table: Table[Any], fill: Mapping[str, object]) -> None:
    """Bring a spool table whose key an earlier release wrote shorter (before migration
    12 added ``cluster``) to the declared key. SQLite cannot change a key in place, so the
    table is renamed aside, created anew and every row copied once; a key column the old
    table lacks takes its value from ``fill`` (the agent's cluster: a spool is one
    agent's), the other columns it lacks their default. Nothing when the key matches."""
    info = list(db.execute(f"PRAGMA table_info({q(table.spool)})"))
    if not info:
        return
    have_key = [str(r[1]) for r in sorted((r for r in info if r[5]), key=lambda r: r[5])]
    want_key = list(table.names(Role.KEY, spool=True))
    if have_key == want_key:
        return
    have = {str(r[1]) for r in info}
    missing = [c for c in table.columns if c.spool not in have and c.role is Role.KEY]
    unknown = [c.spool for c in missing if c.attr not in fill]
    if unknown:
        raise ValueError(f"spool table {table.spool}: no value for new key column(s) {unknown}")
    aside = f"{table.spool}_rekey"
    db.execute(f"ALTER TABLE {q(table.spool)} RENAME TO {q(aside)}")
    db.execute(create_statement(table))
    kept = [n for n in (*table.names(spool=True), "seq", "flushed_seq") if n in have]
    added = [c.spool for c in missing]
    db.execute(
        f"INSERT INTO {q(table.spool)} ({cols([*kept, *added])}) "
        f"SELECT {cols(kept)}{''.join(', ?' for _ in added)} FROM {q(aside)}",
        [fill[c.attr] for c in missing],
    )
    db.execute(f"DROP TABLE {q(aside)}")


def _upsert(table: Table[Any]) -> str:
    """The latest running total wins (the accumulator's, not the larger: a restart resumes
    from here); insert-only tables ignore a replay."""
    columns = (*table.names(spool=True), "seq")
    if table.insert_only:
        return insert(table.spool, columns, (), ())
    sets = [
        f"{q(c)}=excluded.{q(c)}" for c in columns if c not in table.names(Role.KEY, spool=True)
    ]
    return insert(table.spool, columns, table.names(Role.KEY, spool=True), sets)


def _select(table: Table[Any], where: str) -> str:
    return f"SELECT {cols(table.names(spool=True))} FROM {q(table.spool)} WHERE {where}"


def _mark_flushed(table: Table[Any]) -> str:
    return f"UPDATE {q(table.spool)} SET flushed_seq = seq WHERE seq <= ? AND " + key_where(
        table.names(Role.KEY, spool=True)
    )


_SCHEMA = (
    ";\n".join(create_statement(t) for t in TABLES)
    + """;
CREATE TABLE IF NOT EXISTS spool_token_baselines (
    series TEXT PRIMARY KEY, prompt REAL NOT NULL, generation REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS spool_tenant_baselines (series TEXT PRIMARY KEY, value REAL NOT NULL);
CREATE TABLE IF NOT EXISTS spool_tenant_seen (series TEXT PRIMARY KEY, seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS spool_engine_baselines (series TEXT PRIMARY KEY, value REAL NOT NULL);
CREATE TABLE IF NOT EXISTS spool_meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
INSERT OR IGNORE INTO spool_meta (k, v) VALUES ('seq', 0);
"""
)

_UPSERT = {t.spool: _upsert(t) for t in TABLES}
_PENDING = {t.spool: _select(t, "seq > flushed_seq LIMIT ?") for t in TABLES}
_MARK_FLUSHED = {t.spool: _mark_flushed(t) for t in TABLES}
_LOAD_USAGE = _select(USAGE, "hour_start >= ?")
_LOAD_COVERAGE = _select(COVERAGE, "hour_start >= ?")
_LOAD_TOKENS = _select(TOKENS, "hour_start >= ?")
_LOAD_TENANT_TOKENS = _select(TENANT_TOKENS, "hour_start >= ?")
_UPSERT_TENANT_BASELINE = (
    "INSERT INTO spool_tenant_baselines (series, value) VALUES (?,?) "
    "ON CONFLICT (series) DO UPDATE SET value=excluded.value"
)
_UPSERT_TENANT_SEEN = (
    "INSERT INTO spool_tenant_seen (series, seen) VALUES (?,?) "
    "ON CONFLICT (series) DO UPDATE SET seen=excluded.seen"
)
_LOAD_ENGINE_TIME = _select(ENGINE_TIME, "hour_start >= ?")
_LOAD_COST_CENTERS = _select(COST_CENTERS, "hour_start >= ?")
_UPSERT_ENGINE_BASELINE = (
    "INSERT INTO spool_engine_baselines (series, value) VALUES (?,?) "
    "ON CONFLICT (series) DO UPDATE SET value=excluded.value"
)
_UPSERT_BASELINE = (
    "INSERT INTO spool_token_baselines (series, prompt, generation) VALUES (?,?,?) "
    "ON CONFLICT (series) DO UPDATE SET prompt=excluded.prompt, generation=excluded.generation"
)

_NEXT_SEQ = "UPDATE spool_meta SET v = v + 1 WHERE k = 'seq' RETURNING v"
_CURRENT_SEQ = "SELECT v FROM spool_meta WHERE k = 'seq'"


class Spool:
    def __init__(self, path: Path | str, *, cluster: str = DEFAULT_CLUSTER) -> None:
        """``cluster``: the agent's; rows an earlier release spooled (no cluster) are its."""
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.closed = False
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: safe against process death
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        with self._transaction() as db:
            for table in TABLES:
                rekey(db, table, {"cluster": check_cluster_name(cluster)})
                add_columns(db, table)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock: committed whole or rolled back whole."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def write(self, usage: Sequence[UsageRow], coverage: Sequence[CoverageRow]) -> None:
        if not usage and not coverage:
            return
        with self._transaction() as db:
            (seq,) = db.execute(_NEXT_SEQ).fetchone()
            self._upsert(db, USAGE, usage, seq)
            self._upsert(db, COVERAGE, coverage, seq)

    def pending(self, limit: int = 50_000) -> tuple[list[UsageRow], list[CoverageRow], int]:
        """Rows the store has not confirmed, and the sequence they were read at."""
        with self._lock:
            (seq,) = self._db.execute(_CURRENT_SEQ).fetchone()
            usage = self._rows(USAGE, _PENDING[USAGE.spool], limit)
            coverage = self._rows(COVERAGE, _PENDING[COVERAGE.spool], limit)
        return usage, coverage, int(seq)

    @staticmethod
    def _upsert(db: sqlite3.Connection, table: Table[R], rows: Sequence[R], seq: int) -> None:
        db.executemany(_UPSERT[table.spool], [(*table.values(r), seq) for r in rows])

    def _rows(self, table: Table[R], statement: str, *params: object) -> list[R]:
        """Rows read back by ``statement`` (the caller holds the lock)."""
        return [table.from_values(r) for r in self._db.execute(statement, params)]

    def _mark(self, db: sqlite3.Connection, table: Table[R], rows: Sequence[R], seq: int) -> None:
        db.executemany(_MARK_FLUSHED[table.spool], [(seq, *table.key_values(r)) for r in rows])

    def mark_flushed(
        self, usage: Sequence[UsageRow], coverage: Sequence[CoverageRow], seq: int
    ) -> None:
        """Record that the store holds these rows as of sequence ``seq``: rows rewritten
        after ``seq`` stay pending."""
        with self._transaction() as db:
            self._mark(db, USAGE, usage, seq)
            self._mark(db, COVERAGE, coverage, seq)

    def pending_count(self) -> int:
        with self._lock:
            (u,) = self._db.execute(
                "SELECT count(*) FROM spool_usage WHERE seq > flushed_seq"
            ).fetchone()
            (c,) = self._db.execute(
                "SELECT count(*) FROM spool_coverage WHERE seq > flushed_seq"
            ).fetchone()
        return int(u) + int(c)

    def load(self, since_hour: int) -> tuple[list[UsageRow], list[CoverageRow]]:
        """Every row from ``since_hour`` on: the running totals a restart resumes from."""
        with self._lock:
            usage = self._rows(USAGE, _LOAD_USAGE, since_hour)
            coverage = self._rows(COVERAGE, _LOAD_COVERAGE, since_hour)
        return usage, coverage

    def prune(self, before_hour: int) -> int:
        """Delete flushed rows of hours before ``before_hour``; unflushed rows are kept."""
        with self._lock:
            a = self._db.execute(
                "DELETE FROM spool_usage WHERE hour_start < ? AND seq <= flushed_seq",
                (before_hour,),
            ).rowcount
            b = self._db.execute(
                "DELETE FROM spool_coverage WHERE hour_start < ? AND seq <= flushed_seq",
                (before_hour,),
            ).rowcount
        return int(a) + int(b)

    # --- tokens and probes ---------------------------------------------------------------
    def write_tokens(self, rows: Sequence[TokenRow], baselines: dict[str, Baseline]) -> None:
        """Token running totals and the counter baselines they were computed from, in one
        transaction, so a restart never re-counts (or skips) a delta."""
        if not rows and not baselines:
            return
        with self._transaction() as db:
            (seq,) = db.execute(_NEXT_SEQ).fetchone()
            self._upsert(db, TOKENS, rows, seq)
            db.executemany(
                _UPSERT_BASELINE,
                [(k, b.prompt, b.generation) for k, b in baselines.items()],
            )

    def write_tenant_tokens(
        self,
        rows: Sequence[TenantTokenRow],
        baselines: dict[str, float],
        seen: Mapping[str, float] | None = None,
        forget: Sequence[str] = (),
    ) -> None:
        """Tenant running totals and the gateway counter baselines they were computed
        from (with when each was last seen), in one transaction (a restart never
        re-counts or skips a delta); ``forget``: baselines pruned, removed with them."""
        if not rows and not baselines and not forget:
            return
        with self._transaction() as db:
            (seq,) = db.execute(_NEXT_SEQ).fetchone()
            self._upsert(db, TENANT_TOKENS, rows, seq)
            db.executemany(_UPSERT_TENANT_BASELINE, list(baselines.items()))
            db.executemany(_UPSERT_TENANT_SEEN, list((seen or {}).items()))
            for table in ("spool_tenant_baselines", "spool_tenant_seen"):
                db.executemany(f"DELETE FROM {table} WHERE series = ?", [(k,) for k in forget])

    def pending_tenant_tokens(self, limit: int = 50_000) -> list[TenantTokenRow]:
        with self._lock:
            return self._rows(TENANT_TOKENS, _PENDING[TENANT_TOKENS.spool], limit)

    def mark_tenant_tokens_flushed(self, rows: Sequence[TenantTokenRow], seq: int) -> None:
        with self._lock:
            self._mark(self._db, TENANT_TOKENS, rows, seq)

    def load_tenant_tokens(
        self, since_hour: int
    ) -> tuple[list[TenantTokenRow], dict[str, float], dict[str, float]]:
        """Rows since ``since_hour``, the counter baselines and when each was last seen
        (absent for baselines an older spool wrote)."""
        with self._lock:
            rows = self._rows(TENANT_TOKENS, _LOAD_TENANT_TOKENS, since_hour)
            baselines = {
                str(k): float(v)
                for k, v in self._db.execute("SELECT series, value FROM spool_tenant_baselines")
            }
            seen = {
                str(k): float(v)
                for k, v in self._db.execute("SELECT series, seen FROM spool_tenant_seen")
            }
        return rows, baselines, seen

    def write_engine_time(self, rows: Sequence[EngineTimeRow], baselines: dict[str, float]) -> None:
        """Engine-time running totals and the histogram/counter baselines they were
        computed from, in one transaction (a restart never re-counts or skips a delta)."""
        if not rows and not baselines:
            return
        with self._transaction() as db:
            (seq,) = db.execute(_NEXT_SEQ).fetchone()
            self._upsert(db, ENGINE_TIME, rows, seq)
            db.executemany(_UPSERT_ENGINE_BASELINE, list(baselines.items()))

    def pending_engine_time(self, limit: int = 50_000) -> list[EngineTimeRow]:
        with self._lock:
            return self._rows(ENGINE_TIME, _PENDING[ENGINE_TIME.spool], limit)

    def mark_engine_time_flushed(self, rows: Sequence[EngineTimeRow], seq: int) -> None:
        with self._lock:
            self._mark(self._db, ENGINE_TIME, rows, seq)

    def load_engine_time(self, since_hour: int) -> tuple[list[EngineTimeRow], dict[str, float]]:
        with self._lock:
            rows = self._rows(ENGINE_TIME, _LOAD_ENGINE_TIME, since_hour)
            baselines = {
                str(k): float(v)
                for k, v in self._db.execute("SELECT series, value FROM spool_engine_baselines")
            }
        return rows, baselines

    def write_cost_centers(self, rows: Sequence[CostCenterRow]) -> None:
        """The cost centers seen per (hour, owner); the latest value wins, like a label."""
        if not rows:
            return
        with self._transaction() as db:
            (seq,) = db.execute(_NEXT_SEQ).fetchone()
            self._upsert(db, COST_CENTERS, rows, seq)

    def pending_cost_centers(self, limit: int = 50_000) -> list[CostCenterRow]:
        with self._lock:
            return self._rows(COST_CENTERS, _PENDING[COST_CENTERS.spool], limit)

    def mark_cost_centers_flushed(self, rows: Sequence[CostCenterRow], seq: int) -> None:
        with self._lock:
            self._mark(self._db, COST_CENTERS, rows, seq)

    def load_cost_centers(self, since_hour: int) -> list[CostCenterRow]:
        with self._lock:
            return self._rows(COST_CENTERS, _LOAD_COST_CENTERS, since_hour)

    def write_probe(self, record: ProbeRecord) -> None:
        with self._transaction() as db:
            (seq,) = db.execute(_NEXT_SEQ).fetchone()
            self._upsert(db, PROBES, [record], seq)

    def pending_tokens(self, limit: int = 50_000) -> list[TokenRow]:
        with self._lock:
            return self._rows(TOKENS, _PENDING[TOKENS.spool], limit)

    def pending_probes(self, limit: int = 50_000) -> list[ProbeRecord]:
        with self._lock:
            return self._rows(PROBES, _PENDING[PROBES.spool], limit)

    def mark_tokens_flushed(self, rows: Sequence[TokenRow], seq: int) -> None:
        with self._lock:
            self._mark(self._db, TOKENS, rows, seq)

    def mark_probes_flushed(self, rows: Sequence[ProbeRecord], seq: int) -> None:
        with self._lock:
            self._mark(self._db, PROBES, rows, seq)

    # --- storage samples -----------------------------------------------------------------
    def write_storage_samples(self, rows: Sequence[StorageSample]) -> None:
        if not rows:
            return
        with self._transaction() as db:
            (seq,) = db.execute(_NEXT_SEQ).fetchone()
            self._upsert(db, STORAGE, rows, seq)

    def storage_sums(
        self, node: str, *, since: float, origin: float
    ) -> list[tuple[str, str, str, int, float, float, float, float]]:
        """Per (database, schema, table) since ``since``: n, Σx, Σy, Σx², Σxy with
        x = ts − origin (seconds) and y = bytes -- what a least-squares slope needs."""
        with self._lock:
            rows = self._db.execute(
                "SELECT database, schema, tbl, count(*), total(ts_unix - ?), total(bytes), "
                "total((ts_unix - ?) * (ts_unix - ?)), total((ts_unix - ?) * bytes) "
                "FROM spool_storage_samples WHERE node = ? AND ts_unix >= ? "
                "GROUP BY database, schema, tbl",
                (origin, origin, origin, origin, node, since),
            ).fetchall()
        return [
            (str(d), str(s), str(t), int(n), float(sx), float(sy), float(sxx), float(sxy))
            for d, s, t, n, sx, sy, sxx, sxy in rows
        ]

    def pending_storage_samples(self, limit: int = 50_000) -> list[StorageSample]:
        with self._lock:
            return self._rows(STORAGE, _PENDING[STORAGE.spool], limit)

    def mark_storage_flushed(self, rows: Sequence[StorageSample], seq: int) -> None:
        with self._lock:
            self._mark(self._db, STORAGE, rows, seq)

    def prune_storage_samples(self, before_unix: float) -> None:
        """Flushed samples older than the growth window are no longer needed here."""
        with self._lock:
            self._db.execute(
                "DELETE FROM spool_storage_samples WHERE ts_unix < ? AND seq <= flushed_seq",
                (before_unix,),
            )

    def current_seq(self) -> int:
        with self._lock:
            (seq,) = self._db.execute(_CURRENT_SEQ).fetchone()
        return int(seq)

    def load_tokens(self, since_hour: int) -> tuple[list[TokenRow], dict[str, Baseline]]:
        with self._lock:
            rows = self._rows(TOKENS, _LOAD_TOKENS, since_hour)
            baselines = {
                k: Baseline(p, g)
                for k, p, g in self._db.execute(
                    "SELECT series, prompt, generation FROM spool_token_baselines"
                )
            }
        return rows, baselines

    def pending_extra_count(self) -> int:
        with self._lock:
            (t,) = self._db.execute(
                "SELECT count(*) FROM spool_tokens WHERE seq > flushed_seq"
            ).fetchone()
            (p,) = self._db.execute(
                "SELECT count(*) FROM spool_probes WHERE seq > flushed_seq"
            ).fetchone()
            (g,) = self._db.execute(
                "SELECT count(*) FROM spool_storage_samples WHERE seq > flushed_seq"
            ).fetchone()
            (n,) = self._db.execute(
                "SELECT count(*) FROM spool_tenant_tokens WHERE seq > flushed_seq"
            ).fetchone()
            (e,) = self._db.execute(
                "SELECT count(*) FROM spool_engine_time WHERE seq > flushed_seq"
            ).fetchone()
            (c,) = self._db.execute(
                "SELECT count(*) FROM spool_cost_centers WHERE seq > flushed_seq"
            ).fetchone()
        return int(t) + int(p) + int(g) + int(n) + int(e) + int(c)

    def prune_extra(self, before_hour: int) -> None:
        with self._lock:
            self._db.execute(
                "DELETE FROM spool_tokens WHERE hour_start < ? AND seq <= flushed_seq",
                (before_hour,),
            )
            self._db.execute(
                "DELETE FROM spool_probes WHERE started_unix < ? AND seq <= flushed_seq",
                (before_hour,),
            )
            self._db.execute(
                "DELETE FROM spool_tenant_tokens WHERE hour_start < ? AND seq <= flushed_seq",
                (before_hour,),
            )
            self._db.execute(
                "DELETE FROM spool_engine_time WHERE hour_start < ? AND seq <= flushed_seq",
                (before_hour,),
            )
            self._db.execute(
                "DELETE FROM spool_cost_centers WHERE hour_start < ? AND seq <= flushed_seq",
                (before_hour,),
            )

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self._db.close()
