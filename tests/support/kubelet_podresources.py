"""A stand-in kubelet: a real gRPC server on a unix socket implementing the upstream
``v1.PodResourcesLister`` service (the stubs generated from the vendored api.proto),
answering with the allocations a test sets."""

from __future__ import annotations

import threading
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from gpuledger.collectors.workload.podresources import api_pb2, api_pb2_grpc

# Allocations, as a test writes them:
#   ("ns", "pod", "container", "nvidia.com/gpu", ["GPU-…", …])            device plugin
#   ("ns", "pod", "container", "dra", claim_ns, claim_name,
#        [(driver, device_name, [cdi names])])                               DRA


@dataclass
class PluginDevices:
    namespace: str
    pod: str
    container: str
    resource: str
    device_ids: list[str]


@dataclass
class DraClaim:
    namespace: str
    pod: str
    container: str
    claim_namespace: str
    claim_name: str
    devices: list[tuple[str, str, list[str]]]  # (driver, device name, CDI names)


@dataclass
class Kubelet:
    """What the stand-in answers; tests mutate it between collections."""

    plugin: list[PluginDevices] = field(default_factory=list)
    dra: list[DraClaim] = field(default_factory=list)
    other_pods: list[tuple[str, str]] = field(default_factory=list)  # pods with no devices
    allocatable: dict[str, list[str]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    delay_s: float = 0.0

    def list_response(self) -> api_pb2.ListPodResourcesResponse:
        pods: dict[tuple[str, str], api_pb2.PodResources] = {}

        def container(ns: str, pod: str, name: str) -> api_pb2.ContainerResources:
            p = pods.setdefault((ns, pod), api_pb2.PodResources(name=pod, namespace=ns))
            for c in p.containers:
                if c.name == name:
                    return c
            return p.containers.add(name=name)

        for ns, pod in self.other_pods:
            c = container(ns, pod, "main")
            c.devices.add(resource_name="example.com/fpga", device_ids=["fpga-0"])
        for d in self.plugin:
            container(d.namespace, d.pod, d.container).devices.add(
                resource_name=d.resource, device_ids=d.device_ids
            )
        for claim in self.dra:
            dyn = container(claim.namespace, claim.pod, claim.container).dynamic_resources.add(
                claim_name=claim.claim_name, claim_namespace=claim.claim_namespace
            )
            for driver, device_name, cdi in claim.devices:
                r = dyn.claim_resources.add(
                    driver_name=driver, pool_name="gpu-node-1", device_name=device_name
                )
                for name in cdi:
                    r.cdi_devices.add(name=name)
        return api_pb2.ListPodResourcesResponse(pod_resources=list(pods.values()))


class _Servicer(api_pb2_grpc.PodResourcesListerServicer):  # type: ignore[misc]
    def __init__(self, kubelet: Kubelet) -> None:
        self.kubelet = kubelet

    def List(self, request: object, context: object) -> api_pb2.ListPodResourcesResponse:
        self.kubelet.calls.append("List")
        if self.kubelet.delay_s:
            threading.Event().wait(self.kubelet.delay_s)
        return self.kubelet.list_response()

    def GetAllocatableResources(
        self, request: object, context: object
    ) -> api_pb2.AllocatableResourcesResponse:
        self.kubelet.calls.append("GetAllocatableResources")
        return api_pb2.AllocatableResourcesResponse(
            devices=[
                api_pb2.ContainerDevices(resource_name=r, device_ids=ids)
                for r, ids in self.kubelet.allocatable.items()
            ]
        )


class KubeletServer:
    """The stand-in served on ``socket`` (start/stop as often as a test needs: a stopped
    server removes its socket, as a kubelet that went away)."""

    def __init__(self, socket: Path, kubelet: Kubelet | None = None) -> None:
        self.socket = socket
        self.kubelet = kubelet if kubelet is not None else Kubelet()
        self._server: grpc.Server | None = None

    def start(self) -> KubeletServer:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        api_pb2_grpc.add_PodResourcesListerServicer_to_server(_Servicer(self.kubelet), server)
        server.add_insecure_port(f"unix://{self.socket}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None
        self.socket.unlink(missing_ok=True)

    def __enter__(self) -> KubeletServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
