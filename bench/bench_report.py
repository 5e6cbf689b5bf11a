"""Monthly chargeback report on a fleet-month ledger: ``build_report`` + ``write_report``
on SQLite and on PostgreSQL, at several fleet sizes.

Run from the repository root:  python -m bench.bench_report [--sizes 10,100,1000]
                                   [--repeat 3] [--postgres-url URL] [--json FILE]
                                   [--explain] [--load upsert|copy]
                                   [--backends postgres,sqlite] [--reuse]

At 10,000 GPUs (issue 16): ``--sizes 10000 --load copy --backends postgres --reuse
--postgres-url URL`` loads PostgreSQL with COPY (bench/report_copy.py: ~25 minutes here
instead of ~75 through upsert) into a database that the next run with ``--reuse`` finds
loaded; the output names the loader of every figure.

For each size (``--sizes``, GPUs; 8 per node) a 31-day month (2026-10, 744 hours) is
generated a day at a time and written through each store's own ``upsert``,
``upsert_tokens`` and ``upsert_probes`` (``--load upsert``, the default; ``--load copy``
writes PostgreSQL's tables with COPY instead) into a fresh SQLite file and a fresh PostgreSQL
database (one embedded PostgreSQL 18 server for the whole run, as in ``bench_ledger``;
``VACUUM ANALYZE`` afterwards, as autovacuum would have done during the month):

- usage: 5 owner rows per GPU-hour (4 services + ``__idle__``, 3600 s in all); each node
  runs 6 of 30 services (12 of them vLLM-served LLMs) in 6 namespaces; three GPU models
  from the default rate card (H100 80GB HBM3, A100-SXM4-80GB, L40S), one per node;
- coverage: 3600 s per GPU-hour;
- tokens: one row per (hour, node, LLM service, served model);
- probes: one per (node, LLM service) every 5 minutes, with latencies and verdicts
  (2.5 % fail; one service's engine disagrees with its probes).

At 1,000 GPUs that is 3.72 M usage + 744 k coverage rows, ~0.28 M token rows and ~2.65 M
probe records. Loading is setup and is reported apart. The figure is the wall time of
``build_report()`` (the first, cold run on a freshly opened store, then the median of
``--repeat`` runs) and of ``write_report()`` (csv and json always; FOCUS and HTML when
their modules import). Each store call inside ``build_report`` is timed through a proxy,
so the per-query breakdown shows where the time goes, and so is each step the builder
reports through ``progress``. Targets (the issue): at 1,000 GPUs
PostgreSQL ≤ 30 s and SQLite ≤ 60 s for build + write. ``--explain`` prints the plans of
the report's queries at the largest size (EXPLAIN ANALYZE / EXPLAIN QUERY PLAN).

The SQLite and PostgreSQL stores are used as they are. This bench found the two probe
queries that dominated (docs/performance.md); their fixes (ledger schema v4 and
``percentile_disc``) are in the stores now. ``make bench`` runs it with the default sizes.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from bench import report_copy
from bench.bench_ledger import MODELS, _Server
from bench.results import Row, command, row
from gpuledger.chargeback.attribution.claims import IDLE
from gpuledger.chargeback.ledger.store.sqlite import SqliteLedgerStore
from gpuledger.chargeback.ledger.tables import CoverageRow, ProbeRecord, TokenRow, UsageRow
from gpuledger.chargeback.report.build import build_report
from gpuledger.chargeback.report.model import Month, Report
from gpuledger.chargeback.report.ratecard import RateCard, load_rate_card
from gpuledger.chargeback.report.writers import files as report_files
from gpuledger.chargeback.report.writers.csv_json import lines_csv, report_json
from gpuledger.chargeback.report.writers.files import Format, write_report

MONTH = Month(2026, 10)
MONTH_START = int(MONTH.start.timestamp())
HOURS = MONTH.hours  # 744
DAYS = HOURS // 24
NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)  # the month is complete
GPUS_PER_NODE = 8
TARGETS_S = {"postgres": 30.0, "sqlite": 60.0}
DEFAULT_SIZES = (10, 100, 1000)

NAMESPACES = ("chat", "search", "code", "ml-train", "batch", "research")
N_SERVICES = 30
N_LLM = 12  # services 0..11 are vLLM-served
LLM_MODELS = (
    "meta-llama/Llama-3.1-8B-Instruct",
    "meta-llama/Llama-3.1-70B-Instruct",
    "mistralai/Mistral-7B-Instruct-v0.3",
    "mistralai/Mixtral-8x7B-Instruct-v0.1",
)
SERVICES_PER_NODE = 6
PERM = tuple((i * 7) % N_SERVICES for i in range(N_SERVICES))  # gcd(7, 30) = 1
SHARES_S = (1260.0, 900.0, 540.0, 360.0)  # + 540 s idle = 3600 s per GPU-hour
PROBE_EVERY_S = 300
DISAGREEING_SERVICE = 3  # its engine's TTFT histogram disagrees with 10 % of probes


# -- the fleet ------------------------------------------------------------------------------


def service(i: int) -> tuple[str, str]:
    """Service ``i``'s (namespace, name)."""
    kind = "llm" if i < N_LLM else "job"
    return NAMESPACES[i % len(NAMESPACES)], f"{kind}-{i:02d}"


def served_models(i: int) -> tuple[str, ...]:
    """The models LLM service ``i`` serves (every fourth serves two); () for a non-LLM."""
    if i >= N_LLM:
        return ()
    first = LLM_MODELS[i % len(LLM_MODELS)]
    if i % 4 == 3:
        return (first, LLM_MODELS[(i + 1) % len(LLM_MODELS)])
    return (first,)


def node_services(n: int) -> list[int]:
    """The 6 services node ``n`` runs: a window of a fixed permutation, so 30 nodes cover
    all 30 services and neighbouring nodes overlap."""
    return [PERM[(n + j) % N_SERVICES] for j in range(SERVICES_PER_NODE)]


@dataclass(slots=True)
class DayBatch:
    usage: list[Any] = field(default_factory=list)
    coverage: list[Any] = field(default_factory=list)
    tokens: list[Any] = field(default_factory=list)
    probes: list[Any] = field(default_factory=list)


def _probe(hour: int, slot: int, n: int, node: str, svc: int, model: str) -> tuple[Any, ...]:
    """A probe record's values in ``ProbeRecord`` field order."""
    ns, name = service(svc)
    seq = hour // 3600 * 12 + slot
    started = float(hour + slot * PROBE_EVERY_S + (n * 7 + svc) % 60) + 0.25
    endpoint = f"http://10.{n // 250}.{n % 250}.{svc + 10}:8000"
    if (seq + n + svc) % 40 == 7:  # 2.5 % fail
        return (started, node, endpoint, ns, name, model, False, "timeout",
                None, None, None, None, None, None, None, None, None)  # fmt: skip
    v = ((seq * 131 + n * 17 + svc * 29) % 1000) / 1000.0
    ttft = 0.025 + 0.05 * v
    tpot = 0.008 + 0.01 * ((v * 7.0) % 1.0)
    agrees = not (svc == DISAGREEING_SERVICE and seq % 10 == 0)
    return (
        started, node, endpoint, ns, name, model, True, None, ttft, tpot, ttft + 16 * tpot,
        1.0 / tpot, 24, 16, True, True, agrees,
    )  # fmt: skip


def fleet_day_values(gpus: int, day: int, stamp: Callable[[int], Any] = int) -> DayBatch:
    """Day ``day`` (24 hourly buckets) of a ``gpus``-GPU fleet, each row as the tuple of
    its ledger row's fields (``UsageRow``, ``CoverageRow``, ``TokenRow``,
    ``ProbeRecord``), the hour as ``stamp(unix seconds)``. The one definition of the
    month: :func:`fleet_day` wraps these tuples for the upsert path, the COPY loader
    (bench/report_copy.py) writes them as they are."""
    out = DayBatch()
    usage, coverage, tokens, probes = out.usage, out.coverage, out.tokens, out.probes
    nodes = (gpus + GPUS_PER_NODE - 1) // GPUS_PER_NODE
    names = [service(i) for i in range(N_SERVICES)]
    for h in range(day * 24, day * 24 + 24):
        hour = MONTH_START + 3600 * h
        hour_v = stamp(hour)
        for n in range(nodes):
            node = f"node-{n:04d}"
            model = MODELS[n % len(MODELS)]
            pool = node_services(n)
            for g in range(n * GPUS_PER_NODE, min(gpus, (n + 1) * GPUS_PER_NODE)):
                uuid = f"GPU-{g:06d}-5f1c3a0e-8d2b-4c6f"
                d = 36.0 * ((g + h) % 5)  # the first owner's share moves with the hour
                for k, base in enumerate(SHARES_S):
                    alloc = base + d if k == 0 else base
                    ns, name = names[pool[(g + k) % SERVICES_PER_NODE]]
                    usage.append((hour_v, node, uuid, ns, name, model, "", alloc,
                                  alloc * (0.4 + 0.1 * k), alloc * 350.0,
                                  (24.0 + 8.0 * k) * 2**30))  # fmt: skip
                idle = 540.0 - d  # __idle__ holds no memory: its peak is NULL
                usage.append((hour_v, node, uuid, "", IDLE, model, "", idle, 0.0, idle * 70.0,
                              None))  # fmt: skip
                coverage.append((hour_v, node, uuid, model, 3600.0))
            for svc in pool:
                models = served_models(svc)
                if not models:
                    continue
                ns, name = names[svc]
                for m, model_name in enumerate(models):
                    scale = 1.0 + ((h + n + svc + m) % 7) / 10.0
                    n_probes = 12.0 if m == 0 else 0.0
                    tokens.append((hour_v, node, ns, name, model_name, 4.0e6 * scale,
                                   1.1e6 * scale, 24.0 * n_probes, 16.0 * n_probes))  # fmt: skip
                probes.extend(_probe(hour, slot, n, node, svc, models[0]) for slot in range(12))
    return out


def fleet_day(gpus: int, day: int) -> DayBatch:
    """Day ``day`` of a ``gpus``-GPU fleet as ledger rows (for the stores' upserts)."""
    v = fleet_day_values(gpus, day)
    return DayBatch(
        usage=[UsageRow(*t) for t in v.usage],
        coverage=[CoverageRow(*t) for t in v.coverage],
        tokens=[TokenRow(*t) for t in v.tokens],
        probes=[ProbeRecord(*t) for t in v.probes],
    )


# -- timing ---------------------------------------------------------------------------------


class TimedStore:
    """Forwards every call to ``store`` and records (label, seconds) per call; the
    ``usage`` calls of the trend (other months, grouped by service, gpu_model) are
    labelled apart from the month's."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.calls: list[tuple[str, float]] = []

    @staticmethod
    def label(name: str, args: Sequence[object]) -> str:
        if name == "usage" and len(args) >= 3:
            keys = ",".join(cast(Sequence[str], args[2]))
            start = cast(datetime, args[0])
            trend = "" if start == MONTH.start else " (trend)"
            return f"usage({keys}){trend}"
        if name == "tokens" and len(args) >= 3:
            return f"tokens({','.join(cast(Sequence[str], args[2]))})"
        return name

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                self.calls.append((self.label(name, args), time.perf_counter() - t))

        return timed


_PEAK_MIB = [0.0]  # the process's peak RSS before the last reset


def _rss_reset() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process, where Linux allows it
    (the peak so far is kept in ``_PEAK_MIB``)."""
    _PEAK_MIB[0] = max(_PEAK_MIB[0], _rss_peak_mib())
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _rss_now_mib() -> float:
    """VmRSS of this process, MiB (0 where /proc is not there)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _rss_peak_mib() -> float:
    """VmHWM (peak RSS since the last reset) of this process, MiB; else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _renderers() -> tuple[list[Format], dict[Format, Callable[[Report], str]], list[str]]:
    """The formats that can be written now: csv and json always; focus and html when
    their modules import (they are written in parallel with this bench)."""
    formats: list[Format] = ["csv", "json"]
    renderers: dict[Format, Callable[[Report], str]] = {"csv": lines_csv, "json": report_json}
    missing: list[str] = []
    for fmt, module, func in (
        ("focus", "gpuledger.chargeback.report.writers.focus", "focus_csv"),
        ("html", "gpuledger.chargeback.report.writers.html", "render_html"),
    ):
        try:
            renderers[cast(Format, fmt)] = getattr(importlib.import_module(module), func)
        except Exception as err:  # a module another engineer has half-written
            missing.append(f"{fmt} ({type(err).__name__}: {err})")
            continue
        formats.append(cast(Format, fmt))
    return formats, renderers, missing


# -- loading, timing, checking --------------------------------------------------------------


@dataclass(slots=True)
class Load:
    usage_rows: int = 0
    coverage_rows: int = 0
    token_rows: int = 0
    probe_rows: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))


def _load(gpus: int, stores: dict[str, Any]) -> dict[str, Load]:
    """The month through each store's own upsert path, a day at a time."""
    loads = {backend: Load() for backend in stores}
    gen_s = 0.0
    for day in range(DAYS):
        t = time.perf_counter()
        b = fleet_day(gpus, day)
        gen_s += time.perf_counter() - t
        for backend, store in stores.items():
            ld = loads[backend]
            t0 = time.perf_counter()
            store.upsert(b.usage, b.coverage)
            t1 = time.perf_counter()
            store.upsert_tokens(b.tokens)
            t2 = time.perf_counter()
            store.upsert_probes(b.probes)
            t3 = time.perf_counter()
            ld.seconds["usage+coverage"] += t1 - t0
            ld.seconds["tokens"] += t2 - t1
            ld.seconds["probes"] += t3 - t2
            ld.usage_rows += len(b.usage)
            ld.coverage_rows += len(b.coverage)
            ld.token_rows += len(b.tokens)
            ld.probe_rows += len(b.probes)
    for ld in loads.values():
        ld.seconds["generate"] = gen_s
    return loads


def _pg_admin(url: str, *statements: str) -> list[Any]:
    import psycopg

    out: list[Any] = []
    with psycopg.connect(url, autocommit=True) as conn:
        for stmt in statements:
            cur = conn.execute(stmt.encode())
            out.append(cur.fetchone() if cur.description else None)
    return out


def _time_report(
    make_store: Callable[[], Any], card: RateCard, repeat: int, out_dir: Path
) -> dict[str, Any]:
    """Cold run on a fresh store, then ``repeat`` warm runs; then ``write_report`` per
    format ``repeat`` times."""
    store = make_store()
    timed = TimedStore(store)
    label = repr(store)
    try:
        _rss_reset()
        rss_start = _rss_now_mib()
        runs: list[float] = []
        residuals: list[float] = []  # build time outside the store: Python
        breakdowns: list[dict[str, tuple[int, float]]] = []
        step_runs: list[dict[str, float]] = []
        report: Report | None = None
        marks: list[tuple[str, float]] = []  # build_report's progress: (step, start)

        def mark(what: str) -> None:
            marks.append((what, time.perf_counter()))

        for _ in range(repeat + 1):
            timed.calls.clear()
            marks.clear()
            t = time.perf_counter()
            report = build_report(
                timed, card, MONTH, now=NOW, store_label=label,
                progress=mark,
            )  # fmt: skip
            runs.append(time.perf_counter() - t)
            step_runs.append(_steps(marks, t + runs[-1]))
            residuals.append(runs[-1] - sum(secs for _, secs in timed.calls))
            per: dict[str, tuple[int, float]] = {}
            for name, secs in timed.calls:
                n, s = per.get(name, (0, 0.0))
                per[name] = (n + 1, s + secs)
            breakdowns.append(per)
        build_rss = _rss_peak_mib()
    finally:
        store.close()
    assert report is not None
    warm = runs[1:] or runs
    warm_bd = breakdowns[1:] or breakdowns
    breakdown = {
        name: {
            "calls": warm_bd[0][name][0],
            "median_s": statistics.median(bd[name][1] for bd in warm_bd),
            "cold_s": breakdowns[0][name][1],
        }
        for name in warm_bd[0]
    }
    steps = {
        name: statistics.median(run.get(name, 0.0) for run in (step_runs[1:] or step_runs))
        for name in step_runs[0]
    }
    formats, renderers, missing = _renderers()
    for optional in [f for f in formats if f in ("focus", "html")]:
        try:
            renderers[optional](report)  # a module under construction may import, yet fail
        except Exception as err:
            formats.remove(optional)
            missing.append(f"{optional} ({type(err).__name__}: {str(err)[:80]})")
    saved = report_files._renderers
    report_files._renderers = lambda: renderers  # write_report imports focus and html
    write_s: dict[str, float] = {}
    try:
        for fmt in formats:
            times: list[float] = []
            for _ in range(repeat):
                t = time.perf_counter()
                write_report(report, out_dir, [fmt])
                times.append(time.perf_counter() - t)
            write_s[fmt] = statistics.median(times)
    finally:
        report_files._renderers = saved
    build_median = statistics.median(warm)
    return {
        "build_cold_s": runs[0],
        "build_median_s": build_median,
        "build_runs_s": runs,
        "write_s": sum(write_s.values()),
        "write_per_format_s": write_s,
        "formats_missing": missing,
        "total_s": build_median + sum(write_s.values()),
        "lines": len(report.lines),
        "coverage_nodes": len(report.coverage),
        "allocated_gpu_hours": report.totals.allocated_gpu_hours,
        "total_cost_usd": report.totals.total_cost_usd,
        "line_costs": {line.label: line.total_cost_usd for line in report.lines},
        "breakdown": breakdown,
        "steps_s": steps,
        "python_s": statistics.median(residuals[1:] or residuals),
        "build_peak_rss_mib": build_rss,
        "build_start_rss_mib": rss_start,
        "_report": report,
    }


def _steps(marks: Sequence[tuple[str, float]], end: float) -> dict[str, float]:
    """Seconds per step of ``build_report`` from its ``progress`` calls: each step lasts
    until the next one starts (the last until the build returned); the trend's months
    are summed as one step."""
    out: dict[str, float] = defaultdict(float)
    for (what, t), (_, t_next) in zip(marks, [*marks[1:], ("", end)], strict=True):
        out["trend (earlier months)" if what.startswith("trend:") else what] += t_next - t
    return dict(out)


Captured = tuple[str, Any, Sequence[object], dict[str, Any]]


def _capture_queries(store: Any) -> list[Captured]:
    """Record the (what, SQL, params, options) of every query ``store`` runs (a bench-side
    patch of the instance's ``_query``; both stores funnel their reads through it)."""
    seen: list[Captured] = []
    inner = store._query

    def recording(what: str, query: Any, params: Sequence[object], **kw: Any) -> Any:
        seen.append((what, query, list(params), kw))
        return inner(what, query, params, **kw)

    store._query = recording
    return seen


def explain(sqlite_path: Path | None, pg_url: str, card: RateCard) -> dict[str, dict[str, str]]:
    """The plans of the month's queries: SQLite EXPLAIN QUERY PLAN (when ``sqlite_path``),
    PostgreSQL EXPLAIN (ANALYZE, BUFFERS). The trend's (empty) months are left out."""
    from psycopg import sql

    from gpuledger.chargeback.ledger.store.postgres import PostgresLedgerStore

    plans: dict[str, dict[str, str]] = {"postgres": {}}
    if sqlite_path is not None:
        plans["sqlite"] = {}
        sq = SqliteLedgerStore(sqlite_path)
        seen = _capture_queries(sq)
        build_report(sq, card, MONTH, now=NOW)
        for what, text, params, _ in seen:
            if what in plans["sqlite"]:
                continue  # the trend's usage queries: same statement, other months
            rows = sq._conn.execute("EXPLAIN QUERY PLAN " + str(text), params).fetchall()
            plans["sqlite"][what] = "\n".join(f"{r[0]:>3} {r[1]:>3} {r[3]}" for r in rows)
        sq.close()

    from gpuledger.chargeback.ledger.store import postgres_probes

    pg = PostgresLedgerStore(pg_url, statement_timeout_ms=600_000)
    seen = _capture_queries(pg)
    build_report(pg, card, MONTH, now=NOW)
    trace: list[tuple[str, Any, list[object]]] = []  # probe_latency's own transaction
    postgres_probes.latency(pg._connection, MONTH.start, MONTH.end, 0.99, None, trace)
    seen += [(what, stmt, params, {}) for what, stmt, params in trace]
    pg.close()
    import psycopg

    with psycopg.connect(pg_url) as conn:
        for what, query, params, kw in seen:
            if what in plans["postgres"]:
                continue
            with conn.transaction():
                if kw.get("hash_aggregate"):  # as the store runs it
                    conn.execute("SET LOCAL enable_sort = off")
                stmt = sql.SQL("EXPLAIN (ANALYZE, BUFFERS) {}").format(query)
                rows = conn.execute(stmt, params).fetchall()
            plans["postgres"][what] = "\n".join(str(r[0]) for r in rows)
    return plans


def _consistent(
    reports: dict[str, Report], gpu_hours: float, costs: dict[str, dict[str, float | None]]
) -> bool:
    """Every backend's report bills every generated GPU-hour, and all backends price every
    line alike (to 1e-6 relative)."""
    if any(
        abs(r.totals.allocated_gpu_hours - gpu_hours) > 1e-9 * gpu_hours for r in reports.values()
    ):
        return False
    first, *others = costs.values()
    for other in others:
        if first.keys() != other.keys():
            return False
        for k, a in first.items():
            b = other[k]
            if (a is None) != (b is None):
                return False
            if a is not None and b is not None and abs(a - b) > 1e-6 * max(1.0, abs(a)):
                return False
    return True


def sqlite_live_bytes(path: Path) -> int:
    """Bytes of the SQLite database's pages in use (WAL included, free pages not)."""
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        (free,) = conn.execute("PRAGMA freelist_count").fetchone()
        (size,) = conn.execute("PRAGMA page_size").fetchone()
    finally:
        conn.close()
    return int((pages - free) * size)


# -- one size -------------------------------------------------------------------------------


def _load_postgres_copy(
    server: _Server, db_name: str, gpus: int, reuse: bool
) -> tuple[str, Load | None]:
    """The PostgreSQL database of ``gpus`` GPUs through ``COPY`` (bench/report_copy.py);
    with ``reuse`` a database whose load finished earlier is kept as it is (the Load is
    None then)."""
    from gpuledger.chargeback.ledger.store.postgres import PostgresLedgerStore

    url = server.database(db_name, reuse=reuse)
    pg = PostgresLedgerStore(url, statement_timeout_ms=600_000)
    try:
        pg.migrate()  # a reused database gets the migrations added since its load
    finally:
        pg.close()
    done = report_copy.marker(gpus, MONTH.label)
    if reuse and report_copy.loaded(url, done):
        return url, None
    days = (fleet_day_values(gpus, d, report_copy.timestamptz) for d in range(DAYS))
    got = report_copy.copy_load(url, MONTH_START, days)
    report_copy.mark_loaded(url, db_name, done)
    ld = Load(
        usage_rows=got["rows"]["usage"],
        coverage_rows=got["rows"]["coverage"],
        token_rows=got["rows"]["tokens"],
        probe_rows=got["rows"]["probes"],
    )
    ld.seconds.update(got["seconds"])
    return url, ld


def _counts(url: str) -> Load:
    """The row counts of a reused database (its load time is unknown: not timed here)."""
    (r,) = _pg_admin(
        url,
        "SELECT (SELECT count(*) FROM ledger_usage), (SELECT count(*) FROM ledger_coverage),"
        " (SELECT count(*) FROM ledger_tokens), (SELECT count(*) FROM probe_results)",
    )
    return Load(usage_rows=r[0], coverage_rows=r[1], token_rows=r[2], probe_rows=r[3])


def bench_size(
    server: _Server,
    gpus: int,
    card: RateCard,
    repeat: int,
    *,
    explain_plans: bool = False,
    loader: str = "upsert",
    backends: Sequence[str] = ("postgres", "sqlite"),
    reuse: bool = False,
) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """Load one fleet size into the backends, time the report on each; optionally the
    query plans. ``loader`` "copy" fills PostgreSQL with COPY (SQLite, when asked for,
    still goes through its upsert); ``reuse`` keeps a COPY-loaded database."""

    from gpuledger.chargeback.ledger.store.postgres import PostgresLedgerStore

    tmp = Path(tempfile.mkdtemp(prefix="gpuledger-bench-report-"))
    db_name = f"bench_report_{gpus}"
    keep = loader == "copy" and reuse
    sqlite_path = tmp / "ledger.db"
    plans: dict[str, dict[str, str]] = {}
    try:
        loads: dict[str, Load] = {}
        loaders: dict[str, str] = {}
        if loader == "copy":
            url, copied = _load_postgres_copy(server, db_name, gpus, reuse)
            loads["postgres"] = copied or _counts(url)
            loaders["postgres"] = "copy" if copied else "copy (reused from an earlier run)"
            if "sqlite" in backends:
                sq = SqliteLedgerStore(sqlite_path)
                sq.migrate()
                try:
                    loads["sqlite"] = _load(gpus, {"sqlite": sq})["sqlite"]
                finally:
                    sq.close()
                loaders["sqlite"] = "upsert"
        else:
            url = server.database(db_name)
            stores: dict[str, Any] = {}
            try:
                if "sqlite" in backends:
                    stores["sqlite"] = SqliteLedgerStore(sqlite_path)
                stores["postgres"] = PostgresLedgerStore(url, statement_timeout_ms=600_000)
                for s in stores.values():
                    s.migrate()
                loads = _load(gpus, stores)
            finally:
                for s in stores.values():
                    s.close()
            t = time.perf_counter()
            _pg_admin(url, "VACUUM ANALYZE")
            loads["postgres"].seconds["vacuum analyze"] = time.perf_counter() - t
            loaders = dict.fromkeys(stores, "upsert")
        (pg_bytes,) = _pg_admin(url, "SELECT pg_database_size(current_database())")
        result: dict[str, Any] = {"gpus": gpus, "backends": {}}
        for backend, ld in loads.items():
            result["backends"][backend] = {
                "loader": loaders[backend],
                "usage_rows": ld.usage_rows,
                "coverage_rows": ld.coverage_rows,
                "token_rows": ld.token_rows,
                "probe_rows": ld.probe_rows,
                "load_s": {k: round(v, 3) for k, v in ld.seconds.items()},
                "load_total_s": sum(v for k, v in ld.seconds.items() if k != "generate"),
            }
        if "sqlite" in loads:
            result["backends"]["sqlite"]["bytes"] = sqlite_live_bytes(sqlite_path)
        result["backends"]["postgres"]["bytes"] = int(pg_bytes[0])

        out_dir = tmp / "reports"
        makers: dict[str, Callable[[], Any]] = {
            "sqlite": lambda: SqliteLedgerStore(sqlite_path),
            "postgres": lambda: PostgresLedgerStore(url, statement_timeout_ms=600_000),
        }
        reports: dict[str, Report] = {}
        for backend in loads:
            figures = _time_report(makers[backend], card, repeat, out_dir / backend)
            reports[backend] = figures.pop("_report")
            result["backends"][backend].update(figures)
        result["check_ok"] = _consistent(
            reports,
            gpus * HOURS,
            {b: result["backends"][b].pop("line_costs") for b in loads},
        )
        if explain_plans:
            plans = explain(sqlite_path if "sqlite" in loads else None, url, card)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not keep:
            _pg_admin(server.url, f'DROP DATABASE IF EXISTS "{db_name}"')
    return result, plans


# -- output ---------------------------------------------------------------------------------


def _backends(r: dict[str, Any]) -> list[str]:
    """The backends measured at one size, PostgreSQL first."""
    return [b for b in ("postgres", "sqlite") if b in r["backends"]]


def _table(results: Sequence[dict[str, Any]]) -> list[str]:
    head = (
        f"{'GPUs':>5}  {'backend':<10} {'usage rows':>11} {'lines':>5}  {'build cold':>10} "
        f"{'build med':>9} {'write':>6} {'total':>7} {'target':>7}  {'':4}  {'SQLite/PG':>9}"
    )
    out = [head, "-" * len(head)]
    for r in results:
        pg_total = r["backends"]["postgres"]["total_s"]
        for backend in _backends(r):
            b = r["backends"][backend]
            target = TARGETS_S[backend]
            ok = b["total_s"] <= target and r["check_ok"]
            ratio = f"{b['total_s'] / pg_total:.2f}x" if backend == "sqlite" else ""
            out.append(
                f"{r['gpus']:>5,}  {backend:<10} {b['usage_rows']:>11,} {b['lines']:>5}  "
                f"{b['build_cold_s']:>9.2f}s {b['build_median_s']:>8.2f}s {b['write_s']:>5.2f}s "
                f"{b['total_s']:>6.2f}s {'<= ' + format(target, '.0f') + 's':>7}  "
                f"{'PASS' if ok else 'FAIL':4}  {ratio:>9}"
            )
    return out


def _breakdown(r: dict[str, Any]) -> list[str]:
    out = [f"== where build_report's time goes at {r['gpus']:,} GPUs (median of warm runs) =="]
    for backend in _backends(r):
        b = r["backends"][backend]
        total = b["build_median_s"]
        items = sorted(b["breakdown"].items(), key=lambda kv: -kv[1]["median_s"])
        out.append(f"{backend}: build {total:.2f} s")
        for name, f in items:
            calls = f" x{f['calls']}" if f["calls"] > 1 else ""
            out.append(
                f"  {name + calls:<42} {f['median_s']:>8.3f} s  {f['median_s'] / total:>6.1%}"
                f"   (cold {f['cold_s']:.3f} s)"
            )
        out.append(
            f"  {'Python (pricing, lines, totals)':<42} {b['python_s']:>8.3f} s  "
            f"{b['python_s'] / total:>6.1%}"
        )
        out.append(f"  by build_report's steps (progress), {backend}:")
        for name, secs in b["steps_s"].items():
            out.append(f"    {name:<40} {secs:>8.3f} s  {secs / total:>6.1%}")
    return out


def _loads(results: Sequence[dict[str, Any]]) -> list[str]:
    out = [
        "== load (setup, not the figure): upsert = each store's own upsert path, "
        "copy = COPY into the store's tables (bench/report_copy.py) =="
    ]
    for r in results:
        for backend in _backends(r):
            b = r["backends"][backend]
            parts = ", ".join(f"{k} {v:.1f} s" for k, v in b["load_s"].items() if k != "generate")
            out.append(
                f"{r['gpus']:>5,} GPUs {backend:<9} by {b['loader']}: "
                f"{b['load_total_s']:>7.1f} s  ({parts}); "
                f"{b['usage_rows']:,} usage + {b['coverage_rows']:,} coverage + "
                f"{b['token_rows']:,} token + {b['probe_rows']:,} probe rows; "
                f"{b['bytes'] / 2**20:,.0f} MiB"
            )
        gen = b["load_s"].get("generate")
        if gen is not None:
            out.append(f"{'':>5}      (generating the rows: {gen:.1f} s)")
    return out


def rows(results: Sequence[dict[str, Any]], cmd: str) -> list[Row]:
    """One row per size and backend: build + write; SQLite's peer is PostgreSQL."""
    out: list[Row] = []
    for r in results:
        pg_total = r["backends"]["postgres"]["total_s"]
        for backend, label in (("postgres", "PostgreSQL"), ("sqlite", "SQLite")):
            if backend not in r["backends"]:
                continue
            b = r["backends"][backend]
            target = TARGETS_S[backend]
            figure = (
                f"{b['total_s']:.2f} s (build {b['build_median_s']:.2f} + write {b['write_s']:.2f})"
            )
            if not r["check_ok"]:
                figure += ", CHECK FAILED"
            sqlite = backend == "sqlite"
            out.append(
                row(f"monthly report, {r['gpus']:,} GPUs, {label}", figure, b["total_s"],
                    target=f"≤ {target:.0f} s", passed=b["total_s"] <= target and r["check_ok"],
                    peer=f"PostgreSQL {pg_total:.2f} s" if sqlite else None,
                    peer_value=pg_total if sqlite else None,
                    ratio=f"{b['total_s'] / pg_total:.1f}×" if sqlite else None, command=cmd)
            )  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> list[Row]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument(
        "--sizes",
        default=",".join(map(str, DEFAULT_SIZES)),
        help="fleet sizes in GPUs, comma-separated (default 10,100,1000)",
    )
    ap.add_argument("--repeat", type=int, default=3, help="warm runs per figure (median)")
    ap.add_argument("--postgres-url", default=os.environ.get("GPULEDGER_BENCH_POSTGRES_URL"))
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument(
        "--explain", action="store_true", help="print the query plans at the largest size"
    )
    ap.add_argument(
        "--load",
        choices=("upsert", "copy"),
        default="upsert",
        help="how PostgreSQL is filled: through the store's upsert (default) or with COPY "
        "straight into its tables (bench/report_copy.py; minutes instead of an hour at "
        "10,000 GPUs)",
    )
    ap.add_argument(
        "--backends",
        default="postgres,sqlite",
        help="comma-separated: postgres (always) and sqlite (default both)",
    )
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="with --load copy and --postgres-url: keep each size's database after the run "
        "and use a finished earlier load instead of loading again",
    )
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if not sizes or min(sizes) < 1 or args.repeat < 1:
        ap.error("--sizes needs positive integers and --repeat >= 1")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if "postgres" not in backends or not set(backends) <= {"postgres", "sqlite"}:
        ap.error("--backends takes postgres and optionally sqlite")
    if args.reuse and (args.load != "copy" or not args.postgres_url):
        ap.error("--reuse needs --load copy and --postgres-url (an embedded server is removed)")

    wall = time.perf_counter()
    card = load_rate_card()
    server = _Server(args.postgres_url)
    results: list[dict[str, Any]] = []
    plans: dict[str, dict[str, str]] = {}
    try:
        (settings,) = _pg_admin(
            server.url,
            "SELECT current_setting('server_version') || ', shared_buffers '"
            " || current_setting('shared_buffers') || ', work_mem '"
            " || current_setting('work_mem') || ', max_parallel_workers_per_gather '"
            " || current_setting('max_parallel_workers_per_gather')",
        )
        print(f"PostgreSQL {settings[0]}")
        for gpus in sizes:
            last = gpus == sizes[-1]
            t = time.perf_counter()
            r, size_plans = bench_size(
                server, gpus, card, args.repeat,
                explain_plans=args.explain and last, loader=args.load,
                backends=backends, reuse=args.reuse,
            )  # fmt: skip
            plans = size_plans or plans
            r["wall_s"] = time.perf_counter() - t
            results.append(r)
            medians = ", ".join(
                f"{k} {r['backends'][k]['build_median_s']:.2f} s" for k in _backends(r)
            )
            print(
                f"{gpus:,} GPUs: build median {medians} (size done in {r['wall_s']:.0f} s)",
                flush=True,
            )
    finally:
        server.close()

    months = f"{MONTH.label}, {HOURS} h"
    print()
    print(f"== monthly report ({months}, default rate card): build_report + write_report ==")
    print("\n".join(_table(results)))
    missing = results[-1]["backends"]["postgres"]["formats_missing"]
    formats = ", ".join(results[-1]["backends"]["postgres"]["write_per_format_s"])
    print(f"write: {formats}" + (f"; not timed: {'; '.join(missing)}" if missing else ""))
    if not all(r["check_ok"] for r in results):
        print("CHECK FAILED: totals differ from the generated GPU-hours or between backends")
    for r in results:
        print()
        print("\n".join(_breakdown(r)))
    print()
    print("\n".join(_loads(results)))
    for r in results:
        rss = ", ".join(
            f"{k} {r['backends'][k]['build_peak_rss_mib']:.0f} MiB "
            f"(from {r['backends'][k]['build_start_rss_mib']:.0f} MiB before the first run)"
            for k in _backends(r)
        )
        print(f"peak RSS of this process during the report runs at {r['gpus']:,} GPUs: {rss}")
    peak = max(_PEAK_MIB[0], _rss_peak_mib())
    print(f"peak RSS of this process over the whole bench: {peak:.0f} MiB")
    for backend, per in plans.items():
        for what, plan in per.items():
            print(f"\n-- {backend}: {what} --\n{plan}")
    print(f"(bench wall time {time.perf_counter() - wall:.0f} s)")
    if args.json:
        args.json.write_text(
            json.dumps({"month": MONTH.label, "sizes": results, "plans": plans}, indent=2)
        )
    return rows(results, command("bench.bench_report", argv))


if __name__ == "__main__":
    sys.exit(0 if all(r["pass"] is not False for r in main()) else 1)
