"""Typed readings that collectors hand to the agent.

Collectors know nothing about Prometheus, the ledger or prices: they return these
immutable values and the agent decides what to export or account. A field that the
source cannot provide (NVML's NOT_SUPPORTED, a DCGM field not in the exporter's CSV)
is ``None`` -- never zero -- so that "not measured" never reads as "measured zero".

Identity of a GPU device across sources is ``(uuid, mig_instance)``: ``uuid`` is the
physical GPU's UUID (``GPU-...``) because that is what both NVML and dcgm-exporter's
``UUID`` label carry; a MIG instance is told apart by its GPU-instance id, which both
NVML (``nvmlDeviceGetGpuInstanceId``) and dcgm-exporter (``GPU_I_ID``) report. A
MIG-enabled GPU is represented by one parent reading (``mig_instance is None``,
``mig_enabled=True``) holding board-level quantities (power, energy, temperature, clocks,
XID, throttling) plus one reading per instance holding what is per-instance (memory,
engine activity, processes). Board quantities are never repeated on the instances, so
summing energy over a node's readings never counts a joule twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

DeviceKey = tuple[str, int | None]
"""``(physical GPU uuid, MIG GPU-instance id or None)``."""

EMPTY_MAPPING: Mapping[str, int] = MappingProxyType({})

# Clock throttle ("clocks event") reasons, normalized names. The bit values are NVML's
# nvmlClocksEventReason* / DCGM's DCGM_CLOCKS_EVENT_REASON_* (identical bit layout).
THROTTLE_REASON_BITS: Mapping[str, int] = MappingProxyType(
    {
        "gpu_idle": 0x1,
        "applications_clocks_setting": 0x2,
        "sw_power_cap": 0x4,
        "hw_slowdown": 0x8,
        "sync_boost": 0x10,
        "sw_thermal_slowdown": 0x20,
        "hw_thermal_slowdown": 0x40,
        "hw_power_brake_slowdown": 0x80,
        "display_clock_setting": 0x100,
    }
)


def decode_throttle_reasons(mask: int) -> Mapping[str, bool]:
    """Every known reason with whether its bit is set, so that a reason that clears
    is exported as 0 rather than disappearing (an alert needs to see it resolve)."""
    return MappingProxyType({name: bool(mask & bit) for name, bit in THROTTLE_REASON_BITS.items()})


@dataclass(frozen=True, slots=True)
class ProcessReading:
    """A process holding a GPU context, as NVML reports it (kept for attribution)."""

    pid: int
    used_memory_bytes: int | None = None
    sm_utilization_ratio: float | None = None  # None: the driver had no sample for it
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None
    # listed by NVML's MPS call: a client of an MPS server (the server itself is listed by
    # the ordinary call and holds no GPU time of its own while its clients are known)
    mps_client: bool = False


@dataclass(frozen=True, slots=True)
class WorkloadRef:
    """A Kubernetes container that dcgm-exporter says holds a device (kubelet pod-resources)."""

    namespace: str
    pod: str
    container: str
    vgpu: str | None = None  # time-slicing replica id, when the device plugin shares the GPU


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One device (a whole GPU, a MIG-enabled GPU's board, or one MIG instance)."""

    uuid: str
    index: int
    model: str
    mig_instance: int | None = None
    mig_profile: str = ""
    mig_enabled: bool = False
    mig_device_uuid: str | None = None  # NVML's "MIG-..." uuid, what device plugins hand out
    mig_slices: int | None = None  # GPU-instance compute slices (1 for 1g.10gb, 3 for 3g.40gb)
    mig_total_slices: int | None = None  # slices of the whole GPU (7 on A100/H100)
    # /dev/nvidia<minor>: what NVIDIA's DRA driver names a GPU by (gpu-<minor>); None: unread
    minor_number: int | None = None
    # the GPU instance's first slice (nvmlGpuInstanceGetInfo placement.start): what tells two
    # MIG instances of one profile apart in a DRA name; None: unread (it needs root)
    mig_placement_start: int | None = None
    driver: str | None = None
    memory_used_bytes: float | None = None
    memory_total_bytes: float | None = None
    utilization_ratio: float | None = None
    power_watts: float | None = None
    energy_joules: float | None = None  # cumulative, since the driver loaded
    temperature_celsius: float | None = None
    sm_clock_hertz: float | None = None
    throttle_reasons: Mapping[str, bool] | None = None
    xid_errors: int | None = None  # XID events counted by this source since it started
    last_xid: int | None = None  # the last XID code seen (dcgm-exporter's DCGM_FI_DEV_XID_ERRORS)
    ecc_errors: Mapping[str, int] | None = None  # {"corrected": n, "uncorrected": n}, lifetime
    remapped_rows: Mapping[str, int] | None = None  # {"correctable","uncorrectable"}
    row_remap_pending: bool | None = None
    row_remap_failed: bool | None = None
    lost: bool = False
    processes: tuple[ProcessReading, ...] = ()
    workloads: tuple[WorkloadRef, ...] = ()

    @property
    def key(self) -> DeviceKey:
        return (self.uuid, self.mig_instance)


@dataclass(frozen=True, slots=True)
class GpuTelemetry:
    """What a GPU source (NVML or dcgm-exporter) saw in one collection."""

    source: str
    gpus: tuple[GpuReading, ...] = ()
    driver: str | None = None
    hostname: str | None = None
    notes: tuple[str, ...] = field(default=())  # non-fatal oddities worth one log line
