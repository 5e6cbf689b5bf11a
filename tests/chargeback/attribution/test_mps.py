"""MPS: NVML lists the MPS server through the ordinary process call and its clients through
the MPS call; each client is billed its share of the GPU, the server none, through the real
path (fake NVML -> NVML collector -> proc files -> pod directory -> shares).

Expected shares are computed by hand from the configured samples and memory.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuledger.chargeback.attribution.claims import Owner
from gpuledger.chargeback.attribution.resolver import WorkloadResolver
from gpuledger.chargeback.attribution.shares import allocate
from gpuledger.collectors.gpu.nvml import NvmlCollector
from gpuledger.collectors.gpu.readings import GpuReading
from gpuledger.collectors.workload.pods import PodInfo, StaticPodDirectory
from gpuledger.sim.nvml_fake import FakeNvml, GpuSpec, MigInstanceSpec, ProcessSpec

GIB = 1024**3
SERVER = 100
CLIENTS = {201: "chat", 202: "embed", 203: "rerank"}
MPS_CALL = "nvmlDeviceGetMPSComputeRunningProcesses"


def _uid(n: int) -> str:
    return f"{n:08x}-0000-4000-8000-000000000000"


def _cid(n: int) -> str:
    return f"{n:064x}"


def _write_proc(root: Path, pid: int, comm: str, cmdline: str) -> None:
    d = root / str(pid)
    d.mkdir(parents=True)
    (d / "cgroup").write_text(
        "0::/kubepods.slice/kubepods-burstable.slice/"
        f"kubepods-burstable-pod{_uid(pid).replace('-', '_')}.slice/"
        f"cri-containerd-{_cid(pid)}.scope\n",
        encoding="utf-8",
    )
    (d / "comm").write_text(comm + "\n", encoding="utf-8")
    (d / "cmdline").write_text(cmdline.replace(" ", "\x00") + "\x00", encoding="utf-8")


def _pod(pid: int, namespace: str, service: str) -> PodInfo:
    return PodInfo(
        uid=_uid(pid),
        namespace=namespace,
        name=f"{service}-0",
        labels={"app.kubernetes.io/name": service},
        container_ids={_cid(pid): "main"},
    )


@pytest.fixture
def resolver(tmp_path: Path) -> WorkloadResolver:
    # the server runs in the device plugin's MPS control daemon pod; comm is cut to 15 chars
    _write_proc(tmp_path, SERVER, "nvidia-cuda-mps", "nvidia-cuda-mps-server")
    pods = [_pod(SERVER, "nvidia-device-plugin", "mps-control-daemon")]
    for pid, service in CLIENTS.items():
        _write_proc(tmp_path, pid, "python3", f"python3 -m {service}")
        pods.append(_pod(pid, "apps", service))
    return WorkloadResolver(proc_root=tmp_path, pods=StaticPodDirectory(pods), static=None)


def mps_gpu(client_memory: dict[int, int | None], **kwargs: object) -> FakeNvml:
    spec = GpuSpec(
        processes=(ProcessSpec(SERVER, 300 * 1024**2),),
        mps_clients=tuple(ProcessSpec(pid, mem) for pid, mem in client_memory.items()),
        utilization_gpu=60,
        **kwargs,  # type: ignore[arg-type]
    )
    return FakeNvml([spec])


def shares_of(reading: GpuReading, resolver: WorkloadResolver) -> dict[str, float]:
    (alloc,) = allocate([reading], resolver.claims)
    return {s.owner.service: s.share for s in alloc.shares}


def test_three_clients_split_by_their_sm_samples(resolver: WorkloadResolver) -> None:
    fake = mps_gpu({201: 10 * GIB, 202: 20 * GIB, 203: 10 * GIB})
    # two samples for 201 (mean 30 %), one each for the others; the server's own is ignored
    for pid, ts, util in [(201, 1_000, 20), (201, 2_000, 40), (202, 1_500, 10), (203, 1_500, 20)]:
        fake.add_process_sample(0, pid, ts, sm_util=util)
    fake.add_process_sample(0, SERVER, 1_500, sm_util=5)
    (g,) = NvmlCollector(fake).collect().gpus
    # 30 : 10 : 20 of 60 -> 1/2, 1/6, 1/3; the server holds nothing; nothing idle
    assert shares_of(g, resolver) == pytest.approx({"chat": 0.5, "embed": 1 / 6, "rerank": 1 / 3})
    assert resolver.counters["mps_server"] == 1
    assert resolver.counters["mps_client"] == 3
    owners = {c.owner for c in resolver.claims(g)}
    assert Owner("apps", "chat", "chat-0", "main") in owners


def test_without_samples_the_clients_split_by_memory(resolver: WorkloadResolver) -> None:
    fake = mps_gpu({201: 10 * GIB, 202: 20 * GIB, 203: 10 * GIB})
    (g,) = NvmlCollector(fake).collect().gpus
    # 10 : 20 : 10 GiB of 40 -> 1/4, 1/2, 1/4 (the server's 300 MiB is not in the split)
    assert shares_of(g, resolver) == pytest.approx({"chat": 0.25, "embed": 0.5, "rerank": 0.25})


def test_without_samples_or_memory_the_clients_split_equally(resolver: WorkloadResolver) -> None:
    fake = mps_gpu({201: None, 202: None, 203: None})
    (g,) = NvmlCollector(fake).collect().gpus
    assert shares_of(g, resolver) == pytest.approx({"chat": 1 / 3, "embed": 1 / 3, "rerank": 1 / 3})


@pytest.mark.parametrize("driver", ["not_supported", "function_not_found"])
def test_a_driver_without_mps_listing_falls_back_to_the_server_visibly(
    resolver: WorkloadResolver, driver: str
) -> None:
    clients = {201: 10 * GIB, 202: 20 * GIB, 203: 10 * GIB}
    if driver == "not_supported":
        fake = mps_gpu(clients, unsupported=frozenset({MPS_CALL}))
    else:
        fake = mps_gpu(clients)
        fake.missing_functions = frozenset({MPS_CALL})
    c = NvmlCollector(fake)
    first = c.collect()
    (g,) = first.gpus
    # today's attribution: only the server is known, its pod holds the whole GPU
    assert [p.pid for p in g.processes] == [SERVER]
    assert shares_of(g, resolver) == {"mps-control-daemon": 1.0}
    assert resolver.counters["mps_server"] == 0
    # visible once: one note, and the collector's per-GPU status
    assert len([n for n in first.notes if MPS_CALL in n]) == 1
    assert c.mps_support == {g.uuid: driver}
    # not an error every cycle: the call is not made again, no further note
    second = c.collect()
    assert second.notes == ()
    assert fake.calls[MPS_CALL] == 1
    assert second.gpus[0].processes == g.processes


def test_mps_server_whose_comm_cannot_be_read_keeps_todays_attribution(tmp_path: Path) -> None:
    # no proc entry for the server: it cannot be told from an ordinary process, so it stays
    for pid, service in CLIENTS.items():
        _write_proc(tmp_path, pid, "python3", f"python3 -m {service}")
    pods = StaticPodDirectory([_pod(pid, "apps", s) for pid, s in CLIENTS.items()])
    r = WorkloadResolver(proc_root=tmp_path, pods=pods, static=None)
    fake = mps_gpu({201: None, 202: None, 203: None})
    (g,) = NvmlCollector(fake).collect().gpus
    shares = shares_of(g, r)
    assert shares["__unattributed__"] == pytest.approx(0.25)
    assert r.counters["mps_server"] == 0


def test_mps_inside_a_mig_instance_bills_each_client_its_share_of_the_instance(
    resolver: WorkloadResolver,
) -> None:
    """An MPS server per MIG instance (NVIDIA's device plugin runs MPS on MIG devices
    too): the MPS call on the instance's handle lists that instance's clients, which
    split the instance by memory (NVML gives no per-process samples on MIG); the other
    slices stay idle."""
    fake = FakeNvml(
        [
            GpuSpec(
                model="NVIDIA H100 80GB HBM3",
                mig=(
                    MigInstanceSpec(
                        "3g.40gb", 1,
                        processes=(ProcessSpec(SERVER, 300 * 1024**2),),
                        mps_clients=(ProcessSpec(201, 6 * GIB), ProcessSpec(202, 2 * GIB)),
                    ),
                    MigInstanceSpec("4g.40gb", 2),
                ),
            )
        ]
    )  # fmt: skip
    board, small, big = NvmlCollector(fake).collect().gpus
    assert [(p.pid, p.mps_client, p.gpu_instance_id) for p in small.processes] == [
        (SERVER, False, 1),
        (201, True, 1),
        (202, True, 1),
    ]
    assert big.processes == ()
    (alloc,) = allocate([board, small, big], resolver.claims)
    shares = {s.owner.service: s.share for s in alloc.shares}
    # the 3g instance is 3/7 of the GPU: 6 : 2 GiB -> 3/4 and 1/4 of it; 4/7 idle
    assert shares == pytest.approx({"chat": 3 / 7 * 3 / 4, "embed": 3 / 7 / 4, "__idle__": 4 / 7})
    assert "mps-control-daemon" not in shares


def test_each_mps_client_holds_its_own_memory_the_server_none(resolver: WorkloadResolver) -> None:
    """Issue 17: an MPS client's held memory (the ledger's peak) is its own process's, as
    NVML's MPS call lists it; the server's 300 MiB is no one's; a client NVML gave no
    memory for is not measured (None), never the device's."""
    fake = mps_gpu({201: 10 * GIB, 202: 20 * GIB, 203: None})
    (g,) = NvmlCollector(fake).collect().gpus
    (alloc,) = allocate([g], resolver.claims)
    held = {s.owner.service: s.memory_bytes for s in alloc.shares}
    assert held == {"chat": 10 * GIB, "embed": 20 * GIB, "rerank": None}
