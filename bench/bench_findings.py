"""Findings (issue 17) for one month of a 1,000-GPU fleet, on PostgreSQL and on SQLite.

Run from the repository root:  python -m bench.bench_findings [--gpus 1000] [--repeat 3]
                                   [--postgres-url URL] [--load upsert|copy] [--reuse]
                                   [--backends postgres,sqlite] [--json FILE]

The month is the report bench's (bench/bench_report.py ``fleet_day``: 2026-10, 744 h,
5 owner rows per GPU-hour, 30 services over 3 GPU models), loaded the same ways
(``--load upsert`` through each store's own upsert, ``--load copy`` PostgreSQL with COPY;
``--reuse`` with ``--postgres-url`` keeps a COPY-loaded database for the next run). Only
usage and coverage are written on the upsert path: findings read nothing else.

The figure is the wall time of ``gpuledger.chargeback.findings.find(store, month, card,
config)`` on a freshly opened store (the first, cold run, then the median of
``--repeat``): its two store reads timed apart -- ``usage_and_peaks()`` per hour (the sums
and the peaks of migration 9: one scan on SQLite, the rollup and the rows on PostgreSQL;
the month's rows carry a peak per owner, NULL for ``__idle__``) and ``usage()`` per GPU --
then the kinds' work on what they read.
Targets (the issue): ≤ 10 s on PostgreSQL, ≤ 30 s on SQLite.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.bench_ledger import _Server
from bench.bench_report import (
    DAYS,
    MONTH,
    _load_postgres_copy,
    _pg_admin,
    fleet_day,
)
from bench.results import Row, command, row
from gpuledger.chargeback.findings import FindingsConfig, find
from gpuledger.chargeback.ledger.store.sqlite import SqliteLedgerStore
from gpuledger.chargeback.report.ratecard import load_rate_card

TARGETS_S = {"postgres": 10.0, "sqlite": 30.0}


class TimedReads:
    """The store, with the seconds spent in each ``usage()`` and ``peak_memory()`` read
    recorded, in call order."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.reads: list[float] = []

    def _timed(self, read: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return read(*args, **kwargs)
        finally:
            self.reads.append(time.perf_counter() - t)

    def usage(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed(self._store.usage, *args, **kwargs)

    def peak_memory(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed(self._store.peak_memory, *args, **kwargs)

    def usage_and_peaks(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed(self._store.usage_and_peaks, *args, **kwargs)


def _load_upsert(gpus: int, stores: dict[str, Any]) -> dict[str, float]:
    took = dict.fromkeys(stores, 0.0)
    for day in range(DAYS):
        b = fleet_day(gpus, day)
        for name, s in stores.items():
            t = time.perf_counter()
            s.upsert(b.usage, b.coverage)
            took[name] += time.perf_counter() - t
    return took


def _time(make: Callable[[], Any], repeat: int) -> dict[str, Any]:
    card = load_rate_card()
    cfg = FindingsConfig()

    runs: list[float] = []
    reads: list[list[float]] = []
    found: Any = ()
    for _ in range(repeat + 1):
        store = make()
        timed = TimedReads(store)
        try:
            t = time.perf_counter()
            found = find(timed, MONTH, card, cfg)  # type: ignore[arg-type]
            runs.append(time.perf_counter() - t)
            reads.append(timed.reads)
        finally:
            store.close()
    kinds: dict[str, int] = {}
    for f in found:
        kinds[f.kind] = kinds.get(f.kind, 0) + 1
    return {
        "cold_s": runs[0],
        "median_s": statistics.median(runs[1:]) if repeat else runs[0],
        "reads_s": [round(x, 3) for x in reads[-1]],
        "findings": len(found),
        "kinds": kinds,
        "savings_usd": round(sum(f.monthly_savings_usd for f in found), 2),
    }


def main(argv: list[str] | None = None) -> list[Row]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--gpus", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3, help="warm runs (median)")
    ap.add_argument("--postgres-url", default=os.environ.get("GPULEDGER_BENCH_POSTGRES_URL"))
    ap.add_argument("--load", choices=("upsert", "copy"), default="upsert")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="with --load copy and --postgres-url: keep the database for next time",
    )
    ap.add_argument("--backends", default="postgres,sqlite")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)  # fmt: skip
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not backends or not set(backends) <= {"postgres", "sqlite"} or args.gpus < 1:
        ap.error("--backends takes postgres and/or sqlite; --gpus a positive integer")
    if args.reuse and (args.load != "copy" or not args.postgres_url):
        ap.error("--reuse needs --load copy and --postgres-url")

    from gpuledger.chargeback.ledger.store.postgres import PostgresLedgerStore

    wall = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="gpuledger-bench-findings-"))
    sqlite_path = tmp / "ledger.db"
    server = _Server(args.postgres_url) if "postgres" in backends else None
    db_name = f"bench_findings_{args.gpus}"
    results: dict[str, Any] = {}
    url = ""
    try:
        stores: dict[str, Any] = {}
        loads: dict[str, str] = {}
        if "sqlite" in backends:
            stores["sqlite"] = SqliteLedgerStore(sqlite_path)
        if server is not None:
            if args.load == "copy":
                url, copied = _load_postgres_copy(server, db_name, args.gpus, args.reuse)
                loads["postgres"] = "copy" if copied else "copy (reused)"
            else:
                url = server.database(db_name)
                stores["postgres"] = PostgresLedgerStore(url, statement_timeout_ms=600_000)
        try:
            for s in stores.values():
                s.migrate()
            took = _load_upsert(args.gpus, stores)
            loads.update({k: f"upsert {v:.0f} s" for k, v in took.items()})
        finally:
            for s in stores.values():
                s.close()
        if url:
            _pg_admin(url, "VACUUM ANALYZE")
        makers: dict[str, Callable[[], Any]] = {
            "sqlite": lambda: SqliteLedgerStore(sqlite_path),
            "postgres": lambda: PostgresLedgerStore(url, statement_timeout_ms=600_000),
        }
        for b in backends:
            results[b] = {"load": loads.get(b, "")} | _time(makers[b], args.repeat)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if server is not None:
            if not (args.load == "copy" and args.reuse):
                _pg_admin(server.url, f'DROP DATABASE IF EXISTS "{db_name}"')
            server.close()

    print(f"== findings ({MONTH.label}, 744 h, {args.gpus:,} GPUs, default card) ==")
    print(
        "| backend | cold | median | reads: usage_and_peaks() per hour, usage() per GPU "
        "| findings | kinds "
        "| savings | load |"
    )
    print("|---|---:|---:|---|---:|---|---:|---|")
    for b, r in results.items():
        cells = (
            b,
            f"{r['cold_s']:.2f} s",
            f"{r['median_s']:.2f} s",
            str(r["reads_s"]),
            str(r["findings"]),
            str(r["kinds"]),
            f"${r['savings_usd']:,.0f}",
            r["load"],
        )
        print("| " + " | ".join(cells) + " |")
    print(f"(bench wall time {time.perf_counter() - wall:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"gpus": args.gpus, "backends": results}, indent=2))
    cmd = command("bench.bench_findings", argv)
    peer = "postgres" if "sqlite" in results and "postgres" in results else None
    out: list[Row] = []
    for b, r in results.items():
        target = TARGETS_S[b]
        out.append(
            row(
                "findings",
                f"find() at {args.gpus:,} GPUs x 744 h, {b} (cold)",
                r["cold_s"],
                command=cmd,
                target=f"<= {target:g} s",
                passed=r["cold_s"] <= target,
                peer=(f"PostgreSQL {results['postgres']['cold_s']:.2f} s"
                      if peer and b == "sqlite" else None),
                peer_value=results["postgres"]["cold_s"] if peer and b == "sqlite" else None,
                ratio=(f"{r['cold_s'] / results['postgres']['cold_s']:.1f}x"
                       if peer and b == "sqlite" else None),
            )
        )  # fmt: skip
    return out


if __name__ == "__main__":
    sys.exit(0 if all(r["pass"] is not False for r in main()) else 1)
