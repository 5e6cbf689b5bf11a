"""The default ledger store: one SQLite file (WAL mode), no server.

One connection, guarded by a lock: the agent writes from its flusher thread and reads
from the API thread. ``hour_start`` is stored as integer unix seconds (UTC); totals are
REAL (IEEE double, as PostgreSQL's ``double precision``).
"""

# SQL text here is built only from module constants quoted by q(); every value is a bound
# parameter, so S608 (string-built SQL) does not apply:
# ruff: noqa: S608

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from gpuledger.chargeback.ledger.model import (
    CoverageRow,
    ProbeRecord,
    StorageSample,
    StoreError,
    TokenRow,
    UsageRow,
)
from gpuledger.chargeback.ledger.store.common import (
    COVERAGE_COLUMNS,
    COVERAGE_KEY,
    COVERAGE_LABELS,
    COVERAGE_TABLE,
    COVERAGE_TOTALS,
    GROUP_COLUMNS,
    MIGRATIONS_TABLE,
    PROBE_LATENCY_METRICS,
    PROBES_COLUMNS,
    PROBES_KEY,
    PROBES_LABELS,
    PROBES_TABLE,
    PROBES_VERDICTS,
    QUANTILE_EPS,
    SECONDS_PER_HOUR,
    STORAGE_COLUMNS,
    STORAGE_KEY,
    STORAGE_TABLE,
    TOKEN_GROUP_COLUMNS,
    TOKENS_COLUMNS,
    TOKENS_KEY,
    TOKENS_TABLE,
    TOKENS_TOTALS,
    UPDATED_AT,
    USAGE_COLUMNS,
    USAGE_KEY,
    USAGE_LABELS,
    USAGE_TABLE,
    USAGE_TOTALS,
    check_group_by,
    check_token_group_by,
    coverage_values,
    merge_coverage,
    merge_tokens,
    merge_usage,
    pivot_probe_latency,
    probe_values,
    token_values,
    unix_seconds,
    usage_values,
)


def q(name: str) -> str:
    """An SQLite identifier, quoted (names are constants, quoted all the same)."""
    return '"' + name.replace('"', '""') + '"'


def _cols(names: Sequence[str]) -> str:
    return ", ".join(q(n) for n in names)


MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            f"""CREATE TABLE {q(USAGE_TABLE)} (
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
                {q(UPDATED_AT)} INTEGER NOT NULL,
                PRIMARY KEY ({_cols(USAGE_KEY)})
            ) WITHOUT ROWID""",
            f"CREATE INDEX {q('ledger_usage_node_hour_idx')} "
            f"ON {q(USAGE_TABLE)} ({q('node')}, {q('hour_start')})",
            f"""CREATE TABLE {q(COVERAGE_TABLE)} (
                {q("hour_start")} INTEGER NOT NULL,
                {q("node")} TEXT NOT NULL,
                {q("gpu_uuid")} TEXT NOT NULL,
                {q("gpu_model")} TEXT NOT NULL DEFAULT '',
                {q("observed_seconds")} REAL NOT NULL DEFAULT 0,
                {q(UPDATED_AT)} INTEGER NOT NULL,
                PRIMARY KEY ({_cols(COVERAGE_KEY)})
            ) WITHOUT ROWID""",
        ),
    ),
)
MIGRATIONS += (
    (
        2,
        (
            f"""CREATE TABLE {q(TOKENS_TABLE)} (
                {q("hour_start")} INTEGER NOT NULL,
                {q("node")} TEXT NOT NULL,
                {q("namespace")} TEXT NOT NULL,
                {q("service")} TEXT NOT NULL,
                {q("model_name")} TEXT NOT NULL,
                {q("prompt_tokens")} REAL NOT NULL DEFAULT 0,
                {q("generation_tokens")} REAL NOT NULL DEFAULT 0,
                {q("probe_prompt_tokens")} REAL NOT NULL DEFAULT 0,
                {q("probe_generation_tokens")} REAL NOT NULL DEFAULT 0,
                {q(UPDATED_AT)} INTEGER NOT NULL,
                PRIMARY KEY ({_cols(TOKENS_KEY)})
            ) WITHOUT ROWID""",
            f"""CREATE TABLE {q(PROBES_TABLE)} (
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
                {q(UPDATED_AT)} INTEGER NOT NULL,
                PRIMARY KEY ({_cols(PROBES_KEY)})
            ) WITHOUT ROWID""",
            f"CREATE INDEX {q('probe_results_started_idx')} "
            f"ON {q(PROBES_TABLE)} ({q('started_unix')})",
        ),
    ),
)
MIGRATIONS += (
    (
        3,
        (
            f"""CREATE TABLE {q(STORAGE_TABLE)} (
                {q("node")} TEXT NOT NULL,
                {q("database")} TEXT NOT NULL,
                {q("schema")} TEXT NOT NULL,
                {q("table_name")} TEXT NOT NULL,
                {q("ts")} REAL NOT NULL,
                {q("bytes")} INTEGER NOT NULL,
                PRIMARY KEY ({_cols(STORAGE_KEY)})
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
                {q(UPDATED_AT)} INTEGER NOT NULL,
                PRIMARY KEY ({q("started_unix")}, {q("node")}, {q("endpoint")})
            ) WITHOUT ROWID""",
            f"INSERT INTO {q('probe_results_v4')} SELECT {_cols((*PROBES_COLUMNS, UPDATED_AT))} "
            f"FROM {q(PROBES_TABLE)}",
            f"DROP TABLE {q(PROBES_TABLE)}",  # and probe_results_started_idx with it
            f"ALTER TABLE {q('probe_results_v4')} RENAME TO {q(PROBES_TABLE)}",
        ),
    ),
)
"""Versioned migrations, applied in order, each once, inside one write transaction."""


def _upsert_sql(
    table: str,
    columns: Sequence[str],
    key: Sequence[str],
    labels: Sequence[str],
    totals: Sequence[str],
) -> str:
    all_cols = (*columns, UPDATED_AT)
    placeholders = ", ".join("?" for _ in all_cols)
    sets = [f"{q(c)} = max({q(table)}.{q(c)}, excluded.{q(c)})" for c in totals]
    sets += [f"{q(c)} = excluded.{q(c)}" for c in (*labels, UPDATED_AT)]
    return (
        f"INSERT INTO {q(table)} ({_cols(all_cols)}) VALUES ({placeholders}) "
        f"ON CONFLICT ({_cols(key)}) DO UPDATE SET {', '.join(sets)}"
    )


_UPSERT_USAGE = _upsert_sql(USAGE_TABLE, USAGE_COLUMNS, USAGE_KEY, USAGE_LABELS, USAGE_TOTALS)
_UPSERT_COVERAGE = _upsert_sql(
    COVERAGE_TABLE, COVERAGE_COLUMNS, COVERAGE_KEY, COVERAGE_LABELS, COVERAGE_TOTALS
)

_UPSERT_TOKENS = _upsert_sql(TOKENS_TABLE, TOKENS_COLUMNS, TOKENS_KEY, (), TOKENS_TOTALS)
_UPSERT_PROBES = (
    f"INSERT INTO {q(PROBES_TABLE)} ({_cols((*PROBES_COLUMNS, UPDATED_AT))}) "
    f"VALUES ({', '.join('?' for _ in (*PROBES_COLUMNS, UPDATED_AT))}) "
    f"ON CONFLICT ({_cols(PROBES_KEY)}) DO UPDATE SET "
    + ", ".join(
        [f"{q(c)} = excluded.{q(c)}" for c in (*PROBES_LABELS, UPDATED_AT)]
        + [f"{q(c)} = coalesce(excluded.{q(c)}, {q(PROBES_TABLE)}.{q(c)})" for c in PROBES_VERDICTS]
    )
)

_ISO_HOUR = "strftime('%Y-%m-%dT%H:%M:%SZ', {col}, 'unixepoch')"


class SqliteLedgerStore:
    """The ledger in one SQLite file. ``path`` may be ``":memory:"`` (tests)."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5000) -> None:
        self._path = str(path)
        self._lock = threading.Lock()
        self._closed = False
        try:
            conn = sqlite3.connect(
                self._path,
                timeout=busy_timeout_ms / 1000,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # shared between threads, under self._lock
            )
        except sqlite3.Error as err:
            raise StoreError(f"cannot open SQLite ledger {self._path!r}: {err}") from err
        self._conn = conn
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            if self._path != ":memory:":
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoint in WAL
        except sqlite3.Error as err:
            conn.close()
            raise StoreError(f"cannot open SQLite ledger {self._path!r}: {err}") from err

    @property
    def path(self) -> str:
        return self._path

    def _live(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError(f"SQLite ledger {self._path!r} is closed")
        return self._conn

    def _fail(self, what: str, err: sqlite3.Error) -> StoreError:
        return StoreError(f"SQLite ledger {self._path!r}: {what} failed: {err}")

    # -- schema -------------------------------------------------------------------------

    def migrate(self) -> None:
        """Apply the migrations not yet recorded in ``schema_migrations``. ``BEGIN
        IMMEDIATE`` takes the database's write lock first, so two processes migrating at
        once serialize and the second finds nothing left to do."""
        with self._lock:
            conn = self._live()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.execute(
                        f"CREATE TABLE IF NOT EXISTS {q(MIGRATIONS_TABLE)} ("
                        f"{q('version')} INTEGER PRIMARY KEY, "
                        f"{q('applied_at')} INTEGER NOT NULL)"
                    )
                    applied = {
                        int(v)
                        for (v,) in conn.execute(f"SELECT version FROM {q(MIGRATIONS_TABLE)}")
                    }
                    for version, statements in MIGRATIONS:
                        if version in applied:
                            continue
                        for stmt in statements:
                            conn.execute(stmt)
                        conn.execute(
                            f"INSERT INTO {q(MIGRATIONS_TABLE)} ({q('version')}, "
                            f"{q('applied_at')}) VALUES (?, ?)",
                            (version, int(time.time())),
                        )
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as err:
                raise self._fail("migration", err) from err

    def applied_versions(self) -> list[int]:
        """Migration versions recorded in ``schema_migrations``, ascending."""
        with self._lock:
            conn = self._live()
            try:
                rows = conn.execute(
                    f"SELECT {q('version')} FROM {q(MIGRATIONS_TABLE)} ORDER BY 1"
                ).fetchall()
            except sqlite3.Error as err:
                raise self._fail("reading schema_migrations", err) from err
        return [int(v) for (v,) in rows]

    # -- writes -------------------------------------------------------------------------

    def upsert(self, usage: Sequence[UsageRow], coverage: Sequence[CoverageRow]) -> None:
        """Write running totals in one transaction: per total the larger of stored and
        incoming value (a replay never lowers, a repeat never adds); labels as given."""
        now = int(time.time())
        usage_params = [(*usage_values(r), now) for r in merge_usage(usage)]
        coverage_params = [(*coverage_values(r), now) for r in merge_coverage(coverage)]
        if not usage_params and not coverage_params:
            return
        with self._lock:
            conn = self._live()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if usage_params:
                        conn.executemany(_UPSERT_USAGE, usage_params)
                    if coverage_params:
                        conn.executemany(_UPSERT_COVERAGE, coverage_params)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as err:
                raise self._fail(
                    f"upsert of {len(usage_params)} usage + {len(coverage_params)} coverage rows",
                    err,
                ) from err

    def _write_many(self, what: str, statement: str, params: Sequence[Sequence[object]]) -> None:
        if not params:
            return
        with self._lock:
            conn = self._live()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany(statement, params)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as err:
                raise self._fail(what, err) from err

    def upsert_tokens(self, rows: Sequence[TokenRow]) -> None:
        now = int(time.time())
        params = [(*token_values(r), now) for r in merge_tokens(rows)]
        self._write_many(f"upsert of {len(params)} token rows", _UPSERT_TOKENS, params)

    def insert_storage_samples(self, rows: Sequence[StorageSample]) -> None:
        params = [(r.node, r.database, r.schema, r.table, r.ts_unix, r.bytes) for r in rows]
        self._write_many(
            f"insert of {len(params)} storage samples",
            f"INSERT INTO {q(STORAGE_TABLE)} ({_cols(STORAGE_COLUMNS)}) VALUES (?,?,?,?,?,?) "
            "ON CONFLICT DO NOTHING",
            params,
        )

    def upsert_probes(self, rows: Sequence[ProbeRecord]) -> None:
        now = int(time.time())
        params = [(*probe_values(r), now) for r in rows]
        self._write_many(f"upsert of {len(params)} probe records", _UPSERT_PROBES, params)

    # -- reads --------------------------------------------------------------------------

    def tokens(
        self,
        start: datetime,
        end: datetime,
        group_by: Sequence[str],
        *,
        node: str | None = None,
    ) -> list[dict[str, object]]:
        return self._grouped_sums(
            "tokens query", TOKENS_TABLE, check_token_group_by(group_by), TOKEN_GROUP_COLUMNS,
            TOKENS_TOTALS, start, end, node,
        )  # fmt: skip

    def probes(
        self, start: datetime, end: datetime, *, node: str | None = None
    ) -> list[dict[str, object]]:
        disagree = " OR ".join(f"coalesce({q(c)} = 0, 0)" for c in PROBES_VERDICTS)
        decided = " OR ".join(f"coalesce({q(c)} = 1, 0)" for c in PROBES_VERDICTS)
        where = f"{q('started_unix')} >= ? AND {q('started_unix')} < ?"
        params: list[object] = [unix_seconds(start, "start"), unix_seconds(end, "end")]
        if node is not None:
            where += f" AND {q('node')} = ?"
            params.append(node)
        sql = (
            f"SELECT {q('namespace')}, {q('service')}, {q('model_name')}, "
            f"COUNT(*) AS {q('probes')}, TOTAL({q('ok')}) AS {q('successes')}, "
            f"TOTAL(CASE WHEN ({disagree}) THEN 1 ELSE 0 END) AS {q('disagree')}, "
            f"TOTAL(CASE WHEN NOT ({disagree}) AND ({decided}) THEN 1 ELSE 0 END) AS {q('agree')} "
            f"FROM {q(PROBES_TABLE)} WHERE {where} "
            f"GROUP BY {q('namespace')}, {q('service')}, {q('model_name')} "
            f"ORDER BY {q('namespace')}, {q('service')}, {q('model_name')}"
        )
        return self._query("probes query", sql, params)

    def _query(self, what: str, sql: str, params: Sequence[object]) -> list[dict[str, object]]:
        with self._lock:
            conn = self._live()
            try:
                cur = conn.execute(sql, params)
                names = [d[0] for d in cur.description]
                rows = cur.fetchall()
            except sqlite3.Error as err:
                raise self._fail(what, err) from err
        return [dict(zip(names, row, strict=True)) for row in rows]

    def _grouped_sums(
        self,
        what: str,
        table: str,
        keys: Sequence[str],
        columns: dict[str, str],
        totals: Sequence[str],
        start: datetime,
        end: datetime,
        node: str | None,
        extra: Sequence[str] = (),
    ) -> list[dict[str, object]]:
        """Σ of ``totals`` over rows with ``start <= hour_start < end`` grouped by ``keys``
        (``hour`` → ISO-8601 UTC string), aggregated in SQL; one row when ``keys`` is empty."""
        select: list[str] = []
        for key in keys:
            col = q(columns[key])
            expr = _ISO_HOUR.format(col=col) if key == "hour" else col
            select.append(f"{expr} AS {q(key)}")
        select += [f"TOTAL({q(c)}) AS {q(c)}" for c in totals]
        select += extra
        where = f"{q('hour_start')} >= ? AND {q('hour_start')} < ?"
        params: list[object] = [unix_seconds(start, "start"), unix_seconds(end, "end")]
        if node is not None:
            where += f" AND {q('node')} = ?"
            params.append(node)
        sql = f"SELECT {', '.join(select)} FROM {q(table)} WHERE {where}"
        if keys:
            group = ", ".join(q(columns[k]) for k in keys)
            sql += f" GROUP BY {group} ORDER BY {group}"
        else:
            sql += " HAVING COUNT(*) > 0"
        return self._query(what, sql, params)

    def usage(
        self,
        start: datetime,
        end: datetime,
        group_by: Sequence[str],
        *,
        node: str | None = None,
    ) -> list[dict[str, object]]:
        """Σ allocated/busy GPU-seconds and energy over buckets with ``start <=
        hour_start < end``, per ``group_by`` (``hour`` → ISO-8601 UTC string)."""
        hours = (
            f"TOTAL({q('allocated_gpu_seconds')}) / {SECONDS_PER_HOUR!r} "
            f"AS {q('allocated_gpu_hours')}"
        )
        return self._grouped_sums(
            "usage query", USAGE_TABLE, check_group_by(group_by), GROUP_COLUMNS,
            USAGE_TOTALS, start, end, node, extra=(hours,),
        )  # fmt: skip

    def coverage(
        self, start: datetime, end: datetime, *, node: str | None = None
    ) -> list[dict[str, object]]:
        """Σ observed seconds per ``(node, gpu_uuid)`` over ``[start, end)`` hours."""
        where = f"{q('hour_start')} >= ? AND {q('hour_start')} < ?"
        params: list[object] = [unix_seconds(start, "start"), unix_seconds(end, "end")]
        if node is not None:
            where += f" AND {q('node')} = ?"
            params.append(node)
        h = q("hour_start")
        sql = (
            f"SELECT {q('node')}, {q('gpu_uuid')}, MAX({q('gpu_model')}) AS {q('gpu_model')}, "
            f"TOTAL({q('observed_seconds')}) AS {q('observed_seconds')}, "
            f"COUNT(*) AS {q('hours')}, "
            f"{_ISO_HOUR.format(col=f'MIN({h})')} AS {q('first_hour')}, "
            f"{_ISO_HOUR.format(col=f'MAX({h})')} AS {q('last_hour')} "
            f"FROM {q(COVERAGE_TABLE)} WHERE {where} "
            f"GROUP BY {q('node')}, {q('gpu_uuid')} ORDER BY {q('node')}, {q('gpu_uuid')}"
        )
        return self._query("coverage query", sql, params)

    def probe_latency(
        self,
        start: datetime,
        end: datetime,
        quantile: float = 0.99,
        *,
        node: str | None = None,
    ) -> list[dict[str, object]]:
        """Nearest-rank ``quantile`` of successful probes' TTFT, TPOT and e2e per
        ``(namespace, service)`` over ``[start, end)``: the smallest value whose cumulative
        share reaches the quantile (``CUME_DIST``), the same definition on both backends."""
        lo, hi = unix_seconds(start, "start"), unix_seconds(end, "end")
        node_filter = f" AND {q('node')} = ?" if node is not None else ""
        ns, svc = q("namespace"), q("service")
        parts: list[str] = []
        params: list[object] = []
        for metric in PROBE_LATENCY_METRICS:
            m = q(metric)
            parts.append(
                f"SELECT {ns}, {svc}, '{metric}' AS metric, MIN(v) AS value, COUNT(*) AS n "
                f"FROM (SELECT {ns}, {svc}, {m} AS v, CUME_DIST() OVER "
                f"(PARTITION BY {ns}, {svc} ORDER BY {m}) AS cd FROM {q(PROBES_TABLE)} "
                f"WHERE {q('ok')} = 1 AND {m} IS NOT NULL AND {q('started_unix')} >= ? "
                f"AND {q('started_unix')} < ?{node_filter}) WHERE cd >= ? GROUP BY {ns}, {svc}"
            )
            params += [lo, hi, *([node] if node is not None else []), quantile - QUANTILE_EPS]
        rows = self._query("probe latency query", " UNION ALL ".join(parts), params)
        return pivot_probe_latency(rows)

    def invariant_violations(
        self,
        start: datetime,
        end: datetime,
        rel_tol: float = 1e-9,
        *,
        node: str | None = None,
    ) -> list[dict[str, object]]:
        """``(hour, node)`` where Σ allocated over all services (incl. ``__idle__``) and
        Σ observed seconds differ by more than ``rel_tol`` × the larger; a bucket present
        on one side only counts as 0 on the other. Computed in SQL."""
        lo, hi = unix_seconds(start, "start"), unix_seconds(end, "end")
        node_filter = f" AND {q('node')} = ?" if node is not None else ""
        per_side: list[object] = [lo, hi] + ([node] if node is not None else [])
        h, n = q("hour_start"), q("node")
        sql = f"""
            SELECT {_ISO_HOUR.format(col=h)} AS {q("hour")}, {n},
                   TOTAL(a) AS {q("allocated_gpu_seconds")},
                   TOTAL(o) AS {q("observed_seconds")}
            FROM (
                SELECT {h}, {n}, {q("allocated_gpu_seconds")} AS a, 0.0 AS o
                FROM {q(USAGE_TABLE)} WHERE {h} >= ? AND {h} < ?{node_filter}
                UNION ALL
                SELECT {h}, {n}, 0.0 AS a, {q("observed_seconds")} AS o
                FROM {q(COVERAGE_TABLE)} WHERE {h} >= ? AND {h} < ?{node_filter}
            )
            GROUP BY {h}, {n}
            HAVING abs(TOTAL(a) - TOTAL(o)) > ? * max(abs(TOTAL(a)), abs(TOTAL(o)))
            ORDER BY {h}, {n}
        """
        return self._query("invariant query", sql, [*per_side, *per_side, float(rel_tol)])

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> SqliteLedgerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqliteLedgerStore({self._path!r})"
