"""The pod-resources client and collector against a real gRPC server on a unix socket
(tests/support/kubelet_podresources.py, the upstream service from the vendored .proto):
device plugin GPUs, MIG, time-sliced replicas and DRA claims; a kubelet that goes away
and comes back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuledger.collectors.base import CollectorError
from gpuledger.collectors.workload.podresources.client import (
    PodResourcesClient,
    PodResourcesError,
)
from gpuledger.collectors.workload.podresources.collector import PodResourcesCollector
from gpuledger.collectors.workload.podresources.devices import dra_device, plugin_device
from gpuledger.collectors.workload.podresources.types import (
    Allocation,
    DeviceTarget,
    Holder,
    PodResourcesBoard,
)
from tests.support.kubelet_podresources import DraClaim, Kubelet, KubeletServer, PluginDevices

GPU0 = "GPU-5c3a1e2b-7f4d-4e8a-9b6c-1d2e3f4a5b6c"
GPU1 = "GPU-9e8d7c6b-5a49-4382-8170-6f5e4d3c2b1a"
GPU2 = "GPU-11111111-2222-4333-8444-555555555555"
MIG_A = "MIG-0a1b2c3d-4e5f-5a6b-8c7d-9e0f1a2b3c4d"
CLAIM_UID = "dab5ab50-d59a-42a6-af16-cfd4628c0f7a"


def node_kubelet() -> Kubelet:
    """One of each: a whole GPU, a MIG slice, two time-sliced replicas of one GPU shared
    by two pods, a DRA GPU by name and a DRA MIG device, a non-GPU pod."""
    return Kubelet(
        plugin=[
            PluginDevices("llm-prod", "chat-7d9c8b6f5d-x2x4k", "vllm", "nvidia.com/gpu", [GPU0]),
            PluginDevices("nb", "notebook-0", "jupyter", "nvidia.com/mig-1g.10gb", [MIG_A]),
            PluginDevices("dev", "tiny-a", "main", "nvidia.com/gpu", [f"{GPU1}::0"]),
            PluginDevices("dev", "tiny-b", "main", "nvidia.com/gpu", [f"{GPU1}::3"]),
            PluginDevices("dev", "odd", "main", "nvidia.com/gpu", ["0:1"]),
        ],
        dra=[
            DraClaim(
                "research",
                "trainer-0",
                "train",
                "research",
                "trainer-gpu",
                [
                    (
                        "gpu.nvidia.com",
                        "gpu-2",
                        [f"k8s.gpu.nvidia.com/claim={CLAIM_UID}-gpu-2"],
                    ),
                    (
                        "gpu.nvidia.com",
                        "gpu-3-mig-1g10gb-19-4",
                        [f"k8s.gpu.nvidia.com/claim={CLAIM_UID}-gpu-3-mig-1g10gb-19-4"],
                    ),
                    ("nic.example.com", "eth1", ["example.com/nic=eth1"]),
                ],
            )
        ],
        other_pods=[("kube-system", "fpga-user")],
        allocatable={"nvidia.com/gpu": [GPU0, f"{GPU1}::0", f"{GPU1}::3"], "x.io/y": ["z"]},
    )


@pytest.fixture
def kubelet(tmp_path: Path) -> Iterator[KubeletServer]:
    with KubeletServer(tmp_path / "kubelet.sock", node_kubelet()) as server:
        yield server


def test_list_reads_every_kind_of_gpu_allocation(kubelet: KubeletServer) -> None:
    client = PodResourcesClient(kubelet.socket, timeout_s=2.0)
    reading = client.list()
    client.close()
    got = {(a.holder.pod, a.target, a.via, a.replica, a.claim) for a in reading.allocations}
    assert got == {
        ("chat-7d9c8b6f5d-x2x4k", DeviceTarget(uuid=GPU0), "device_plugin", None, None),
        ("notebook-0", DeviceTarget(uuid=MIG_A), "device_plugin", None, None),
        ("tiny-a", DeviceTarget(uuid=GPU1), "device_plugin", 0, None),
        ("tiny-b", DeviceTarget(uuid=GPU1), "device_plugin", 3, None),
        ("trainer-0", DeviceTarget(minor=2), "dra", None, "research/trainer-gpu"),
        (
            "trainer-0",
            DeviceTarget(minor=3, mig_profile="1g10gb", mig_placement=4),
            "dra",
            None,
            "research/trainer-gpu",
        ),
    }
    assert reading.unmapped == ("0:1",)  # the index strategy's MIG form names no UUID
    assert reading.pods == 7
    chat = next(a for a in reading.allocations if a.holder.pod.startswith("chat"))
    assert chat.holder == Holder("llm-prod", "chat-7d9c8b6f5d-x2x4k", "vllm")
    assert chat.resource == "nvidia.com/gpu"


def test_allocatable_lists_gpu_resources_only(kubelet: KubeletServer) -> None:
    client = PodResourcesClient(kubelet.socket, timeout_s=2.0)
    assert client.allocatable() == (GPU0, f"{GPU1}::0", f"{GPU1}::3")
    client.close()


def test_device_ids_and_cdi_names() -> None:
    assert plugin_device(GPU0) == (DeviceTarget(uuid=GPU0), None)
    assert plugin_device(f"{MIG_A}::12") == (DeviceTarget(uuid=MIG_A), 12)
    assert plugin_device("3") == (DeviceTarget(index=3), None)
    assert plugin_device("0:1") == (None, None)
    # A CDI name carrying a UUID (the container toolkit's specs) wins over the name.
    assert dra_device("gpu-0", [f"nvidia.com/gpu={GPU2}"]) == DeviceTarget(uuid=GPU2)
    # No device name: the CDI name's device part after the claim UID.
    cdi = f"k8s.gpu.nvidia.com/claim={CLAIM_UID}-gpu-7"
    assert dra_device("", [cdi]) == DeviceTarget(minor=7)
    assert dra_device("gpu-1-mig-3g40gb-9-4", []) == DeviceTarget(
        minor=1, mig_profile="3g40gb", mig_placement=4
    )
    assert dra_device("vf-0", []) is None


def test_board_answers_by_device() -> None:
    holder = Holder("nb", "notebook-0", "jupyter")
    board = PodResourcesBoard()
    assert board.current() is None
    from gpuledger.collectors.workload.podresources.types import PodResourcesReading

    mig = Allocation(
        holder, DeviceTarget(uuid=MIG_A), "nvidia.com/mig-1g.10gb", "device_plugin", MIG_A
    )
    dra = Allocation(
        holder, DeviceTarget(minor=1, mig_profile="3g40gb"), "gpu.nvidia.com", "dra", "x"
    )
    whole = Allocation(holder, DeviceTarget(minor=4), "gpu.nvidia.com", "dra", "y")
    board.update(PodResourcesReading(allocations=(mig, dra, whole)))
    index = board.current()
    assert index is not None
    assert index.holding(gpu_uuid=GPU0, index=0, mig_device_uuid=MIG_A) == (mig,)
    assert index.holding(
        gpu_uuid=GPU1, index=1, mig_device_uuid="MIG-x", mig_profile="3g.40gb"
    ) == (dra,)
    assert index.holding(gpu_uuid=GPU2, index=4, mig_device_uuid=None) == (whole,)
    assert index.holding(gpu_uuid=GPU2, index=5, mig_device_uuid=None) == ()
    board.clear()
    assert board.current() is None


def test_a_kubelet_that_disappears_and_returns(tmp_path: Path) -> None:
    socket = tmp_path / "kubelet.sock"
    board = PodResourcesBoard()
    collector = PodResourcesCollector(socket, timeout_s=1.0, board=board)
    # No socket yet: a clear error, nothing published.
    with pytest.raises(CollectorError, match="no kubelet pod-resources socket"):
        collector.collect()
    assert board.current() is None

    server = KubeletServer(socket, node_kubelet()).start()
    reading = collector.collect()
    assert len(reading.allocations) == 6
    assert reading.allocatable == (GPU0, f"{GPU1}::0", f"{GPU1}::3")
    assert board.current() is not None

    server.stop()  # the kubelet goes away (its socket with it)
    with pytest.raises(CollectorError):
        collector.collect()
    assert board.current() is None  # stale allocations decide nothing

    server = KubeletServer(socket, node_kubelet()).start()  # a restarted kubelet
    try:
        assert len(collector.collect().allocations) == 6
        assert board.current() is not None
    finally:
        server.stop()
        collector.close()


def test_a_kubelet_that_hangs_is_cut_off_by_the_timeout(tmp_path: Path) -> None:
    kubelet = node_kubelet()
    kubelet.delay_s = 2.0
    with KubeletServer(tmp_path / "kubelet.sock", kubelet):
        client = PodResourcesClient(tmp_path / "kubelet.sock", timeout_s=0.2)
        with pytest.raises(PodResourcesError, match="DEADLINE_EXCEEDED"):
            client.list()
        client.close()
