"""The fleet ledger store: one PostgreSQL database, psycopg 3 with a small connection pool.

Column types (see ``docs/ledger.md``): ``hour_start timestamptz`` (an instant, so no
session time zone can shift a bucket), text for names, ``double precision`` for
GPU-seconds and joules (running totals up to ~10⁷ per bucket, where a double's 15-16
significant digits are exact to far below a microsecond; numeric would cost space and
aggregate speed for nothing), ``updated_at timestamptz``.

Every identifier is composed with :mod:`psycopg.sql` even though all are constants.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from gpuledger.chargeback.ledger.model import (
    CoverageGroup,
    InvariantViolation,
    PeakMemoryGroup,
    ProbeLatencyGroup,
    ProbeVerdictGroup,
    StoreError,
    UsageGroup,
)
from gpuledger.chargeback.ledger.store import postgres_probes
from gpuledger.chargeback.ledger.store.common import (
    GROUP_COLUMNS,
    MIGRATIONS_TABLE,
    PEAK_GROUP_COLUMNS,
    SECONDS_PER_HOUR,
    GroupedReads,
    aware_utc,
    check_group_by,
    check_peak_group_by,
)
from gpuledger.chargeback.ledger.store.cost_centers import as_mapping
from gpuledger.chargeback.ledger.store.postgres_cost_centers import postgres_latest
from gpuledger.chargeback.ledger.store.postgres_migrations import migrations
from gpuledger.chargeback.ledger.store.postgres_retention import retire_before
from gpuledger.chargeback.ledger.store.postgres_rollup import drift, drift_bounds, usage_rollup
from gpuledger.chargeback.ledger.store.postgres_sql import (
    INSERT_STORAGE,
    TENANT_WEIGHTED,
    UPSERT_COST_CENTERS,
    UPSERT_COVERAGE_ARRAYS,
    UPSERT_COVERAGE_TEMP,
    UPSERT_ENGINE_TIME,
    UPSERT_PROBES,
    UPSERT_TENANT_TOKENS,
    UPSERT_TOKENS,
    UPSERT_USAGE_ARRAYS,
    UPSERT_USAGE_TEMP,
    I,
    cols,
    ensure_partitions,
    iso_hour,
    staging_name,
    staging_table,
)
from gpuledger.chargeback.ledger.store.retention import RetiredMonth, add_months, month_start
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
    Table,
    TenantTokenRow,
    TokenRow,
    UsageRow,
)
from gpuledger.cluster import DEFAULT_CLUSTER
from gpuledger.redact import safe_url, scrub

log = logging.getLogger(__name__)


MIGRATION_LOCK_KEY = 0x6770_756C_6564_6772  # "gpuledgr": pg_advisory_xact_lock key
COPY_THRESHOLD = 1000
"""Batches of at least this many rows go through COPY into a temp table."""


class PostgresLedgerStore(GroupedReads):
    """The ledger in PostgreSQL. ``dsn`` is a libpq URL or key/value string; its password
    never reaches an exception message or a log line (see ``gpuledger.redact.redact_dsn``).

    The pool opens lazily: a database that is down at start makes the first call raise
    StoreError, not the constructor. Connections are checked when taken from the pool,
    so the first call after the database comes back works.
    """

    concurrent_reads = 3  # reads that gain from running at once (a pool of 4 connections)

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 4,
        connect_timeout_s: int = 5,
        statement_timeout_ms: int = 30_000,
        pool_timeout_s: float = 10.0,
        application_name: str = "gpuledger",
    ) -> None:
        self._dsn = dsn
        self._where = safe_url(dsn)
        try:
            self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                kwargs={
                    "connect_timeout": connect_timeout_s,
                    "options": f"-c statement_timeout={int(statement_timeout_ms)}",
                    "application_name": application_name,
                },
                timeout=pool_timeout_s,
                check=ConnectionPool.check_connection,
                reconnect_timeout=max(pool_timeout_s, 30.0),
                name="gpuledger-ledger",
                open=False,
            )
            self._pool.open(wait=False)
        except (psycopg.Error, ValueError) as err:
            raise StoreError(
                f"PostgreSQL ledger {self._where}: cannot open: {scrub(str(err), dsn)}"
            ) from None
        self._closed = False
        self._partitions: set[tuple[str, int]] = set()
        """(table, month start) pairs known to have their partition: checked once."""

    @property
    def where(self) -> str:
        """The DSN without its password."""
        return self._where

    @contextmanager
    def _connection(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        if self._closed:
            raise StoreError(f"PostgreSQL ledger {self._where} is closed")
        try:
            with self._pool.connection() as conn:
                yield conn
        except PoolTimeout as err:
            raise StoreError(
                f"PostgreSQL ledger {self._where}: {what} failed: database unreachable "
                f"({scrub(str(err), self._dsn)})"
            ) from None
        except psycopg.Error as err:
            self._partitions.clear()  # a month may have been dropped by retention
            raise StoreError(
                f"PostgreSQL ledger {self._where}: {what} failed: "
                f"{type(err).__name__}: {scrub(str(err), self._dsn)}"
            ) from None

    # -- schema -------------------------------------------------------------------------

    def migrate(self, *, default_cluster: str = DEFAULT_CLUSTER) -> None:
        """Apply the migrations not yet in ``schema_migrations``, in one transaction after
        ``pg_advisory_xact_lock``: concurrent agents serialize, each version runs once.
        Rows written before clusters existed get ``default_cluster`` (migration 12): the
        first agent to upgrade names them, so the fleet's agents must agree on it (the
        config's ``cluster`` of the cluster the ledger served until then)."""
        with self._connection("migration") as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
            # A migration that moves rows (7: monthly partitions) takes as long as the
            # ledger is large: not cut by the per-statement timeout (the lock wait is).
            conn.execute("SET LOCAL statement_timeout = 0")
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {t} ("
                    "{v} integer PRIMARY KEY, {a} timestamptz NOT NULL DEFAULT now())"
                ).format(t=I(MIGRATIONS_TABLE), v=I("version"), a=I("applied_at"))
            )
            applied = {
                int(r[0])
                for r in conn.execute(
                    sql.SQL("SELECT {v} FROM {t}").format(v=I("version"), t=I(MIGRATIONS_TABLE))
                )
            }
            for version, statements in migrations(default_cluster):
                if version in applied:
                    continue
                for stmt in statements:
                    conn.execute(stmt)
                conn.execute(
                    sql.SQL("INSERT INTO {t} ({v}) VALUES (%s)").format(
                        t=I(MIGRATIONS_TABLE), v=I("version")
                    ),
                    (version,),
                )
                log.info("ledger schema migrated to version %d on %s", version, self._where)
            now = datetime.now(UTC)
            ahead = [int(add_months(now, k).timestamp()) for k in (0, 1)]
            monthly = [t.store for t in TABLES if t.monthly] + [
                r.store for r in ROLLUPS if r.partitioned
            ]
            names = [n for n in monthly for _ in ahead]
            conn.execute(ensure_partitions(), (names, ahead * len(monthly)))

    def applied_versions(self) -> list[int]:
        """Migration versions recorded in ``schema_migrations``, ascending."""
        with self._connection("reading schema_migrations") as conn:
            rows = conn.execute(
                sql.SQL("SELECT {v} FROM {t} ORDER BY 1").format(
                    v=I("version"), t=I(MIGRATIONS_TABLE)
                )
            ).fetchall()
        return [int(r[0]) for r in rows]

    # -- writes -------------------------------------------------------------------------

    def upsert(self, usage: Sequence[UsageRow], coverage: Sequence[CoverageRow]) -> None:
        """Write running totals in one transaction: per total GREATEST(stored, incoming)
        (a replay never lowers, a repeat never adds); labels as given. A table's batch is
        one ``INSERT … SELECT … FROM unnest(…)`` (a COPY into a temp table first when
        large). An agent's flush (small batches) is sent as one pipeline — BEGIN, both
        statements, COMMIT — so it costs the database one round trip, not four."""
        usage_rows = [USAGE.values(r) for r in USAGE.merge(usage)]
        coverage_rows = [COVERAGE.values(r) for r in COVERAGE.merge(coverage)]
        if not usage_rows and not coverage_rows:
            return
        what = f"upsert of {len(usage_rows)} usage + {len(coverage_rows)} coverage rows"
        small = max(len(usage_rows), len(coverage_rows)) < COPY_THRESHOLD  # COPY can't pipeline
        with self._connection(what) as conn:
            self._ensure(conn, ((USAGE, usage_rows), (COVERAGE, coverage_rows)))
            pipeline = conn.pipeline() if small else nullcontext()
            with pipeline, conn.transaction(), conn.cursor() as cur:
                self._write(cur, usage_rows, USAGE, UPSERT_USAGE_ARRAYS, UPSERT_USAGE_TEMP)
                self._write(
                    cur, coverage_rows, COVERAGE, UPSERT_COVERAGE_ARRAYS, UPSERT_COVERAGE_TEMP
                )

    def _ensure(
        self,
        conn: psycopg.Connection[Any],
        batches: Sequence[tuple[Table[Any], Sequence[Sequence[Any]]]],
    ) -> None:
        """The month partitions these rows need (hour first in each value tuple), created
        in a short transaction of their own; each (table, month) is checked once per store.
        A month dropped by retention since is created again on the next write after the
        failed one (the failure clears the memo, see ``_connection``)."""
        need: set[tuple[str, int]] = set()
        for table, rows in batches:
            if not table.monthly:
                continue
            # A rollup's month is created with its source's, here, before the write: the
            # trigger would otherwise create it inside the write's transaction, holding
            # row locks while it waits for the parent's lock.
            stores = [
                table.store,
                *(r.store for r in ROLLUPS if r.source is table and r.partitioned),
            ]
            for hour in {int(r[0]) for r in rows}:  # the key starts with the hour
                start = month_start(datetime.fromtimestamp(hour, UTC))
                need.update((store, int(start.timestamp())) for store in stores)
        need -= self._partitions
        if not need:
            return
        pairs = sorted(need)
        with conn.transaction():
            conn.execute(ensure_partitions(), ([p[0] for p in pairs], [p[1] for p in pairs]))
        self._partitions |= need

    @staticmethod
    def _write(
        cur: psycopg.Cursor[Any],
        rows: Sequence[Sequence[object]],
        table: Table[Any],
        upsert_arrays: sql.Composed,
        upsert_temp: sql.Composed,
    ) -> None:
        if not rows:
            return
        if len(rows) < COPY_THRESHOLD:
            cur.execute(upsert_arrays, [list(column) for column in zip(*rows, strict=True)])
            return
        cur.execute(staging_table(table))
        copy = sql.SQL("COPY {} ({}) FROM STDIN").format(
            I(staging_name(table)), cols(table.names())
        )
        with cur.copy(copy) as cp:
            for row in rows:
                cp.write_row(row)
        cur.execute(upsert_temp)

    def _upsert_rows(
        self, table: Table[Any], statement: sql.Composed, rows: Sequence[Any], what: str
    ) -> None:
        """One table's rows (merged by key) in one transaction, their months created."""
        params = [table.values(r) for r in table.merge(rows)]
        if not params:
            return
        with self._connection(f"upsert of {len(params)} {what}") as conn:
            self._ensure(conn, ((table, params),))
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(statement, params)

    def upsert_tokens(self, rows: Sequence[TokenRow]) -> None:
        self._upsert_rows(TOKENS, UPSERT_TOKENS, rows, "token rows")

    def insert_storage_samples(self, rows: Sequence[StorageSample]) -> None:
        params = [STORAGE.values(r) for r in rows]
        if not params:
            return
        what = f"insert of {len(params)} storage samples"
        with self._connection(what) as conn, conn.transaction(), conn.cursor() as cur:
            cur.executemany(INSERT_STORAGE, params)

    def upsert_probes(self, rows: Sequence[ProbeRecord]) -> None:
        params = [PROBES.values(r) for r in rows]
        if not params:
            return
        what = f"upsert of {len(params)} probe records"
        with self._connection(what) as conn, conn.transaction(), conn.cursor() as cur:
            cur.executemany(UPSERT_PROBES, params)

    def upsert_engine_time(self, rows: Sequence[EngineTimeRow]) -> None:
        self._upsert_rows(ENGINE_TIME, UPSERT_ENGINE_TIME, rows, "engine time rows")

    def upsert_tenant_tokens(self, rows: Sequence[TenantTokenRow]) -> None:
        self._upsert_rows(TENANT_TOKENS, UPSERT_TENANT_TOKENS, rows, "tenant token rows")

    def upsert_cost_centers(self, rows: Sequence[CostCenterRow]) -> None:
        self._upsert_rows(COST_CENTERS, UPSERT_COST_CENTERS, rows, "cost-center rows")

    # -- reads --------------------------------------------------------------------------

    def probes(
        self, start: datetime, end: datetime, *, node: str | None = None
    ) -> list[ProbeVerdictGroup]:
        """Probe and verdict counts per (namespace, service, model): see
        :func:`gpuledger.chargeback.ledger.store.postgres_probes.verdicts`."""
        return postgres_probes.verdicts(self._query, start, end, node)

    def cost_centers(
        self, start: datetime, end: datetime, *, node: str | None = None
    ) -> dict[tuple[str, str], str]:
        where, params = self._range(start, end, node)
        return as_mapping(self._query("cost-center query", postgres_latest(where), params * 2))

    def _query(
        self,
        what: str,
        query: sql.Composed,
        params: Sequence[object],
        *,
        hash_aggregate: bool = False,
    ) -> list[dict[str, object]]:
        """Run one read. ``hash_aggregate``: in a transaction with ``enable_sort = off``,
        for a GROUP BY whose group count the planner overestimates by orders of magnitude
        (then it sorts every row to disk instead of hashing a few thousand groups)."""
        with self._connection(what) as conn, conn.transaction():
            if hash_aggregate:
                conn.execute("SET LOCAL enable_sort = off")
            with conn.cursor(row_factory=dict_row) as cur:
                cur.execute(query, params)
                rows = cur.fetchall()
        return [dict(r) for r in rows]

    @staticmethod
    def _range(
        start: datetime, end: datetime, node: str | None
    ) -> tuple[sql.Composed, list[object]]:
        where = sql.SQL("{h} >= %s AND {h} < %s").format(h=I("hour_start"))
        params: list[object] = [aware_utc(start, "start"), aware_utc(end, "end")]
        if node is not None:
            where = sql.SQL("{} AND {} = %s").format(where, I("node"))
            params.append(node)
        return where, params

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
        extra: Sequence[sql.Composable] = (),
        only: sql.Composable | None = None,
    ) -> list[dict[str, object]]:
        """Σ of ``totals`` over rows with ``start <= hour_start < end`` grouped by ``keys``
        (``hour`` → ISO-8601 UTC string), aggregated in SQL; text ordered byte-wise (as
        SQLite's BINARY) whatever the database's collation; one row when no keys."""
        select: list[sql.Composable] = []
        for key in keys:
            col = I(columns[key])
            expr = iso_hour(col) if key == "hour" else col
            select.append(sql.SQL("{} AS {}").format(expr, I(key)))
        select += [
            sql.SQL("COALESCE(SUM({c}), 0)::double precision AS {c}").format(c=I(c)) for c in totals
        ]
        select += extra
        where, params = self._range(start, end, node)
        if only is not None:
            where = sql.SQL("{} AND {}").format(where, only)
        query = sql.SQL("SELECT {sel} FROM {t} WHERE {w}").format(
            sel=sql.SQL(", ").join(select), t=I(table), w=where
        )
        if keys:
            group = sql.SQL(", ").join(I(columns[k]) for k in keys)
            order = sql.SQL(", ").join(
                I(columns[k]) if k == "hour" else sql.SQL('{} COLLATE "C"').format(I(k))
                for k in keys
            )
            query = sql.SQL("{} GROUP BY {g} ORDER BY {o}").format(query, g=group, o=order)
        else:
            query = sql.SQL("{} HAVING COUNT(*) > 0").format(query)
        return self._query(what, query, params)

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
        hours = sql.SQL("COALESCE(SUM({c}), 0) / {h} AS {a}").format(
            c=I("allocated_gpu_seconds"),
            h=sql.Literal(SECONDS_PER_HOUR),
            a=I("allocated_gpu_hours"),
        )
        keys = check_group_by(group_by)
        rollup = usage_rollup(keys, node, start, end)
        if rollup is not None:
            # A rollup holds these sums (kept by triggers, migration 8): a month at
            # 10,000 GPUs is ~91 k (by hour) or ~50 k (by GPU) rows instead of 37 M.
            rows = self._grouped_sums(
                "usage query", rollup.store, keys, GROUP_COLUMNS,
                USAGE.names(Role.TOTAL), start, end, node, extra=(hours,),
                only=sql.SQL("{} > 0").format(I(rollup.count)),
            )  # fmt: skip
        else:
            rows = self._grouped_sums(
                "usage query", USAGE.store, keys, GROUP_COLUMNS,
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
        """MAX of the measured peaks per ``group_by`` over ``[start, end)`` hours, from
        the usage rows: no rollup carries a peak (a maximum cannot be un-added)."""
        (peak,) = USAGE.names(Role.PEAK)
        rows = self._grouped_sums(
            "peak memory query", USAGE.store, check_peak_group_by(group_by), PEAK_GROUP_COLUMNS,
            (), start, end, node,
            extra=(sql.SQL("MAX({c}) AS {c}").format(c=I(peak)),
                   sql.SQL("COUNT(*) AS {}").format(I("buckets"))),
            only=sql.SQL("{} IS NOT NULL").format(I(peak)),
        )  # fmt: skip
        return [PeakMemoryGroup.from_row(r) for r in rows]

    def rollup_drift(
        self, start: datetime, end: datetime, rel_tol: float = 1e-9
    ) -> list[dict[str, object]]:
        """Keys of every rollup over ``[start, end)`` (whole months for a month rollup)
        whose sums differ from a fresh sum of their source's rows by more than ``rel_tol``
        (row counts: at all), each tagged with its rollup: empty when all are exact.
        Reads the whole range of the sources: an audit, not a report path."""
        lo, hi = aware_utc(start, "start"), aware_utc(end, "end")
        out: list[dict[str, object]] = []
        with self._connection("rollup audit") as conn, conn.cursor(row_factory=dict_row) as cur:
            for rollup in ROLLUPS:
                a, b = drift_bounds(rollup, lo, hi)
                cur.execute(drift(rollup), {"start": a, "end": b, "tol": float(rel_tol)})
                out += [{"rollup": rollup.store, **r} for r in cur.fetchall()]
        return out

    def _tenant_hour_rows(self, start: datetime, end: datetime) -> list[dict[str, object]]:
        where, params = self._range(start, end, None)
        query = sql.SQL(
            "SELECT {ns}, {svc}, extract(epoch FROM {h})::bigint AS {h}, "
            "COALESCE(SUM({req}), 0)::double precision AS {req}, "
            "COALESCE(SUM({p}), 0)::double precision AS {p}, "
            "COALESCE(SUM(LEAST({c}, {p})), 0)::double precision AS {c}, "
            "COALESCE(SUM({g}), 0)::double precision AS {g} "
            "FROM {t} WHERE {w} GROUP BY {ns}, {svc}, {h}"
        ).format(
            ns=I("namespace"), svc=I("service"), h=I("hour_start"), req=I("requests"),
            p=I("prompt_tokens"), c=I("cached_prompt_tokens"), g=I("generation_tokens"),
            t=I(TENANT_TOKENS.store), w=where,
        )  # fmt: skip
        return self._query("tenant hour sums query", query, params)

    def _tenant_weighted_rows(
        self, start: datetime, end: datetime, coefficients: str, cached_weight: float
    ) -> list[dict[str, object]]:
        where, params = self._range(start, end, None)
        query = sql.SQL(TENANT_WEIGHTED).format(
            ns=I("namespace"), svc=I("service"), h=I("hour_start"), tenant=I("tenant"),
            req=I("requests"), p=I("prompt_tokens"), c=I("cached_prompt_tokens"),
            g=I("generation_tokens"), t=I(TENANT_TOKENS.store), w=where,
        )  # fmt: skip
        what = "tenant split query"
        with self._connection(what) as conn, conn.transaction():
            conn.execute("SET LOCAL enable_sort = off")
            with conn.cursor(row_factory=dict_row) as cur:
                cur.execute(query, [coefficients, cached_weight, *params])
                return [dict(r) for r in cur.fetchall()]

    def coverage(
        self, start: datetime, end: datetime, *, node: str | None = None
    ) -> list[CoverageGroup]:
        """Σ observed seconds per ``(node, gpu_uuid)`` over ``[start, end)`` hours.

        Hashed: the planner takes (node, gpu_uuid) for ~10 % of the rows as distinct
        pairs (744,000 of 7.44 M at 10,000 GPUs, where there are 10,000), so it sorted
        every coverage row of the month to disk (~600 MB, 16 s; bench/bench_report.py
        ``--explain``); hashing the few groups it really has takes a fraction of that."""
        where, params = self._range(start, end, node)
        h = I("hour_start")
        query = sql.SQL(
            "SELECT {n}, {g}, MAX({m}) AS {m}, COALESCE(SUM({o}), 0) AS {o}, "
            "COUNT(*)::integer AS {hours}, {first} AS {first_hour}, {last} AS {last_hour} "
            "FROM {t} WHERE {w} GROUP BY {n}, {g} "
            'ORDER BY {n} COLLATE "C", {g} COLLATE "C"'
        ).format(
            n=I("node"),
            g=I("gpu_uuid"),
            m=I("gpu_model"),
            o=I("observed_seconds"),
            hours=I("hours"),
            first=iso_hour(sql.SQL("MIN({})").format(h)),
            first_hour=I("first_hour"),
            last=iso_hour(sql.SQL("MAX({})").format(h)),
            last_hour=I("last_hour"),
            t=I(COVERAGE.store),
            w=where,
        )
        rows = self._query("coverage query", query, params, hash_aggregate=True)
        return [CoverageGroup.from_row(r) for r in rows]

    def probe_latency(
        self,
        start: datetime,
        end: datetime,
        quantile: float = 0.99,
        *,
        node: str | None = None,
    ) -> list[ProbeLatencyGroup]:
        """Nearest-rank ``quantile`` of successful probes' TTFT, TPOT and e2e per
        ``(namespace, service)`` over ``[start, end)``, ``percentile_disc``'s value (as
        SQLite's ``CUME_DIST`` query) without sorting the month: see
        :mod:`gpuledger.chargeback.ledger.store.postgres_probes`."""
        return postgres_probes.latency(self._connection, start, end, quantile, node)

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
        where, params = self._range(start, end, node)
        h, n = I("hour_start"), sql.SQL("{}, {}").format(I("cluster"), I("node"))
        query = sql.SQL(
            "SELECT {iso} AS {hour}, {n}, SUM(a) AS {alloc}, SUM(o) AS {obs} FROM ("
            " SELECT {h}, {n}, {alloc} AS a, 0::double precision AS o FROM {usage} WHERE {w}"
            " UNION ALL"
            " SELECT {h}, {n}, 0::double precision AS a, {obs} AS o FROM {cov} WHERE {w}"
            ") AS sides GROUP BY {h}, {n}"
            " HAVING abs(SUM(a) - SUM(o)) > %s * GREATEST(abs(SUM(a)), abs(SUM(o)))"
            ' ORDER BY {h}, {c} COLLATE "C", {nn} COLLATE "C"'
        ).format(
            iso=iso_hour(h),
            hour=I("hour"),
            h=h,
            n=n,
            c=I("cluster"),
            nn=I("node"),
            alloc=I("allocated_gpu_seconds"),
            obs=I("observed_seconds"),
            usage=I(USAGE.store),
            cov=I(COVERAGE.store),
            w=where,
        )
        rows = self._query("invariant query", query, [*params, *params, float(rel_tol)])
        return [InvariantViolation.from_row(r) for r in rows]

    # -- retention ----------------------------------------------------------------------

    def retire_before(
        self, before: datetime, *, archive_dir: Path | None, now: datetime | None = None
    ) -> list[RetiredMonth]:
        """Remove (and archive) every row dated before ``before``; see
        :func:`gpuledger.chargeback.ledger.store.postgres_retention.retire_before`."""
        try:
            return retire_before(self._connection, before, archive_dir, now or datetime.now(UTC))
        finally:
            self._partitions.clear()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.close()

    def __enter__(self) -> PostgresLedgerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PostgresLedgerStore({self._where!r})"
