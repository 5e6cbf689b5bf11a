"""Metering proxy overhead: TTFT and per-request latency with and without ``gpuledger meter``.

    python -m bench.bench_meter [--streams 200] [--requests 1000] [--pairs 3] [--tokens 16]

An OpenAI-format stand-in (tests/support/openai_standin.py: real SSE, a token every
``--token-delay`` seconds) runs in a process of its own, the meter (``gpuledger meter``,
the CLI) in another, and this process drives ``--streams`` concurrent streaming
completions, ``--requests`` per phase, alternating phases straight to the stand-in
(the peer) and through the meter, ``--pairs`` times, so drift in the machine's load
falls on both alike. The client does not ask for usage, so the meter takes its heavier
path (it asks the upstream for usage and removes that chunk again).

Figures: added TTFT and added end-to-end latency per request, p50 and p99 (the meter's
percentile minus the direct percentile over all phases of each kind; target from issue
14: p99 ≤ 1 ms added at 200 streams), the meter's CPU seconds per 1,000 requests and its
RSS after the run. Every request through the meter must be counted exactly once
(checked on its /metrics).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.results import Row, command, row
from tests.support.meter_harness import MeterProcess, meter_counters, write_config
from tests.support.openai_standin import OpenAIBehaviour, OpenAIStandIn

MODEL = "bench/model"
TENANTS = [f"team-{i}" for i in range(10)]


@dataclass
class Phase:
    through_meter: bool
    ttft: list[float] = field(default_factory=list)
    e2e: list[float] = field(default_factory=list)
    errors: int = 0
    error_kinds: Counter[str] = field(default_factory=Counter)


def serve(token_delay: float) -> None:
    """The stand-in's own process: print its URL, serve until stdin closes."""
    with OpenAIStandIn(OpenAIBehaviour(model=MODEL, per_token_delay_s=token_delay)) as up:
        print(json.dumps({"url": up.url}), flush=True)
        sys.stdin.read()


async def _one(client: httpx.AsyncClient, url: str, i: int, tokens: int, phase: Phase) -> None:
    body = {"model": MODEL, "prompt": "a b c d e f", "max_tokens": tokens, "stream": True}
    headers = {"x-tenant": TENANTS[i % len(TENANTS)]}
    start = time.perf_counter()
    first: float | None = None
    try:
        async with client.stream("POST", url + "/v1/completions", json=body,
                                 headers=headers) as r:  # fmt: skip
            async for piece in r.aiter_raw():
                if first is None and b'"text"' in piece:
                    first = time.perf_counter()
            r.raise_for_status()
    except httpx.HTTPError as exc:
        phase.errors += 1
        phase.error_kinds[f"{type(exc).__name__}: {exc}"[:120]] += 1
        return
    end = time.perf_counter()
    phase.ttft.append((first or end) - start)
    phase.e2e.append(end - start)


async def _phase(
    url: str, clients: list[httpx.AsyncClient], phase: Phase, requests: int, tokens: int
) -> None:
    """One worker per client, ``requests`` in all, each worker one stream at a time."""
    queue = iter(range(requests))

    async def worker(client: httpx.AsyncClient) -> None:
        for i in queue:
            await _one(client, url, i, tokens, phase)

    await asyncio.gather(*(worker(c) for c in clients))


def _clients(streams: int) -> list[httpx.AsyncClient]:
    """One single-connection client per stream, kept for the whole run: one shared pool of
    200 connections costs the load client milliseconds per request (httpcore scans the
    pool for every request), and new connections per phase would measure connection
    setup under a burst of 200 connects, not the meter."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    return [httpx.AsyncClient(timeout=60, limits=limits) for _ in range(streams)]


async def _run(
    args: argparse.Namespace, url: str, meter_url: str, proc: psutil.Process
) -> tuple[list[Phase], float]:
    direct, metered = _clients(args.streams), _clients(args.streams)
    try:
        for target, clients in ((url, direct), (meter_url, metered)):
            # warm-up: open every connection (staggered, 5 ms apart) with one request each
            async def warm(k: int, client: httpx.AsyncClient, target: str = target) -> None:
                await asyncio.sleep(k * 0.005)
                await _one(client, target, k, 1, Phase(False))

            await asyncio.gather(*(warm(k, c) for k, c in enumerate(clients)))
        phases: list[Phase] = []
        cpu = 0.0
        for _ in range(args.pairs):
            for through in (False, True):
                phase = Phase(through)
                before = sum(proc.cpu_times()[:2])
                target, clients = (meter_url, metered) if through else (url, direct)
                await _phase(target, clients, phase, args.requests, args.tokens)
                if through:
                    cpu += sum(proc.cpu_times()[:2]) - before
                phases.append(phase)
        return phases, cpu
    finally:
        for client in (*direct, *metered):
            await client.aclose()


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, round(q / 100 * len(ordered) + 0.4999))
    return ordered[min(rank, len(ordered)) - 1]


def _pin(pin: bool, standin: int, meter: int) -> str:
    """The meter on a core of its own, the load (this client and the stand-in) on the
    others, as the meter runs in production (a sidecar with a CPU request of 1, its
    upstream on other cores): on a small machine the three processes otherwise compete
    for the same cores, and what the meter's phases measure is that queue, shared by the
    load. Both kinds of phase run with the same pinning, so the direct figures are the
    load's own latency with the same cores. Off with ``--no-pin`` or where fewer than
    two cores are available."""
    cores = sorted(os.sched_getaffinity(0))
    if not pin or len(cores) < 2:
        return "none"
    meter_cores, load_cores = {cores[-1]}, set(cores[:-1])
    os.sched_setaffinity(meter, meter_cores)
    os.sched_setaffinity(standin, load_cores)
    os.sched_setaffinity(0, load_cores)
    load = ",".join(map(str, sorted(load_cores)))
    return f"meter on CPU {cores[-1]}, client and stand-in on CPU {load}"


def measure(args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    standin = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_meter", "--serve", "--token-delay",
         str(args.token_delay)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True,
    )  # fmt: skip
    assert standin.stdout is not None
    assert standin.stdin is not None
    url = json.loads(standin.stdout.readline())["url"]
    phases: list[Phase] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = write_config(Path(tmp), url, log_level="warning",
                               tenant={"order": ["header"]})  # fmt: skip
            with MeterProcess(cfg, Path(tmp) / "meter.log") as meter:
                assert meter.proc is not None
                proc = psutil.Process(meter.proc.pid)
                pinned = _pin(args.pin, standin.pid, meter.proc.pid)
                phases, cpu_meter = asyncio.run(_run(args, url, meter.url, proc))
                warm = args.streams  # the warm-up's requests through the meter
                rss = proc.memory_info().rss
                meter_log = meter.log()
                counters = meter_counters(meter.url)
    finally:
        standin.stdin.close()
        standin.wait(10)
    if args.json is not None:
        args.json.with_suffix(".meter.log").write_text(meter_log)
    counted = sum(v for (n, _), v in counters.items() if n == "gpuledger_meter_requests_total")
    via = [p for p in phases if p.through_meter]
    direct = [p for p in phases if not p.through_meter]
    served_via = sum(len(p.e2e) for p in via)

    def joined(ps: list[Phase], attr: str) -> list[float]:
        return [v for p in ps for v in getattr(p, attr)]

    out: dict[str, Any] = {
        "streams": args.streams, "requests_per_phase": args.requests, "pairs": args.pairs,
        "tokens": args.tokens, "token_delay_s": args.token_delay, "pinned": pinned,
        "errors_direct": sum(p.errors for p in direct), "errors_meter": sum(p.errors for p in via),
        "counted": counted, "expected_counted": served_via + warm,
        "meter_cpu_s_per_1000": 1000 * cpu_meter / max(1, served_via),
        "meter_rss_mib": rss / 2**20,
        "error_kinds": dict(sum((p.error_kinds for p in phases), Counter())),
        "meter_uncounted": {dict(labels)["reason"]: v for (n, labels), v in counters.items()
                            if n == "gpuledger_meter_uncounted_requests_total" and v},
    }  # fmt: skip
    for attr in ("ttft", "e2e"):
        for q in (50, 99):
            d = pct(joined(direct, attr), q) * 1000
            m = pct(joined(via, attr), q) * 1000
            out[f"{attr}_p{q}_direct_ms"], out[f"{attr}_p{q}_meter_ms"] = d, m
            out[f"{attr}_p{q}_added_ms"] = m - d
    return out


def report(r: dict[str, Any]) -> None:
    print(f"\n== meter overhead: {r['streams']} concurrent streams, {r['requests_per_phase']} "
          f"requests per phase, {r['pairs']} direct/meter pairs, {r['tokens']} tokens at "
          f"{r['token_delay_s'] * 1000:g} ms; pinning: {r['pinned']} ==")  # fmt: skip
    for attr in ("ttft", "e2e"):
        for q in (50, 99):
            print(f"  {attr:4} p{q}: direct {r[f'{attr}_p{q}_direct_ms']:8.2f} ms   meter "
                  f"{r[f'{attr}_p{q}_meter_ms']:8.2f} ms   added "
                  f"{r[f'{attr}_p{q}_added_ms']:+8.2f} ms")  # fmt: skip
    print(f"  meter CPU {r['meter_cpu_s_per_1000']:.2f} s per 1,000 requests, "
          f"RSS {r['meter_rss_mib']:.1f} MiB; counted {r['counted']:.0f} of "
          f"{r['expected_counted']}; errors direct {r['errors_direct']}, "
          f"meter {r['errors_meter']}")  # fmt: skip


def rows(r: dict[str, Any], cmd: str) -> list[Row]:
    out: list[Row] = []
    for attr, what in (("ttft", "TTFT"), ("e2e", "latency per request (e2e)")):
        added99 = r[f"{attr}_p99_added_ms"]
        d99, m99 = r[f"{attr}_p99_direct_ms"], r[f"{attr}_p99_meter_ms"]
        out.append(row(
            f"meter overhead: added {what}, {r['streams']} concurrent streams",
            f"p50 {r[f'{attr}_p50_added_ms']:+.2f} ms, p99 {added99:+.2f} ms",
            added99, target="p99 ≤ 1 ms added", passed=added99 <= 1.0,
            peer=f"direct p99 {d99:.2f} ms (meter {m99:.2f} ms)", peer_value=d99,
            ratio=f"{m99 / d99:.3f}×" if d99 else None, command=cmd,
        ))  # fmt: skip
    out.append(row("meter: CPU per 1,000 streamed requests",
                   f"{r['meter_cpu_s_per_1000']:.2f} CPU-s", r["meter_cpu_s_per_1000"],
                   command=cmd))  # fmt: skip
    out.append(row("meter: RSS after the run", f"{r['meter_rss_mib']:.1f} MiB",
                   r["meter_rss_mib"], command=cmd))  # fmt: skip
    exact = r["counted"] == r["expected_counted"] and not r["errors_meter"]
    out.append(row("meter: requests counted exactly once",
                   f"{r['counted']:.0f} of {r['expected_counted']}", r["counted"],
                   target="all", passed=exact, command=cmd))  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> list[Row]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--requests", type=int, default=1000, help="per phase")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--token-delay", type=float, default=0.05, help="seconds per token")
    ap.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the meter on a core of its own, the load on the others",
    )
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.serve:
        serve(args.token_delay)
        return []
    r = measure(args)
    report(r)
    if args.json is not None:
        args.json.write_text(json.dumps(r, indent=2))
    return rows(r, command("bench.bench_meter", argv))


if __name__ == "__main__":
    main()
