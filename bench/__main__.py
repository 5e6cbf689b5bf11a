"""``python -m bench`` (``make bench``): every benchmark, each printing its figure and target."""

from __future__ import annotations

import sys

from bench import bench_accumulator, bench_agent, bench_ledger, bench_parser, bench_report


def main() -> int:
    print("== exposition parser vs prometheus_client (same run) ==")
    bench_parser.main([])
    print()
    print("== agent: /metrics latency, CPU per cycle, steady RSS ==")
    bench_agent.main(["--latency-gpus", "180"])
    print()
    print("== ledger: cost per cycle ==")
    bench_accumulator.main([])
    print()
    print("== ledger store: rows and bytes per node-month, month query at 1,000 GPUs ==")
    bench_ledger.main([])
    print()
    print("== monthly report: build + write at 10, 100 and 1,000 GPUs, SQLite and PostgreSQL ==")
    bench_report.main([])
    return 0


if __name__ == "__main__":
    sys.exit(main())
