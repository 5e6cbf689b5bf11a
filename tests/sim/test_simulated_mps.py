"""The simulated node's MPS GPU: its server in NVML's ordinary list, three clients in the
MPS list, each client billed by its own SM samples through the real path and the server
billed nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuledger.chargeback.attribution.resolver import WorkloadResolver
from gpuledger.chargeback.attribution.shares import allocate
from gpuledger.collectors.gpu.nvml import NvmlCollector
from gpuledger.sim import mps
from gpuledger.sim.attribution import simulated_sources
from gpuledger.sim.node import DEFAULT_START, SimulatedNode


def test_an_eight_gpu_node_has_one_mps_gpu_with_three_clients_in_three_pods() -> None:
    node = SimulatedNode(seed=5)
    (g,) = [g for g in node.gpus if g.role == "mps"]
    clients = g.devices[0].processes
    assert len(clients) == 3
    assert len({(p.namespace, p.service, p.pod) for p in clients}) == 3
    spec = node.nvml.gpu(g.index)
    assert [p.pid for p in spec.processes] == [mps.server_pid(g.index)]
    assert [p.pid for p in spec.mps_clients] == [p.pid for p in clients]
    assert [g.role for g in SimulatedNode(seed=5, gpus=4).gpus].count("mps") == 0


def test_each_client_is_billed_by_its_samples_and_the_server_nothing(tmp_path: Path) -> None:
    node = SimulatedNode(seed=5)
    t = DEFAULT_START + 14 * 3600.0 + 30.0  # a busy hour
    collector = NvmlCollector(node.nvml)
    collector.collect()  # the samples taken at the node's start are read and left behind
    node.advance_to(t)
    root, pods = simulated_sources(node, tmp_path / "proc")
    resolver = WorkloadResolver(proc_root=root, pods=pods, static=None)
    (g,) = [g for g in node.gpus if g.role == "mps"]
    reading = next(r for r in collector.collect().gpus if r.index == g.index)
    assert sum(p.mps_client for p in reading.processes) == 3
    (alloc,) = allocate([reading], resolver.claims)
    shares = {s.owner.service: s.share for s in alloc.shares}
    # the model's own split of the GPU among the clients, at this instant (rounded to whole
    # percent, as NVML's samples are)
    samples = {
        p.service: round(node.process_utilization(p.pid, t) * 100) for p in g.devices[0].processes
    }
    total = sum(samples.values())
    assert total > 0
    assert shares == pytest.approx({s: v / total for s, v in samples.items()})
    assert mps.DAEMON_SET not in shares
    assert resolver.counters["mps_server"] == 1
