"""PostgreSQL/pgvector storage: table, TOAST, index and database sizes, vector columns,
pgvector indexes and index builds in progress, read from the catalogs.

One short-lived connection per database per collection (``application_name=gpuledger``),
databases read in parallel, each in one READ ONLY transaction with ``statement_timeout``
and ``lock_timeout`` set locally, and ONE statement for the whole catalog (constant round
trips whatever the number of tables). See ``docs/pgvector.md`` for every definition.

Never blocking the database: PostgreSQL's size functions open the relation with an
ACCESS SHARE lock, which waits behind an ACCESS EXCLUSIVE lock held *or queued* on it (and
everything queued after it would then wait behind us). The statement reads ``pg_locks``
first, into a MATERIALIZED CTE, and every size call is guarded by ``CASE WHEN NOT
locked``: a relation whose heap, TOAST table, or any of their indexes has such a lock is
never sized, only listed in ``skipped_locked``. A lock taken in the milliseconds between
that read and the size call makes the statement fail on ``lock_timeout``; it is then run
again (the lock is now visible) at most :data:`LOCK_RETRIES` times.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from gpuledger.collectors.base import CollectorDisabled, CollectorError
from gpuledger.collectors.pgvector.config import PgDatabaseConfig, ResolvedDsn
from gpuledger.collectors.pgvector.types import (
    DatabaseStats,
    IndexBuild,
    PgTelemetry,
    TableStats,
    VectorColumn,
    VectorIndex,
)

log = logging.getLogger(__name__)

APPLICATION_NAME = "gpuledger"
LOCK_RETRIES = 2  # extra runs of the statement after a lock appeared mid-statement
MAX_WORKERS = 8
MAX_ERROR_CHARS = 300
VECTOR_TYPES = ("vector", "halfvec", "sparsevec")
VECTOR_METHODS = ("hnsw", "ivfflat")

# Parameters: %(all)s bool, %(inc_s)s %(exc_s)s %(inc_t)s %(exc_t)s text[] of PostgreSQL
# regular expressions (see glob_to_pg_regex). Returns one row, one column: a JSON document.
CATALOG_QUERY = """
WITH
db AS MATERIALIZED (
    SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()
),
ext AS MATERIALIZED (
    SELECT e.oid FROM pg_catalog.pg_extension e WHERE e.extname = 'vector'
),
vtypes AS MATERIALIZED (
    -- the extension's own types, wherever it was installed (not any type named "vector")
    SELECT t.oid, t.typname::text AS typname
    FROM pg_catalog.pg_type t
    JOIN pg_catalog.pg_depend d
      ON d.classid = 'pg_catalog.pg_type'::pg_catalog.regclass AND d.objid = t.oid
     AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND d.deptype = 'e'
    JOIN ext ON ext.oid = d.refobjid
    WHERE t.typname IN ('vector', 'halfvec', 'sparsevec')
),
scope AS MATERIALIZED (
    SELECT c.oid, n.nspname::text AS nspname, c.relname::text AS relname, c.relkind,
           c.reltoastrelid, c.reltuples
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'm')
      AND n.nspname::text ~ ANY (%(inc_s)s::text[])
      AND NOT n.nspname::text ~ ANY (%(exc_s)s::text[])
      AND c.relname::text ~ ANY (%(inc_t)s::text[])
      AND NOT c.relname::text ~ ANY (%(exc_t)s::text[])
      AND (%(all)s OR EXISTS (
            SELECT 1 FROM pg_catalog.pg_attribute a JOIN vtypes vt ON vt.oid = a.atttypid
            WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped))
),
xlocks AS MATERIALIZED (
    -- ACCESS EXCLUSIVE held or waited for: an ACCESS SHARE request would queue behind it
    SELECT DISTINCT l.relation AS oid
    FROM pg_catalog.pg_locks l
    WHERE l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock'
      AND l.database = (SELECT oid FROM db)
),
members AS MATERIALIZED (
    -- every relation the size functions open for a table: itself, its indexes, its TOAST
    -- table and the TOAST table's index
    SELECT s.oid AS tbl, s.oid AS member FROM scope s
    UNION ALL
    SELECT s.oid, s.reltoastrelid FROM scope s WHERE s.reltoastrelid <> 0
    UNION ALL
    SELECT s.oid, i.indexrelid FROM scope s JOIN pg_catalog.pg_index i ON i.indrelid = s.oid
    UNION ALL
    SELECT s.oid, i.indexrelid FROM scope s
    JOIN pg_catalog.pg_index i ON i.indrelid = s.reltoastrelid WHERE s.reltoastrelid <> 0
),
locked AS MATERIALIZED (
    SELECT DISTINCT m.tbl AS oid FROM members m JOIN xlocks x ON x.oid = m.member
),
guarded AS MATERIALIZED (
    SELECT s.*, (k.oid IS NOT NULL) AS locked
    FROM scope s LEFT JOIN locked k ON k.oid = s.oid
),
vcols AS (
    SELECT a.attrelid AS tbl,
           json_agg(json_build_array(a.attname::text, vt.typname, a.atttypmod)
                    ORDER BY a.attnum) AS cols
    FROM scope s
    JOIN pg_catalog.pg_attribute a ON a.attrelid = s.oid
    JOIN vtypes vt ON vt.oid = a.atttypid
    WHERE a.attnum > 0 AND NOT a.attisdropped
    GROUP BY a.attrelid
),
vidx AS (
    SELECT i.indrelid AS tbl,
           json_agg(json_build_array(
               ic.relname::text, am.amname::text, ic.reloptions,
               CASE WHEN NOT g.locked THEN pg_catalog.pg_relation_size(i.indexrelid) END,
               (SELECT json_agg(coalesce(ta.attname, ia.attname)::text ORDER BY k.ord)
                  FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                  LEFT JOIN pg_catalog.pg_attribute ta
                         ON ta.attrelid = i.indrelid AND ta.attnum = k.attnum AND k.attnum <> 0
                  LEFT JOIN pg_catalog.pg_attribute ia
                         ON ia.attrelid = i.indexrelid AND ia.attnum = k.ord
                 WHERE k.ord <= i.indnkeyatts)
           ) ORDER BY ic.relname) AS idxs
    FROM guarded g
    JOIN pg_catalog.pg_index i ON i.indrelid = g.oid
    JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
    JOIN pg_catalog.pg_am am ON am.oid = ic.relam
    WHERE am.amname IN ('hnsw', 'ivfflat')
    GROUP BY i.indrelid
),
sized AS (
    SELECT g.nspname, g.relname, g.locked, g.reltuples,
           CASE WHEN NOT g.locked THEN pg_catalog.pg_table_size(g.oid) END AS table_bytes,
           CASE WHEN NOT g.locked THEN
               CASE WHEN g.reltoastrelid <> 0
                    THEN pg_catalog.pg_total_relation_size(g.reltoastrelid) ELSE 0 END
           END AS toast_bytes,
           CASE WHEN NOT g.locked THEN pg_catalog.pg_indexes_size(g.oid) END AS index_bytes,
           CASE WHEN g.relkind <> 'p' THEN pg_catalog.pg_stat_get_dead_tuples(g.oid) END
               AS dead,
           vc.cols, vx.idxs
    FROM guarded g
    LEFT JOIN vcols vc ON vc.tbl = g.oid
    LEFT JOIN vidx vx ON vx.tbl = g.oid
),
builds AS (
    SELECT s.nspname, s.relname, coalesce(ic.relname::text, '') AS idxname, p.phase,
           p.blocks_done, p.blocks_total, p.tuples_done, p.tuples_total
    FROM pg_catalog.pg_stat_progress_create_index p
    JOIN scope s ON s.oid = p.relid
    LEFT JOIN pg_catalog.pg_class ic ON ic.oid = p.index_relid
    WHERE p.datid = (SELECT oid FROM db)
)
SELECT json_build_object(
    'database_bytes', pg_catalog.pg_database_size(pg_catalog.current_database()),
    'pgvector', EXISTS (SELECT 1 FROM ext),
    'tables', (SELECT coalesce(json_agg(json_build_array(
                   nspname, relname, locked, reltuples, table_bytes, toast_bytes,
                   index_bytes, dead, cols, idxs) ORDER BY nspname, relname), '[]'::json)
               FROM sized),
    'builds', (SELECT coalesce(json_agg(json_build_array(
                   nspname, relname, idxname, phase, blocks_done, blocks_total,
                   tuples_done, tuples_total)), '[]'::json)
               FROM builds)
)::text
"""


class PgvectorCollector:
    """Reads every configured database; one :class:`DatabaseStats` per database, in
    configuration order. A database that fails is ``up=False`` with a short error (never
    a password); :class:`CollectorError` only when every database failed."""

    def __init__(
        self,
        databases: Sequence[PgDatabaseConfig],
        *,
        name: str = "pgvector",
        clock: Callable[[], float] = time.time,
        max_workers: int = MAX_WORKERS,
    ) -> None:
        try:
            import psycopg  # noqa: F401
        except ImportError as err:
            raise CollectorDisabled(
                f"psycopg is not installed ({err}); install gpuledger[postgres]"
            ) from None
        self.name = name
        self.databases = tuple(databases)
        self.clock = clock
        self.max_workers = max(1, max_workers)
        labels = [db.label() for db in self.databases]
        dupes = sorted({lb for lb in labels if labels.count(lb) > 1})
        if dupes:
            raise ValueError(f"pgvector databases share labels {dupes}; give them distinct names")
        self.labels = tuple(labels)

    def collect(self) -> PgTelemetry:
        if not self.databases:
            return PgTelemetry(())
        results: list[DatabaseStats | None] = [None] * len(self.databases)
        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=min(self.max_workers, len(self.databases)),
            thread_name_prefix="gpuledger-pgvector",
        )
        try:
            futures = {
                pool.submit(self.collect_database, db, label): i
                for i, (db, label) in enumerate(zip(self.databases, self.labels, strict=True))
            }
            # Each worker is bounded by its own timeouts; this is the backstop for a
            # network that swallows packets (the thread is abandoned, not waited for).
            waves = -(-len(self.databases) // self.max_workers)  # ceil: queued databases wait
            deadline = waves * max(_budget_s(db) for db in self.databases)
            done, _ = concurrent.futures.wait(futures, timeout=deadline)
            for fut in done:
                results[futures[fut]] = fut.result()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        out: list[DatabaseStats] = []
        for i, stats in enumerate(results):
            if stats is None:
                db = self.databases[i]
                stats = DatabaseStats(
                    name=self.labels[i],
                    up=False,
                    error=f"no answer within {_budget_s(db):.0f} s",
                    capacity_bytes=db.capacity_bytes,
                    collected_unix=self.clock(),
                )
            out.append(stats)
        if all(not s.up for s in out):
            detail = "; ".join(f"{s.name}: {s.error}" for s in out)
            raise CollectorError(f"every PostgreSQL database failed: {detail}")
        return PgTelemetry(tuple(out))

    def collect_database(self, db: PgDatabaseConfig, label: str | None = None) -> DatabaseStats:
        """One database; never raises (a failure is ``up=False`` with the reason)."""
        label = label or db.label()
        resolved: ResolvedDsn | None = None
        try:
            resolved = db.resolve()
            doc = _read_catalog(db, resolved)
            stats = parse_document(
                doc,
                name=label,
                capacity_bytes=db.capacity_bytes,
                collected_unix=self.clock(),
            )
        except Exception as err:  # one database's failure must not touch the others
            message = _short_error(err, resolved)
            log.warning("pgvector: database %s: %s", label, message)
            return DatabaseStats(
                name=label,
                up=False,
                error=message,
                capacity_bytes=db.capacity_bytes,
                collected_unix=self.clock(),
            )
        if stats.skipped_locked:
            log.info(
                "pgvector: database %s: %d relation(s) skipped for ACCESS EXCLUSIVE locks",
                label,
                len(stats.skipped_locked),
            )
        return stats

    def close(self) -> None:
        """Nothing held between collections (each uses a fresh connection)."""


def _budget_s(db: PgDatabaseConfig) -> float:
    per_run = db.statement_timeout_ms / 1000.0
    return db.connect_timeout_s + per_run * (1 + LOCK_RETRIES) + 5.0


def _read_catalog(db: PgDatabaseConfig, dsn: ResolvedDsn) -> Mapping[str, Any]:
    import psycopg
    from psycopg import errors, sql

    kwargs: dict[str, Any] = {
        "connect_timeout": db.connect_timeout_s,
        "application_name": APPLICATION_NAME,
        "autocommit": False,
    }
    if dsn.password is not None:
        kwargs["password"] = dsn.password
    params = {
        "all": db.all_tables,
        # an empty include list means "everything", like the default ["*"]
        "inc_s": [glob_to_pg_regex(p) for p in db.include_schemas or ["*"]],
        "exc_s": [glob_to_pg_regex(p) for p in db.exclude_schemas],
        "inc_t": [glob_to_pg_regex(p) for p in db.include_tables or ["*"]],
        "exc_t": [glob_to_pg_regex(p) for p in db.exclude_tables],
    }
    settings = sql.SQL("SET LOCAL statement_timeout = {}; SET LOCAL lock_timeout = {}").format(
        sql.Literal(f"{db.statement_timeout_ms}ms"), sql.Literal(f"{db.lock_timeout_ms}ms")
    )
    with psycopg.connect(dsn.conninfo, **kwargs) as conn:
        conn.read_only = True
        for attempt in range(1 + LOCK_RETRIES):
            try:
                with conn.transaction(), conn.cursor() as cur:
                    cur.execute(settings)
                    cur.execute(CATALOG_QUERY, params)
                    row = cur.fetchone()
            except errors.LockNotAvailable:
                # A lock appeared between the pg_locks read and a size call; the next run
                # sees it and skips that relation.
                if attempt == LOCK_RETRIES:
                    raise
                continue
            if row is None:  # pragma: no cover - the statement always returns one row
                raise CollectorError("catalog query returned no row")
            doc: Mapping[str, Any] = json.loads(row[0])
            return doc
    raise AssertionError("unreachable")  # pragma: no cover


def parse_document(
    doc: Mapping[str, Any],
    *,
    name: str,
    capacity_bytes: int | None = None,
    collected_unix: float = 0.0,
) -> DatabaseStats:
    """The catalog statement's JSON document as :class:`DatabaseStats`."""
    tables: list[TableStats] = []
    skipped: list[str] = []
    for row in doc.get("tables") or ():
        schema, table, locked = str(row[0]), str(row[1]), bool(row[2])
        if locked:
            skipped.append(f"{schema}.{table}")
            continue
        table_bytes, toast_bytes, index_bytes = row[4], row[5], row[6]
        if table_bytes is None or toast_bytes is None or index_bytes is None:
            continue  # dropped while we read the catalog: the size functions return NULL
        columns = tuple(
            VectorColumn(name=str(c[0]), type=str(c[1]), dimensions=int(c[2])) for c in row[8] or ()
        )
        indexes = tuple(
            VectorIndex(
                name=str(ix[0]),
                method=str(ix[1]),
                bytes=int(ix[3]),
                options=MappingProxyType(parse_reloptions(ix[2])),
                columns=tuple(str(col) for col in ix[4] or ()),
            )
            for ix in row[9] or ()
            if ix[3] is not None
        )
        table_bytes, toast_bytes, index_bytes = int(table_bytes), int(toast_bytes), int(index_bytes)
        tables.append(
            TableStats(
                schema=schema,
                table=table,
                # heap: the main relation's forks (main, FSM, VM, init) = table - TOAST;
                # clamped in case the TOAST table grew between the two calls
                heap_bytes=max(0, table_bytes - toast_bytes),
                toast_bytes=toast_bytes,
                index_bytes=index_bytes,
                # pg_total_relation_size is by definition pg_table_size + pg_indexes_size
                total_bytes=table_bytes + index_bytes,
                rows_estimate=float(row[3]),
                dead_tuples=None if row[7] is None else int(row[7]),
                vector_columns=columns,
                vector_indexes=indexes,
            )
        )
    builds = tuple(index_build_from_row(b) for b in doc.get("builds") or ())
    return DatabaseStats(
        name=name,
        up=True,
        database_bytes=int(doc["database_bytes"]),
        capacity_bytes=capacity_bytes,
        pgvector_installed=bool(doc.get("pgvector")),
        tables=tuple(tables),
        skipped_locked=tuple(skipped),
        index_builds=builds,
        collected_unix=collected_unix,
    )


def index_build_from_row(row: Sequence[Any]) -> IndexBuild:
    """``[schema, table, index, phase, blocks_done, blocks_total, tuples_done,
    tuples_total]`` (a row of pg_stat_progress_create_index joined to names; counters a
    role may not see arrive as NULL and read as 0)."""

    def n(v: Any) -> int:
        return int(v) if v is not None else 0

    return IndexBuild(
        schema=str(row[0]),
        table=str(row[1]),
        index=str(row[2] or ""),
        phase=str(row[3] or ""),
        blocks_done=n(row[4]),
        blocks_total=n(row[5]),
        tuples_done=n(row[6]),
        tuples_total=n(row[7]),
    )


def parse_reloptions(options: Sequence[str] | None) -> dict[str, str]:
    """``pg_class.reloptions`` (``{m=24,ef_construction=100}``) as a dict; options left at
    their defaults are simply absent."""
    out: dict[str, str] = {}
    for item in options or ():
        key, sep, value = str(item).partition("=")
        if sep:
            out[key] = value
    return out


def glob_to_pg_regex(pattern: str) -> str:
    """A shell glob (``fnmatch.fnmatchcase`` semantics: ``*``, ``?``, ``[seq]``,
    ``[!seq]``) as an anchored PostgreSQL regular expression (ARE). Every character other
    than ASCII letters and digits is escaped (``\\`` + character is that character, in and
    outside brackets), so a name with dots, quotes or spaces means only itself."""
    out: list[str] = ["^(?:"]
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            while i < n and pattern[i] == "*":
                i += 1
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[":
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                out.append("\\[")
                continue
            body = pattern[i:j]
            i = j + 1
            negate = body.startswith("!")
            if negate:
                body = body[1:]
            items = _bracket_items(body)
            if not items:
                # an empty set matches nothing; its negation matches any one character
                out.append("." if negate else "x^")  # x^: an ARE that matches nothing
                continue
            out.append("[" + ("^" if negate else "") + "".join(items) + "]")
        else:
            out.append(_esc(ch))
    out.append(")$")
    return "".join(out)


def _bracket_items(body: str) -> list[str]:
    items: list[str] = []
    k = 0
    while k < len(body):
        lo = body[k]
        if k + 2 < len(body) and body[k + 1] == "-":
            hi = body[k + 2]
            k += 3
            if lo <= hi:  # fnmatch drops an empty range such as z-a
                items.append(f"{_esc(lo)}-{_esc(hi)}")
            continue
        items.append(_esc(lo))
        k += 1
    return items


def _esc(ch: str) -> str:
    """Escape an ASCII non-alphanumeric character (regex syntax is ASCII-only)."""
    if not ch.isascii() or ch.isalnum():
        return ch
    return "\\" + ch


def _short_error(err: BaseException, dsn: ResolvedDsn | None) -> str:
    """One line, no password (the DSN's and the separate one are scrubbed)."""
    from psycopg import errors

    if isinstance(err, errors.QueryCanceled):
        text = "catalog read cancelled by statement_timeout"
    elif isinstance(err, errors.LockNotAvailable):
        text = "locks kept appearing during the catalog read (lock_timeout)"
    else:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        text = lines[0] if lines else type(err).__name__
    if dsn is not None:
        text = dsn.scrub(text)
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 1] + "…"
    return text
