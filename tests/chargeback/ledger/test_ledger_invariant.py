"""Property: whatever happens, the store's ledger neither loses nor double counts.

Random sequences of ticks (with wall-clock steps and gaps), pod churn, MIG
reconfiguration, the kubelet's pod-resources allocations (read by a real resolver for
devices no process holds) and the kubelet going away, agent restarts (a new Ledger
resuming from the same spool) and store outages run against the real SQLite store, under
every split policy, with claims that carry SM samples, memory and HAMi declared core
shares or not, and, now and then, an MPS GPU resolved by the real resolver from a proc
tree: its nvidia-cuda-mps-server plus up to three clients in HAMi pods (some declaring
cores on it), the server left out of the split. At the end, after the store is back and
drained, for every node and hour Σ allocated over all owners (incl. __idle__) equals Σ
observed GPU-seconds (relative error ≤ 1e-9), and the total observed equals what an
independent model of the run says was observed: the sum, over ticks that followed an
observation of the same process within max_gap, of dt × GPUs present.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuledger.chargeback.attribution.claims import Claim, Owner
from gpuledger.chargeback.attribution.resolver import WorkloadResolver
from gpuledger.chargeback.ledger.flusher import Ledger
from gpuledger.chargeback.ledger.model import StoreError, UsageGroup
from gpuledger.chargeback.ledger.spool import Spool
from gpuledger.chargeback.ledger.store import open_store
from gpuledger.chargeback.ledger.tables import (
    CoverageRow,
    EngineTimeRow,
    ProbeRecord,
    StorageSample,
    TenantTokenRow,
    TokenRow,
    UsageRow,
)
from gpuledger.collectors.gpu.readings import GpuReading, ProcessReading
from gpuledger.collectors.workload.hami import ALLOCATED_ANNOTATION
from gpuledger.collectors.workload.podresources.types import (
    Allocation,
    DeviceTarget,
    Holder,
    PodResourcesBoard,
    PodResourcesReading,
)
from gpuledger.collectors.workload.pods import PodInfo, StaticPodDirectory

H100 = "NVIDIA H100 80GB HBM3"
START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
MAX_GAP = 120.0
NODE = "prop-node"
OWNERS = [Owner("a", "chat"), Owner("a", "embed"), Owner("b", "batch"), Owner("b", "rerank")]
PROFILES = [("1g.10gb", 1), ("2g.20gb", 2), ("3g.40gb", 3)]
MPS_GPU, MPS_SERVER, MPS_CLIENTS = "GPU-mps", 100, (201, 202, 203)
MPS_DECLARED = {201: 30, 202: 0, 203: 45}  # HAMi cores on MPS_GPU (0: none declared)


def mps_resolver(root: Path) -> WorkloadResolver:
    """A proc tree and pods for the MPS GPU: the server in a daemon pod, each client in a
    HAMi pod of its own."""
    pods: list[PodInfo] = []
    for pid in (MPS_SERVER, *MPS_CLIENTS):
        uid, cid = f"{pid:08x}-0000-4000-8000-000000000000", f"{pid:064x}"
        d = root / str(pid)
        d.mkdir(parents=True)
        (d / "cgroup").write_text(
            f"0::/kubepods.slice/kubepods-pod{uid.replace('-', '_')}.slice/"
            f"cri-containerd-{cid}.scope\n",
            encoding="utf-8",
        )
        (d / "comm").write_text("nvidia-cuda-mps\n" if pid == MPS_SERVER else "python3\n")
        cores = MPS_DECLARED.get(pid)
        annotations = (
            {} if cores is None else {ALLOCATED_ANNOTATION: f"{MPS_GPU},NVIDIA,1,{cores}:;"}
        )
        pods.append(
            PodInfo(uid=uid, namespace="mps", name=f"p{pid}", labels={"app": f"svc{pid}"},
                    container_ids={cid: "main"}, annotations=annotations)
        )  # fmt: skip
    return WorkloadResolver(proc_root=root, pods=StaticPodDirectory(pods), static=None)


class FlakyStore:
    """The real SQLite store behind a switch that makes it refuse writes."""

    def __init__(self, url: str) -> None:
        self.real = open_store(url)
        self.down = False

    def migrate(self, *, default_cluster: str = "default") -> None:
        if self.down:
            raise StoreError("store is down (test)")
        self.real.migrate(default_cluster=default_cluster)

    def upsert(self, usage: Sequence[UsageRow], coverage: Sequence[CoverageRow]) -> None:
        if self.down:
            raise StoreError("store is down (test)")
        self.real.upsert(usage, coverage)

    def upsert_tokens(self, rows: Sequence[TokenRow]) -> None:
        if self.down:
            raise StoreError("store is down (test)")
        self.real.upsert_tokens(rows)

    def upsert_probes(self, rows: Sequence[ProbeRecord]) -> None:
        if self.down:
            raise StoreError("store is down (test)")
        self.real.upsert_probes(rows)

    def insert_storage_samples(self, rows: Sequence[StorageSample]) -> None:
        if self.down:
            raise StoreError("store is down (test)")
        self.real.insert_storage_samples(rows)

    def upsert_tenant_tokens(self, rows: Sequence[TenantTokenRow]) -> None:
        if self.down:
            raise StoreError("store is down (test)")
        self.real.upsert_tenant_tokens(rows)

    def upsert_engine_time(self, rows: Sequence[EngineTimeRow]) -> None:
        if self.down:
            raise StoreError("store is down (test)")
        self.real.upsert_engine_time(rows)

    def usage(self, *a: object, **k: object) -> list[UsageGroup]:
        return self.real.usage(*a, **k)  # type: ignore[arg-type]

    def close(self) -> None:
        self.real.close()


@dataclass
class World:
    """The simulated truth the steps mutate."""

    gpus: dict[str, list[tuple[int | None, str, list[Owner]]]] = field(default_factory=dict)
    # per owner: (SM utilization, memory, declared share), each possibly unknown
    details: dict[Owner, tuple[float | None, int | None, float | None]] = field(
        default_factory=dict
    )
    wall: float = START
    mono: float = 1000.0
    mps: tuple[ProcessReading, ...] | None = None  # the MPS GPU's processes; None: no such GPU
    resolver: WorkloadResolver | None = None  # the MPS GPU's (with its proc tree)

    @property
    def gpu_count(self) -> int:
        return len(self.gpus) + (self.mps is not None)

    # The kubelet's pod-resources allocations (device uuid → pods), read by a real
    # resolver for devices no process holds; None while the kubelet is away.
    kubelet: dict[str, list[str]] = field(default_factory=dict)
    kubelet_up: bool = True
    board: PodResourcesBoard = field(default_factory=PodResourcesBoard)

    def __post_init__(self) -> None:
        self.kube_resolver = WorkloadResolver(
            proc_root=None, pods=None, static=None, allocations=self.board
        )

    def publish(self) -> None:
        """What the pod-resources collector does after a List (or a failed one)."""
        if not self.kubelet_up:
            self.board.clear()
            return
        allocations = tuple(
            Allocation(Holder("k", pod, "c"), DeviceTarget(uuid=uuid), "nvidia.com/gpu",
                       "device_plugin", uuid)
            for uuid, pods in sorted(self.kubelet.items())
            for pod in pods
        )  # fmt: skip
        self.board.update(PodResourcesReading(allocations=allocations))

    def devices(self) -> list[GpuReading]:
        out: list[GpuReading] = []
        for i, (uuid, parts) in enumerate(sorted(self.gpus.items())):
            mig = any(inst is not None for inst, _, _ in parts)
            if mig:
                out.append(GpuReading(uuid=uuid, index=i, model=H100, mig_enabled=True,
                                      power_watts=300.0, mig_total_slices=7))  # fmt: skip
            for inst, profile, _ in parts:
                slices = int(profile.split("g.")[0]) if profile else None
                out.append(
                    GpuReading(uuid=uuid, index=i, model=H100, mig_instance=inst,
                               mig_device_uuid=None if inst is None else f"MIG-{uuid}-{inst}",
                               mig_profile=profile, mig_slices=slices,
                               mig_total_slices=7 if mig else None, utilization_ratio=0.5,
                               power_watts=None if mig else 250.0)
                )  # fmt: skip
        if self.mps is not None:
            out.append(GpuReading(uuid=MPS_GPU, index=99, model=H100, utilization_ratio=0.5,
                                  power_watts=250.0, processes=self.mps))  # fmt: skip
        return out

    def claims(self, reading: GpuReading) -> list[Claim]:
        if reading.uuid == MPS_GPU and self.resolver is not None:
            return self.resolver.claims(reading)
        for inst, _, owners in self.gpus.get(reading.uuid, []):
            if inst == reading.mig_instance and owners:  # processes resolved: they win
                return [Claim(o, *self.details.get(o, (None, None, None))) for o in owners]
        return self.kube_resolver.claims(reading)  # pod-resources, else idle


owners_st = st.lists(st.sampled_from(OWNERS), max_size=3)
whole_st = st.tuples(st.just(None), st.just(""), owners_st).map(lambda t: [t])
mig_st = st.lists(st.tuples(st.sampled_from(PROFILES), owners_st), min_size=1, max_size=3).map(
    lambda xs: [
        (i + 1, p[0], o) for i, (p, o) in enumerate(xs) if sum(q[1] for q, _ in xs[: i + 1]) <= 7
    ]
)
layout_st = st.one_of(whole_st, mig_st)
detail_st = st.tuples(
    st.none() | st.floats(0.0, 1.0),
    st.none() | st.integers(0, 80 * 1024**3),
    st.none() | st.floats(0.0, 0.9),
)
details_st = st.dictionaries(st.sampled_from(OWNERS), detail_st)
policy_st = st.sampled_from(["usage", "equal", "declared"])
client_st = st.tuples(st.none() | st.floats(0.0, 1.0), st.none() | st.integers(0, 20 * 1024**3))


def mps_processes(clients: list[tuple[float | None, int | None]]) -> tuple[ProcessReading, ...]:
    server = ProcessReading(MPS_SERVER, 300 * 1024**2, 0.05)
    listed = zip(MPS_CLIENTS[: len(clients)], clients, strict=True)
    return (server, *(ProcessReading(pid, mem, sm, mps_client=True) for pid, (sm, mem) in listed))


mps_st = st.none() | st.lists(client_st, max_size=len(MPS_CLIENTS)).map(mps_processes)

dt_st = st.one_of(
    st.floats(0.5, MAX_GAP),
    st.floats(0.5, MAX_GAP),
    st.floats(0.5, MAX_GAP),
    st.floats(MAX_GAP + 1, 4 * MAX_GAP),  # a gap now and then
)
jump_st = st.sampled_from([0.0] * 8 + [3600.0, -3600.0])  # wall-clock steps, rarely
tick_st = st.tuples(st.just("tick"), dt_st, jump_st)
step_st = st.one_of(
    tick_st, tick_st, tick_st, tick_st,
    st.tuples(st.just("relayout"), st.integers(0, 2), layout_st),
    st.tuples(st.just("remove"), st.integers(0, 2)),
    st.tuples(st.just("restart")),
    st.tuples(st.just("store"), st.booleans()),
    st.tuples(st.just("flush")),
    # the kubelet allocates a device (a whole GPU or one MIG instance) to 0-2 pods
    st.tuples(st.just("kubelet"), st.integers(0, 2), st.sampled_from([None, 1, 2, 3]),
              st.lists(st.sampled_from(["nb-0", "loader-1", "tiny-2"]), max_size=2)),
    st.tuples(st.just("kubelet_up"), st.booleans()),
)  # fmt: skip


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    initial=st.lists(layout_st, min_size=1, max_size=3),
    steps=st.lists(step_st, min_size=5, max_size=60),
    details=details_st,
    policy=policy_st,
    mps=mps_st,
)
def test_ledger_never_loses_or_double_counts(
    initial: list[list[tuple[int | None, str, list[Owner]]]],
    steps: list[tuple[object, ...]],
    details: dict[Owner, tuple[float | None, int | None, float | None]],
    policy: str,
    mps: tuple[ProcessReading, ...] | None,
) -> None:
    world = World(gpus={f"GPU-{i}": layout for i, layout in enumerate(initial)}, details=details)
    with tempfile.TemporaryDirectory() as tmp:
        world.mps, world.resolver = mps, mps_resolver(Path(tmp) / "proc")
        store = FlakyStore(f"sqlite:///{Path(tmp) / 'ledger.db'}")
        spool_path = Path(tmp) / "spool.db"

        def new_ledger() -> Ledger:
            ledger = Ledger(
                NODE, spool=Spool(spool_path), store=None, claims_for=world.claims,
                policy=policy, max_gap_s=MAX_GAP,  # type: ignore[arg-type]
                wall=lambda: world.wall, mono=lambda: world.mono,
            )  # fmt: skip
            ledger.start()  # started without a store: no background flusher thread
            ledger.store = store  # flushed by hand below
            return ledger

        ledger = new_ledger()
        expected_observed = 0.0
        observed_once = False  # has this process observed anything yet?
        ledger.observe(world.devices())
        observed_once = True
        for step in steps:
            kind = step[0]
            if kind == "tick":
                dt, jump = float(step[1]), float(step[2])  # type: ignore[arg-type]
                world.mono += dt
                world.wall += dt + jump
                if observed_once and dt <= MAX_GAP:
                    expected_observed += dt * world.gpu_count
                ledger.observe(world.devices())
                observed_once = True
            elif kind == "relayout":
                world.gpus[f"GPU-{step[1]}"] = step[2]  # type: ignore[assignment]
            elif kind == "remove":
                world.gpus.pop(f"GPU-{step[1]}", None)
            elif kind == "restart":
                ledger.flush_once()  # may fail: the spool keeps it
                ledger.spool.close()
                ledger = new_ledger()
                observed_once = False
                world.mono += 5.0  # a new process, a new monotonic origin
                world.wall += 5.0
            elif kind == "store":
                store.down = bool(step[1])
            elif kind == "flush":
                ledger.flush_once()
            elif kind == "kubelet":
                uuid = f"GPU-{step[1]}"
                device = uuid if step[2] is None else f"MIG-{uuid}-{step[2]}"
                world.kubelet[device] = list(step[3])  # type: ignore[call-overload]
                world.publish()
            elif kind == "kubelet_up":
                world.kubelet_up = bool(step[1])
                world.publish()
        store.down = False
        assert ledger.flush_once()
        assert ledger.status().pending_rows == 0

        lo = datetime.fromtimestamp(START - 100 * 3600, UTC)
        hi = datetime.fromtimestamp(world.wall + 100 * 3600, UTC)
        assert store.real.invariant_violations(lo, hi, rel_tol=1e-9) == []
        observed = sum(r.observed_seconds for r in store.real.coverage(lo, hi))
        assert observed == pytest.approx(expected_observed, rel=1e-9, abs=1e-6)
        allocated = sum(r.allocated_gpu_seconds for r in store.real.usage(lo, hi, []))
        assert allocated == pytest.approx(expected_observed, rel=1e-9, abs=1e-6)
        ledger.spool.close()
        store.close()
        if mps is not None and len(mps) > 1:  # clients listed: the server never held a claim
            assert world.resolver.counters["mps_server"] > 0
