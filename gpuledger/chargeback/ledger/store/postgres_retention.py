"""Retention on PostgreSQL: a month of a monthly table leaves as its partition (copied
out, then dropped: no DELETE, no dead rows, no VACUUM); probe records and storage samples
(not partitioned: keyed by unix seconds) leave by ``DELETE … RETURNING``, streamed into
the archive by ``COPY (DELETE …) TO STDOUT`` so exactly the rows deleted are archived.

Each table's month is one transaction, and its archive is published (fsynced, renamed)
before that transaction commits: a crash in between leaves the rows and a complete
archive, and the next run writes the same archive again (overwritten, not appended).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from gpuledger.chargeback.ledger.store.postgres_sql import I, month_partitions
from gpuledger.chargeback.ledger.store.retention import (
    Archive,
    RetiredMonth,
    add_months,
    check_cutoff,
    label,
    months,
)
from gpuledger.chargeback.ledger.tables import ROLLUPS, TABLES

Connect = Callable[[str], AbstractContextManager[psycopg.Connection[Any]]]


def retire_before(
    connect: Connect, before: datetime, archive_dir: Path | None, now: datetime
) -> list[RetiredMonth]:
    """Every row dated before ``before`` (a month start; at the latest the previous
    month's, as of ``now``) removed, a table and month at a time; archived as
    ``<archive_dir>/<YYYY-MM>/<table>.csv.gz`` (CSV with a header, timestamps in UTC)
    unless ``archive_dir`` is None. Months without rows are not listed."""
    check_cutoff(before, now)
    out: list[RetiredMonth] = []
    monthly = [t.store for t in TABLES if t.monthly]
    with connect("listing partitions") as conn:
        parts = [(str(p), str(c)) for p, c in conn.execute(month_partitions(), (monthly,))]
    for parent, part in parts:
        suffix = part.removeprefix(f"{parent}_p")
        if len(suffix) != 7 or suffix[4] != "_" or not (suffix[:4] + suffix[5:]).isdigit():
            continue  # not one of ours: left alone
        start = datetime(int(suffix[:4]), int(suffix[5:]), 1, tzinfo=UTC)
        if start < before:
            out.append(_drop_partition(connect, parent, part, start, archive_dir))
    for table in (t for t in TABLES if not t.monthly):
        col = I(table.time.store)
        with connect(f"oldest {table.store} row") as conn:
            row = conn.execute(
                sql.SQL("SELECT min({}) FROM {}").format(col, I(table.store))
            ).fetchone()
        if row is None or row[0] is None or float(row[0]) >= before.timestamp():
            continue
        for start in months(datetime.fromtimestamp(float(row[0]), UTC), before):
            delete = sql.SQL("DELETE FROM {t} WHERE {c} >= {lo} AND {c} < {hi}").format(
                t=I(table.store),
                c=col,
                lo=sql.Literal(start.timestamp()),
                hi=sql.Literal(add_months(start, 1).timestamp()),
            )
            out.append(_delete_month(connect, table.store, start, delete, archive_dir))
    return [r for r in out if r.rows or r.archive]


def _drop_partition(
    connect: Connect, parent: str, part: str, start: datetime, archive_dir: Path | None
) -> RetiredMonth:
    with connect(f"retiring {part}") as conn, conn.transaction(), conn.cursor() as cur:
        cur.execute("SET LOCAL TimeZone = 'UTC'")
        cur.execute("SET LOCAL statement_timeout = 0")  # a month's copy takes minutes
        cur.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(I(part)))
        # The month's rollup rows (migration 8) sum exactly this partition's rows: they
        # leave in the same transaction, never archived (derived, rebuilt from the rows).
        suffix = part.removeprefix(parent)
        derived = [
            f"{r.store}{suffix}" for r in ROLLUPS if r.source.store == parent and r.partitioned
        ]
        drop = sql.SQL("DROP TABLE {}").format(I(part))
        if derived:
            cur.execute(
                sql.SQL("DROP TABLE IF EXISTS {}").format(sql.SQL(", ").join(I(d) for d in derived))
            )
        if archive_dir is None:
            got = cur.execute(sql.SQL("SELECT count(*) FROM {}").format(I(part))).fetchone()
            cur.execute(drop)
            return RetiredMonth(parent, label(start), int(got[0]) if got else 0, None)
        with Archive(archive_dir, parent, start) as archive:
            copy = sql.SQL("COPY {} TO STDOUT (FORMAT csv, HEADER)").format(I(part))
            with cur.copy(copy) as cp:
                for data in cp:
                    archive.write(data)
            rows = cur.rowcount
            cur.execute(drop)
            path = archive.publish()
        return RetiredMonth(parent, label(start), rows, path)


def _delete_month(
    connect: Connect, table: str, start: datetime, delete: sql.Composed, archive_dir: Path | None
) -> RetiredMonth:
    what = f"retiring {table} {label(start)}"
    with connect(what) as conn, conn.transaction(), conn.cursor() as cur:
        cur.execute("SET LOCAL statement_timeout = 0")  # a month's copy takes minutes
        if archive_dir is None:
            cur.execute(delete)
            return RetiredMonth(table, label(start), max(cur.rowcount, 0), None)
        with Archive(archive_dir, table, start) as archive:
            copy = sql.SQL("COPY ({} RETURNING *) TO STDOUT (FORMAT csv, HEADER)").format(delete)
            with cur.copy(copy) as cp:
                for data in cp:
                    archive.write(data)
            rows = cur.rowcount
            if rows == 0:
                archive.abort()
                return RetiredMonth(table, label(start), 0, None)
            path = archive.publish()
        return RetiredMonth(table, label(start), rows, path)
