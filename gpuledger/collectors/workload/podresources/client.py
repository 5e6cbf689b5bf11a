"""A typed client of the kubelet's pod-resources v1 service (``List`` and
``GetAllocatableResources``) over its unix socket; the generated stubs stay behind it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc

from gpuledger.collectors.workload.podresources import api_pb2, api_pb2_grpc
from gpuledger.collectors.workload.podresources.devices import (
    NVIDIA_DRA_DRIVER,
    dra_device,
    is_gpu_resource,
    plugin_device,
)
from gpuledger.collectors.workload.podresources.types import (
    Allocation,
    Holder,
    PodResourcesReading,
)

DEFAULT_SOCKET = Path("/var/lib/kubelet/pod-resources/kubelet.sock")
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # the kubelet's own server limit


class PodResourcesError(Exception):
    """The kubelet could not be asked (no socket, refused, timed out, bad answer)."""


class PodResourcesClient:
    """One channel to the kubelet, opened lazily and reopened after a failure. Every
    call is bounded by ``timeout_s``."""

    def __init__(self, socket: Path = DEFAULT_SOCKET, *, timeout_s: float = 2.0) -> None:
        self.socket = socket
        self.timeout_s = timeout_s
        self._channel: grpc.Channel | None = None
        self._stub: Any = None

    def _lister(self) -> Any:
        if self._stub is None:
            self._channel = grpc.insecure_channel(
                f"unix://{self.socket}",
                options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)],
            )
            self._stub = api_pb2_grpc.PodResourcesListerStub(self._channel)  # type: ignore[no-untyped-call]
        return self._stub

    def _call(self, method: str, request: object) -> Any:
        if not self.socket.exists():
            self.close()
            raise PodResourcesError(f"no kubelet pod-resources socket at {self.socket}")
        try:
            return getattr(self._lister(), method)(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            self.close()  # a restarted kubelet has a new socket: connect afresh
            code = exc.code() if hasattr(exc, "code") else None
            detail = exc.details() if hasattr(exc, "details") else str(exc)
            name = code.name if code is not None else "ERROR"
            raise PodResourcesError(f"{method}: {name}: {detail}") from None

    def list(self) -> PodResourcesReading:
        """``List`` → the GPU allocations of every pod on the node."""
        response = self._call("List", api_pb2.ListPodResourcesRequest())
        return parse_list(response)

    def allocatable(self) -> tuple[str, ...]:
        """``GetAllocatableResources`` → the GPU device ids the kubelet can allocate
        (device plugins only; DRA devices are not listed there)."""
        response = self._call("GetAllocatableResources", api_pb2.AllocatableResourcesRequest())
        return tuple(
            i for d in response.devices if is_gpu_resource(d.resource_name) for i in d.device_ids
        )

    def close(self) -> None:
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            channel.close()


def parse_list(response: Any) -> PodResourcesReading:
    """A ``ListPodResourcesResponse`` → :class:`PodResourcesReading` (GPU devices only)."""
    allocations: list[Allocation] = []
    unmapped: list[str] = []
    pods = 0
    for pod in response.pod_resources:
        pods += 1
        for c in pod.containers:
            holder = Holder(namespace=pod.namespace, pod=pod.name, container=c.name)
            for d in c.devices:
                if not is_gpu_resource(d.resource_name):
                    continue
                for device_id in d.device_ids:
                    target, replica = plugin_device(device_id)
                    if target is None:
                        unmapped.append(device_id)
                        continue
                    allocations.append(
                        Allocation(
                            holder=holder,
                            target=target,
                            resource=d.resource_name,
                            via="device_plugin",
                            device_id=device_id,
                            replica=replica,
                        )
                    )
            for dyn in c.dynamic_resources:
                claim = f"{dyn.claim_namespace}/{dyn.claim_name}"
                for r in dyn.claim_resources:
                    if r.driver_name != NVIDIA_DRA_DRIVER:
                        continue
                    cdi = [x.name for x in r.cdi_devices]
                    dra_target = dra_device(r.device_name, cdi)
                    if dra_target is None:
                        unmapped.append(r.device_name or ",".join(cdi))
                        continue
                    allocations.append(
                        Allocation(
                            holder=holder,
                            target=dra_target,
                            resource=r.driver_name,
                            via="dra",
                            device_id=cdi[0] if cdi else r.device_name,
                            claim=claim,
                        )
                    )
    return PodResourcesReading(allocations=tuple(allocations), unmapped=tuple(unmapped), pods=pods)
