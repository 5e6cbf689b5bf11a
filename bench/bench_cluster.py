"""Migration 12 (clusters, issue 18) on a fleet month: how long a PostgreSQL ledger that
served one cluster takes to gain ``cluster`` in every key, and that it loses nothing.

Run from the repository root:  python -m bench.bench_cluster [--gpus 1000]
                                   [--postgres-url URL] [--json FILE]

A version-9 ledger (the schema before clusters) is filled with a month of ``--gpus`` GPUs
by :mod:`bench.bench_ledger`'s SQL loader (744 hours × 5 buckets per GPU: 4 services and
``__idle__``; the rollups of migration 8 kept by their triggers as the rows arrive), then
``PostgresLedgerStore.migrate(default_cluster="prod-eu")`` runs migration 12, timed: the
column added as a catalog-only default, each table's primary key rebuilt, the rollups
dropped and rebuilt from the rows. Afterwards the bench checks that every table holds the
same number of rows, every row carries ``prod-eu``, and the rollups agree exactly with a
fresh sum of the rows (``rollup_drift`` empty), so a figure comes from a migration that
did its job. There is no target in the issue: the figure tells an operator how long the
upgrade's first flush holds the ledger's lock (agents keep spooling meanwhile).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.bench_ledger import HOURS, MONTH_START, _load_sql, _month_partitions, _Server
from bench.results import Row, command, row

TABLES = ("ledger_usage", "ledger_coverage", "ledger_usage_rollup", "ledger_usage_month_rollup")


def _migrate_to_9(url: str) -> None:
    """The schema as the release before clusters left it (migrations 1-9)."""
    import psycopg

    from gpuledger.chargeback.ledger.store.postgres_migrations import MIGRATIONS

    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for number, statements in MIGRATIONS:
            for statement in statements:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (number,))
        _month_partitions(conn)


def _counts(url: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(url) as conn:
        return {t: int(conn.execute(f"SELECT count(*) FROM {t}".encode()).fetchone()[0])  # type: ignore[index]
                for t in TABLES}  # fmt: skip


def bench_migration(server: _Server, gpus: int) -> dict[str, Any]:
    import psycopg

    from gpuledger.chargeback.ledger.store.postgres import PostgresLedgerStore

    url = server.database(f"bench_cluster_{gpus}")
    _migrate_to_9(url)
    t0 = time.perf_counter()
    _load_sql(url, gpus)
    load_s = time.perf_counter() - t0
    before = _counts(url)
    store = PostgresLedgerStore(url)
    try:
        t0 = time.perf_counter()
        store.migrate(default_cluster="prod-eu")
        migrate_s = time.perf_counter() - t0
        start = datetime.fromtimestamp(MONTH_START, UTC)
        end = datetime.fromtimestamp(MONTH_START + HOURS * 3600, UTC)
        drift = store.rollup_drift(start, end)
    finally:
        store.close()
    after = _counts(url)
    with psycopg.connect(url) as conn:
        clusters = {
            t: [r[0] for r in conn.execute(f"SELECT DISTINCT cluster FROM {t}".encode())]
            for t in TABLES
        }
    # the rollups are rebuilt: their row counts may only shrink by keys whose rows all left
    ok = (
        before["ledger_usage"] == after["ledger_usage"]
        and before["ledger_coverage"] == after["ledger_coverage"]
        and all(v == ["prod-eu"] for v in clusters.values())
        and not drift
    )
    if not ok:
        raise SystemExit(f"bench_cluster: migration 12 lost or mislabelled rows: "
                         f"{before} -> {after}, {clusters}, drift {drift[:3]}")  # fmt: skip
    return {
        "gpus": gpus,
        "usage_rows": after["ledger_usage"],
        "coverage_rows": after["ledger_coverage"],
        "load_s": load_s,
        "migrate_s": migrate_s,
    }


def main(argv: list[str] | None = None) -> list[Row]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--gpus", type=int, default=1000, help="GPUs of the fleet month")
    ap.add_argument("--postgres-url", default=os.environ.get("GPULEDGER_BENCH_POSTGRES_URL"))
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    server = _Server(args.postgres_url)
    try:
        m = bench_migration(server, args.gpus)
    finally:
        server.close()
    rows_total = m["usage_rows"] + m["coverage_rows"]
    print(f"== migration 12 (clusters) on a v9 fleet month of {m['gpus']:,} GPUs ==")
    print(f"rows            {m['usage_rows']:,} usage + {m['coverage_rows']:,} coverage "
          f"(loaded in {m['load_s']:.1f} s)")  # fmt: skip
    print(f"migrate()       {m['migrate_s']:.2f} s  ({rows_total / m['migrate_s']:,.0f} rows/s); "
          "no row lost, every row prod-eu, rollups exact")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(m, indent=2) + "\n")
    title = "ledger: migration 12 (cluster in every key) on a fleet month, PostgreSQL"
    cmd = command("bench.bench_cluster", argv)
    return [
        row(title, f"migrate() at {m['gpus']:,} GPUs x 744 h ({rows_total:,} rows), s",
            m["migrate_s"], command=cmd),
    ]  # fmt: skip


if __name__ == "__main__":
    main()
