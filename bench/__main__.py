"""``python -m bench`` (``make bench``): every benchmark, then one summary table.

    python -m bench [--only NAME,...] [--quick] [--json FILE] [--markdown FILE]

Each benchmark prints its own section as it runs (the same output as running its module
alone), then returns its figures as rows (:mod:`bench.results`); the summary table at the
end has one line per figure: benchmark | figure | target | pass | peer (same run) | ratio
| command (the command that reproduces that figure alone). ``--quick`` runs smaller sizes
for a fast look (the report at 10 and 100 GPUs, shorter RSS and load windows, fewer
cycles); the default is the full set at the issue's sizes. ``--json`` writes the rows,
each benchmark's wall time and the load average around it; ``--markdown`` writes the
table as docs/performance.md shows it. The exit status is 1 only when a benchmark
crashed; a figure that misses its target is reported, not an error.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.results import Row, command, markdown, row, table


@dataclass(frozen=True)
class Bench:
    name: str
    module: str
    title: str
    full: tuple[str, ...]
    quick: tuple[str, ...]


BENCHES = (
    Bench("parser", "bench.bench_parser", "exposition parser vs prometheus_client (same run)",
          (), ("--repeats", "3")),
    Bench("agent", "bench.bench_agent", "agent: /metrics latency, CPU per cycle, steady RSS",
          ("--latency-gpus", "180"),
          ("--latency-gpus", "180", "--scrapes", "400", "--cycles", "50", "--rss-seconds", "15")),
    Bench("reference", "bench.bench_reference",
          "reference node: agent CPU per cycle and steady RSS, everything on",
          (), ("--seconds", "30", "--warmup", "5")),
    Bench("probes", "bench.bench_probes", "probe overhead on the engine (probes vs none)",
          (), ("--seconds", "8", "--repeats", "1")),
    Bench("accumulator", "bench.bench_accumulator", "ledger: cost per cycle",
          (), ("--cycles", "300")),
    Bench("vllm", "bench.bench_vllm", "vLLM collector: CPU per cycle vs prometheus_client",
          ("--cycles", "100"), ("--cycles", "20")),
    Bench("pgvector", "bench.bench_pgvector", "pgvector collector: one collection over a catalog",
          (), ("--tables", "1000", "--repeat", "1")),
    Bench("ledger", "bench.bench_ledger",
          "ledger store: rows and bytes per node-month, month query at 1,000 and 10,000 GPUs",
          ("--load", "sql"), ("--gpus", "100", "--load", "sql")),
    Bench("cluster", "bench.bench_cluster",
          "ledger: migration 12 (cluster in every key) on a fleet month, PostgreSQL",
          (), ("--gpus", "100")),
    Bench("flushers", "bench.bench_flushers",
          "ledger: 125 and 1,250 agents flushing every 30 s into one PostgreSQL, flush p99",
          (), ("--agents", "125", "--cycles", "2")),
    Bench("report", "bench.bench_report",
          "monthly report: build + write at 10, 100 and 1,000 GPUs, SQLite and PostgreSQL",
          (), ("--sizes", "10,100", "--repeat", "1")),
    Bench("findings", "bench.bench_findings",
          "findings: find() over 1,000 GPUs x 744 h, PostgreSQL and SQLite",
          (), ("--gpus", "100", "--repeat", "1")),
    Bench("budgets", "bench.bench_budgets",
          "budget refresh: 1,000 GPUs, 200 cost centers, 600 budgets, on PostgreSQL",
          (), ("--gpus", "100", "--cost-centers", "20", "--days", "5", "--repeat", "1")),
    Bench("forecast", "bench.bench_forecast",
          "forecast backtest: month-end MAPE on the simulated fleet, from 7, 14, 21 days",
          (), ("--months", "2026-10,2026-11", "--days", "14")),
    Bench("anomalies", "bench.bench_anomalies",
          "spend anomalies: hourly refresh and a month over 1,000 GPUs, PostgreSQL and SQLite",
          (), ("--gpus", "100", "--repeat", "1")),
    Bench("tenants", "bench.bench_tenants",
          "tenant report: 1,000 tenants over 20 shared services, 744 h, on PostgreSQL",
          (), ("--tenants", "100", "--services", "4", "--per-service", "25", "--repeat", "1")),
    Bench("cost_centers", "bench.bench_cost_centers",
          "cost-center read: a month at 1,000 GPUs and 200 cost centers, PostgreSQL and SQLite",
          (), ("--gpus", "100", "--cost-centers", "20", "--repeat", "2")),
    Bench("podresources", "bench.bench_podresources",
          "pod-resources List + attribution: agent CPU per cycle, 110-pod node",
          (), ("--cycles", "100")),
    Bench("meter", "bench.bench_meter",
          "metering proxy: added TTFT and latency, 200 streams, CPU and RSS (direct vs meter)",
          (), ("--streams", "50", "--requests", "200", "--pairs", "1")),
)  # fmt: skip
NAMES = tuple(b.name for b in BENCHES)


def _run(bench: Bench, argv: list[str]) -> tuple[list[Row], str | None]:
    """The benchmark's rows; a crash becomes one FAIL row and its traceback is printed."""
    try:
        module = importlib.import_module(bench.module)
        return list(module.main(argv)), None
    except (Exception, SystemExit) as exc:
        traceback.print_exc()
        error = f"{type(exc).__name__}: {exc}"
        failed = row(bench.title, f"ERROR ({error[:120]})", float("nan"), passed=False,
                     command=command(bench.module, argv))  # fmt: skip
        return [failed], error


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None,
        epilog="benchmarks, in the order they run: " + ", ".join(NAMES),
    )
    ap.add_argument("--only", help="comma-separated subset of: " + ",".join(NAMES))
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for a fast look")
    ap.add_argument("--json", type=Path, help="also write the rows and timings here")
    ap.add_argument("--markdown", type=Path, help="also write the table as Markdown here")
    args = ap.parse_args(argv)
    selected: tuple[Bench, ...] = BENCHES
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(wanted) - set(NAMES))
        if unknown:
            ap.error(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(NAMES)}")
        selected = tuple(b for b in BENCHES if b.name in wanted)

    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    started = datetime.now(UTC)
    wall = time.perf_counter()
    rows: list[Row] = []
    timings: list[dict[str, Any]] = []
    for i, bench in enumerate(selected):
        bench_argv = list(bench.quick if args.quick else bench.full)
        if i:
            print()
        print(f"== {bench.title} ==", flush=True)
        load_before = os.getloadavg()
        t = time.perf_counter()
        got, error = _run(bench, bench_argv)
        seconds = time.perf_counter() - t
        load_after = os.getloadavg()
        print(f"({bench.name}: {seconds:.0f} s; load average {load_before[0]:.2f} before, "
              f"{load_after[0]:.2f} after)", flush=True)  # fmt: skip
        rows += got
        timings.append(
            {"name": bench.name, "argv": bench_argv, "wall_s": seconds, "error": error,
             "loadavg_1m_before": load_before[0], "loadavg_1m_after": load_after[0]}
        )  # fmt: skip
    total = time.perf_counter() - wall

    mode = "quick" if args.quick else "full"
    print()
    print(f"== summary ({mode} run of {', '.join(b.name for b in selected)}; {total:.0f} s) ==")
    print(table(rows))
    print(
        f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
        f"started {started:%Y-%m-%d %H:%M} UTC; wall time {total:.0f} s"
    )
    failed = [r["benchmark"] for r in rows if r["pass"] is False]
    if failed:
        print(f"missed target: {len(failed)} figure(s): " + "; ".join(failed))
    if args.json is not None:
        doc = {
            "mode": mode,
            "started_utc": started.isoformat(timespec="seconds"),
            "wall_s": total,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "benchmarks": timings,
            "rows": rows,
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    if args.markdown is not None:
        args.markdown.write_text(markdown(rows) + "\n", encoding="utf-8")
    return 1 if any(t["error"] for t in timings) else 0


if __name__ == "__main__":
    sys.exit(main())
