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
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from gpuledger.chargeback.ledger.model import (
    CoverageGroup,
    InvariantViolation,
    PeakMemoryGroup,
    ProbeLatencyGroup,
    ProbeVerdictGroup,
    StoreError,
    UsageGroup,
)
from gpuledger.chargeback.ledger.sqlite_sql import q
from gpuledger.chargeback.ledger.store.common import (
    GROUP_COLUMNS,
    MIGRATIONS_TABLE,
    PEAK_GROUP_COLUMNS,
    PROBE_LATENCY_METRICS,
    QUANTILE_EPS,
    SECONDS_PER_HOUR,
    GroupedReads,
    check_group_by,
    check_peak_group_by,
    pivot_probe_latency,
    unix_seconds,
)
from gpuledger.chargeback.ledger.store.cost_centers import as_mapping, sqlite_latest
from gpuledger.chargeback.ledger.store.retention import (
    Archive,
    RetiredMonth,
    add_months,
    check_cutoff,
    label,
    months,
)
from gpuledger.chargeback.ledger.store.sqlite_ddl import (
    INSERT_STORAGE,
    UPSERT_COST_CENTERS,
    UPSERT_COVERAGE,
    UPSERT_ENGINE_TIME,
    UPSERT_PROBES,
    UPSERT_TENANT_TOKENS,
    UPSERT_TOKENS,
    UPSERT_USAGE,
)
from gpuledger.chargeback.ledger.store.sqlite_migrations import migrations
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
    TenantTokenRow,
    TokenRow,
    UsageRow,
)
from gpuledger.cluster import DEFAULT_CLUSTER

_ISO_HOUR = "strftime('%Y-%m-%dT%H:%M:%SZ', {col}, 'unixepoch')"


class SqliteLedgerStore(GroupedReads):
    """The ledger in one SQLite file. ``path`` may be ``":memory:"`` (tests)."""

    # one at a time: reads serialize under the store's one connection and its lock, so
    # threads gain nothing (bench_anomalies, SQLite alone: 5.45 s with three, 5.50 s
    # with one; this machine's runs vary 4.2-6.4 s)
    concurrent_reads = 1

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

    def migrate(self, *, default_cluster: str = DEFAULT_CLUSTER) -> None:
        """Apply the migrations not yet recorded in ``schema_migrations``. ``BEGIN
        IMMEDIATE`` takes the database's write lock first, so two processes migrating at
        once serialize and the second finds nothing left to do. Rows written before
        clusters existed get ``default_cluster`` (migration 12)."""
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
                    for version, step in migrations(default_cluster):
                        if version in applied:
                            continue
                        statements = step(conn) if callable(step) else step
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
        usage_params = [(*USAGE.values(r), now) for r in USAGE.merge(usage)]
        coverage_params = [(*COVERAGE.values(r), now) for r in COVERAGE.merge(coverage)]
        if not usage_params and not coverage_params:
            return
        with self._lock:
            conn = self._live()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if usage_params:
                        conn.executemany(UPSERT_USAGE, usage_params)
                    if coverage_params:
                        conn.executemany(UPSERT_COVERAGE, coverage_params)
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
        params = [(*TOKENS.values(r), now) for r in TOKENS.merge(rows)]
        self._write_many(f"upsert of {len(params)} token rows", UPSERT_TOKENS, params)

    def insert_storage_samples(self, rows: Sequence[StorageSample]) -> None:
        params = [STORAGE.values(r) for r in rows]
        self._write_many(f"insert of {len(params)} storage samples", INSERT_STORAGE, params)

    def upsert_probes(self, rows: Sequence[ProbeRecord]) -> None:
        now = int(time.time())
        params = [(*PROBES.values(r), now) for r in rows]
        self._write_many(f"upsert of {len(params)} probe records", UPSERT_PROBES, params)

    def upsert_engine_time(self, rows: Sequence[EngineTimeRow]) -> None:
        now = int(time.time())
        params = [(*ENGINE_TIME.values(r), now) for r in ENGINE_TIME.merge(rows)]
        what = f"upsert of {len(params)} engine time rows"
        self._write_many(what, UPSERT_ENGINE_TIME, params)

    def upsert_tenant_tokens(self, rows: Sequence[TenantTokenRow]) -> None:
        now = int(time.time())
        params = [(*TENANT_TOKENS.values(r), now) for r in TENANT_TOKENS.merge(rows)]
        what = f"upsert of {len(params)} tenant token rows"
        self._write_many(what, UPSERT_TENANT_TOKENS, params)

    def upsert_cost_centers(self, rows: Sequence[CostCenterRow]) -> None:
        now = int(time.time())
        params = [(*COST_CENTERS.values(r), now) for r in COST_CENTERS.merge(rows)]
        self._write_many(f"upsert of {len(params)} cost-center rows", UPSERT_COST_CENTERS, params)

    # -- reads --------------------------------------------------------------------------

    def probes(
        self, start: datetime, end: datetime, *, node: str | None = None
    ) -> list[ProbeVerdictGroup]:
        verdicts = PROBES.names(Role.VERDICT)
        disagree = " OR ".join(f"coalesce({q(c)} = 0, 0)" for c in verdicts)
        decided = " OR ".join(f"coalesce({q(c)} = 1, 0)" for c in verdicts)
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
            f"FROM {q(PROBES.store)} WHERE {where} "
            f"GROUP BY {q('namespace')}, {q('service')}, {q('model_name')} "
            f"ORDER BY {q('namespace')}, {q('service')}, {q('model_name')}"
        )
        return [ProbeVerdictGroup.from_row(r) for r in self._query("probes query", sql, params)]

    def cost_centers(
        self, start: datetime, end: datetime, *, node: str | None = None
    ) -> dict[tuple[str, str], str]:
        params: list[object] = [unix_seconds(start, "start"), unix_seconds(end, "end")]
        params += [node] if node is not None else []
        query = sqlite_latest(node is not None)
        return as_mapping(self._query("cost-center query", query, params * 2))

    def _query(self, what: str, sql: str, params: Sequence[object]) -> list[Mapping[str, object]]:
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
        only: str | None = None,
    ) -> list[Mapping[str, object]]:
        """Σ of ``totals`` (and the ``extra`` aggregates) over rows with ``start <=
        hour_start < end`` (and ``only``) grouped by ``keys`` (``hour`` → ISO-8601 UTC
        string), aggregated in SQL; one row when ``keys`` is empty."""
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
        if only is not None:
            where += f" AND {only}"
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
    ) -> list[UsageGroup]:
        """Σ allocated/busy GPU-seconds and energy over buckets with ``start <=
        hour_start < end``, per ``group_by`` (``hour`` → ISO-8601 UTC string)."""
        hours = (
            f"TOTAL({q('allocated_gpu_seconds')}) / {SECONDS_PER_HOUR!r} "
            f"AS {q('allocated_gpu_hours')}"
        )
        rows = self._grouped_sums(
            "usage query", USAGE.store, check_group_by(group_by), GROUP_COLUMNS,
            USAGE.names(Role.TOTAL), start, end, node, extra=(hours,),
        )  # fmt: skip
        return [UsageGroup.from_row(r) for r in rows]

    def peak_memory(
        self,
        start: datetime,
        end: datetime,
        group_by: Sequence[str],
        *,
        node: str | None = None,
    ) -> list[PeakMemoryGroup]:
        """MAX of the measured peaks per ``group_by`` over ``[start, end)`` hours."""
        (peak,) = USAGE.names(Role.PEAK)
        rows = self._grouped_sums(
            "peak memory query", USAGE.store, check_peak_group_by(group_by), PEAK_GROUP_COLUMNS,
            (), start, end, node,
            extra=(f"MAX({q(peak)}) AS {q(peak)}", f"COUNT(*) AS {q('buckets')}"),
            only=f"{q(peak)} IS NOT NULL",
        )  # fmt: skip
        return [PeakMemoryGroup.from_row(r) for r in rows]

    def usage_and_peaks(
        self,
        start: datetime,
        end: datetime,
        group_by: Sequence[str],
        *,
        node: str | None = None,
    ) -> tuple[list[UsageGroup], list[PeakMemoryGroup]]:
        """One scan of the usage rows for both: the sums and the MAX of the measured peaks
        per group (SQLite has no rollup, so each read alone is a full grouped scan)."""
        keys = check_group_by(group_by)
        check_peak_group_by(keys)
        (peak,) = USAGE.names(Role.PEAK)
        hours = (
            f"TOTAL({q('allocated_gpu_seconds')}) / {SECONDS_PER_HOUR!r} "
            f"AS {q('allocated_gpu_hours')}"
        )
        rows = self._grouped_sums(
            "usage and peak memory query", USAGE.store, keys, GROUP_COLUMNS,
            USAGE.names(Role.TOTAL), start, end, node,
            extra=(hours, f"MAX({q(peak)}) AS {q(peak)}", f"COUNT({q(peak)}) AS {q('buckets')}"),
        )  # fmt: skip
        usage = [UsageGroup.from_row(r) for r in rows]
        peaks = [PeakMemoryGroup.from_row(r) for r in rows if r[peak] is not None]
        return usage, peaks

    def _tenant_hour_rows(self, start: datetime, end: datetime) -> list[Mapping[str, object]]:
        cached = f"MIN({q('cached_prompt_tokens')}, {q('prompt_tokens')})"
        keys = f"{q('namespace')}, {q('service')}, {q('hour_start')}"
        sql = (
            f"SELECT {keys}, TOTAL({q('requests')}) AS {q('requests')}, "
            f"TOTAL({q('prompt_tokens')}) AS {q('prompt_tokens')}, "
            f"TOTAL({cached}) AS {q('cached_prompt_tokens')}, "
            f"TOTAL({q('generation_tokens')}) AS {q('generation_tokens')} "
            f"FROM {q(TENANT_TOKENS.store)} "
            f"WHERE {q('hour_start')} >= ? AND {q('hour_start')} < ? GROUP BY {keys}"
        )
        params = [unix_seconds(start, "start"), unix_seconds(end, "end")]
        return self._query("tenant hour sums query", sql, params)

    def _tenant_weighted_rows(
        self, start: datetime, end: datetime, coefficients: str, cached_weight: float
    ) -> list[Mapping[str, object]]:
        fields = ("n", "s", "h", "m", "wg", "measured", "first", "ka", "kb", "ke")
        x = ", ".join(f"json_extract(value, '$.{f}') AS {q('x_' + f)}" for f in fields)
        cached = f"MIN({q('cached_prompt_tokens')}, {q('prompt_tokens')})"
        keys = (q("namespace"), q("service"), q("tenant"))
        once = f"{q('x_first')} IS NOT 0"  # NULL (no coefficient) counts too
        first = f"{q('x_first')} = 1"

        def total(expr: str, name: str) -> str:
            return f"TOTAL({expr}) AS {q(name)}"

        sql = (
            f"WITH t AS (SELECT {', '.join(keys)}, {q('hour_start')}, {q('requests')}, "
            f"{q('prompt_tokens')}, {q('cached_prompt_tokens')}, {q('generation_tokens')}, "
            f"{q('prompt_tokens')} - {cached} + ? * {cached} AS {q('w_in')} "
            f"FROM {q(TENANT_TOKENS.store)} "
            f"WHERE {q('hour_start')} >= ? AND {q('hour_start')} < ?), "
            f"j AS (SELECT t.*, x.*, t.{q('w_in')} + x.{q('x_wg')} * t.{q('generation_tokens')} "
            f"AS {q('wt')} FROM t LEFT JOIN temp.{q('split_x')} AS x "
            f"ON x.{q('x_n')} = t.{q('namespace')} AND x.{q('x_s')} = t.{q('service')} "
            f"AND x.{q('x_h')} = t.{q('hour_start')}) "
            f"SELECT {', '.join(keys)}, {q('x_m')} AS {q('gpu_model')}, "
            + ", ".join((
                total(f"{q('wt')} * {q('x_ka')}", "allocated_seconds"),
                total(f"{q('wt')} * {q('x_kb')}", "busy_seconds"),
                total(f"{q('wt')} * {q('x_ke')}", "energy_joules"),
                total(f"{q('w_in')} * {q('x_ka')}", "input_seconds"),
                total(f"CASE WHEN {first} THEN {q('wt')} END", "weighted_tokens"),
                total(f"CASE WHEN {first} AND {q('x_measured')} = 0 THEN {q('wt')} END",
                      "fixed_ratio_weight"),
                *(total(f"CASE WHEN {once} THEN {q(c)} END", c)
                  for c in ("requests", "prompt_tokens", "cached_prompt_tokens",
                            "generation_tokens")),
            ))
            + f" FROM j GROUP BY {', '.join(keys)}, {q('x_m')}"
        )  # fmt: skip
        # the coefficients go to a keyed temporary table: joined as a CTE, SQLite would
        # scan all of them for every tenant row
        load = f"INSERT INTO temp.{q('split_x')} SELECT {x} FROM json_each(?)"
        params = [cached_weight, unix_seconds(start, "start"), unix_seconds(end, "end")]
        with self._lock:
            conn = self._live()
            try:
                conn.execute(f"DROP TABLE IF EXISTS temp.{q('split_x')}")
                conn.execute(
                    f"CREATE TEMP TABLE {q('split_x')} ({q('x_n')} TEXT, {q('x_s')} TEXT, "
                    f"{q('x_h')} INTEGER, {q('x_m')} TEXT, {q('x_wg')} REAL, "
                    f"{q('x_measured')} INTEGER, {q('x_first')} INTEGER, {q('x_ka')} REAL, "
                    f"{q('x_kb')} REAL, {q('x_ke')} REAL)"
                )
                conn.execute(
                    f"CREATE INDEX temp.{q('split_x_key')} ON {q('split_x')} "
                    f"({q('x_n')}, {q('x_s')}, {q('x_h')})"
                )
                conn.execute(load, [coefficients])
                cur = conn.execute(sql, params)
                names = [d[0] for d in cur.description]
                rows = cur.fetchall()
                conn.execute(f"DROP TABLE temp.{q('split_x')}")
            except sqlite3.Error as err:
                raise self._fail("tenant split query", err) from err
        return [dict(zip(names, row, strict=True)) for row in rows]

    def coverage(
        self, start: datetime, end: datetime, *, node: str | None = None
    ) -> list[CoverageGroup]:
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
            f"FROM {q(COVERAGE.store)} WHERE {where} "
            f"GROUP BY {q('node')}, {q('gpu_uuid')} ORDER BY {q('node')}, {q('gpu_uuid')}"
        )
        return [CoverageGroup.from_row(r) for r in self._query("coverage query", sql, params)]

    def probe_latency(
        self,
        start: datetime,
        end: datetime,
        quantile: float = 0.99,
        *,
        node: str | None = None,
    ) -> list[ProbeLatencyGroup]:
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
                f"(PARTITION BY {ns}, {svc} ORDER BY {m}) AS cd FROM {q(PROBES.store)} "
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
    ) -> list[InvariantViolation]:
        """``(hour, cluster, node)`` where Σ allocated over all services (incl.
        ``__idle__``) and Σ observed seconds differ by more than ``rel_tol`` × the larger; a
        bucket present on one side only counts as 0 on the other. Computed in SQL."""
        lo, hi = unix_seconds(start, "start"), unix_seconds(end, "end")
        node_filter = f" AND {q('node')} = ?" if node is not None else ""
        per_side: list[object] = [lo, hi] + ([node] if node is not None else [])
        h, n = q("hour_start"), f"{q('cluster')}, {q('node')}"
        sql = f"""
            SELECT {_ISO_HOUR.format(col=h)} AS {q("hour")}, {n},
                   TOTAL(a) AS {q("allocated_gpu_seconds")},
                   TOTAL(o) AS {q("observed_seconds")}
            FROM (
                SELECT {h}, {n}, {q("allocated_gpu_seconds")} AS a, 0.0 AS o
                FROM {q(USAGE.store)} WHERE {h} >= ? AND {h} < ?{node_filter}
                UNION ALL
                SELECT {h}, {n}, 0.0 AS a, {q("observed_seconds")} AS o
                FROM {q(COVERAGE.store)} WHERE {h} >= ? AND {h} < ?{node_filter}
            )
            GROUP BY {h}, {n}
            HAVING abs(TOTAL(a) - TOTAL(o)) > ? * max(abs(TOTAL(a)), abs(TOTAL(o)))
            ORDER BY {h}, {n}
        """
        rows = self._query("invariant query", sql, [*per_side, *per_side, float(rel_tol)])
        return [InvariantViolation.from_row(r) for r in rows]

    # -- retention ----------------------------------------------------------------------

    def retire_before(
        self, before: datetime, *, archive_dir: Path | None, now: datetime | None = None
    ) -> list[RetiredMonth]:
        """Remove every row dated before ``before`` (a month start; at the latest the
        previous month's as of ``now``), a table and month at a time, each by one
        ``DELETE … RETURNING *`` in a ``BEGIN IMMEDIATE`` transaction whose returned rows
        are the archive ``<archive_dir>/<YYYY-MM>/<table>.csv.gz`` (published before the
        COMMIT), so exactly the rows deleted are archived. SQLite has no partitions: the
        file's freed pages are reused by later months (``VACUUM`` returns them to the OS)."""
        check_cutoff(before, now or datetime.now(UTC))
        out: list[RetiredMonth] = []
        for table in TABLES:
            col, hourly = q(table.time.store), table.time.type.python is int
            with self._lock:
                try:
                    row = self._live().execute(f"SELECT min({col}) FROM {q(table.store)}")
                    oldest = row.fetchone()
                except sqlite3.Error as err:
                    raise self._fail(f"oldest {table.store} row", err) from err
            if oldest is None or oldest[0] is None or oldest[0] >= before.timestamp():
                continue
            for start in months(datetime.fromtimestamp(float(oldest[0]), UTC), before):
                lo, hi = start.timestamp(), add_months(start, 1).timestamp()
                bounds = (int(lo), int(hi)) if hourly else (lo, hi)
                got = self._retire(table.store, col, start, bounds, archive_dir)
                if got.rows:
                    out.append(got)
        return out

    def _retire(
        self,
        table: str,
        col: str,
        start: datetime,
        bounds: tuple[float, float],
        archive_dir: Path | None,
    ) -> RetiredMonth:
        delete = f"DELETE FROM {q(table)} WHERE {col} >= ? AND {col} < ?"
        with self._lock:
            conn = self._live()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if archive_dir is None:
                        n = conn.execute(delete, bounds).rowcount
                        conn.execute("COMMIT")
                        return RetiredMonth(table, label(start), n, None)
                    with Archive(archive_dir, table, start) as archive:
                        cur = conn.execute(f"{delete} RETURNING *", bounds)
                        header = [d[0] for d in cur.description]
                        n = archive.write_rows(header, cur)
                        if n == 0:
                            archive.abort()
                            conn.execute("COMMIT")
                            return RetiredMonth(table, label(start), 0, None)
                        path = archive.publish()
                    conn.execute("COMMIT")
                    return RetiredMonth(table, label(start), n, path)
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as err:
                raise self._fail(f"retiring {table} {label(start)}", err) from err

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
