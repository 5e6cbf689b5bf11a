"""WorkloadResolver: sources combined in their documented order, and the simulated node
attributed through the real path (proc files → cgroup parser → pod directory → naming)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from gpuledger.chargeback.attribution.claims import UNATTRIBUTED_OWNER, Claim, Owner
from gpuledger.chargeback.attribution.resolver import (
    AttributionConfig,
    StaticMapping,
    WorkloadResolver,
    build_resolver,
)
from gpuledger.collectors.gpu.nvml import NvmlCollector
from gpuledger.collectors.gpu.readings import GpuReading, ProcessReading, WorkloadRef
from gpuledger.collectors.workload.pods import PodInfo, StaticPodDirectory, service_name
from gpuledger.sim import mps
from gpuledger.sim.attribution import simulated_sources
from gpuledger.sim.node import SimulatedNode

GPU = "GPU-5c3a1e2b-7f4d-4e8a-9b6c-1d2e3f4a5b6c"
MIG = "MIG-0a1b2c3d-4e5f-5a6b-8c7d-9e0f1a2b3c4d"
UID_A = "2fc932ce-fdcc-454b-97bd-aadfdeb4c340"
UID_B = "7d4424e6-bb13-42f4-a47a-45a4828bf54d"
CID_A = "aaefb9d8feed2d453b543f6d928cede7a4dbefa6a0ae7c9b990dd234c56e93b9"
CID_A2 = "d0b3604b67ac7930dd34ba3a796627e3e4717d12309e90a4afe3f38b6816ac98"
CID_B = "5eed917563583925ffdbd40a64efb2aaffe58638e57add8becaf460fe74f5b1c"
STATIC_HASH = "36b6d6be73b1065af369b3985edafa09"

POD_A = PodInfo(
    uid=UID_A,
    namespace="llm-prod",
    name="chat-llama-70b-7d9c8b6f5d-x2x4k",
    labels={"pod-template-hash": "7d9c8b6f5d"},
    owner_kind="ReplicaSet",
    owner_name="chat-llama-70b-7d9c8b6f5d",
    container_ids={CID_A: "vllm", CID_A2: "sidecar"},
)
POD_B = PodInfo(
    uid=UID_B,
    namespace="search",
    name="embedder-6b7f9c4d8-h5k2p",
    labels={"app.kubernetes.io/name": "embed-bge-m3"},
    owner_kind="ReplicaSet",
    owner_name="embedder-6b7f9c4d8",
    container_ids={CID_B: "server"},
)
POD_STATIC = PodInfo(
    uid="8b1c2d3e-4f50-4a6b-9c7d-8e9f0a1b2c3d",
    namespace="kube-system",
    name="triton-static-gpu-node-1",
    owner_kind="Node",
    owner_name="gpu-node-1",
    node_name="gpu-node-1",
    static_uid=STATIC_HASH,
)
PODS = StaticPodDirectory([POD_A, POD_B, POD_STATIC])


def systemd_v2(uid: str, cid: str, runtime: str = "cri-containerd") -> str:
    return (
        "0::/kubepods.slice/kubepods-burstable.slice/"
        f"kubepods-burstable-pod{uid.replace('-', '_')}.slice/{runtime}-{cid}.scope\n"
    )


def write_proc(root: Path, pid: int, cgroup: str, comm: str = "python3", cmdline: str = "") -> None:
    d = root / str(pid)
    d.mkdir(parents=True)
    (d / "cgroup").write_text(cgroup)
    (d / "comm").write_text(comm + "\n")
    (d / "cmdline").write_text(cmdline.replace(" ", "\x00"))


def reading(
    *procs: ProcessReading, workloads: tuple[WorkloadRef, ...] = (), mig: str | None = None
) -> GpuReading:
    return GpuReading(
        uuid=GPU,
        index=0,
        model="NVIDIA H100 80GB HBM3",
        mig_instance=2 if mig else None,
        mig_device_uuid=mig,
        processes=procs,
        workloads=workloads,
    )


def proc(pid: int, util: float | None, mem: int | None) -> ProcessReading:
    return ProcessReading(pid=pid, sm_utilization_ratio=util, used_memory_bytes=mem)


@pytest.fixture
def proc_root(tmp_path: Path) -> Path:
    write_proc(tmp_path, 100, systemd_v2(UID_A, CID_A))
    write_proc(tmp_path, 101, systemd_v2(UID_A, CID_A))  # a second worker of the same container
    write_proc(tmp_path, 102, systemd_v2(UID_A, CID_A2))  # another container of the same pod
    write_proc(tmp_path, 200, "12:memory:/kubepods/besteffort/pod" + UID_B + "/" + CID_B + "\n")
    write_proc(
        tmp_path, 300, "0::/system.slice/ollama.service\n", "ollama", "/usr/bin/ollama serve"
    )
    write_proc(
        tmp_path,
        400,
        "0::/user.slice/user-1000.slice/session-3.scope\n",
        "python3",
        "python3 train.py",
    )
    write_proc(tmp_path, 500, systemd_v2("11111111-2222-3333-4444-555555555555", "ab" * 32))
    write_proc(tmp_path, 600, systemd_v2(STATIC_HASH, "cd" * 32))
    return tmp_path


def test_processes_resolve_through_cgroups_and_pods(proc_root: Path) -> None:
    r = WorkloadResolver(proc_root=proc_root, pods=PODS, static=None)
    claims = r.claims(reading(proc(100, 0.25, 10), proc(101, 0.25, 20), proc(200, 0.125, 5)))
    assert claims == [
        Claim(Owner("llm-prod", "chat-llama-70b", POD_A.name, "vllm"), 0.5, 30),
        Claim(Owner("search", "embed-bge-m3", POD_B.name, "server"), 0.125, 5),
    ]
    assert r.counters["pod"] == 3


def test_one_claim_per_owner_container_included(proc_root: Path) -> None:
    r = WorkloadResolver(proc_root=proc_root, pods=PODS, static=None)
    claims = r.claims(reading(proc(100, None, 10), proc(102, 0.5, None)))
    assert claims == [
        Claim(Owner("llm-prod", "chat-llama-70b", POD_A.name, "sidecar"), 0.5, None),
        Claim(Owner("llm-prod", "chat-llama-70b", POD_A.name, "vllm"), None, 10),
    ]


def test_static_pod_resolves_by_its_kubelet_uid(proc_root: Path) -> None:
    r = WorkloadResolver(proc_root=proc_root, pods=PODS, static=None)
    assert r.claims(reading(proc(600, 0.5, 1))) == [
        Claim(Owner("kube-system", "triton-static", POD_STATIC.name, ""), 0.5, 1)
    ]


def test_unresolvable_processes_are_unattributed_never_idle(proc_root: Path) -> None:
    r = WorkloadResolver(proc_root=proc_root, pods=PODS, static=None)
    # Exited (no /proc entry), host process, unknown pod: all hold the GPU for "someone".
    claims = r.claims(
        reading(proc(100, 0.5, 10), proc(99_999, 0.25, 4), proc(300, None, 2), proc(500, 0.125, 1))
    )
    assert claims == [
        Claim(Owner("llm-prod", "chat-llama-70b", POD_A.name, "vllm"), 0.5, 10),
        Claim(UNATTRIBUTED_OWNER, 0.375, 7),
    ]
    assert r.counters["exited"] == 1
    assert r.counters["no_cgroup"] == 1
    assert r.counters["unknown_pod"] == 1
    assert r.counters["unattributed"] == 3


def test_no_sources_at_all_still_unattributed() -> None:
    r = WorkloadResolver(proc_root=None, pods=None, static=None)
    assert r.claims(reading(proc(1, 0.5, 3))) == [Claim(UNATTRIBUTED_OWNER, 0.5, 3)]
    assert r.claims(reading()) == []  # no process, no workload: unallocated (idle)


def test_static_gpu_mapping_wins_outright(proc_root: Path) -> None:
    static = StaticMapping(gpus={GPU: Owner("research", "cluster-a")})
    r = WorkloadResolver(proc_root=proc_root, pods=PODS, static=static)
    claims = r.claims(
        reading(proc(100, 0.5, 10), proc(300, 0.25, 5), workloads=(WorkloadRef("x", "y", "z"),))
    )
    assert claims == [Claim(Owner("research", "cluster-a"), 0.75, 15)]
    # With no process at all, the GPU is still held by its static owner.
    assert r.claims(reading()) == [Claim(Owner("research", "cluster-a"))]


def test_static_mig_uuid_before_gpu_uuid() -> None:
    static = StaticMapping(gpus={GPU: Owner("", "whole"), MIG: Owner("", "slice")})
    r = WorkloadResolver(proc_root=None, pods=None, static=static)
    assert r.claims(reading(mig=MIG))[0].owner.service == "slice"
    assert r.claims(reading(mig="MIG-other"))[0].owner.service == "whole"


def test_static_process_patterns_after_pods(proc_root: Path) -> None:
    static = StaticMapping(
        processes=[
            (r"^ollama$", Owner("", "ollama")),
            (r"train\.py", Owner("research", "trainer")),
            (r".*", Owner("", "catch-all")),
        ]
    )
    r = WorkloadResolver(proc_root=proc_root, pods=PODS, static=static)
    claims = r.claims(reading(proc(100, 0.5, 1), proc(300, 0.25, 2), proc(400, 0.125, 4)))
    assert claims == [
        Claim(Owner("", "ollama"), 0.25, 2),
        Claim(Owner("llm-prod", "chat-llama-70b", POD_A.name, "vllm"), 0.5, 1),  # pods first
        Claim(Owner("research", "trainer"), 0.125, 4),
    ]
    assert r.counters["static_process"] == 2


def test_dcgm_workloads_when_no_process_resolved() -> None:
    r = WorkloadResolver(proc_root=None, pods=PODS, static=None)
    # A pod that was given the GPU but has no process on it yet.
    assert r.claims(reading(workloads=(WorkloadRef("search", POD_B.name, "server"),))) == [
        Claim(Owner("search", "embed-bge-m3", POD_B.name, "server"))
    ]
    # Unknown to the directory: the pod name, ReplicaSet hash stripped.
    got = r.claims(
        reading(workloads=(WorkloadRef("llm-batch", "summarize-7b-5f6d7c8b9-q2w4x", "vllm"),))
    )
    assert got == [
        Claim(Owner("llm-batch", "summarize-7b", "summarize-7b-5f6d7c8b9-q2w4x", "vllm"))
    ]
    # A process that cannot be resolved, on a device dcgm says one pod holds: that pod,
    # with the process's usage.
    got = r.claims(
        reading(proc(7, 0.5, 9), workloads=(WorkloadRef("search", POD_B.name, "server"),))
    )
    assert got == [Claim(Owner("search", "embed-bge-m3", POD_B.name, "server"), 0.5, 9)]
    # Time-slicing replicas of one container are one owner.
    both = (
        WorkloadRef("search", POD_B.name, "server", "0"),
        WorkloadRef("search", POD_B.name, "server", "1"),
    )
    assert len(r.claims(reading(workloads=both))) == 1


def test_resolved_processes_beat_dcgm_workloads(proc_root: Path) -> None:
    r = WorkloadResolver(proc_root=proc_root, pods=PODS, static=None)
    got = r.claims(
        reading(proc(200, 0.5, 1), workloads=(WorkloadRef("other", "someone-else", "c"),))
    )
    assert [c.owner.service for c in got] == ["embed-bge-m3"]


# --- the simulated node through the real path ----------------------------------------------
@pytest.mark.parametrize("model", ["NVIDIA H100 80GB HBM3", "NVIDIA L40S"])
def test_simulated_node_end_to_end(tmp_path: Path, model: str) -> None:
    node = SimulatedNode(seed=7, gpus=8, model=model)
    root, pods = simulated_sources(node, tmp_path / "proc")
    resolver = WorkloadResolver(proc_root=root, pods=pods, static=None)
    telemetry = NvmlCollector(node.nvml).collect()
    assert telemetry.gpus
    seen: set[int] = set()
    for r in telemetry.gpus:
        claims = resolver.claims(r)
        expected: dict[tuple[str, str, str], list[int]] = {}
        for p in r.processes:
            if p.pid == mps.server_pid(r.index):  # the MPS GPU's server holds no claim
                continue
            sim = node.process(p.pid)
            expected.setdefault((sim.namespace, sim.service, sim.pod), []).append(p.pid)
            seen.add(p.pid)
        got = {(c.owner.namespace, c.owner.service, c.owner.pod) for c in claims}
        assert got == set(expected), r
        for c in claims:
            assert c.owner.service != "__unattributed__"
            pids = expected[(c.owner.namespace, c.owner.service, c.owner.pod)]
            assert c.memory_bytes == sum(node.process(pid).memory_bytes for pid in pids)
    assert seen == {p.pid for p in node.processes}
    assert resolver.counters["pod"] == len(node.processes)
    assert resolver.counters["unattributed"] == 0


def test_simulated_sources_exercise_the_owner_rule(tmp_path: Path) -> None:
    node = SimulatedNode(seed=3, gpus=8)
    root, pods = simulated_sources(node, tmp_path)
    unlabelled = [p for p in pods.pods if "app.kubernetes.io/name" not in p.labels]
    assert len(unlabelled) == 1
    (p,) = unlabelled
    assert p.owner_kind == "ReplicaSet"
    sim = next(s for s in node.processes if s.pod == p.name)
    assert service_name(p) == sim.service  # from "<deployment>-<hash>" alone
    cgroup = (root / str(sim.pid) / "cgroup").read_text()
    assert cgroup.startswith("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod")
    assert p.uid.replace("-", "_") in cgroup
    # Deterministic: the same node gives the same uids and container ids.
    _, again = simulated_sources(SimulatedNode(seed=3, gpus=8), tmp_path / "again")
    assert [(q.uid, dict(q.container_ids)) for q in again.pods] == [
        (q.uid, dict(q.container_ids)) for q in pods.pods
    ]


# --- configuration -------------------------------------------------------------------------
def test_attribution_config_yaml_shape(tmp_path: Path) -> None:
    text = f"""
proc_root: /host/proc
label_keys: [team.example.com/service, app.kubernetes.io/name, app]
kubernetes:
  enabled: false
  kubeconfig: {tmp_path}/kubeconfig
  resync_seconds: 120
static:
  gpus:
    {GPU}: {{service: cluster-a, namespace: research}}
  processes:
    - {{pattern: '^ollama$', service: ollama}}
"""
    cfg = AttributionConfig.model_validate(yaml.safe_load(text))
    assert cfg.proc_root == Path("/host/proc")
    assert cfg.label_keys[0] == "team.example.com/service"
    assert cfg.kubernetes.resync_seconds == 120
    r = build_resolver(cfg, "gpu-node-1")
    assert r.pods is None
    assert r.static is not None
    assert r.claims(reading()) == [Claim(Owner("research", "cluster-a"))]
    assert AttributionConfig().proc_root == Path("/proc")
    assert AttributionConfig().label_keys == ("app.kubernetes.io/name", "app")


@pytest.mark.parametrize(
    "bad",
    [
        {"proc_rot": "/proc"},
        {"kubernetes": {"enabled": True, "resync": 5}},
        {"kubernetes": {"resync_seconds": 0}},
        {"static": {"processes": [{"pattern": "([", "service": "x"}]}},
        {"static": {"gpus": {GPU: {"service": ""}}}},
    ],
)
def test_attribution_config_refuses_mistakes(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        AttributionConfig.model_validate(bad)
