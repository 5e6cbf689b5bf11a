"""The simulated node's kubelet: a real gRPC ``v1.PodResourcesLister`` on a unix socket,
answering from the node's layout, so the agent's pod-resources source reads a simulated
node through the same client, collector and attribution as a real one.

Every process's pod holds its device, as NVIDIA's device plugin reports it: a whole GPU
by its UUID (``nvidia.com/gpu``), a MIG instance by its MIG UUID
(``nvidia.com/mig-<profile>``), and the time-sliced GPU's pods one replica each
(``GPU-…::0``, ``GPU-…::1``). The idle-holding pods of
:func:`gpuledger.sim.attribution.idle_holders` hold their device with no process on it.
"""

from __future__ import annotations

import shutil
import tempfile
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from gpuledger.collectors.workload.podresources import api_pb2, api_pb2_grpc
from gpuledger.sim.attribution import idle_holders
from gpuledger.sim.node import SimDevice, SimulatedNode


def _resource(d: SimDevice) -> str:
    return f"nvidia.com/mig-{d.mig_profile}" if d.mig_device_uuid else "nvidia.com/gpu"


def list_response(node: SimulatedNode) -> Any:
    """The ``ListPodResourcesResponse`` of the simulated node."""
    pods: dict[tuple[str, str], Any] = {}

    def add(namespace: str, pod: str, container: str, resource: str, device_id: str) -> None:
        p = pods.get((namespace, pod))
        if p is None:
            p = pods[(namespace, pod)] = api_pb2.PodResources(name=pod, namespace=namespace)
        c = next((c for c in p.containers if c.name == container), None)
        if c is None:
            c = p.containers.add(name=container)
        c.devices.add(resource_name=resource, device_ids=[device_id])

    for d in node.devices:
        device = d.mig_device_uuid or d.gpu_uuid
        shared = len({p.pod for p in d.processes}) > 1
        replicas: dict[str, int] = {}
        for p in d.processes:
            if shared:
                replica = replicas.setdefault(p.pod, len(replicas))
                add(p.namespace, p.pod, p.container, _resource(d), f"{device}::{replica}")
            else:
                add(p.namespace, p.pod, p.container, _resource(d), device)
    for h in idle_holders(node):
        d = h.device
        add(h.namespace, h.pod, h.container, _resource(d), d.mig_device_uuid or d.gpu_uuid)
    return api_pb2.ListPodResourcesResponse(pod_resources=list(pods.values()))


class _Lister(api_pb2_grpc.PodResourcesListerServicer):
    def __init__(self, node: SimulatedNode) -> None:
        self.response = list_response(node)  # the layout does not change
        self.allocatable = api_pb2.AllocatableResourcesResponse(
            devices=[
                api_pb2.ContainerDevices(
                    resource_name=_resource(d), device_ids=[d.mig_device_uuid or d.gpu_uuid]
                )
                for d in node.devices
            ]
        )

    def List(self, request: object, context: object) -> Any:
        return self.response

    def GetAllocatableResources(self, request: object, context: object) -> Any:
        return self.allocatable


class SimulatedKubelet:
    """Serves the node's pod-resources on ``socket`` (by default a short path in a fresh
    temporary directory: unix socket paths are limited to ~107 bytes)."""

    def __init__(self, node: SimulatedNode, socket: Path | None = None) -> None:
        self._tmp = None if socket is not None else Path(tempfile.mkdtemp(prefix="gpl-kubelet-"))
        self.socket = socket if socket is not None else self._tmp / "kubelet.sock"  # type: ignore[operator]
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        api_pb2_grpc.add_PodResourcesListerServicer_to_server(_Lister(node), self._server)  # type: ignore[no-untyped-call]
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)  # left by a killed agent
        self._server.add_insecure_port(f"unix://{self.socket}")

    def start(self) -> SimulatedKubelet:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=None).wait()
        self.socket.unlink(missing_ok=True)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
