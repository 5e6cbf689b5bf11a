"""HAMi (Project-HAMi/HAMi, vGPU sharing on Kubernetes): what a pod declared on a GPU.

HAMi's scheduler writes, on each pod it places, the devices it allocated per container in
the annotation ``hami.io/vgpu-devices-allocated`` (``device.SupportDevices["NVIDIA"]`` in
``pkg/device/nvidia/device.go``). The value is HAMi's ``EncodePodSingleDevice``: one
entry per container, each ended by ``;``; inside it one device per GPU, each ended by
``:``, as ``<GPU uuid>,<type>,<memory MiB>,<cores %>`` (``EncodeContainerDevices`` /
``DecodeContainerDevices`` in ``pkg/util/util.go``, later under ``pkg/device/``), e.g.
``GPU-0fc3eda5-e98b-a25b-5b0d-cf5c855d1448,NVIDIA,3000,30:;``. The cores are what the
container asked for with ``nvidia.com/gpucores`` (percent of the GPU's SMs); 0 means it
declared none (HAMi's ``defaultCores: 0``: no core limit). The resource names, as HAMi's
default device config has them (``InitDefaultDevices`` in ``pkg/device/devices.go``):
``nvidia.com/gpu`` (vGPUs), ``nvidia.com/gpumem`` (MiB), ``nvidia.com/gpumem-percentage``,
``nvidia.com/gpucores``, ``nvidia.com/priority``.

The annotation is read rather than the containers' resource limits because it names the
physical GPU each share was placed on. Sources: docs/attribution.md (HAMi).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "ALLOCATED_ANNOTATION",
    "RESOURCE_CORES",
    "RESOURCE_COUNT",
    "RESOURCE_MEMORY",
    "RESOURCE_MEMORY_PERCENTAGE",
    "TO_ALLOCATE_ANNOTATION",
    "HamiDevice",
    "declared_core_share",
    "parse_allocated",
]

ALLOCATED_ANNOTATION = "hami.io/vgpu-devices-allocated"
TO_ALLOCATE_ANNOTATION = "hami.io/vgpu-devices-to-allocate"  # emptied once bound
RESOURCE_COUNT = "nvidia.com/gpu"
RESOURCE_MEMORY = "nvidia.com/gpumem"
RESOURCE_MEMORY_PERCENTAGE = "nvidia.com/gpumem-percentage"
RESOURCE_CORES = "nvidia.com/gpucores"

_CONTAINER_SEP = ";"  # HAMi's OnePodMultiContainerSplitSymbol
_DEVICE_SEP = ":"  # HAMi's OneContainerMultiDeviceSplitSymbol


@dataclass(frozen=True, slots=True)
class HamiDevice:
    """One GPU share HAMi allocated to one container."""

    uuid: str
    vendor: str
    memory_mib: int
    cores_percent: int


def _int(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


def parse_allocated(value: str) -> tuple[tuple[HamiDevice, ...], ...]:
    """The annotation's value → per container, its devices. Entries HAMi's own decoder
    would refuse (fewer than 4 fields, numbers that are not) are skipped."""
    containers: list[tuple[HamiDevice, ...]] = []
    for entry in value.split(_CONTAINER_SEP):
        devices: list[HamiDevice] = []
        for dev in entry.split(_DEVICE_SEP):
            fields = dev.split(",")
            if len(fields) < 4:
                continue
            mem, cores = _int(fields[2]), _int(fields[3])
            if mem is None or cores is None or not fields[0].strip():
                continue
            devices.append(HamiDevice(fields[0].strip(), fields[1].strip(), mem, cores))
        if devices:
            containers.append(tuple(devices))
    return tuple(containers)


def declared_core_share(annotations: Mapping[str, str], gpu_uuid: str) -> float | None:
    """The fraction of ``gpu_uuid`` a pod declared (the sum of its containers' cores on
    that GPU, /100, at most 1); ``None`` when it declared none there (no annotation, not on
    this GPU, or only 0 cores)."""
    value = annotations.get(ALLOCATED_ANNOTATION)
    if not value:
        return None
    cores = sum(
        d.cores_percent
        for container in parse_allocated(value)
        for d in container
        if d.uuid == gpu_uuid and d.cores_percent > 0
    )
    return min(cores, 100) / 100.0 if cores > 0 else None
