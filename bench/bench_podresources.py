"""What asking the kubelet who holds each GPU costs the agent per cycle.

Run from the repository root:  python -m bench.bench_podresources [--pods N] [--cycles N]

A kubelet stand-in in a child process (so its CPU is not counted) serves the upstream
pod-resources v1 API (the generated stubs) on a unix socket for a full node: ``--pods``
pods (default 110, the kubelet's default ``maxPods``), two containers each with CPU ids
and memory, of which 6 hold a whole GPU by UUID, 7 a MIG instance by MIG UUID and one a
DRA claim (NVIDIA's ``gpu-<minor>`` name, for a minor this node does not have: it is
parsed and indexed, and decides nothing). Each cycle runs what the agent runs: the
collector's ``List`` + ``GetAllocatableResources`` and the board update, then the
resolver's claims for every device reading of the simulated 8-GPU node (two in MIG mode).
Measured with ``time.process_time`` (the agent's CPU only) and ``perf_counter`` (wall,
including the kubelet's answer).

Target: ≤ 5 ms CPU per cycle, the same budget as the ledger's per-cycle cost: at the
default 15 s interval either is a few hundredths of a percent of a core.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from bench.results import Row, command, row
from gpuledger.chargeback.attribution.resolver import WorkloadResolver
from gpuledger.collectors.gpu.nvml import NvmlCollector
from gpuledger.collectors.gpu.readings import GpuReading
from gpuledger.collectors.workload.podresources import api_pb2, api_pb2_grpc
from gpuledger.collectors.workload.podresources.collector import PodResourcesCollector
from gpuledger.collectors.workload.podresources.types import PodResourcesBoard
from gpuledger.sim.node import SimulatedNode

TARGET_MS = 5.0


def node_response(readings: list[GpuReading], pods: int) -> api_pb2.ListPodResourcesResponse:
    """A full node's List answer: every GPU and MIG device handed to a pod of its own, one
    pod holding a DRA claim, the rest of the pods holding CPUs and memory only."""
    out = api_pb2.ListPodResourcesResponse()

    def pod(i: int) -> Any:
        p = out.pod_resources.add(name=f"pod-{i}-5d8c7b9f4-x2x4k", namespace=f"team-{i % 12}")
        for c in ("main", "sidecar"):
            ctr = p.containers.add(name=c)
            ctr.cpu_ids.extend([2 * i % 64, (2 * i + 1) % 64])
            ctr.memory.add(memory_type="memory", size=8 << 30)
        return p.containers[0]

    i = 0
    for r in readings:
        if r.mig_enabled and r.mig_instance is None:
            continue  # a MIG board: its instances are handed out
        if r.mig_device_uuid is not None:
            pod(i).devices.add(resource_name=f"nvidia.com/mig-{r.mig_profile}",
                               device_ids=[r.mig_device_uuid])  # fmt: skip
        else:
            pod(i).devices.add(resource_name="nvidia.com/gpu", device_ids=[r.uuid])
        i += 1
    dyn = pod(i).dynamic_resources.add(claim_name="trainer", claim_namespace="research")
    dyn.claim_resources.add(driver_name="gpu.nvidia.com", pool_name="node", device_name="gpu-9")
    i += 1
    while i < pods:
        pod(i)
        i += 1
    return out


class _Lister(api_pb2_grpc.PodResourcesListerServicer):
    def __init__(self, response: bytes, allocatable: bytes) -> None:
        self.response = api_pb2.ListPodResourcesResponse.FromString(response)
        self.allocatable = api_pb2.AllocatableResourcesResponse.FromString(allocatable)

    def List(self, request: object, context: object) -> Any:
        return self.response

    def GetAllocatableResources(self, request: object, context: object) -> Any:
        return self.allocatable


def _serve(socket: str, response: bytes, allocatable: bytes, stop: Any) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = _Lister(response, allocatable)
    api_pb2_grpc.add_PodResourcesListerServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(f"unix://{socket}")
    server.start()
    stop.wait()
    server.stop(0)


def main(argv: list[str] | None = None) -> list[Row]:
    ap = argparse.ArgumentParser(description="pod-resources + attribution cost per cycle")
    ap.add_argument("--pods", type=int, default=110)
    ap.add_argument("--cycles", type=int, default=500)
    args = ap.parse_args(argv)
    node = SimulatedNode(3, 8)
    readings = list(NvmlCollector(node.nvml).collect().gpus)
    response = node_response(readings, args.pods)
    allocatable = api_pb2.AllocatableResourcesResponse()
    whole = [r.uuid for r in readings if r.mig_instance is None]
    allocatable.devices.add(resource_name="nvidia.com/gpu", device_ids=whole)
    tmp = Path(tempfile.mkdtemp(prefix="gpuledger-bench-podres-"))
    socket = tmp / "kubelet.sock"
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    server = ctx.Process(
        target=_serve,
        args=(str(socket), response.SerializeToString(), allocatable.SerializeToString(), stop),
        daemon=True,
    )
    server.start()
    deadline = time.monotonic() + 30
    while not socket.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    board = PodResourcesBoard()
    collector = PodResourcesCollector(socket, timeout_s=5.0, board=board)
    resolver = WorkloadResolver(proc_root=tmp, pods=None, static=None, allocations=board)
    try:
        for _ in range(20):  # warm-up: channel, imports, caches
            collector.collect()
            for r in readings:
                resolver.claims(r)
        cpu: list[float] = []
        wall: list[float] = []
        for _ in range(args.cycles):
            c0, w0 = time.process_time(), time.perf_counter()
            reading = collector.collect()
            for r in readings:
                resolver.claims(r)
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
    finally:
        collector.close()
        stop.set()
        server.join(10)
    held = sum(1 for d in resolver.decisions.values() if d.decided_by == "podresources")
    mean_ms = 1000 * statistics.fmean(cpu)
    wall_sorted = sorted(wall)
    p50_ms = 1000 * wall_sorted[len(wall) // 2]
    p99_ms = 1000 * wall_sorted[int(0.99 * (len(wall) - 1))]
    verdict = "PASS" if mean_ms <= TARGET_MS else "FAIL"
    size = response.ByteSize()
    print(
        f"pod-resources + attribution per cycle ({reading.pods} pods, "
        f"{len(reading.allocations)} GPU allocations, {size:,} B List answer; "
        f"{len(readings)} device readings, {held} decided by podresources; {args.cycles} "
        f"cycles): CPU mean {mean_ms:.2f} ms; wall p50 {p50_ms:.2f} ms, p99 {p99_ms:.2f} ms; "
        f"target ≤ {TARGET_MS:.0f} ms CPU  {verdict}"
    )
    cmd = command("bench.bench_podresources", argv)
    what = f"{reading.pods} pods, {len(readings)} device readings"
    return [
        row(f"pod-resources List + attribution, agent CPU per cycle ({what})",
            f"{mean_ms:.2f} ms", mean_ms, target=f"≤ {TARGET_MS:.0f} ms",
            passed=mean_ms <= TARGET_MS, command=cmd),
        row(f"pod-resources List + attribution, wall p99 ({what})", f"{p99_ms:.2f} ms", p99_ms,
            command=cmd),
    ]  # fmt: skip


if __name__ == "__main__":
    main()
    raise SystemExit(0)
