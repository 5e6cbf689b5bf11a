"""A simulated GPU node: a :class:`FakeNvml` whose readings move with time.

It exists so that a newcomer without GPUs sees the agent work (``gpuledger demo``,
``gpuledger agent --simulate``) and so that tests and the ledger's ground truth have a
node whose every quantity is known in advance. The node is a model first and an NVML
second: :class:`SimulatedNode` answers "what was GPU 3's utilization / power / energy at
time t, which pid of which service ran where" directly, and :meth:`SimulatedNode.advance_to`
writes the same values into the fake NVML the collector reads. Expectations computed from
the model are therefore independent of the collector under test.

The shape of the node (deterministic for a seed):

* most GPUs serve one tensor-parallel LLM (one worker process per GPU, in lockstep);
* one GPU is held by a batch service that keeps it under 40 % busy (the idle alert's case);
* one GPU is time-sliced between two services (two processes on one device);
* from 5 GPUs, one runs MPS: three clients in three pods through one server (sim/mps.py);
* two GPUs are in MIG mode with several instances each, one instance left empty and one
  compute slice left unallocated (idle capacity the ledger must account for).

A node given a ``layout`` (``sim/services.py``: the demo's findings node) has no roles:
each GPU is whole, one replica per service named, or a spare nobody holds.

Load is a UTC-hour sinusoid per service, or a daily burst (lower at weekends), plus seeded
noise. Everything is defined at "knots" every :data:`KNOT_S` seconds of absolute time and
interpolated linearly in between, which keeps a value at any t closed-form (independent
of how the node was stepped) and makes the energy counter the exact integral of power.
Energy is integrated incrementally with daily checkpoints, so a 15 s step costs a few knot
evaluations and a query anywhere in the past at most one day's.
"""

from __future__ import annotations

import functools
import math
import random
import time
import uuid as uuidlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from gpuledger.sim.mps import as_mps
from gpuledger.sim.nvml_fake import (
    H100_80GB,
    MIB,
    MODELS,
    FakeNvml,
    GpuModel,
    GpuSpec,
    MigInstanceSpec,
    ProcessSpec,
)
from gpuledger.sim.services import (
    BATCH,
    CHAT,
    EMBED,
    MIG_LAYOUTS,
    MIG_SERVICES,
    MPS_CLIENTS,
    RERANK,
    LoadProfile,
    Service,
    WholeGpu,
)

KNOT_S = 60.0
"""Spacing of the model's knots (seconds of absolute Unix time)."""

DEFAULT_START = 1_736_121_600.0
"""2025-01-06 00:00:00 UTC, a Monday: where a node without a clock starts."""

THERMAL_LAG_S = 120.0
_CHECKPOINT_KNOTS = 1440  # one day of knots between energy checkpoints
_MEMO_MAX = 8192
_XID_PER_GPU_DAY = 0.08
_XID_CODES = (13, 31, 31, 43)  # graphics exception, MMU fault (application errors), reset
_RESERVED_BYTES = 512 * MIB  # what the driver holds on a whole GPU with no process
_REASON_GPU_IDLE, _REASON_SW_POWER_CAP = 0x1, 0x4

Role = Literal["dedicated", "idle", "shared", "mig", "mps", "spare"]


@dataclass(frozen=True, slots=True)
class SimProcess:
    """A GPU process and the Kubernetes container it belongs to."""

    pid: int
    gpu_index: int
    gpu_uuid: str
    mig_instance: int | None
    mig_device_uuid: str | None
    namespace: str
    service: str
    pod: str
    container: str
    memory_bytes: int
    load: LoadProfile
    noise_key: int


@dataclass(frozen=True, slots=True)
class SimDevice:
    """A schedulable device: a whole GPU or one MIG instance."""

    gpu_index: int
    gpu_uuid: str
    mig_instance: int | None
    mig_profile: str
    mig_device_uuid: str | None
    slices: int | None  # compute slices of a MIG instance
    total_slices: int | None  # of the GPU, for a MIG instance
    memory_total_bytes: int
    processes: tuple[SimProcess, ...]

    @property
    def memory_used_bytes(self) -> int:
        return sum(p.memory_bytes for p in self.processes)


@dataclass(frozen=True, slots=True)
class SimGpu:
    index: int
    uuid: str
    model: GpuModel
    role: Role
    ambient_c: float
    ecc_corrected: int
    devices: tuple[SimDevice, ...]

    @property
    def mig(self) -> bool:
        return self.role == "mig"

    @property
    def unallocated_slices(self) -> int:
        """Compute slices of a MIG GPU in no instance (0 for a whole GPU)."""
        if not self.mig:
            return 0
        return self.model.mig_total_slices - sum(d.slices or 0 for d in self.devices)

    @property
    def memory_used_bytes(self) -> int:
        """What NVML reports for the whole GPU (processes plus the driver's reserve)."""
        return sum(d.memory_used_bytes for d in self.devices) + (0 if self.mig else _RESERVED_BYTES)


# --- deterministic noise ----------------------------------------------------------------
_M64 = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64's finalizer: a cheap, well-spread hash of a 64-bit integer."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _unit(key: int, n: int) -> float:
    """A value in [-1, 1) that depends only on (key, n)."""
    return (_mix(key ^ (n & _M64)) >> 11) * (2.0 / (1 << 53)) - 1.0


@functools.lru_cache(maxsize=8192)
def _slow_noise(key: int, h: int) -> tuple[float, float]:
    """An hour's slow-noise end points: the same for its 60 knots, so hashed once per
    hour, not per knot (the demo fleet's month: about a fifth less CPU, same values)."""
    return _unit(key, 2 * h), _unit(key, 2 * h + 2)


def _load_at_knot(p: SimProcess, k: int) -> float:
    t = k * KNOT_S
    day = int(t // 86400.0)
    hour = (t - day * 86400.0) / 3600.0
    lp = p.load
    c = math.cos(2.0 * math.pi * (hour - lp.peak_hour_utc) / 24.0)
    demand = lp.base + lp.amplitude * (max(0.0, c) ** lp.burst if lp.burst else c)
    if (day + 3) % 7 >= 5:  # 1970-01-01 was a Thursday: 5, 6 are Saturday, Sunday
        demand *= 0.7
    h = int(t // 3600.0)
    frac = (t - h * 3600.0) / 3600.0
    slow0, slow1 = _slow_noise(p.noise_key, h)
    slow = slow0 + (slow1 - slow0) * frac
    fast = _unit(p.noise_key ^ 0x5DEECE66D, k)
    return min(1.0, max(0.0, demand + 0.07 * slow + 0.04 * fast))


class _Integral:
    """The integral from knot ``k0`` of a series given at knots and linear in between, with
    a forward cursor (stepping costs the knots crossed) and a checkpoint per day (a query
    in the past costs at most a day of knots)."""

    __slots__ = ("_checkpoints", "_cursor_cum", "_cursor_k", "_f", "_k0")

    def __init__(self, f: Callable[[int], float], k0: int) -> None:
        self._f = f
        self._k0 = k0
        self._checkpoints = [0.0]
        self._cursor_k = k0
        self._cursor_cum = 0.0

    def _to_knot(self, k: int) -> float:
        if k < self._k0:
            raise ValueError("time before the simulated driver was loaded")
        if k >= self._cursor_k:
            kk, cum = self._cursor_k, self._cursor_cum
        else:
            j = (k - self._k0) // _CHECKPOINT_KNOTS
            kk, cum = self._k0 + j * _CHECKPOINT_KNOTS, self._checkpoints[j]
        f = self._f
        prev = f(kk)
        while kk < k:
            nxt = f(kk + 1)
            cum += KNOT_S * (prev + nxt) / 2.0
            kk += 1
            prev = nxt
            i, r = divmod(kk - self._k0, _CHECKPOINT_KNOTS)
            if r == 0 and i == len(self._checkpoints):
                self._checkpoints.append(cum)
        if k > self._cursor_k:
            self._cursor_k, self._cursor_cum = k, cum
        return cum

    def at(self, t: float) -> float:
        x = t / KNOT_S
        k = math.floor(x)
        frac = x - k
        f0, f1 = self._f(k), self._f(k + 1)
        return self._to_knot(k) + KNOT_S * frac * (f0 + (f0 + frac * (f1 - f0))) / 2.0


def _interp(f: Callable[[int], float], t: float) -> float:
    x = t / KNOT_S
    k = math.floor(x)
    f0 = f(k)
    return f0 + (x - k) * (f(k + 1) - f0)


class SimulatedNode:
    """A node of ``gpus`` GPUs whose NVML (:attr:`nvml`) follows the model below.

    Time advances either explicitly (:meth:`advance_to`, for tests and fast-forwarding)
    or, when ``clock`` is given, by itself: every NVML call first brings the node to
    ``clock()`` (at most once per second of clock time), so the agent needs no hook.

    ``lose_gpu`` (an index) makes that GPU fall off the bus ``lose_after_s`` seconds of
    ``mono`` (the monotonic clock: a wall-clock step must not move it) after the node was
    built: from the first NVML call after that, every call naming it raises GpuIsLost,
    for the rest of the node's life (``simulate.lose_gpu``; a fault for soak runs).

    ``layout`` (one entry per GPU, ``gpus`` of them) replaces the roles: each GPU whole,
    given to the services named (a pod each: one replica per GPU), or to none (``()``: a
    spare GPU, role ``"spare"``); ``sim/services.py`` has the demo fleet's.
    """

    def __init__(
        self,
        seed: int,
        gpus: int = 8,
        *,
        model: str = H100_80GB.name,
        start: float | None = None,
        clock: Callable[[], float] | None = None,
        uptime_s: float = 6 * 3600.0,
        driver_version: str = "550.127.05",
        lose_gpu: int | None = None,
        lose_after_s: float = 0.0,
        mono: Callable[[], float] = time.monotonic,
        layout: Sequence[WholeGpu] | None = None,
    ) -> None:
        if gpus < 1:
            raise ValueError("a node has at least one GPU")
        if layout is not None and len(layout) != gpus:
            raise ValueError(f"a layout of {len(layout)} GPUs for a node of {gpus}")
        if lose_gpu is not None and not 0 <= lose_gpu < gpus:
            raise ValueError(f"lose_gpu {lose_gpu} is not a GPU of this node (0..{gpus - 1})")
        if model not in MODELS:
            raise ValueError(f"unknown GPU model {model!r}; known: {sorted(MODELS)}")
        self.seed = seed
        self._clock = clock
        if start is None:
            start = clock() if clock is not None else DEFAULT_START
        self._rng = random.Random(seed)  # noqa: S311 -- reproducible, not secret
        self.gpus: tuple[SimGpu, ...] = self._build(gpus, MODELS[model], layout)
        self.devices: tuple[SimDevice, ...] = tuple(d for g in self.gpus for d in g.devices)
        self.processes: tuple[SimProcess, ...] = tuple(p for d in self.devices for p in d.processes)
        self._by_pid = {p.pid: p for p in self.processes}
        self._device_of_pid = {p.pid: d for d in self.devices for p in d.processes}
        self._memo: dict[tuple[int, int | None], dict[int, tuple[float, tuple[float, ...]]]] = {
            (d.gpu_index, d.mig_instance): {} for d in self.devices
        }
        self._gpu_memo: list[dict[int, tuple[float, float]]] = [{} for _ in self.gpus]
        self._xid_days: dict[int, list[tuple[float, int, int]]] = {}
        self.driver_loaded_at = math.floor((start - uptime_s) / KNOT_S) * KNOT_S
        k0 = int(self.driver_loaded_at // KNOT_S)
        self._power = [self._power_knot_fn(g) for g in self.gpus]
        self._energy = [_Integral(f, k0) for f in self._power]
        self._mono = mono
        self._lose: tuple[int, float] | None = (
            None if lose_gpu is None else (lose_gpu, mono() + lose_after_s)
        )
        self.nvml = FakeNvml(
            [self._spec(g) for g in self.gpus],
            driver_version=driver_version,
            before_call=self._before_call if clock is not None or lose_gpu is not None else None,
        )
        self.now = start
        self._push(start, previous=None)

    # --- construction ----------------------------------------------------------------------
    def _uuid(self, prefix: str) -> str:
        return f"{prefix}-{uuidlib.UUID(int=self._rng.getrandbits(128), version=4)}"

    def _pod(self, service: str, rng: random.Random | None = None) -> str:
        alphabet, r = "bcdfghjklmnpqrstvwxz2456789", rng or self._rng
        rs = "".join(r.choice(alphabet) for _ in range(10))
        return f"{service}-{rs}-{''.join(r.choice(alphabet) for _ in range(5))}"

    @staticmethod
    def roles(gpus: int, model: GpuModel) -> tuple[Role, ...]:
        """Which GPU plays which part; the special ones come last, in this order."""
        mig: Role = "mig" if model.name in MIG_LAYOUTS else "dedicated"
        mps: list[Role] = ["mps"] if gpus >= 5 else []  # from 5 GPUs, an MPS GPU (sim/mps.py)
        special: list[Role] = [*mps, "idle", "shared", mig, mig]
        if gpus < 4:
            return tuple(special[:gpus])
        dedicated: list[Role] = ["dedicated"] * (gpus - len(special))
        return tuple(dedicated + special)

    def _build(
        self, n: int, model: GpuModel, plan: Sequence[WholeGpu] | None
    ) -> tuple[SimGpu, ...]:
        rng = self._rng
        roles: tuple[Role, ...] = (
            self.roles(n, model)
            if plan is None
            else tuple("dedicated" if services else "spare" for services in plan)
        )
        pids = iter(rng.sample(range(2_000, 4_000_000), 3 * n + 8))
        chat_pod = self._pod(CHAT.service)
        mem_total = model.memory_mib * MIB
        out: list[SimGpu] = []
        mig_seen = 0
        for index, role in enumerate(roles):
            gpu_uuid = self._uuid("GPU")

            def proc(
                svc: Service,
                pod: str,
                mem_total: int,
                mig: int | None = None,
                mig_uuid: str | None = None,
                gpu_index: int = index,
                gpu_uuid: str = gpu_uuid,
            ) -> SimProcess:
                pid = next(pids)
                return SimProcess(
                    pid=pid, gpu_index=gpu_index, gpu_uuid=gpu_uuid, mig_instance=mig,
                    mig_device_uuid=mig_uuid, namespace=svc.namespace, service=svc.service,
                    pod=pod, container="vllm" if svc.memory_fraction >= 0.9 else "server",
                    memory_bytes=int(svc.memory_fraction * mem_total) // MIB * MIB,
                    load=svc.load, noise_key=_mix(_mix(self.seed & _M64) ^ pid),
                )  # fmt: skip

            def whole(*procs: SimProcess, gpu_index: int = index, u: str = gpu_uuid) -> SimDevice:
                return SimDevice(gpu_index, u, None, "", None, None, None, mem_total, procs)

            if plan is not None:  # whole GPUs, a replica (pod) per service and GPU
                replicas = tuple(proc(s, self._pod(s.service), mem_total) for s in plan[index])
                devices: tuple[SimDevice, ...] = (whole(*replicas),)
            elif role == "dedicated":
                devices = (whole(proc(CHAT, chat_pod, mem_total)),)
            elif role == "idle":
                devices = (whole(proc(BATCH, self._pod(BATCH.service), mem_total)),)
            elif role == "mps":  # its pod names from an rng of their own: other GPUs keep theirs
                r = random.Random(self.seed ^ 0x6D7073)  # noqa: S311 -- reproducible, not secret
                devices = (
                    whole(*(proc(s, self._pod(s.service, r), mem_total) for s in MPS_CLIENTS)),
                )
            elif role == "shared":
                devices = (
                    whole(
                        proc(EMBED, self._pod(EMBED.service), mem_total),
                        proc(RERANK, self._pod(RERANK.service), mem_total),
                    ),
                )
            else:
                layout = MIG_LAYOUTS[model.name][mig_seen % 2]
                services = MIG_SERVICES[mig_seen % 2]
                mig_seen += 1
                mig_devices: list[SimDevice] = []
                for (profile_name, gi), svc in zip(layout, services, strict=True):
                    profile = model.mig_profiles[profile_name]
                    mig_uuid = self._uuid("MIG")
                    mem = profile.memory_mib * MIB
                    procs = (
                        ()
                        if svc is None
                        else (proc(svc, self._pod(svc.service), mem, gi, mig_uuid),)
                    )
                    mig_devices.append(
                        SimDevice(index, gpu_uuid, gi, profile_name, mig_uuid, profile.slices,
                                  model.mig_total_slices, mem, procs)
                    )  # fmt: skip
                devices = tuple(mig_devices)
            out.append(
                SimGpu(index=index, uuid=gpu_uuid, model=model, role=role,
                       ambient_c=rng.uniform(27.0, 33.0),
                       ecc_corrected=rng.choice((0, 0, 0, 0, 2, 17)), devices=devices)
            )  # fmt: skip
        return tuple(out)

    def _spec(self, g: SimGpu) -> GpuSpec:
        if g.mig:
            return GpuSpec(
                model=g.model.name,
                uuid=g.uuid,
                mig=tuple(
                    MigInstanceSpec(
                        profile=d.mig_profile,
                        gpu_instance_id=d.mig_instance or 0,
                        uuid=d.mig_device_uuid,
                        processes=tuple(ProcessSpec(p.pid, p.memory_bytes) for p in d.processes),
                    )
                    for d in g.devices
                ),
                ecc_corrected=g.ecc_corrected,
            )
        spec = GpuSpec(
            model=g.model.name,
            uuid=g.uuid,
            processes=tuple(ProcessSpec(p.pid, p.memory_bytes) for p in g.devices[0].processes),
            memory_used_bytes=g.memory_used_bytes,
            ecc_corrected=g.ecc_corrected,
        )
        return as_mps(spec, g.index) if g.role == "mps" else spec

    # --- the model -------------------------------------------------------------------------
    def _device_knot(self, d: SimDevice, k: int) -> tuple[float, tuple[float, ...]]:
        """(device utilization, each process's share of it) at knot k. Time-sliced
        processes split the device; their demand beyond 100 % is lost (queued)."""
        memo = self._memo[(d.gpu_index, d.mig_instance)]
        hit = memo.get(k)
        if hit is not None:
            return hit
        loads = [_load_at_knot(p, k) for p in d.processes]
        total = sum(loads)
        util = min(1.0, total)
        scale = util / total if total > 0 else 0.0
        value = (util, tuple(x * scale for x in loads))
        if len(memo) >= _MEMO_MAX:
            memo.clear()
        memo[k] = value
        return value

    def _gpu_knot(self, g: SimGpu, k: int) -> tuple[float, float]:
        """(board activity, power in W) at knot k. A MIG GPU's activity is its instances'
        weighted by their compute slices; power runs linearly from idle to the limit."""
        memo = self._gpu_memo[g.index]
        hit = memo.get(k)
        if hit is not None:
            return hit
        if g.mig:
            total = g.model.mig_total_slices
            board = sum(self._device_knot(d, k)[0] * (d.slices or 0) / total for d in g.devices)
        else:
            board = self._device_knot(g.devices[0], k)[0]
        idle, tdp = g.model.idle_power_w, g.model.power_limit_w
        value = (board, idle + (tdp - idle) * board)
        if len(memo) >= _MEMO_MAX:
            memo.clear()
        memo[k] = value
        return value

    def _board_knot(self, g: SimGpu, k: int) -> float:
        return self._gpu_knot(g, k)[0]

    def _power_knot_fn(self, g: SimGpu) -> Callable[[int], float]:
        def power(k: int) -> float:
            return self._gpu_knot(g, k)[1]

        return power

    def _device(self, gpu_index: int, mig_instance: int | None) -> SimDevice:
        for d in self.gpus[gpu_index].devices:
            if d.mig_instance == mig_instance:
                return d
        raise KeyError(f"GPU {gpu_index} has no device with MIG instance {mig_instance}")

    def utilization(self, gpu_index: int, t: float, mig_instance: int | None = None) -> float:
        """0..1. For a MIG GPU without ``mig_instance``: the slice-weighted board activity
        (what drives its power; NVML itself reports no utilization in MIG mode)."""
        g = self.gpus[gpu_index]
        if mig_instance is None and g.mig:
            return _interp(lambda k: self._board_knot(g, k), t)
        d = self._device(gpu_index, mig_instance)
        return _interp(lambda k: self._device_knot(d, k)[0], t)

    def process_utilization(self, pid: int, t: float) -> float:
        """The process's share of its device's time, 0..1."""
        d = self._device_of_pid[pid]
        i = d.processes.index(self._by_pid[pid])
        return _interp(lambda k: self._device_knot(d, k)[1][i], t)

    def process(self, pid: int) -> SimProcess:
        return self._by_pid[pid]

    def power_watts(self, gpu_index: int, t: float) -> float:
        return _interp(self._power[gpu_index], t)

    def energy_joules(self, gpu_index: int, t: float) -> float:
        """The board's energy counter: joules since the simulated driver load."""
        return self._energy[gpu_index].at(t)

    def temperature_celsius(self, gpu_index: int, t: float) -> float:
        """Follows power with a lag: ambient at 0 W, 72 C at the power limit."""
        g = self.gpus[gpu_index]
        p = self.power_watts(gpu_index, t - THERMAL_LAG_S)
        return g.ambient_c + (72.0 - g.ambient_c) * p / g.model.power_limit_w

    def busy_seconds(
        self, gpu_index: int, t0: float, t1: float, mig_instance: int | None = None
    ) -> float:
        """∫ utilization dt over [t0, t1] (exact for this piecewise-linear model)."""
        g = self.gpus[gpu_index]
        if mig_instance is None and g.mig:

            def f(k: int) -> float:
                return self._board_knot(g, k)

        else:
            d = self._device(gpu_index, mig_instance)

            def f(k: int) -> float:
                return self._device_knot(d, k)[0]

        integral = _Integral(f, math.floor(t0 / KNOT_S))
        return integral.at(t1) - integral.at(t0)

    def xid_events(self, t0: float, t1: float) -> list[tuple[float, int, int]]:
        """``(time, gpu index, XID code)`` of the XID errors in (t0, t1], in time order."""
        out: list[tuple[float, int, int]] = []
        for day in range(int(t0 // 86400.0), int(t1 // 86400.0) + 1):
            out.extend(e for e in self._xids_of_day(day) if t0 < e[0] <= t1)
        return out

    def _xids_of_day(self, day: int) -> list[tuple[float, int, int]]:
        cached = self._xid_days.get(day)
        if cached is not None:
            return cached
        events: list[tuple[float, int, int]] = []
        for g in self.gpus:
            key = _mix(_mix(self.seed & _M64) ^ (0xC0FFEE + g.index))
            if (_unit(key, day) + 1.0) / 2.0 >= _XID_PER_GPU_DAY:
                continue
            at = day * 86400.0 + (_unit(key, day + 1_000_000) + 1.0) / 2.0 * 86400.0
            code = _XID_CODES[int((_unit(key, day + 2_000_000) + 1.0) * 2) % 4]
            events.append((at, g.index, code))
        events.sort()
        if len(self._xid_days) > 64:
            self._xid_days.clear()
        self._xid_days[day] = events
        return events

    # --- moving the fake NVML ----------------------------------------------------------------
    def advance_to(self, t: float) -> None:
        """Brings the fake NVML to time ``t`` (seconds since the epoch, UTC)."""
        if t < self.now:
            raise ValueError(f"time goes forward only: {t} < {self.now}")
        previous = self.now
        self.now = t
        self._push(t, previous)

    def _before_call(self) -> None:
        if self._lose is not None and self._mono() >= self._lose[1]:
            self.nvml.mark_lost(self._lose[0])
            self._lose = None  # lost for good: nothing in the simulation resets a GPU
        if self._clock is not None:
            self._follow_clock()

    def _follow_clock(self) -> None:
        assert self._clock is not None
        t = self._clock()
        if t >= self.now + 1.0:  # a clock stepping back is ignored: counters stay monotonic
            self.advance_to(t)

    def _push(self, t: float, previous: float | None) -> None:
        fake = self.nvml
        ts_us = int(t * 1e6)
        x = t / KNOT_S
        k = math.floor(x)
        frac = x - k
        for g in self.gpus:
            st = fake.gpu(g.index)
            (b0, p0), (b1, p1) = self._gpu_knot(g, k), self._gpu_knot(g, k + 1)
            board = b0 + frac * (b1 - b0)
            power = p0 + frac * (p1 - p0)
            st.power_mw = round(power * 1000.0)
            st.energy_mj = int(self._energy[g.index].at(t) * 1000.0)
            st.temperature_c = round(self.temperature_celsius(g.index, t))
            capped = power >= 0.96 * g.model.power_limit_w
            idle = board < 0.03
            clock = g.model.idle_sm_clock_mhz if idle else g.model.max_sm_clock_mhz
            st.sm_clock_mhz = round(clock * 0.93) if capped else clock
            st.clocks_event_reasons = (_REASON_GPU_IDLE if idle else 0) | (
                _REASON_SW_POWER_CAP if capped else 0
            )
            if g.mig:
                continue
            d = g.devices[0]
            (u0, s0), (u1, s1) = self._device_knot(d, k), self._device_knot(d, k + 1)
            util = u0 + frac * (u1 - u0)
            st.utilization_gpu = round(util * 100.0)
            st.utilization_memory = round(util * 60.0)
            for i, p in enumerate(d.processes):
                share = s0[i] + frac * (s1[i] - s0[i])
                fake.add_process_sample(
                    g.index, p.pid, ts_us, round(share * 100.0), round(share * 60.0)
                )
        if previous is not None:
            for _, gpu_index, code in self.xid_events(previous, t):
                fake.inject_xid(gpu_index, code)


def simulated_nvml_api(
    seed: int,
    gpus: int = 8,
    *,
    model: str = H100_80GB.name,
    clock: Callable[[], float] = time.time,
) -> FakeNvml:
    """The NVML of a simulated node that follows ``clock``: what ``agent --simulate``
    hands to :class:`~gpuledger.collectors.gpu.nvml.NvmlCollector`."""
    return SimulatedNode(seed, gpus, model=model, clock=clock).nvml
