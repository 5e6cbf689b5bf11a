"""Attribution with the kubelet's pod-resources API as a source, end to end: a real gRPC
kubelet on a unix socket → the collector → the board → WorkloadResolver → the ledger.

The node (five H100s, one minute observed, every expected figure worked out by hand):

* GPU0: a process of pod chat (resolved through its cgroup) and the kubelet agree:
  ``process`` decides; chat 60 s, busy 0.6 × 60 = 36 s.
* GPU1: pod loader holds it, runs nothing (loading a model); dcgm-exporter's labels still
  name an older pod: ``podresources`` decides (preferred over dcgm); model-loader 60 s,
  busy 0.
* GPU2: two time-sliced replicas, pods tiny-a (replica ::0) and tiny-b (::3), no
  process: 30 s each, busy 0.2 × 30 = 6 s each.
* GPU3: MIG, 7 slices. 1g.10gb (MIG uuid, device plugin) → notebook 60/7 s; 3g.40gb (a
  DRA claim, ``gpu-3-mig-3g40gb-…``) → trainer 180/7 s; 3 slices idle: 180/7 s.
  Busy 0 (the instances report 0 utilization).
* GPU4: allocated to nobody: idle 60 s.

Σ allocated = 60 + 60 + 60 + 60 + 60 = 300 s = 5 GPUs × 60 s (the ledger invariant)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gpuledger.chargeback.attribution.claims import Owner
from gpuledger.chargeback.attribution.resolver import WorkloadResolver
from gpuledger.chargeback.attribution.shares import allocate
from gpuledger.chargeback.ledger.flusher import Ledger
from gpuledger.chargeback.ledger.spool import Spool
from gpuledger.chargeback.ledger.store import open_store
from gpuledger.collectors.base import CollectorError
from gpuledger.collectors.gpu.nvml import NvmlCollector
from gpuledger.collectors.gpu.readings import GpuReading, ProcessReading, WorkloadRef
from gpuledger.collectors.workload.podresources.collector import PodResourcesCollector
from gpuledger.collectors.workload.podresources.types import PodResourcesBoard
from gpuledger.collectors.workload.pods import PodInfo, StaticPodDirectory
from gpuledger.sim.nvml_fake import FakeNvml, GpuSpec, MigInstanceSpec
from tests.support.kubelet_podresources import DraClaim, Kubelet, KubeletServer, PluginDevices

H100 = "NVIDIA H100 80GB HBM3"
GPUS = [f"GPU-{i}0000000-0000-4000-8000-00000000000{i}" for i in range(5)]
MIG_NB = "MIG-0a1b2c3d-4e5f-5a6b-8c7d-9e0f1a2b3c4d"
MIG_TR = "MIG-1b2c3d4e-5f60-5a6b-8c7d-9e0f1a2b3c4e"
UID_CHAT = "2fc932ce-fdcc-454b-97bd-aadfdeb4c340"
CID_CHAT = "aa" * 32
CLAIM_UID = "dab5ab50-d59a-42a6-af16-cfd4628c0f7a"
START = 1_767_225_600.0  # 2026-01-01T00:00:00Z

PODS = StaticPodDirectory(
    [
        PodInfo(
            uid=UID_CHAT,
            namespace="llm-prod",
            name="chat-7d9c8b6f5d-x2x4k",
            labels={"app.kubernetes.io/name": "chat"},
            container_ids={CID_CHAT: "vllm"},
        ),
        PodInfo(
            uid="7d4424e6-bb13-42f4-a47a-45a4828bf54d",
            namespace="llm-prod",
            name="loader-6b7f9c4d8-h5k2p",
            labels={"app.kubernetes.io/name": "model-loader"},
        ),
    ]
)


def node_kubelet() -> Kubelet:
    return Kubelet(
        plugin=[
            PluginDevices("llm-prod", "chat-7d9c8b6f5d-x2x4k", "vllm", "nvidia.com/gpu", [GPUS[0]]),
            PluginDevices(
                "llm-prod", "loader-6b7f9c4d8-h5k2p", "load", "nvidia.com/gpu", [GPUS[1]]
            ),
            PluginDevices("dev", "tiny-a", "main", "nvidia.com/gpu", [f"{GPUS[2]}::0"]),
            PluginDevices("dev", "tiny-b", "main", "nvidia.com/gpu", [f"{GPUS[2]}::3"]),
            PluginDevices("nb", "notebook", "jupyter", "nvidia.com/mig-1g.10gb", [MIG_NB]),
        ],
        dra=[
            DraClaim(
                "research",
                "trainer",
                "train",
                "research",
                "trainer-mig",
                [
                    (
                        "gpu.nvidia.com",
                        "gpu-3-mig-3g40gb-9-4",
                        [f"k8s.gpu.nvidia.com/claim={CLAIM_UID}-gpu-3-mig-3g40gb-9-4"],
                    )
                ],
            )
        ],
    )


def devices() -> list[GpuReading]:
    def whole(i: int, util: float, **kw: object) -> GpuReading:
        return GpuReading(uuid=GPUS[i], index=i, model=H100, utilization_ratio=util, **kw)  # type: ignore[arg-type]

    return [
        whole(0, 0.6, processes=(ProcessReading(pid=100, sm_utilization_ratio=0.6),)),
        whole(1, 0.0, workloads=(WorkloadRef("llm-prod", "loader-old-x", "load"),)),
        whole(2, 0.2),
        GpuReading(uuid=GPUS[3], index=3, model=H100, mig_enabled=True, mig_total_slices=7),
        GpuReading(
            uuid=GPUS[3],
            index=3,
            model=H100,
            mig_instance=7,
            mig_profile="1g.10gb",
            mig_device_uuid=MIG_NB,
            mig_slices=1,
            mig_total_slices=7,
            utilization_ratio=0.0,
        ),
        GpuReading(
            uuid=GPUS[3],
            index=3,
            model=H100,
            mig_instance=2,
            mig_profile="3g.40gb",
            mig_device_uuid=MIG_TR,
            mig_slices=3,
            mig_total_slices=7,
            utilization_ratio=0.0,
        ),
        whole(4, 0.0),
    ]


@pytest.fixture
def proc_root(tmp_path: Path) -> Path:
    d = tmp_path / "proc" / "100"
    d.mkdir(parents=True)
    (d / "cgroup").write_text(
        "0::/kubepods.slice/kubepods-burstable.slice/"
        f"kubepods-burstable-pod{UID_CHAT.replace('-', '_')}.slice/"
        f"cri-containerd-{CID_CHAT}.scope\n"
    )
    (d / "comm").write_text("python3\n")
    (d / "cmdline").write_text("python3\x00-m\x00vllm")
    return tmp_path / "proc"


@pytest.fixture
def kubelet(tmp_path: Path) -> Iterator[KubeletServer]:
    with KubeletServer(tmp_path / "kubelet.sock", node_kubelet()) as server:
        yield server


def decided(resolver: WorkloadResolver) -> dict[tuple[int, int | None], tuple[str, list[str]]]:
    return {
        (d.index, d.mig_instance): (d.decided_by, [o.service for o in d.owners])
        for d in resolver.decisions.values()
    }


def test_the_ledger_bills_pod_resources_allocations(
    tmp_path: Path, proc_root: Path, kubelet: KubeletServer
) -> None:
    board = PodResourcesBoard()
    collector = PodResourcesCollector(kubelet.socket, timeout_s=2.0, board=board)
    collector.collect()
    resolver = WorkloadResolver(proc_root=proc_root, pods=PODS, static=None, allocations=board)
    clock = {"mono": 1000.0, "wall": START}
    store = open_store(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger = Ledger(
        "gpu-node-1",
        spool=Spool(tmp_path / "spool.db"),
        store=None,
        claims_for=resolver.claims,
        max_gap_s=120.0,
        wall=lambda: clock["wall"],
        mono=lambda: clock["mono"],
    )
    ledger.start()
    ledger.store = store
    ledger.observe(devices())
    clock["mono"] += 60.0
    clock["wall"] += 60.0
    ledger.observe(devices())
    assert ledger.flush_once()

    assert decided(resolver) == {
        (0, None): ("process", ["chat"]),
        (1, None): ("podresources", ["model-loader"]),
        (2, None): ("podresources", ["tiny-a", "tiny-b"]),
        (3, 7): ("podresources", ["notebook"]),
        (3, 2): ("podresources", ["trainer"]),
        (4, None): ("idle", []),
    }
    loader = next(d for d in resolver.decisions.values() if d.index == 1)
    assert loader.owners == (Owner("llm-prod", "model-loader", "loader-6b7f9c4d8-h5k2p", "load"),)

    lo, hi = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    rows = {
        (g.namespace, g.service): (g.allocated_gpu_seconds, g.busy_gpu_seconds)
        for g in store.usage(lo, hi, ["namespace", "service"])
    }
    expected = {
        ("llm-prod", "chat"): (60.0, 36.0),
        ("llm-prod", "model-loader"): (60.0, 0.0),  # holds a GPU, runs nothing: busy 0
        ("dev", "tiny-a"): (30.0, 6.0),
        ("dev", "tiny-b"): (30.0, 6.0),
        ("nb", "notebook"): (60.0 / 7, 0.0),
        ("research", "trainer"): (180.0 / 7, 0.0),
        ("", "__idle__"): (60.0 + 180.0 / 7, 0.0),
    }
    assert rows.keys() == expected.keys()
    for key, (alloc, busy) in expected.items():
        assert rows[key][0] == pytest.approx(alloc, rel=1e-9), key
        assert rows[key][1] == pytest.approx(busy, abs=1e-9), key
    assert sum(a for a, _ in rows.values()) == pytest.approx(5 * 60.0, rel=1e-12)
    assert store.invariant_violations(lo, hi, rel_tol=1e-9) == []
    ledger.spool.close()
    store.close()
    collector.close()


def test_without_the_kubelet_attribution_falls_back(tmp_path: Path, proc_root: Path) -> None:
    """The kubelet gone: its allocations decide nothing (dcgm's labels and idle do);
    back: they decide again."""
    socket = tmp_path / "kubelet.sock"
    board = PodResourcesBoard()
    collector = PodResourcesCollector(socket, timeout_s=1.0, board=board)
    resolver = WorkloadResolver(proc_root=proc_root, pods=PODS, static=None, allocations=board)
    server = KubeletServer(socket, node_kubelet()).start()
    collector.collect()
    for d in devices():
        resolver.claims(d)
    assert decided(resolver)[(1, None)] == ("podresources", ["model-loader"])

    server.stop()
    with pytest.raises(CollectorError):
        collector.collect()
    for d in devices():
        resolver.claims(d)
    now = decided(resolver)
    assert now[(1, None)] == ("dcgm", ["loader-old-x"])  # dcgm-exporter's older label
    assert now[(2, None)] == ("idle", [])
    assert now[(0, None)] == ("process", ["chat"])

    server = KubeletServer(socket, node_kubelet()).start()
    try:
        collector.collect()
        for d in devices():
            resolver.claims(d)
        assert decided(resolver)[(1, None)] == ("podresources", ["model-loader"])
    finally:
        server.stop()
        collector.close()


# --- DRA names by minor number and MIG placement, read from NVML ------------------------------
def dra_kubelet(*devices: str) -> Kubelet:
    """One DRA claim per device name, as NVIDIA's driver names them."""
    return Kubelet(
        dra=[
            DraClaim(
                "research",
                f"job-{i}",
                "main",
                "research",
                f"claim-{i}",
                [("gpu.nvidia.com", name, [f"k8s.gpu.nvidia.com/claim={CLAIM_UID}-{name}"])],
            )
            for i, name in enumerate(devices)
        ]
    )


def test_dra_devices_are_found_by_minor_number_and_placement(tmp_path: Path) -> None:
    """NVML index and device minor differ (the kernel numbered the GPUs in probe order),
    and one MIG GPU carries two 3g.40gb instances (first slices 0 and 4): the claims
    ``gpu-7`` and ``gpu-5-mig-3g40gb-9-4`` name NVML's GPU 0 and the instance at slice 4
    of NVML's GPU 1, nothing else."""
    fake = FakeNvml(
        [
            GpuSpec(model=H100, minor_number=7),
            GpuSpec(model=H100, minor_number=5,
                    mig=(MigInstanceSpec("3g.40gb", 1, placement_start=0),
                         MigInstanceSpec("3g.40gb", 2, placement_start=4))),
            GpuSpec(model=H100, minor_number=0),  # minor 0 = nobody's claim
        ]
    )  # fmt: skip
    readings = NvmlCollector(fake).collect().gpus
    with KubeletServer(tmp_path / "k.sock", dra_kubelet("gpu-7", "gpu-5-mig-3g40gb-9-4")) as k:
        board = PodResourcesBoard()
        PodResourcesCollector(k.socket, timeout_s=2.0, board=board).collect()
    resolver = WorkloadResolver(proc_root=tmp_path, pods=None, static=None, allocations=board)
    (alloc0, alloc1, alloc2) = allocate(readings, resolver.claims)
    held = {
        (a.index, s.mig_instance): (s.owner.pod, s.share)
        for a in (alloc0, alloc1, alloc2)
        for s in a.shares
    }
    assert held == {
        (0, None): ("job-0", 1.0),  # gpu-7: the GPU whose minor is 7, NVML index 0
        (1, 2): ("job-1", pytest.approx(3 / 7)),  # slice 4 is GPU instance 2
        # GPU instance 1 (the same profile at slice 0) and the 7th slice: idle
        (1, None): ("", pytest.approx(4 / 7)),
        (2, None): ("", 1.0),  # minor 0: no claim names it
    }
    collector = NvmlCollector(fake)
    collector.collect()
    collector.collect()
    assert fake.calls["nvmlDeviceGetGpuInstanceById"] == 4  # 2 above, then 2 once: cached


def test_without_root_a_dra_mig_claim_matches_every_instance_of_its_profile(
    tmp_path: Path,
) -> None:
    """NVML gives placements to root only: unprivileged, the claim of one 3g.40gb instance
    is counted on both (the documented fallback), and the collector says why, once."""
    fake = FakeNvml(
        [GpuSpec(model=H100, minor_number=5,
                 mig=(MigInstanceSpec("3g.40gb", 1), MigInstanceSpec("3g.40gb", 2)))],
        privileged=False,
    )  # fmt: skip
    collector = NvmlCollector(fake)
    first = collector.collect()
    assert [r.mig_placement_start for r in first.gpus] == [None, None, None]
    assert [n for n in first.notes if "need root" in n] != []
    assert collector.collect().notes == ()
    assert fake.calls["nvmlDeviceGetGpuInstanceById"] == 1
    with KubeletServer(tmp_path / "k.sock", dra_kubelet("gpu-5-mig-3g40gb-9-4")) as k:
        board = PodResourcesBoard()
        PodResourcesCollector(k.socket, timeout_s=2.0, board=board).collect()
    resolver = WorkloadResolver(proc_root=tmp_path, pods=None, static=None, allocations=board)
    pods = [[c.owner.pod for c in resolver.claims(r)] for r in first.gpus[1:]]
    assert pods == [["job-0"], ["job-0"]]


def test_the_last_answer_keeps_deciding_for_keep_last_seconds(
    tmp_path: Path, proc_root: Path
) -> None:
    """One failed List (a kubelet restart, a deadline missed on a loaded node) leaves the
    last answer deciding until it is ``keep_last_s`` old, then the other sources decide;
    the collector is down at once either way."""
    now = {"t": 1000.0}
    board = PodResourcesBoard(clock=lambda: now["t"])
    socket = tmp_path / "kubelet.sock"
    collector = PodResourcesCollector(socket, timeout_s=1.0, board=board, keep_last_s=60.0)
    resolver = WorkloadResolver(proc_root=proc_root, pods=PODS, static=None, allocations=board)
    server = KubeletServer(socket, node_kubelet()).start()
    collector.collect()  # read at t = 1000
    server.stop()
    now["t"] = 1030.0
    with pytest.raises(CollectorError):
        collector.collect()
    for d in devices():
        resolver.claims(d)
    assert decided(resolver)[(1, None)] == ("podresources", ["model-loader"])
    assert decided(resolver)[(3, 7)] == ("podresources", ["notebook"])
    now["t"] = 1060.0  # the answer read at 1000 is now 60 s old: it decides no more
    for d in devices():
        resolver.claims(d)
    assert decided(resolver)[(1, None)] == ("dcgm", ["loader-old-x"])
    assert decided(resolver)[(3, 7)] == ("idle", [])
    server = KubeletServer(socket, node_kubelet()).start()
    try:
        collector.collect()  # back: decides again, and a later failure starts a new grace
        for d in devices():
            resolver.claims(d)
        assert decided(resolver)[(1, None)] == ("podresources", ["model-loader"])
    finally:
        server.stop()
        collector.close()
