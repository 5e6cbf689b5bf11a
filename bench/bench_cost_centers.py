"""The cost-center read (issue 18) for a month of a 1,000-GPU fleet with 200 cost
centers, on PostgreSQL and SQLite (same run).

Run from the repository root:  python -m bench.bench_cost_centers [--gpus 1000]
                                   [--cost-centers 200] [--repeat 5] [--postgres-url URL]

The month (2026-10, 744 h): ``--gpus`` GPUs on nodes of 8, one service per 2 GPUs (500
services at the defaults, 4 per node), service ``i`` labelled ``cc-<i mod C>``; every
tenth service is relabelled at hour 500 (``cc-new-…``: the latest hour must win). The
agents write one ``ledger_cost_centers`` row per (hour, node, service) -- the most they
ever write (a row per hour even when nothing changed): 744 × 500 = 372,000 rows. Loading
is setup (PostgreSQL: one ``INSERT … SELECT`` from ``generate_series`` after the store
created the month's partition; SQLite: the store's own upsert) and reported apart.

The figure is the wall time of ``store.cost_centers(month)`` -- what every report, the
``/api/v1/usage?group_by=cost_center`` read and (issue 18, item 3) the hourly budget
refresh call to build their ``CostCenterMap`` -- cold (first call on a fresh store) and
the median of ``--repeat``, checked against the mapping computed here. Held to the
budget refresh's whole target (≤ 2 s on PostgreSQL for 1,000 GPUs and 200 cost
centers), of which it is one read.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.bench_ledger import _Server
from bench.results import Row, command, row
from gpuledger.chargeback.ledger.store.sqlite import SqliteLedgerStore
from gpuledger.chargeback.ledger.tables import CostCenterRow

START = datetime(2026, 10, 1, tzinfo=UTC)
END = datetime(2026, 11, 1, tzinfo=UTC)
HOURS = 744
RELABEL_HOUR = 500
TARGET_S = 2.0


def _label(service: int, hour: int, centers: int) -> str:
    if service % 10 == 0 and hour >= RELABEL_HOUR:
        return f"cc-new-{service % centers:03d}"
    return f"cc-{service % centers:03d}"


def expected(services: int, centers: int) -> dict[tuple[str, str], str]:
    """The answer, from the labelling rule: each service's label at the month's last hour."""
    return {(f"ns-{s % 20:02d}", f"svc-{s:04d}"): _label(s, HOURS - 1, centers)
            for s in range(services)}  # fmt: skip


def _rows(services: int, centers: int, hour: int) -> list[CostCenterRow]:
    t = int(START.timestamp()) + hour * 3600
    return [
        CostCenterRow(t, f"node-{s // 4:04d}", f"ns-{s % 20:02d}", f"svc-{s:04d}",
                      _label(s, hour, centers), "pod_label")
        for s in range(services)
    ]  # fmt: skip


_PG_LOAD = """
INSERT INTO ledger_cost_centers (hour_start, node, namespace, service, cost_center, source,
                                 updated_at)
SELECT to_timestamp(%(start)s::bigint + h * 3600),
       'node-' || lpad((s / 4)::text, 4, '0'), 'ns-' || lpad((s %% 20)::text, 2, '0'),
       'svc-' || lpad(s::text, 4, '0'),
       CASE WHEN s %% 10 = 0 AND h >= %(relabel)s
            THEN 'cc-new-' || lpad((s %% %(centers)s)::text, 3, '0')
            ELSE 'cc-' || lpad((s %% %(centers)s)::text, 3, '0') END,
       'pod_label', now()
FROM generate_series(0, %(hours)s - 1) AS h, generate_series(0, %(services)s - 1) AS s
ON CONFLICT DO NOTHING
"""


def _load_postgres(url: str, services: int, centers: int) -> float:
    import psycopg

    from gpuledger.chargeback.ledger.store.postgres import PostgresLedgerStore

    t = time.perf_counter()
    store = PostgresLedgerStore(url)
    store.migrate()
    store.upsert_cost_centers(_rows(services, centers, 0)[:1])  # the month's partition
    store.close()
    params = {"start": int(START.timestamp()), "relabel": RELABEL_HOUR, "centers": centers,
              "hours": HOURS, "services": services}  # fmt: skip
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_PG_LOAD, params)
        conn.execute("VACUUM ANALYZE ledger_cost_centers")
    return time.perf_counter() - t


def _load_sqlite(path: Path, services: int, centers: int) -> float:
    t = time.perf_counter()
    store = SqliteLedgerStore(path)
    store.migrate()
    for day in range(HOURS // 24):
        batch = [r for h in range(day * 24, day * 24 + 24) for r in _rows(services, centers, h)]
        store.upsert_cost_centers(batch)
    store.close()
    return time.perf_counter() - t


def _measure(name: str, make: Callable[[], Any], want: dict[tuple[str, str], str],
             repeat: int, load_s: float) -> dict[str, Any]:  # fmt: skip
    store = make()
    try:
        t = time.perf_counter()
        got = store.cost_centers(START, END)
        cold = time.perf_counter() - t
        assert got == want, f"{name}: the read disagrees with the labelling rule"
        runs = []
        for _ in range(repeat):
            t = time.perf_counter()
            store.cost_centers(START, END)
            runs.append(time.perf_counter() - t)
    finally:
        store.close()
    median = statistics.median(runs) if runs else cold
    print(f"  {name}: load {load_s:.1f} s; cost_centers() cold {cold * 1000:.0f} ms, "
          f"median of {repeat} {median * 1000:.0f} ms", flush=True)  # fmt: skip
    return {"store": name, "cold_s": cold, "median_s": median}


def main(argv: list[str] | None = None) -> list[Row]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--gpus", type=int, default=1000)
    ap.add_argument("--cost-centers", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--postgres-url", help="an existing server (default: embedded)")
    args = ap.parse_args(argv)
    services, centers = args.gpus // 2, args.cost_centers
    want = expected(services, centers)
    print(f"cost centers: {args.gpus} GPUs, {services} services, {centers} cost centers, "
          f"{HOURS} h: {services * HOURS:,} ledger_cost_centers rows", flush=True)  # fmt: skip
    results: dict[str, dict[str, Any]] = {}
    server = _Server(args.postgres_url)
    try:
        url = server.database("gpuledger_bench_cost_centers")
        from gpuledger.chargeback.ledger.store.postgres import PostgresLedgerStore

        load = _load_postgres(url, services, centers)
        results["postgres"] = _measure("postgres", lambda: PostgresLedgerStore(url), want,
                                       args.repeat, load)  # fmt: skip
    finally:
        server.close()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.db"
        load = _load_sqlite(path, services, centers)
        results["sqlite"] = _measure("sqlite", lambda: SqliteLedgerStore(path), want,
                                     args.repeat, load)  # fmt: skip
    cmd = command("bench.bench_cost_centers", argv)
    what = (f"cost-center read: {args.gpus} GPUs, {centers} cost centers, "
            f"{services * HOURS:,} rows/month")  # fmt: skip
    pg, lite = results["postgres"], results["sqlite"]
    ratio = f"{lite['median_s'] / pg['median_s']:.2f}x" if pg["median_s"] else None
    return [
        row(what, f"PostgreSQL median {pg['median_s'] * 1000:.0f} ms", pg["median_s"],
            target=f"≤ {TARGET_S:.0f} s (whole budget refresh)",
            passed=pg["median_s"] <= TARGET_S, peer=f"SQLite {lite['median_s'] * 1000:.0f} ms",
            peer_value=lite["median_s"], ratio=ratio, command=cmd),
        row(what, f"PostgreSQL cold {pg['cold_s'] * 1000:.0f} ms", pg["cold_s"], command=cmd),
    ]  # fmt: skip


if __name__ == "__main__":
    main()
