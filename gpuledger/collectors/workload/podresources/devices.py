"""Device ids and DRA CDI names → the GPU or MIG device they name.

Device plugin (``ContainerDevices``), NVIDIA k8s-device-plugin:

* ``nvidia.com/gpu`` (and a renamed shared resource such as ``nvidia.com/gpu.shared``):
  the GPU UUID (``GPU-…``) under the default ``deviceIDStrategy: uuid``, the NVML index
  (``0``) under ``index``;
* MIG resources under the ``mixed`` strategy (``nvidia.com/mig-1g.10gb``) and MIG devices
  under ``single``: the MIG device UUID (``MIG-…``); the index strategy's ``<gpu>:<mig>``
  form names no UUID and is reported as unmapped;
* time-slicing (and MPS) replicas: the UUID with ``::<replica>`` appended
  (``GPU-…::3``), one id per replica handed out.

DRA (``DynamicResource.claim_resources``), NVIDIA's driver ``gpu.nvidia.com``
(github.com/NVIDIA/k8s-dra-driver-gpu, cmd/gpu-kubelet-plugin at commit
22407113785e78c7763b4637689a201eb39c6199): the kubelet reports the allocated device's
``device_name`` and its CDI names. The driver names a whole GPU ``gpu-<minor>``
(``GpuInfo.CanonicalName``, deviceinfo.go) and a MIG device
``gpu-<minor>-mig-<profile without dots>-<profile id>-<placement start>``
(``MigSpecTuple.ToCanonicalName``, mig.go); its CDI device is
``k8s.gpu.nvidia.com/claim=<claim UID>-<that name>`` (``GetClaimDeviceName``, cdi.go).
Neither carries a UUID, so ``gpu-<N>`` is mapped to the GPU whose minor number
(``nvmlDeviceGetMinorNumber``) is N, and a MIG name to the instance of that profile
whose GPU instance starts at that slice (``nvmlGpuInstanceGetInfo``'s placement, which
NVML gives to root only; without it, every instance of the profile on that GPU matches).
A CDI name that does carry a UUID (the NVIDIA Container Toolkit's ``nvidia.com/gpu=GPU-…``
specs) is used as such. Other DRA drivers are not GPUs and are ignored.
"""

from __future__ import annotations

import re

from gpuledger.collectors.workload.podresources.types import DeviceTarget, normalize_profile

NVIDIA_PREFIX = "nvidia.com/"
NVIDIA_DRA_DRIVER = "gpu.nvidia.com"

_UUID_RE = re.compile(r"\b((?:GPU|MIG)-[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12})\b")
_REPLICA_RE = re.compile(r"^(.*)::(\d+)$")
_DRA_GPU_RE = re.compile(r"(?:^|-)gpu-(\d+)$")
_DRA_MIG_RE = re.compile(r"(?:^|-)gpu-(\d+)-mig-([0-9a-z-]+?)-(\d+)-(\d+)$")


def is_gpu_resource(resource_name: str) -> bool:
    """``nvidia.com/gpu``, ``nvidia.com/gpu.shared``, ``nvidia.com/mig-*``."""
    if not resource_name.startswith(NVIDIA_PREFIX):
        return False
    rest = resource_name[len(NVIDIA_PREFIX) :]
    return rest == "gpu" or rest.startswith(("gpu.", "mig-"))


def plugin_device(device_id: str) -> tuple[DeviceTarget | None, int | None]:
    """A device plugin's device id → (the device, its time-slicing replica or None);
    ``(None, None)`` for an id naming no device this agent can see."""
    replica: int | None = None
    m = _REPLICA_RE.match(device_id)
    if m:
        device_id, replica = m.group(1), int(m.group(2))
    if _UUID_RE.fullmatch(device_id):
        return DeviceTarget(uuid=device_id), replica
    if device_id.isdigit():
        return DeviceTarget(index=int(device_id)), replica
    return None, replica


def dra_device(device_name: str, cdi_names: list[str]) -> DeviceTarget | None:
    """An NVIDIA DRA device (``ClaimResource``) → the device, or None."""
    for cdi in cdi_names:
        u = _UUID_RE.search(cdi)
        if u:
            return DeviceTarget(uuid=u.group(1))
    # The device name first, else the CDI name's device part (after "=<claim UID>-").
    for name in [device_name, *(c.partition("=")[2] for c in cdi_names)]:
        if not name:
            continue
        mig = _DRA_MIG_RE.search(name)
        if mig:
            return DeviceTarget(
                minor=int(mig.group(1)),
                mig_profile=normalize_profile(mig.group(2)),
                mig_placement=int(mig.group(4)),
            )
        gpu = _DRA_GPU_RE.search(name)
        if gpu:
            return DeviceTarget(minor=int(gpu.group(1)))
    return None
