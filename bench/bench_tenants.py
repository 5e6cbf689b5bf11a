"""Monthly report with shared services split among many tenants, on PostgreSQL (and SQLite).

Run from the repository root:  python -m bench.bench_tenants [--tenants 1000]
                                   [--services 20] [--per-service 100] [--repeat 3]
                                   [--sqlite] [--postgres-url URL]

A 31-day month (2026-10, 744 hours) of ``--services`` shared LLM services, each holding
two H100s on a node of its own, is written through the store's own ``upsert``,
``upsert_tokens``, ``upsert_engine_time`` and ``upsert_tenant_tokens``. ``--tenants``
tenants call them, ``--per-service`` distinct callers per service (so every tenant
calls ``per-service × S / tenants`` services: 2 at the defaults), and every tenant of a
service sends tokens every hour — the worst case, one ledger row per (hour, service,
tenant): 744 × S × per-service rows (1.49 M at the defaults). Two hours of every day
have no engine seconds (the fixed-ratio fallback) and some traffic reaches the engine
without a tenant.

The figure is the wall time of ``build_report()`` on the freshly loaded store (the
first, cold run, then the median of ``--repeat``), with the tenant step timed apart,
held to issue 14's target: ≤ 10 s on PostgreSQL for 1,000 tenants over 20 shared
services. Loading is setup and is reported apart. Each service's tenant lines are
checked to add up to its line.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.bench_ledger import _Server
from bench.results import Row, command, row
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.chargeback.ledger.store.sqlite import SqliteLedgerStore
from gpuledger.chargeback.ledger.tables import (
    CoverageRow,
    EngineTimeRow,
    TenantTokenRow,
    TokenRow,
    UsageRow,
)
from gpuledger.chargeback.report.build import build_report
from gpuledger.chargeback.report.model import Month, Report
from gpuledger.chargeback.report.ratecard import load_rate_card

MONTH = Month(2026, 10)
START = int(MONTH.start.timestamp())
HOURS = MONTH.hours
H100 = "NVIDIA H100 80GB HBM3"
MODEL = "meta-llama/Llama-3.1-70B-Instruct"
TARGET_S = 10.0


def _callers(tenants: int, services: int, per_service: int) -> list[list[str]]:
    """Each service's tenants: service s is called by tenants s·P … s·P + P − 1 (mod N),
    so with S·P > N every tenant calls several services, never one twice."""
    return [
        [f"tenant-{(s * per_service + k) % tenants:04d}" for k in range(per_service)]
        for s in range(services)
    ]


def load(store: AuditableLedgerStore, callers: list[list[str]]) -> int:
    """The month into ``store``, a day at a time; returns the tenant rows written."""
    written = 0
    for day in range(HOURS // 24):
        usage: list[UsageRow] = []
        coverage: list[CoverageRow] = []
        tokens: list[TokenRow] = []
        engine: list[EngineTimeRow] = []
        tenant_rows: list[TenantTokenRow] = []
        for h in range(day * 24, day * 24 + 24):
            hs = START + 3600 * h
            busy = 1800.0 + 1500.0 * ((h % 24) / 23)
            for s, names in enumerate(callers):
                node, svc = f"node-{s:02d}", f"svc-{s:02d}"
                prompt = generation = 0.0
                for k, tenant in enumerate(names):
                    p = 1000.0 * (1 + (k * 7 + h) % 13)
                    g = 200.0 * (1 + (k * 3 + h) % 11)
                    prompt += p
                    generation += g
                    tenant_rows.append(
                        TenantTokenRow(hs, "gw", "llm", svc, MODEL, tenant, 3.0, p, p / 4, g)
                    )
                for gpu in ("g0", "g1"):
                    usage.append(UsageRow(hs, node, gpu, "llm", svc, H100, "", 3600.0, busy, 2.0e6))
                    coverage.append(CoverageRow(hs, node, gpu, H100, 3600.0))
                tokens.append(
                    TokenRow(hs, node, "llm", svc, MODEL, prompt * 1.03, generation * 1.03, 12, 16)
                )
                if h % 24 not in (3, 4):  # an older engine: no prefill/decode histograms
                    prefill, decode = prompt * 3e-4, generation * 0.02
                    engine.append(
                        EngineTimeRow(
                            hs,
                            node,
                            "llm",
                            svc,
                            MODEL,
                            prefill,
                            decode,
                            300.0,
                            300.0,
                            prompt,
                            prompt / 4,
                        )
                    )
        store.upsert(usage, coverage)
        store.upsert_tokens(tokens)
        store.upsert_engine_time(engine)
        store.upsert_tenant_tokens(tenant_rows)
        written += len(tenant_rows)
    return written


def _timed(store: AuditableLedgerStore) -> tuple[float, float, Report]:
    """Wall time of build_report and of its tenant step."""
    marks: list[tuple[str, float]] = []
    t0 = time.perf_counter()
    report = build_report(
        store,
        load_rate_card(),
        MONTH,
        progress=lambda what: marks.append((what, time.perf_counter())),
    )
    total = time.perf_counter() - t0
    names = [m[0] for m in marks] + ["end"]
    stamps = [m[1] for m in marks] + [t0 + total]
    tenant = next(
        stamps[i + 1] - stamps[i] for i, n in enumerate(names[:-1]) if n.startswith("tenants")
    )
    return total, tenant, report


def _check(report: Report, services: int, per_service: int) -> None:
    shared = [line for line in report.lines if line.tenants]
    assert len(shared) == services, len(shared)
    for line in shared:
        named = [t for t in line.tenants if t.kind == "tenant"]
        assert len(named) == per_service, (line.label, len(named))
        alloc = sum(t.allocated_gpu_hours for t in line.tenants)
        assert abs(alloc - line.allocated_gpu_hours) <= 1e-9 * line.allocated_gpu_hours
        cost = sum(t.total_cost_usd or 0.0 for t in line.tenants)
        assert abs(cost - (line.total_cost_usd or 0.0)) <= 1e-9 * (line.total_cost_usd or 1.0)


def _measure(
    name: str, open_store: Callable[[], AuditableLedgerStore], args: argparse.Namespace
) -> dict[str, Any]:
    callers = _callers(args.tenants, args.services, args.per_service)
    with open_store() as store:
        store.migrate()
        t0 = time.perf_counter()
        rows = load(store, callers)
        loaded = time.perf_counter() - t0
    if name == "postgres":
        import psycopg

        with psycopg.connect(args._pg_url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
    runs: list[float] = []
    tenant_steps: list[float] = []
    with open_store() as store:
        for _ in range(1 + args.repeat):
            total, tenant, report = _timed(store)
            runs.append(total)
            tenant_steps.append(tenant)
    _check(report, args.services, args.per_service)
    out = {
        "store": name,
        "tenant_rows": rows,
        "load_s": loaded,
        "cold_s": runs[0],
        "median_s": statistics.median(runs[1:]) if len(runs) > 1 else runs[0],
        "tenant_step_s": statistics.median(tenant_steps[1:] or tenant_steps),
    }
    print(
        f"  {name:8s} {rows:>9,d} tenant rows (loaded in {loaded:,.0f} s): build_report "
        f"cold {out['cold_s']:.2f} s, median {out['median_s']:.2f} s "
        f"(tenant split {out['tenant_step_s']:.2f} s)",
        flush=True,
    )
    return out


def main(argv: list[str] | None = None) -> list[Row]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--tenants", type=int, default=1000)
    ap.add_argument("--services", type=int, default=20)
    ap.add_argument("--per-service", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sqlite", action="store_true", help="also measure SQLite")
    ap.add_argument("--postgres-url", help="an existing server (default: embedded)")
    args = ap.parse_args(argv)
    print(
        f"tenant report: {args.tenants} tenants over {args.services} shared services, "
        f"{args.per_service} callers each, {HOURS} h",
        flush=True,
    )
    results: list[dict[str, Any]] = []
    server = _Server(args.postgres_url)
    try:
        args._pg_url = server.database("gpuledger_bench_tenants")
        from gpuledger.chargeback.ledger.store.postgres import PostgresLedgerStore

        results.append(_measure("postgres", lambda: PostgresLedgerStore(args._pg_url), args))
    finally:
        server.close()
    if args.sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "ledger.db"
            results.append(_measure("sqlite", lambda: SqliteLedgerStore(path), args))
    cmd = command("bench.bench_tenants", argv)
    out: list[Row] = []
    for r in results:
        what = (
            f"tenant report ({r['store']}): {args.tenants} tenants, {args.services} services, "
            f"{r['tenant_rows']:,} tenant rows"
        )
        target = f"≤ {TARGET_S:.0f} s" if r["store"] == "postgres" else None
        passed = r["median_s"] <= TARGET_S if r["store"] == "postgres" else None
        out.append(row(what, f"build_report median {r['median_s']:.2f} s", r["median_s"],
                       target=target, passed=passed, command=cmd))  # fmt: skip
        out.append(row(what, f"build_report cold {r['cold_s']:.2f} s", r["cold_s"], command=cmd))
    return out


if __name__ == "__main__":
    main()
