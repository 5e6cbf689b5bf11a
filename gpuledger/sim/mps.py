"""The simulated node's MPS GPU: three clients in three pods, through one MPS server.

Under MPS, NVML's ordinary process list shows only ``nvidia-cuda-mps-server`` and the
clients come from ``nvmlDeviceGetMPSComputeRunningProcesses`` (docs/attribution.md, MPS).
The node (:mod:`gpuledger.sim.node`) models the clients like any time-sliced processes (their
SM samples drive their shares); this module gives the fake NVML its MPS shape and the proc
tree its server: a process in the NVIDIA device plugin's MPS control daemon pod whose
``comm`` is what the kernel keeps of ``nvidia-cuda-mps-server``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from gpuledger.collectors.workload.pods import PodInfo
from gpuledger.sim.nvml_fake import MIB, GpuSpec, ProcessSpec

SERVER_COMM = "nvidia-cuda-mps"  # 15 characters of nvidia-cuda-mps-server
SERVER_CMDLINE = ("nvidia-cuda-mps-server",)
SERVER_MEMORY_BYTES = 300 * MIB
DAEMON_NAMESPACE = "nvidia-device-plugin"
DAEMON_SET = "nvidia-device-plugin-mps-control-daemon"
DAEMON_POD_UID = "0b7e5d6c-3a2f-4e1d-9c8b-7a6f5e4d3c2b"
DAEMON_CONTAINER_ID = "6d70732d636f6e74726f6c2d6461656d6f6e2d73696d756c617465642d6e6f6465"


def server_pid(gpu_index: int) -> int:
    """The MPS server of GPU ``gpu_index``: below every pid the node draws (2 000 and up)."""
    return 1_000 + gpu_index


def as_mps(spec: GpuSpec, gpu_index: int) -> GpuSpec:
    """The fake NVML's view of a GPU whose processes are MPS clients: the server in the
    ordinary list, the clients in the MPS one (the server's own memory is within the
    driver's reserve the node adds to ``memory_used_bytes``)."""
    server = ProcessSpec(server_pid(gpu_index), SERVER_MEMORY_BYTES)
    return replace(spec, processes=(server,), mps_clients=spec.processes)


def write_servers(root: Path, gpu_indices: list[int], node_name: str) -> list[PodInfo]:
    """Proc entries of the MPS servers of ``gpu_indices`` (in the control daemon pod) and
    that pod, for the simulated node's pod directory; nothing when there is no MPS GPU."""
    if not gpu_indices:
        return []
    cgroup = (
        "0::/kubepods.slice/kubepods-burstable.slice/"
        f"kubepods-burstable-pod{DAEMON_POD_UID.replace('-', '_')}.slice/"
        f"cri-containerd-{DAEMON_CONTAINER_ID}.scope\n"
    )
    for index in gpu_indices:
        d = root / str(server_pid(index))
        d.mkdir(parents=True, exist_ok=True)
        (d / "cgroup").write_text(cgroup, encoding="utf-8")
        (d / "comm").write_text(SERVER_COMM + "\n", encoding="utf-8")
        (d / "cmdline").write_text("\x00".join(SERVER_CMDLINE) + "\x00", encoding="utf-8")
    return [
        PodInfo(
            uid=DAEMON_POD_UID,
            namespace=DAEMON_NAMESPACE,
            name=f"{DAEMON_SET}-x7k2p",
            labels={"app.kubernetes.io/name": DAEMON_SET},
            owner_kind="DaemonSet",
            owner_name=DAEMON_SET,
            node_name=node_name,
            container_ids={DAEMON_CONTAINER_ID: "mps-control-daemon-ctr"},
        )
    ]
