"""Probe overhead on the engine: what the agent's synthetic probes cost a vLLM server.

Run from the repository root::

    python -m bench.bench_probes [--seconds 15] [--repeats 3] [--concurrency 8]
                                 [--probe-interval 1] [--json FILE]

One vLLM stand-in (:mod:`bench.vllm_standins`, its own process; 50 ms to the first
token, 20 ms per token after it) serves a fixed synthetic load from this process:
``--concurrency`` clients, each on a keep-alive connection, sending streaming
``/v1/completions`` (a 64-word prompt, ``max_tokens`` 32, usage included) back to back
for ``--seconds``. The agent runs beside it (its own process; the vLLM collector
scraping every 1 s) in two configurations, alternated off, on, off, on, ... (``--repeats``
pairs):

- **no probes** (``probes.enabled: false``): the peer;
- **probes** every ``--probe-interval`` seconds (default 1 s: 60x the default rate of one
  per endpoint per 60 s, so that an effect too small to see at the default would show).

Per phase: the engine's own counters (``vllm:request_success_total``,
``vllm:prompt_tokens_total``, ``vllm:generation_tokens_total`` from its ``/metrics``)
before the load starts and after it has drained; the load's requests and tokens as its
clients counted them (usage events); the agent's ``gpuledger_probe_success_total``.
What the engine served beyond the load is the probes' work: requests and tokens per
probe, and a request slot for the probe's end-to-end time. Scaled to the default
interval (one probe per 60 s) it is set against the load's rates: the share of the
engine's requests, tokens and request-slot time the probes take at the default. The
user-visible effect is the load's own p50/p99 end-to-end latency and TTFT with probes
against without; the noise is how far repeats of one configuration land apart (the wider
of the two configurations' spreads of p99).

The stand-in's cost per request is mostly sleeping, not compute, so the latency
comparison shows the probes' interference through the serving path (connections, the
server's threads, this machine's CPUs), not a GPU's batch scheduler: on a real engine
the probes' share of tokens and slots is the figure to read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.bench_agent import _pct, _start_agent, _stop
from bench.bench_reference import get, metric_sum, start_standins, stop_standins
from bench.results import Row, command, row
from gpuledger.collectors.textformat.parse import parse

DEFAULT_PROBE_INTERVAL_S = 60.0
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
PROMPT = " ".join(f"word{i}" for i in range(64))
MAX_TOKENS = 32
FIRST_TOKEN_DELAY_S = 0.05
PER_TOKEN_DELAY_S = 0.02


@dataclass
class Request:
    started: float
    ttft_s: float
    e2e_s: float
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Phase:
    probes: bool
    seconds: float
    requests: list[Request] = field(default_factory=list)
    engine_before: dict[str, float] = field(default_factory=dict)
    engine_after: dict[str, float] = field(default_factory=dict)
    probes_ok: float = 0.0
    probes_failed: float = 0.0
    probe_e2e_s: float | None = None


# -- the load -------------------------------------------------------------------------------


async def _client(host: str, port: int, until: float, out: list[Request]) -> None:
    body = json.dumps(
        {
            "model": MODEL,
            "prompt": PROMPT,
            "max_tokens": MAX_TOKENS,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ).encode()
    request = (
        f"POST /v1/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.monotonic() < until:
            t0 = time.perf_counter()
            started = time.monotonic()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head[:60].decode(errors="replace"))
            ttft: float | None = None
            usage: dict[str, Any] = {}
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    break
                data = chunk[:size].decode()
                if ttft is None and '"text"' in data:
                    ttft = time.perf_counter() - t0
                elif '"usage"' in data:
                    usage = json.loads(data.removeprefix("data: "))["usage"]
            e2e = time.perf_counter() - t0
            out.append(
                Request(started, ttft if ttft is not None else e2e, e2e,
                        int(usage.get("prompt_tokens", 0)),
                        int(usage.get("completion_tokens", 0)))
            )  # fmt: skip
    finally:
        writer.close()


async def _load(url: str, concurrency: int, seconds: float) -> list[Request]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    out: list[Request] = []
    until = time.monotonic() + seconds
    await asyncio.gather(*(_client(host, port, until, out) for _ in range(concurrency)))
    return out


# -- the engine's and the agent's counters --------------------------------------------------


def engine_counters(url: str) -> dict[str, float]:
    parts = urlsplit(url)
    page = get(parts.port or 80, "/metrics").decode()
    return {
        "requests": metric_sum(page, "vllm:request_success_total"),
        "prompt_tokens": metric_sum(page, "vllm:prompt_tokens_total"),
        "generation_tokens": metric_sum(page, "vllm:generation_tokens_total"),
    }


def _probe_e2e(page: str) -> float | None:
    fam = parse(page).get("gpuledger_probe_e2e_seconds")
    if fam is None or not fam.samples:
        return None
    return float(fam.samples[0].value)


def run_phase(url: str, phase: Phase, concurrency: int, probe_interval_s: float) -> None:
    config = {
        "simulate": {"enabled": True, "gpus": 1},
        "collection": {"interval_seconds": 1},
        "vllm": {"enabled": True, "endpoints": [{"url": url, "service": "chat"}]},
        "probes": {"enabled": phase.probes, "interval_seconds": probe_interval_s},
    }
    agent, port = _start_agent(config)
    try:
        deadline = time.monotonic() + 30
        while True:  # the agent scraping the engine (and, with probes, one probe done)
            page = get(port, "/metrics").decode()
            up = metric_sum(page, "gpuledger_collector_up", collector="vllm") >= 1
            probed = metric_sum(page, "gpuledger_probe_success_total") >= 1
            if up and (probed or not phase.probes):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the agent did not start scraping or probing the stand-in")
            time.sleep(0.2)
        before = page
        phase.engine_before = engine_counters(url)
        phase.requests = asyncio.run(_load(url, concurrency, phase.seconds))
        phase.engine_after = engine_counters(url)
        after = get(port, "/metrics").decode()
    finally:
        _stop(agent)
    phase.probes_ok = metric_sum(after, "gpuledger_probe_success_total") - metric_sum(
        before, "gpuledger_probe_success_total"
    )
    phase.probes_failed = metric_sum(after, "gpuledger_probe_failures_total") - metric_sum(
        before, "gpuledger_probe_failures_total"
    )
    phase.probe_e2e_s = _probe_e2e(after)


# -- figures --------------------------------------------------------------------------------


def _latencies(phases: list[Phase], attr: str) -> list[float]:
    return [getattr(r, attr) for p in phases for r in p.requests]


def summarize(phases: list[Phase], probe_interval_s: float) -> dict[str, Any]:
    off = [p for p in phases if not p.probes]
    on = [p for p in phases if p.probes]

    def delta(p: Phase, key: str) -> float:
        return p.engine_after[key] - p.engine_before[key]

    probe_requests = sum(
        delta(p, "requests") - len(p.requests) for p in on
    )  # what the engine served beyond the load
    probe_tokens = sum(
        delta(p, "prompt_tokens") + delta(p, "generation_tokens")
        - sum(r.prompt_tokens + r.completion_tokens for r in p.requests)
        for p in on
    )  # fmt: skip
    stray = sum(
        delta(p, "requests") - len(p.requests) for p in off
    )  # should be 0: nothing but the load without probes
    probes_ok = sum(p.probes_ok for p in on)
    seconds = sum(p.seconds for p in off)
    load_requests = sum(len(p.requests) for p in off)
    load_tokens = sum(r.prompt_tokens + r.completion_tokens for p in off for r in p.requests)
    load_slot_s = sum(r.e2e_s for p in off for r in p.requests)
    e2es = [p.probe_e2e_s for p in on if p.probe_e2e_s is not None]
    per_probe_s = statistics.fmean(e2es) if e2es else 0.0
    # Engine requests per probe the agent counted: a check (1.0 but for probes in flight
    # at a phase's edges). Tokens per probe come from the engine's own counters alone, so
    # both sides of the division are read at the same instants.
    per_probe_requests = probe_requests / probes_ok if probes_ok else 0.0
    per_probe_tokens = probe_tokens / probe_requests if probe_requests else 0.0
    rate = 1.0 / DEFAULT_PROBE_INTERVAL_S  # probes per second at the default, one endpoint

    def p(values: list[float], q: float) -> float:
        return 1000 * _pct(values, q) if values else 0.0

    e2e_p99_off = [p([r.e2e_s for r in ph.requests], 99) for ph in off]
    e2e_p99_on = [p([r.e2e_s for r in ph.requests], 99) for ph in on]
    result: dict[str, Any] = {
        "concurrency_and_shape": f"{MAX_TOKENS} tokens after a {len(PROMPT.split())}-word prompt",
        "probe_interval_s": probe_interval_s,
        "phases": [
            {
                "probes": ph.probes,
                "seconds": ph.seconds,
                "requests": len(ph.requests),
                "probes_ok": ph.probes_ok,
                "probes_failed": ph.probes_failed,
                "engine_requests": delta(ph, "requests"),
                "e2e_p50_ms": p([r.e2e_s for r in ph.requests], 50),
                "e2e_p99_ms": p([r.e2e_s for r in ph.requests], 99),
                "ttft_p99_ms": p([r.ttft_s for r in ph.requests], 99),
            }
            for ph in phases
        ],
        "probes_ok": probes_ok,
        "probes_failed": sum(ph.probes_failed for ph in on),
        "probe_requests_seen_by_engine": probe_requests,
        "stray_requests_without_probes": stray,
        "engine_requests_per_probe": per_probe_requests,
        "engine_tokens_per_probe": per_probe_tokens,
        "probe_e2e_s": per_probe_s,
        "load_requests_per_s": load_requests / seconds,
        "load_tokens_per_s": load_tokens / seconds,
        "load_busy_slots": load_slot_s / seconds,
        # a probe is one completion request (plus a GET /v1/models, no engine work)
        "share_requests_at_default": rate * 1.0 / (load_requests / seconds),
        "share_tokens_at_default": rate * per_probe_tokens / (load_tokens / seconds),
        "share_slot_time_at_default": rate * per_probe_s / (load_slot_s / seconds),
        "throughput_off_rps": load_requests / seconds,
        "throughput_on_rps": sum(len(ph.requests) for ph in on) / sum(ph.seconds for ph in on),
    }
    for name, attr in (("e2e", "e2e_s"), ("ttft", "ttft_s")):
        for q in (50, 99):
            result[f"{name}_p{q}_off_ms"] = p(_latencies(off, attr), q)
            result[f"{name}_p{q}_on_ms"] = p(_latencies(on, attr), q)
    pooled = result["e2e_p99_off_ms"]
    result["e2e_p99_change"] = result["e2e_p99_on_ms"] / pooled - 1 if pooled else 0.0
    # Noise: how far apart repeats of the same configuration land (the wider of the two
    # configurations' spreads), relative to the no-probe p99.
    spreads = [max(v) - min(v) for v in (e2e_p99_off, e2e_p99_on) if len(v) > 1]
    result["e2e_p99_noise"] = max(spreads) / pooled if pooled and spreads else 0.0
    result["e2e_p99_spread_off"] = (max(e2e_p99_off) - min(e2e_p99_off)) / pooled if pooled else 0.0
    result["e2e_p99_spread_on"] = (
        (max(e2e_p99_on) - min(e2e_p99_on)) / pooled if pooled and e2e_p99_on else 0.0
    )
    return result


def report(r: dict[str, Any]) -> None:
    print(
        f"load: {r['concurrency']} clients x streaming /v1/completions "
        f"({r['concurrency_and_shape']}), stand-in {FIRST_TOKEN_DELAY_S * 1000:.0f} ms to the "
        f"first token + {PER_TOKEN_DELAY_S * 1000:.0f} ms per token; agent scraping every 1 s"
    )
    print(f"{'phase':<22} {'requests':>8} {'probes':>6} {'e2e p50':>9} {'e2e p99':>9} "
          f"{'TTFT p99':>9}")  # fmt: skip
    for ph in r["phases"]:
        label = f"probes every {r['probe_interval_s']:g} s" if ph["probes"] else "no probes"
        print(
            f"{label:<22} {ph['requests']:>8} {ph['probes_ok']:>6.0f} {ph['e2e_p50_ms']:>7.1f}ms "
            f"{ph['e2e_p99_ms']:>7.1f}ms {ph['ttft_p99_ms']:>7.1f}ms"
        )
    print(
        f"per probe: {r['engine_requests_per_probe']:.2f} engine requests per probe the agent "
        f"counted (1 but for probes in flight at a phase's edges), "
        f"{r['engine_tokens_per_probe']:.1f} engine tokens (prompt + generated), one request "
        f"slot for {r['probe_e2e_s'] * 1000:.0f} ms; {r['probes_ok']:.0f} probes ok, "
        f"{r['probes_failed']:.0f} failed; requests beyond the load without probes: "
        f"{r['stray_requests_without_probes']:.0f}"
    )
    print(
        f"at the default interval (1 probe / 60 s / endpoint) against this load "
        f"({r['load_requests_per_s']:.1f} req/s, {r['load_tokens_per_s']:.0f} tokens/s, "
        f"{r['load_busy_slots']:.1f} busy slots): {100 * r['share_requests_at_default']:.3f} % "
        f"of the engine's requests, {100 * r['share_tokens_at_default']:.3f} % of its tokens, "
        f"{100 * r['share_slot_time_at_default']:.3f} % of its request-slot time"
    )
    change = 100 * r["e2e_p99_change"]
    print(
        f"user e2e p99 with probes every {r['probe_interval_s']:g} s: {r['e2e_p99_on_ms']:.1f} ms "
        f"vs {r['e2e_p99_off_ms']:.1f} ms without ({change:+.1f} %; {_noise(r)}); "
        f"throughput {r['throughput_on_rps']:.2f} vs {r['throughput_off_rps']:.2f} req/s"
    )


def _noise(r: dict[str, Any]) -> str:
    """The p99 change against the noise: the spread of repeats of one configuration."""
    change, noise = 100 * r["e2e_p99_change"], 100 * r["e2e_p99_noise"]
    if len(r["phases"]) < 3:
        return "noise not measured: one phase per configuration"
    within = "within" if abs(change) <= max(noise, 1.0) else "outside"
    return f"repeats of one configuration differ by up to {noise:.1f} %: {within} noise"


def _ratio(a: float, b: float) -> str | None:
    return f"{a / b:.3f}×" if b else None


def rows(r: dict[str, Any], cmd: str) -> list[Row]:
    every = f"probes every {r['probe_interval_s']:g} s"
    change = 100 * r["e2e_p99_change"]
    req_share = 100 * r["share_requests_at_default"]
    tok_share = 100 * r["share_tokens_at_default"]
    per_probe = (
        f"{r['engine_tokens_per_probe']:.0f} tokens, {r['probe_e2e_s'] * 1000:.0f} ms per probe"
    )
    e2e_on, e2e_off = r["e2e_p99_on_ms"], r["e2e_p99_off_ms"]
    ttft_on, ttft_off = r["ttft_p99_on_ms"], r["ttft_p99_off_ms"]
    return [
        row(
            "probe overhead: share of engine requests at the 60 s default "
            f"(vs a load of {r['load_requests_per_s']:.1f} req/s)",
            f"{req_share:.3f} %",
            req_share,
            command=cmd,
        ),
        row(
            "probe overhead: share of engine tokens at the 60 s default "
            f"(vs {r['load_tokens_per_s']:.0f} tokens/s)",
            f"{tok_share:.3f} % ({per_probe})",
            tok_share,
            command=cmd,
        ),
        row(
            f"probe overhead: user e2e p99, {every} (60× default)",
            f"{e2e_on:.1f} ms ({change:+.1f} %; {_noise(r)})",
            e2e_on,
            peer=f"no probes {e2e_off:.1f} ms",
            peer_value=e2e_off,
            ratio=_ratio(e2e_on, e2e_off),
            command=cmd,
        ),
        row(
            f"probe overhead: user TTFT p99, {every}",
            f"{ttft_on:.1f} ms",
            ttft_on,
            peer=f"no probes {ttft_off:.1f} ms",
            peer_value=ttft_off,
            ratio=_ratio(ttft_on, ttft_off),
            command=cmd,
        ),
    ]


def main(argv: list[str] | None = None) -> list[Row]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--seconds", type=float, default=15.0, help="load per phase")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--probe-interval", type=float, default=1.0, help="seconds")
    ap.add_argument("--repeats", type=int, default=3, help="off/on pairs")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    standins, eps = start_standins(
        [MODEL], first_token_delay_s=FIRST_TOKEN_DELAY_S, per_token_delay_s=PER_TOKEN_DELAY_S
    )
    phases: list[Phase] = []
    try:
        url = eps[0]["url"]
        asyncio.run(_load(url, args.concurrency, 1.0))  # warm-up: connections, threads
        for _ in range(max(1, args.repeats)):
            for probes in (False, True):
                phase = Phase(probes=probes, seconds=args.seconds)
                run_phase(url, phase, args.concurrency, args.probe_interval)
                phases.append(phase)
    finally:
        stop_standins(standins)
    r = summarize(phases, args.probe_interval)
    r["concurrency"] = args.concurrency
    report(r)
    if args.json is not None:
        args.json.write_text(json.dumps(r, indent=2))
    return rows(r, command("bench.bench_probes", argv))


if __name__ == "__main__":
    main()
    sys.exit(0)
