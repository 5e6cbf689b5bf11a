"""The fast loader of ``bench_report`` (``--load copy``): the generated month straight
into the PostgreSQL store's own tables with ``COPY``, bypassing ``upsert``.

Why: through the store's upsert path a 10,000-GPU month (37.2 M usage, 7.4 M coverage,
2.8 M token and 26.5 M probe rows) takes ~75 minutes on the bench machine, so the report
at that size was never measured. The rows are the generator's own (``fleet_day``, same
seeds, services, models and probe cadence); only the way they reach the tables differs.
Each generated row is unique on its table's key, so the upsert's merge would not change
any value: ``COPY`` writes exactly what the upserts would have.

The tables are the ones ``store.migrate()`` created (every migration applied, indexes
included), their month partitions created by the store's own partition function. After
the load: ``VACUUM ANALYZE`` (as autovacuum would have done during the month; the
visibility map lets the report's index-only scans skip the heap).

``--reuse`` keeps a loaded database between runs: the database's comment records what was
loaded once the load has finished (a load that was interrupted leaves no comment and is
redone from empty tables).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any, Protocol

from psycopg import sql

from gpuledger.chargeback.ledger.tables import COVERAGE, PROBES, TOKENS, USAGE, BoundColumn, Table


class Batch(Protocol):
    """A day of generated rows (``bench_report.DayBatch``)."""

    @property
    def usage(self) -> Sequence[Any]: ...
    @property
    def coverage(self) -> Sequence[Any]: ...
    @property
    def tokens(self) -> Sequence[Any]: ...
    @property
    def probes(self) -> Sequence[Any]: ...


LOADED: tuple[tuple[str, Table[Any]], ...] = (
    ("usage", USAGE),
    ("coverage", COVERAGE),
    ("tokens", TOKENS),
    ("probes", PROBES),
)


def marker(gpus: int, month: str) -> str:
    """The database comment of a finished load of ``gpus`` GPUs for ``month``."""
    return f"gpuledger bench_report: {gpus} GPUs, month {month}, loaded by copy, complete"


def loaded(url: str, expected: str) -> bool:
    """Whether the database at ``url`` holds a finished load (its comment is ``expected``)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database"
            " WHERE datname = current_database()"
        ).fetchone()
    return row is not None and row[0] == expected


def timestamptz(unix: int) -> datetime:
    """An hour (unix seconds) as the aware datetime binary COPY sends as timestamptz (the
    upsert sends unix seconds and converts them in SQL)."""
    return datetime.fromtimestamp(unix, UTC)


def field_columns(table: Table[Any]) -> list[BoundColumn]:
    """``table``'s columns in its row type's field order (the generated tuples')."""
    return [table.by_attr[f.name] for f in fields(table.row)]


def copy_load(url: str, month_start: int, batches: Iterable[Batch]) -> dict[str, Any]:
    """Empty the four tables, COPY every batch into them (one transaction per batch) and
    ``VACUUM ANALYZE``. Each batch's rows are tuples in their row type's field order,
    hours as aware datetimes (``bench_report.fleet_day_values``). Returns row
    counts and seconds per table ("generate" is the time spent producing the batches)."""
    import psycopg

    from gpuledger.chargeback.ledger.store.postgres_sql import ensure_partitions

    seconds: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    with psycopg.connect(url) as conn:
        monthly = [t.store for _, t in LOADED if t.monthly]
        with conn.transaction():
            conn.execute(ensure_partitions(), (monthly, [month_start] * len(monthly)))
            conn.execute(
                sql.SQL("TRUNCATE {}").format(
                    sql.SQL(", ").join(sql.Identifier(t.store) for _, t in LOADED)
                )
            )
        batch_iter = iter(batches)
        while True:
            t = time.perf_counter()
            batch = next(batch_iter, None)
            seconds["generate"] += time.perf_counter() - t
            if batch is None:
                break
            with conn.transaction(), conn.cursor() as cur:
                for name, table in LOADED:
                    rows: Sequence[Any] = getattr(batch, name)
                    t = time.perf_counter()
                    columns = field_columns(table)
                    copy = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
                        sql.Identifier(table.store),
                        sql.SQL(", ").join(sql.Identifier(c.store) for c in columns),
                    )
                    with cur.copy(copy) as cp:
                        cp.set_types([c.type.postgres for c in columns])
                        for r in rows:
                            cp.write_row(r)
                    seconds[name] += time.perf_counter() - t
                    counts[name] += len(rows)
    with psycopg.connect(url, autocommit=True) as conn:
        t = time.perf_counter()
        conn.execute("VACUUM ANALYZE")
        seconds["vacuum analyze"] = time.perf_counter() - t
    return {"seconds": dict(seconds), "rows": dict(counts)}


def mark_loaded(url: str, db_name: str, text: str) -> None:
    """Record a finished load in the database's comment (see :func:`loaded`)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(db_name), sql.Literal(text)
            )
        )
