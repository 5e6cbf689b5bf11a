"""Soak: the whole agent on the simulated node under a schedule of faults.

``make soak`` runs it for ``SOAK_SECONDS`` (300 there); ``make test`` runs the
60 s default. The agent is a subprocess (simulated 8-GPU node, seed 42, ``equal`` split)
with a dcgm-exporter stand-in, a vLLM stand-in and a real PostgreSQL ledger store. The
schedule scales with the duration D; t = 0 is the first agent's first NVML reading:

========== ==============================================================================
throughout dcgm-exporter: healthy / garbage / healthy / HTTP 500 / healthy / hang, one
           step every D/30 s (3..15 s); vLLM traffic, a completion every 0.15 s; /metrics
           scraped every 0.5 s; the agent's RSS sampled every second
0.08 D     the vLLM engine restarts: down 2.5 s, then its counters start again at 0
0.15 D     the agent's wall clock steps +1 h (libfaketime; its monotonic clock is real)
0.25 D     SIGKILL; the agent restarts after 0.04 D (2..10 s)
0.35 D     the wall clock steps back 1 h
0.40 D     PostgreSQL stops for 0.3 D (24..60 s)
0.42 D     GPU 3 falls off the bus (``simulate.lose_gpu``) and stays lost after restarts
+0.5 outage SIGKILL while the store is down; the agent restarts with the store still down
0.78 D     the vLLM engine restarts again
1.00 D     traffic stops, the spool drains, SIGTERM
========== ==============================================================================

Ground truth does not come from the agent: the simulated node's layout gives each
service's share of each GPU (``tests.support.expected_shares``); the test's monotonic
clock gives when each agent process ran and when its wall clock stepped; the vLLM
stand-in records every counter value it served. Every check can fail; the summary (faults
with times, figures, checks) is printed at the end -- run with ``-s`` to see it.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import signal
import sqlite3
import threading
import time
from collections import defaultdict
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpuledger.agent.config import ConfigError, load_config
from gpuledger.chargeback.ledger.model import HOUR, hour_start
from gpuledger.chargeback.ledger.spool import Spool
from gpuledger.chargeback.ledger.store import open_store
from gpuledger.collectors.gpu.nvml import NvmlCollector
from gpuledger.sim.node import DEFAULT_START, SimulatedNode
from tests.support.expected_shares import expected_shares
from tests.support.harness import AgentProcess, http_get
from tests.support.paths import FIXTURES
from tests.support.soak_tools import (
    DcgmCycler,
    Faketime,
    RecordingVllm,
    RssSampler,
    Scrape,
    Scraper,
    VllmLoad,
    dcgm_page_for,
    slope_per_minute,
)
from tests.support.standins import Behaviour, StandIn, wait_until
from tests.support.vllm_standin import VllmBehaviour

SEED = 42
GPUS = 8
LOST_GPU = 3  # one of the chat-llama-70b GPUs
INTERVAL = 0.5  # the agent's collection interval (NVML)
DCGM_INTERVAL = 1.0
DCGM_TIMEOUT = 1.0
VLLM_INTERVAL = 1.0
FLUSH = 1.0
MAX_GAP = 5.0
MODEL = "meta-llama/Llama-3.1-70B-Instruct"
FIXTURE = FIXTURES / "dcgm" / "exporter-3.3-h100x8.prom"
LO, HI = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
KEEP = (
    "gpuledger_collector_up",
    "gpuledger_collector_last_success_timestamp_seconds",
    "gpuledger_gpu_lost",
    "gpuledger_gpu_energy_joules_total",
    "gpuledger_ledger_pending_rows",
    "gpuledger_ledger_flush_failures_total",
    "gpuledger_vllm_endpoint_up",
)
END_SLACK = 2 * INTERVAL + 0.5  # a run's last cycle(s): the one in flight when killed
START_SLACK = 0.3  # the first reading was made a poll before the test saw it
LAST_SUCCESS = "gpuledger_collector_last_success_timestamp_seconds"
SECONDS_ENV = "SOAK_SECONDS"


# --- the lost-GPU hook, in-process --------------------------------------------------------
def test_simulated_gpu_falls_off_the_bus_after_its_time() -> None:
    t = [100.0]
    node = SimulatedNode(
        SEED,
        GPUS,
        clock=lambda: DEFAULT_START + t[0],
        lose_gpu=LOST_GPU,
        lose_after_s=5.0,
        mono=lambda: t[0],
    )
    collector = NvmlCollector(node.nvml)
    boards = [g for g in collector.collect().gpus if g.mig_instance is None]
    assert [g.lost for g in boards] == [False] * GPUS
    t[0] += 4.9
    assert not any(g.lost for g in collector.collect().gpus)
    t[0] += 0.1
    assert [g.index for g in collector.collect().gpus if g.lost] == [LOST_GPU]
    t[0] -= 50.0  # whatever the clock does next, a lost GPU stays lost
    assert [g.index for g in collector.collect().gpus if g.lost] == [LOST_GPU]
    collector.close()
    # a collector started after the loss cannot even identify it: it is not reported
    fresh = NvmlCollector(node.nvml).collect()
    assert LOST_GPU not in {g.index for g in fresh.gpus}
    assert any(f"GPU {LOST_GPU} is lost" in note for note in fresh.notes)
    with pytest.raises(ValueError, match="lose_gpu"):
        SimulatedNode(SEED, 2, lose_gpu=2)


def test_lose_gpu_config_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("simulate: {enabled: true, lose_gpu: {index: 3, after_seconds: 40}}\n")
    lose = load_config(path, environ={}).simulate.lose_gpu
    assert lose is not None
    assert (lose.index, lose.after_seconds) == (3, 40.0)
    for bad, key in (
        ("{gpus: 2, lose_gpu: {index: 2}}", "simulate"),
        ("{lose_gpu: {after_seconds: 4}}", "simulate.lose_gpu.index"),
        ("{lose_gpu: {index: 1, after_seconds: -1}}", "simulate.lose_gpu.after_seconds"),
    ):
        path.write_text(f"simulate: {bad}\n")
        with pytest.raises(ConfigError) as err:
            load_config(path, environ={})
        assert [k for k, _ in err.value.problems] == [key]


# --- the schedule ---------------------------------------------------------------------------
@dataclass
class Run:
    n: int
    popen: float  # monotonic: the process was started
    healthy: float = math.nan  # /healthz answered
    nvml_seen: float = math.nan  # the test saw NVML's first reading
    ended: float = math.nan  # the signal was sent
    how: str = ""
    pid: int = 0


@dataclass(frozen=True)
class Plan:
    duration: float
    dcgm_period: float
    kill_down: float
    pg_outage: float
    vllm_down: float = 2.5

    @classmethod
    def for_duration(cls, d: float) -> Plan:
        return cls(
            duration=d,
            dcgm_period=min(15.0, max(3.0, d / 30)),
            kill_down=min(10.0, max(2.0, 0.04 * d)),
            pg_outage=min(60.0, max(24.0, 0.3 * d)),
        )

    @property
    def gpu_loss_at(self) -> float:
        return 0.42 * self.duration

    def events(self) -> list[tuple[float, str]]:
        d, down = self.duration, 0.40 * self.duration
        return sorted(
            [
                (0.08 * d, "vllm_restart"),
                (0.15 * d, "clock_forward"),
                (0.25 * d, "kill"),
                (0.35 * d, "clock_back"),
                (down, "pg_down"),
                # the kill while the store is down comes late enough for a flush to have
                # waited out the pool's 10 s for a connection: a logged failure first
                (down + max(14.0, 0.5 * self.pg_outage), "kill"),
                (down + self.pg_outage, "pg_up"),
                (0.78 * d, "vllm_restart"),
            ]
        )


class Soak:
    """Runs the agent through the plan and keeps what the checks need."""

    def __init__(
        self,
        workdir: Path,
        plan: Plan,
        clock: Faketime,
        dcgm: StandIn,
        vllm: RecordingVllm,
        postgres: Any,
        db_url: str,
    ) -> None:
        self.workdir = workdir
        self.plan = plan
        self.clock = clock
        self.vllm = vllm
        self.postgres = postgres
        self.db_url = db_url
        self.uuids = [g.uuid for g in SimulatedNode(SEED, GPUS).gpus]
        page = dcgm_page_for(self.uuids, FIXTURE)
        self.dcgm = DcgmCycler(dcgm, page, plan.dcgm_period, hang_s=30.0)
        self.agent = AgentProcess(workdir, self._config(None), env=clock.env())
        # the agent refuses unknown GPULEDGER_* variables: ours are not for it
        self.agent.env = {k: v for k, v in self.agent.env.items() if k != SECONDS_ENV}
        self.scraper = Scraper(self.agent.url + "/metrics", KEEP)
        self.rss = RssSampler(self._pid)
        self.load = VllmLoad(vllm.url, MODEL)
        self.runs: list[Run] = []
        self.down: list[tuple[float, float]] = []  # SIGKILL sent .. the next run healthy
        self.faults: list[tuple[float, str]] = []  # (monotonic, what)
        self.side_threads: list[threading.Thread] = []
        self.pg_down_at = (math.nan, math.nan)
        self.lost_seen: Scrape | None = None
        self.t0 = math.nan
        self.wall0 = math.nan

    # -- the agent ---------------------------------------------------------------------------
    def _config(self, lose_after: float | None) -> dict[str, Any]:
        simulate: dict[str, Any] = {"enabled": True, "seed": SEED, "gpus": GPUS}
        if lose_after is not None:
            simulate["lose_gpu"] = {"index": LOST_GPU, "after_seconds": round(lose_after, 3)}
        endpoint = {"url": self.vllm.url, "service": "chat", "namespace": "llm-prod"}
        return {
            "node_name": "soak-node",
            "simulate": simulate,
            "collection": {"interval_seconds": INTERVAL},
            "dcgm": {
                "enabled": True,
                "url": self.dcgm.standin.url,
                "interval_seconds": DCGM_INTERVAL,
                "timeout_seconds": DCGM_TIMEOUT,
            },
            "vllm": {
                "enabled": True,
                "interval_seconds": VLLM_INTERVAL,
                "timeout_seconds": 2.0,
                "endpoints": [endpoint],
            },
            "probes": {"enabled": False},  # the engine's counters move with our traffic only
            "ledger": {
                "url": self.db_url,
                "flush_interval_seconds": FLUSH,
                "split_policy": "equal",
                "max_gap_seconds": MAX_GAP,
            },
        }

    def _write_config(self, lose_after: float | None) -> None:
        current = yaml.safe_load(self.agent.config_path.read_text(encoding="utf-8"))
        current["simulate"] = self._config(lose_after)["simulate"]
        self.agent.config_path.write_text(yaml.safe_dump(current), encoding="utf-8")

    def _pid(self) -> int | None:
        proc = self.agent.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def _nvml_runs(self) -> int:
        try:
            status, body = http_get(self.agent.url + "/api/v1/collectors", timeout=2)
        except OSError:
            return 0
        if status != 200:
            return 0
        return int(json.loads(body)["collectors"].get("nvml", {}).get("runs", 0))

    def _start_run(self, lose_after: float | None) -> None:
        self._write_config(lose_after)
        self.dcgm.hold = True  # no DCGM-only interval before NVML's first reading
        run = Run(n=len(self.runs) + 1, popen=time.monotonic())
        self.runs.append(run)
        self.agent.start()
        run.healthy = time.monotonic()
        assert self.agent.proc is not None
        run.pid = self.agent.proc.pid
        wait_until(lambda: self._nvml_runs() >= 1, timeout=30, interval=0.02)
        run.nvml_seen = time.monotonic()
        self.dcgm.hold = False

    def _end_run(self, sig: signal.Signals) -> None:
        run = self.runs[-1]
        run.ended = time.monotonic()
        run.how = sig.name
        self.agent.stop(sig)

    # -- faults --------------------------------------------------------------------------
    def _note(self, what: str) -> None:
        self.faults.append((time.monotonic(), what))

    def kill(self) -> None:
        self._note("SIGKILL")
        self._end_run(signal.SIGKILL)
        killed = self.runs[-1].ended
        time.sleep(self.plan.kill_down)
        if len(self.runs) == 1:  # the restarted agent loses GPU 3 on schedule ...
            lose_after = max(2.0, self.t0 + self.plan.gpu_loss_at - time.monotonic())
        else:  # ... and a GPU that fell off the bus stays lost: the next one never sees it,
            lose_after = 0.0
            self.dcgm.drop_gpu(self.uuids[LOST_GPU])  # nor does dcgm-exporter
        self._start_run(lose_after)
        self.down.append((killed, self.runs[-1].healthy))
        self._note(f"agent restarted (run {len(self.runs)}, pid {self.runs[-1].pid})")

    def vllm_restart(self) -> None:
        def restart() -> None:
            self._note(f"vLLM engine down for {self.plan.vllm_down:g} s")
            self.vllm.restart_engine(self.plan.vllm_down)
            self._note("vLLM engine back, its counters at 0")

        thread = threading.Thread(target=restart, name="soak-vllm-restart", daemon=True)
        self.side_threads.append(thread)
        thread.start()  # the schedule goes on meanwhile

    def clock_forward(self) -> None:
        self.clock.set(3600)
        self._note("the agent's wall clock +1 h")

    def clock_back(self) -> None:
        self.clock.set(0)
        self._note("the agent's wall clock -1 h (real time again)")

    def pg_down(self) -> None:
        self.postgres.stop()
        self.pg_down_at = (time.monotonic(), math.nan)
        self._note("PostgreSQL stopped")

    def pg_up(self) -> None:
        self.postgres.start()
        self.pg_down_at = (self.pg_down_at[0], time.monotonic())
        self._note("PostgreSQL started")

    def _watch_gpu_loss(self, s: Scrape) -> None:
        if self.lost_seen is None and s.get("gpuledger_gpu_lost", gpu=str(LOST_GPU)) == 1.0:
            self.lost_seen = s
            self.dcgm.drop_gpu(self.uuids[LOST_GPU])  # dcgm-exporter loses it as well
            self._note(f"GPU {LOST_GPU} lost (gpuledger_gpu_lost=1)")

    # -- the run -------------------------------------------------------------------------
    def run(self) -> None:
        self.clock.set(0)
        self._start_run(None)
        self.t0, self.wall0 = self.runs[0].nvml_seen, time.time()
        self.scraper.hooks.append(self._watch_gpu_loss)
        for thread in (self.scraper, self.rss, self.dcgm):
            thread.start()
        # traffic once the agent has read the engine's counters (its baseline)
        wait_until(lambda: len(self.vllm.renders) >= 2, timeout=30)
        self.load.start()
        for at, name in self.plan.events():
            time.sleep(max(0.0, self.t0 + at - time.monotonic()))
            getattr(self, name)()
        time.sleep(max(0.0, self.t0 + self.plan.duration - time.monotonic()))
        self._finish()

    def _finish(self) -> None:
        for thread in self.side_threads:
            thread.join(timeout=30)
        self.load.stop()
        stopped = time.monotonic()
        self._note("traffic stopped")
        # the agent reads the final counters (three times: one read surely saw them) ...
        wait_until(lambda: sum(r.t > stopped for r in self.vllm.renders) >= 3, timeout=30)
        # ... and the spool drains into the store (the outage's backoff included)
        drained = self.scraper.wait_for(
            lambda s: s.get("gpuledger_ledger_pending_rows") == 0.0,
            timeout=max(60.0, 2 * self.plan.pg_outage + 30),
            after=time.monotonic(),
        )
        self._note("spool drained" if drained else "spool NOT drained")
        self.scraper.stop()
        self.rss.stop()
        self.dcgm.stop()
        self._end_run(signal.SIGTERM)
        self._note("SIGTERM")

    def cleanup(self) -> None:
        for thread in (self.load, self.scraper, self.rss, self.dcgm):
            if thread.is_alive():
                thread.stop()
        if self.agent.proc is not None and self.agent.proc.poll() is None:
            with suppress(Exception):
                self._end_run(signal.SIGTERM)
        if self.postgres._srv is None:  # the test failed during the outage
            self.postgres.start()

    # -- ground truth ----------------------------------------------------------------------
    def rel(self, t: float) -> float:
        return t - self.t0

    def loss_window(self) -> tuple[float, float] | None:
        """When GPU 3 stopped accruing: not before the reading preceding the last scrape
        that had it alive, not after the first scrape that said lost."""
        if self.lost_seen is None or len(self.runs) < 2:
            return None
        run, lost = self.runs[1], self.lost_seen
        alive = [
            s
            for s in self.scraper.snapshot()
            if s.ok
            and run.healthy <= s.t0 < lost.t0
            and s.get("gpuledger_gpu_lost", gpu=str(LOST_GPU)) == 0.0
        ]
        lo = max(run.nvml_seen, alive[-1].t0 - INTERVAL) if alive else run.nvml_seen
        return lo, lost.t1

    def windows(self, gpu: int, *, upper: bool) -> list[tuple[float, float]]:
        """When the GPU was observed (monotonic). ``upper``: the widest it can be -- from
        each process's start; else from the first NVML reading the test saw."""
        loss = self.loss_window()
        out: list[tuple[float, float]] = []
        for run in self.runs:
            start, end = (run.popen if upper else run.nvml_seen), run.ended
            if gpu == LOST_GPU and run.n >= 2:
                if run.n > 2 or loss is None:
                    continue
                end = min(end, loss[1] if upper else loss[0])
            if end > start:
                out.append((start, end))
        return out

    def faked_wall(self, mono: float) -> float:
        return self.wall0 + (mono - self.t0) + self.clock.offset_at(mono)

    def per_hour(self, intervals: list[tuple[float, float]]) -> dict[int, float]:
        """Seconds of ``intervals`` per UTC hour of the agent's (stepped) wall clock."""
        cuts = sorted(t for t, _, _ in self.clock.offsets)
        out: dict[int, float] = defaultdict(float)
        for a, b in intervals:
            for lo, hi in itertools.pairwise([a, *[c for c in cuts if a < c < b], b]):
                offset = self.clock.offset_at(lo)
                t = lo
                while t < hi:
                    wall = self.wall0 + (t - self.t0) + offset
                    h = hour_start(wall)
                    step = min(hi - t, h + HOUR - wall)
                    out[h] += step
                    t += step
        return dict(out)

    def hour_tolerance(self, gpu: int) -> dict[int, float]:
        """Per hour, what the uncertain moments mapped into it may move: each run's first
        reading (after its runtime started, shortly before /healthz) and its last, each
        clock step (one interval, on both sides), the GPU's loss."""
        tol: dict[int, float] = defaultdict(lambda: 0.5)
        for run in self.runs:
            tol[hour_start(self.faked_wall(run.nvml_seen))] += run.nvml_seen - run.healthy + 1.0
            tol[hour_start(self.faked_wall(run.ended))] += END_SLACK
        for t, _, _ in self.clock.offsets[1:]:
            for h in {hour_start(self.faked_wall(t - 1e-6)), hour_start(self.faked_wall(t))}:
                tol[h] += INTERVAL + 0.5
        loss = self.loss_window()
        if gpu == LOST_GPU and loss is not None:
            tol[hour_start(self.faked_wall(loss[1]))] += loss[1] - loss[0] + 0.5
        return tol


# --- reading the store and the spool -----------------------------------------------------
def _rows(db_url: str, query: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(db_url) as conn:
        return [tuple(r) for r in conn.execute(query.encode()).fetchall()]


_TABLES = {
    "usage": "SELECT extract(epoch FROM hour_start)::bigint, node, gpu_uuid, namespace, "
    "service, allocated_gpu_seconds, busy_gpu_seconds, energy_joules FROM ledger_usage "
    "ORDER BY 1, 2, 3, 4, 5",
    "coverage": "SELECT extract(epoch FROM hour_start)::bigint, node, gpu_uuid, "
    "observed_seconds FROM ledger_coverage ORDER BY 1, 2, 3",
    "tokens": "SELECT extract(epoch FROM hour_start)::bigint, node, namespace, service, "
    "model_name, prompt_tokens, generation_tokens FROM ledger_tokens ORDER BY 1, 2, 3, 4, 5",
}


def ledger_tables(db_url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the three ledger tables, ``updated_at`` aside, in key order."""
    return {name: _rows(db_url, query) for name, query in _TABLES.items()}


def spool_totals(path: Path) -> dict[str, dict[str, float]]:
    queries = {
        "service": "SELECT service, TOTAL(allocated_gpu_seconds) FROM spool_usage GROUP BY 1",
        "gpu": "SELECT gpu_uuid, TOTAL(observed_seconds) FROM spool_coverage GROUP BY 1",
        "tokens": "SELECT service, TOTAL(generation_tokens) FROM spool_tokens GROUP BY 1",
    }
    db = sqlite3.connect(path)
    try:
        return {name: dict(db.execute(q)) for name, q in queries.items()}
    finally:
        db.close()


def same_totals(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(
        math.isclose(a[k], b[k], rel_tol=1e-9, abs_tol=1e-6) for k in a
    )


# --- the checks -------------------------------------------------------------------------
@dataclass
class Check:
    name: str
    ok: bool
    detail: str


class Evaluation:
    def __init__(self, soak: Soak) -> None:
        self.soak = soak
        self.checks: list[Check] = []
        self.info: list[str] = []
        self.scrapes = soak.scraper.snapshot()
        self.good = [s for s in self.scrapes if s.ok]
        self.log = soak.agent.log()
        store = open_store(soak.db_url)
        try:
            self.violations = store.invariant_violations(LO, HI, rel_tol=1e-9)
            self.coverage = {r.gpu_uuid: r.observed_seconds for r in store.coverage(LO, HI)}
            self.usage = {
                (str(r.namespace), str(r.service)): r.allocated_gpu_seconds
                for r in store.usage(LO, HI, ["namespace", "service"])
            }
            self.tokens = store.tokens(LO, HI, ["service", "model_name"])
        finally:
            store.close()

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, bool(ok), detail))

    def run_all(self) -> None:
        for step in (
            self.ledger_vs_ground_truth,
            self.hours_follow_the_wall_clock,
            self.services,
            self.store_equals_spool,
            self.replay_changes_nothing,
            self.tokens_billed,
            self.collection_never_stalls,
            self.logs,
            self.rss,
            self.scrapes_answered,
            self.faults_took_effect,
        ):
            step()

    # 1. the ledger against the ground truth
    def ledger_vs_ground_truth(self) -> None:
        soak, coverage = self.soak, self.coverage
        self.check(
            "invariant: Σ allocated = Σ observed per (node, hour)",
            not self.violations,
            f"{len(self.violations)} violating hours {self.violations[:3]}",
        )
        self.check(
            "every simulated GPU has coverage, no other",
            sorted(coverage) == sorted(soak.uuids),
            f"{len(coverage)} GPUs in the store",
        )
        runs = len(soak.runs)
        ok_all = True
        for i, uuid in enumerate(soak.uuids):
            lo = sum(b - a for a, b in soak.windows(i, upper=False)) - runs * END_SLACK
            hi = sum(b - a for a, b in soak.windows(i, upper=True)) + runs * START_SLACK
            got = coverage.get(uuid, 0.0)
            ok = lo <= got <= hi
            ok_all &= ok
            self.info.append(
                f"GPU {i}: {got:7.2f} s observed, expected {lo:7.2f} .. {hi:7.2f}"
                + ("" if ok else "   <-- outside")
            )
        up = sum(r.ended - r.popen for r in soak.runs)
        self.check(
            "per GPU: up-time - a cycle per run <= observed <= up-time (GPU 3: until lost)",
            ok_all,
            f"agent processes alive {up:.1f} s in {runs} runs; per GPU in the figures",
        )

    def hours_follow_the_wall_clock(self) -> None:
        soak = self.soak
        got: dict[tuple[str, int], float] = defaultdict(float)
        for row in ledger_tables(soak.db_url)["coverage"]:
            got[(str(row[2]), int(row[0]))] += float(row[3])
        worst = ""
        real_hours = {hour_start(soak.wall0 + r.popen - soak.t0) for r in soak.runs}
        stepped = 0.0
        for i, uuid in enumerate(soak.uuids):
            expected = soak.per_hour(soak.windows(i, upper=False))
            tol = soak.hour_tolerance(i)
            for h in sorted(set(expected) | {hh for (u, hh) in got if u == uuid}):
                seconds, want = got.get((uuid, h), 0.0), expected.get(h, 0.0)
                if abs(seconds - want) > tol[h] and not worst:
                    worst = (
                        f"GPU {i}, hour {datetime.fromtimestamp(h, UTC):%H}:00: {seconds:.2f} s,"
                        f" expected {want:.2f} ± {tol[h]:.2f}"
                    )
            if i == 0:
                stepped = sum(s for h, s in expected.items() if h not in real_hours)
        self.check(
            "per GPU and hour: seconds land in the hour of the agent's (stepped) wall clock",
            not worst,
            worst or f"GPU 0: {stepped:.1f} s belong to the +1 h hour",
        )

    def services(self) -> None:
        expected = {
            owner: sum(share * self.coverage.get(g, 0.0) for g, share in per_gpu.items())
            for owner, per_gpu in expected_shares(SEED).items()
        }
        bad = [
            f"{owner}: {self.usage.get(owner, 0.0):.3f} != {seconds:.3f}"
            for owner, seconds in expected.items()
            if not math.isclose(self.usage.get(owner, 0.0), seconds, rel_tol=1e-9, abs_tol=1e-6)
        ]
        extra = sorted(set(self.usage) - set(expected))
        if extra:
            bad.append(f"owners not in the layout: {extra}")
        self.check(
            "per service: allocated = its share of the layout x each GPU's observed seconds",
            not bad,
            "; ".join(bad[:3]) or f"{len(self.usage)} owners, to 1e-9",
        )

    def store_equals_spool(self) -> None:
        spool = spool_totals(self.soak.workdir / "state" / "spool.db")
        by_service: dict[str, float] = defaultdict(float)
        for (_, service), seconds in self.usage.items():
            by_service[service] += seconds
        tokens = {str(r.service): r.generation_tokens for r in self.tokens}
        self.check(
            "the store holds exactly the spool's running totals (usage, coverage, tokens)",
            same_totals(spool["service"], dict(by_service))
            and same_totals(spool["gpu"], self.coverage)
            and same_totals(spool["tokens"], tokens),
            f"spool {sum(spool['service'].values()):.3f} GPU-s, "
            f"store {sum(by_service.values()):.3f} GPU-s; observed: spool "
            f"{sum(spool['gpu'].values()):.3f} s, store {sum(self.coverage.values()):.3f} s; "
            f"generation tokens: spool {sum(spool['tokens'].values()):.0f}, "
            f"store {sum(tokens.values()):.0f}",
        )

    def replay_changes_nothing(self) -> None:
        before = ledger_tables(self.soak.db_url)
        spool = Spool(self.soak.workdir / "state" / "spool.db")
        try:
            usage, coverage = spool.load(0)
            token_rows, _ = spool.load_tokens(0)
        finally:
            spool.close()
        store = open_store(self.soak.db_url)
        try:
            store.upsert(usage, coverage)
            store.upsert_tokens(token_rows)
        finally:
            store.close()
        self.check(
            "replaying the whole spool into the store again changes nothing",
            ledger_tables(self.soak.db_url) == before,
            f"{len(usage)} usage, {len(coverage)} coverage, {len(token_rows)} token rows",
        )

    def tokens_billed(self) -> None:
        vllm = self.soak.vllm
        want_prompt, want_gen = vllm.expected_tokens()
        got_prompt = sum(r.prompt_tokens for r in self.tokens)
        got_gen = sum(r.generation_tokens for r in self.tokens)
        lost = sum(r["final_generation"] - r["last_seen_generation"] for r in vllm.restarts)
        epochs = list(dict.fromkeys(r.epoch for r in vllm.renders))
        first_reads = [next(r.generation for r in vllm.renders if r.epoch == e) for e in epochs]
        self.check(
            "tokens: the ledger = what each engine life counted, from the agent's first read "
            "to its last",
            (got_prompt, got_gen) == (want_prompt, want_gen),
            f"generation {got_gen:.0f} (expected {want_gen:.0f}), prompt {got_prompt:.0f} "
            f"(expected {want_prompt:.0f}); {lost:.0f} generation tokens were served after "
            f"the last read before a restart (lost by design); first read after each "
            f"restart: {first_reads[1:]}",
        )

    def collection_never_stalls(self) -> None:
        soak = self.soak
        worst, where = 0.0, ""
        for run in soak.runs:
            since, value = math.nan, None
            for s in self.good:
                if not run.nvml_seen <= s.t0 < run.ended:
                    continue
                v = s.get(LAST_SUCCESS, collector="nvml")
                if v != value:
                    since, value = s.t0, v
                elif s.t0 - since > worst:
                    worst = s.t0 - since
                    where = (
                        f"run {run.n}: NVML's last success frozen from t={soak.rel(since):.1f} s"
                        f" to t={soak.rel(s.t0):.1f} s"
                    )
        self.check(
            f"collection never stalls longer than max_gap ({MAX_GAP:g} s) while the agent is up",
            worst <= MAX_GAP,
            where if worst > MAX_GAP else f"longest {worst:.1f} s",
        )

    # 2. the logs
    def logs(self) -> None:
        lines = self.log.splitlines()
        bad = [ln for ln in lines if any(m in ln for m in ("Traceback", "raised unexpectedly"))]
        self.check(
            "no unhandled exception in the agent's log",
            not bad,
            bad[0]
            if bad
            else f"{sum(' WARNING ' in ln for ln in lines)} warnings, "
            f"{sum(' ERROR ' in ln for ln in lines)} errors",
        )
        runs = len(self.soak.runs)
        want = {
            "ledger resumed from the spool": runs - 1,
            "ledger flush failed": 1,
            "collector dcgm down": 1,
            "collector dcgm recovered": 1,
            "collector vllm down": 1,
        }
        counts = {k: self.log.count(k) for k in [*want, "ledger flush recovered"]}
        self.check(
            "the log tells the faults: spool resumes, flush failed, dcgm and vLLM down/up",
            counts["ledger resumed from the spool"] == runs - 1
            and all(counts[k] >= n for k, n in want.items()),
            str(counts),
        )
        messages: dict[str, int] = defaultdict(int)
        for line in lines:
            if " WARNING " in line or " ERROR " in line:
                messages[re.sub(r"\d+", "N", line.split(" ", 3)[-1])[:100]] += 1
        self.info += [f"log: {n} x {m}" for m, n in sorted(messages.items(), key=lambda x: -x[1])]

    # 3. RSS
    def rss(self) -> None:
        last = self.soak.runs[-1]
        mid = (last.popen + last.ended) / 2
        samples = self.soak.rss.samples
        half = [(t, kib / 1024) for t, pid, kib in samples if pid == last.pid and t >= mid]
        slope = slope_per_minute(half)
        span = half[-1][0] - half[0][0] if len(half) > 1 else 0.0
        bound = max(1.0, 2.0 * 60.0 / max(span, 1.0))  # 1 MiB/min; 2 MiB over a short window
        peak = max((kib / 1024 for _, _, kib in samples), default=0.0)
        first, final = (half[0][1], half[-1][1]) if half else (0.0, 0.0)
        self.check(
            f"RSS flat over the last half of the final agent's life (< {bound:.1f} MiB/min)",
            len(half) >= 5 and slope < bound,
            f"{slope:+.2f} MiB/min over {span:.0f} s ({len(half)} samples, {first:.1f} -> "
            f"{final:.1f} MiB); peak of all runs {peak:.1f} MiB",
        )

    # 4. /metrics answered every scrape
    def scrapes_answered(self) -> None:
        down = self.soak.down
        failed = [s for s in self.scrapes if not s.ok]
        unexcused = [s for s in failed if not any(s.t0 <= b and s.t1 >= a for a, b in down)]
        latency = sorted(s.t1 - s.t0 for s in self.good) or [math.nan]
        p99 = latency[int(0.99 * (len(latency) - 1))]
        if unexcused:
            detail = f"t={self.soak.rel(unexcused[0].t0):.1f} s: {unexcused[0].error}"
        else:
            detail = (
                f"{len(self.scrapes)} scrapes, {len(failed)} failed, all inside the "
                f"{len(down)} kill windows; latency p99 {1000 * p99:.0f} ms, "
                f"max {1000 * latency[-1]:.0f} ms"
            )
        self.check(
            "/metrics answered 200 and parsed, every scrape outside the kill windows",
            bool(self.good) and not unexcused,
            detail,
        )

    # and the faults took effect (else the soak proves nothing)
    def faults_took_effect(self) -> None:
        soak, good = self.soak, self.good
        dcgm_up = [s.get("gpuledger_collector_up", collector="dcgm") for s in good]
        flips = sum(1 for a, b in itertools.pairwise(dcgm_up) if a != b)
        # NVML is judged from its first reading of each run on: a scrape that lands between
        # a restarted agent's first answer and its first NVML cycle (seconds on a loaded
        # machine) shows the collector not yet up, which is no fault of dcgm-exporter's
        collecting = [s for s in good if any(r.nvml_seen <= s.t0 < r.ended for r in soak.runs)]
        nvml_down = sum(
            s.get("gpuledger_collector_up", collector="nvml") != 1.0 for s in collecting
        )
        self.check(
            "dcgm-exporter's faults cost dcgm's up only: it flips 0 <-> 1, NVML stays up",
            flips >= 4 and nvml_down == 0,
            f"dcgm up flipped {flips} times in the scrapes; nvml down in {nvml_down}",
        )
        vllm_down = sum(
            s.get("gpuledger_collector_up", collector="vllm") == 0.0
            or s.get("gpuledger_vllm_endpoint_up", service="chat") == 0.0
            for s in good
        )
        self.check(
            "each vLLM restart is seen (its scrape fails) and the engine came back at 0",
            vllm_down >= 2 and len(soak.vllm.restarts) == 2,
            f"vLLM down in {vllm_down} scrapes; {len(soak.vllm.restarts)} restarts",
        )
        pg_down, pg_up = soak.pg_down_at
        pending = max(
            (
                s.get("gpuledger_ledger_pending_rows") or 0.0
                for s in good
                if pg_down <= s.t0 <= pg_up
            ),
            default=0.0,
        )
        drained = next(
            (s.t0 for s in good if s.t0 > pg_up and s.get("gpuledger_ledger_pending_rows") == 0),
            math.nan,
        )
        failures = max(
            (s.get("gpuledger_ledger_flush_failures_total") or 0.0 for s in good), default=0.0
        )
        self.check(
            "the store outage is seen: flushes fail, pending rows grow, then drain",
            pending > 0 and self.log.count("ledger flush failed") >= 1 and drained > pg_up,
            f"PostgreSQL down {pg_up - pg_down:.0f} s: up to {pending:.0f} rows pending, "
            f"{failures:.0f} failed flushes in one run, drained {drained - pg_up:.1f} s after "
            f"it was back; 'flush recovered' logged {self.log.count('ledger flush recovered')}x",
        )
        loss = soak.loss_window()
        self.check(
            f"GPU {LOST_GPU} lost: gpuledger_gpu_lost=1, then no more seconds (bounds above)",
            loss is not None,
            f"lost between t={soak.rel(loss[0]):.1f} s and t={soak.rel(loss[1]):.1f} s"
            if loss
            else "never seen lost",
        )
        skew = [
            (s.get(LAST_SUCCESS, collector="nvml") or 0.0) - (soak.wall0 + s.t0 - soak.t0)
            for s in good
        ]
        energy = [
            s.get("gpuledger_gpu_energy_joules_total", gpu="0", mig_instance="") for s in good
        ]
        jumps = [b - a for a, b in itertools.pairwise(energy) if a is not None and b is not None]
        self.check(
            "the agent's wall clock stepped (+1 h seen) and the simulated node followed it",
            max(skew, default=0.0) > 3500 and max(jumps, default=0.0) > 3000 * 72,
            f"largest skew of NVML's last success vs real time {max(skew, default=0.0):+.0f} s; "
            f"GPU 0's energy counter jumped {max(jumps, default=0.0) / 1e3:.0f} kJ in one "
            f"scrape at the step (an hour of the simulated board)",
        )
        self.info.append(
            f"vLLM: {soak.load.ok} completions served, {soak.load.failed} refused while "
            f"restarting; the agent read its /metrics {len(soak.vllm.renders)} times"
        )
        modes = sorted({m for _, m in soak.dcgm.steps})
        self.info.append(f"dcgm-exporter: {len(soak.dcgm.steps)} steps through {modes}")


def report(soak: Soak, ev: Evaluation) -> str:
    lines = [
        "",
        f"=== gpuledger soak: {soak.plan.duration:g} s, {len(soak.runs)} agent runs ===",
        "faults (t from the first agent's first NVML reading):",
        *[f"  t={soak.rel(t):7.1f} s  {what}" for t, what in sorted(soak.faults)],
        "agent runs:",
        *[
            f"  #{r.n} pid {r.pid}: started t={soak.rel(r.popen):.1f} s (healthy "
            f"+{r.healthy - r.popen:.1f} s, NVML +{r.nvml_seen - r.popen:.1f} s), "
            f"{r.how} at t={soak.rel(r.ended):.1f} s"
            for r in soak.runs
        ],
        "figures:",
        *[f"  {x}" for x in ev.info],
        "checks:",
        *[f"  [{'PASS' if c.ok else 'FAIL'}] {c.name}\n         {c.detail}" for c in ev.checks],
    ]
    return "\n".join(lines)


@pytest.fixture
def soak_clock(tmp_path: Path) -> Faketime:
    clock = Faketime(tmp_path / "clock")
    why = clock.self_check()
    if why is not None:
        pytest.skip(f"cannot step the agent's wall clock: {why} (apt-get install faketime)")
    return clock


@pytest.mark.soak
@pytest.mark.e2e
def test_soak_with_faults(
    tmp_path: Path, soak_clock: Faketime, postgres_server: Any, postgres_db_url: str
) -> None:
    duration = float(os.environ.get(SECONDS_ENV, "60"))
    assert duration >= 30, f"{SECONDS_ENV}: at least 30, the schedule needs room"
    plan = Plan.for_duration(duration)
    with (
        StandIn(Behaviour()) as dcgm,
        RecordingVllm(VllmBehaviour(served_model=MODEL)) as vllm,
    ):
        soak = Soak(tmp_path, plan, soak_clock, dcgm, vllm, postgres_server, postgres_db_url)
        try:
            soak.run()
        finally:
            soak.cleanup()
    ev = Evaluation(soak)
    ev.run_all()
    text = report(soak, ev)
    print(text)
    assert all(c.ok for c in ev.checks), text
