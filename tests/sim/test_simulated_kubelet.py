"""The simulated node's kubelet, read through the real pod-resources client: every
process's pod on its device, the time-sliced GPU's pods one replica each, and the
idle-holding notebook on the empty MIG instance."""

from __future__ import annotations

from pathlib import Path

from gpuledger.collectors.workload.podresources.client import PodResourcesClient
from gpuledger.collectors.workload.podresources.types import DeviceTarget
from gpuledger.sim.attribution import idle_holders, simulated_sources
from gpuledger.sim.kubelet import SimulatedKubelet
from gpuledger.sim.node import SimulatedNode


def test_the_simulated_kubelet_lists_the_node(tmp_path: Path) -> None:
    node = SimulatedNode(42, 8)
    (holder,) = idle_holders(node)
    empty = holder.device
    # 8 H100s: GPU 6 has MIG layout A, whose 1g.10gb instance of GI 9 has no process
    assert (empty.gpu_index, empty.mig_instance, empty.mig_profile) == (6, 9, "1g.10gb")
    assert empty.processes == ()
    kubelet = SimulatedKubelet(node).start()
    try:
        client = PodResourcesClient(kubelet.socket, timeout_s=2.0)
        reading = client.list()
        allocatable = client.allocatable()
        client.close()
    finally:
        kubelet.stop()
    assert not kubelet.socket.exists()
    pods = {p.pod for p in node.processes} | {holder.pod}
    assert reading.pods == len(pods)
    assert reading.unmapped == ()
    # one allocation per (pod, device): 8 GPUs' processes plus the notebook
    expected = {(p.pod, p.mig_device_uuid or p.gpu_uuid) for p in node.processes}
    expected.add((holder.pod, empty.mig_device_uuid))
    got = {(a.holder.pod, a.target.uuid) for a in reading.allocations}
    assert got == expected
    notebook = next(a for a in reading.allocations if a.holder.pod == holder.pod)
    assert notebook.holder.namespace == "research"
    assert notebook.resource == "nvidia.com/mig-1g.10gb"
    assert notebook.target == DeviceTarget(uuid=empty.mig_device_uuid)
    shared = next(g for g in node.gpus if g.role == "shared")
    replicas = sorted(a.replica for a in reading.allocations if a.target.uuid == shared.uuid)
    assert replicas == [0, 1]
    assert len(allocatable) == len(node.devices)
    # the pod directory knows the notebook: its service from the name label
    _, directory = simulated_sources(node, tmp_path / "proc")
    info = directory.by_name("research", holder.pod)
    assert info is not None
    assert info.labels["app.kubernetes.io/name"] == "notebook"
