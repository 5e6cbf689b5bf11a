"""The GPU families: one series set per device, over NVML's and dcgm-exporter's readings
merged (:mod:`.merge`), whichever of the two is enabled or up."""

from __future__ import annotations

from gpuledger import schema
from gpuledger.collectors.gpu.merge import DCGM, NVML, merge_devices
from gpuledger.collectors.gpu.readings import GpuReading, GpuTelemetry
from gpuledger.collectors.source import Readings
from gpuledger.collectors.textformat.render import FamiliesBuilder

GPU_SOURCES = (NVML, DCGM)
_MEMO_KEY = "gpu.devices"


def merged_devices(snap: Readings) -> tuple[GpuReading, ...]:
    """The snapshot's GPU readings merged into one per device: computed once per snapshot
    and shared by the export and the ledger."""
    cached = snap.memo.get(_MEMO_KEY)
    if isinstance(cached, tuple):
        return cached
    devices = merge_devices(*(snap.reading(src, GpuTelemetry) for src in GPU_SOURCES))
    snap.memo[_MEMO_KEY] = devices
    return devices


def driver_version(snap: Readings) -> str | None:
    """The driver as the first GPU source that knows it reports it."""
    for src in GPU_SOURCES:
        t = snap.reading(src, GpuTelemetry)
        if t is not None and t.driver:
            return t.driver
    return None


def _gpu_labels(r: GpuReading) -> tuple[str, ...]:
    return (
        str(r.index),
        r.uuid,
        r.model,
        "" if r.mig_instance is None else str(r.mig_instance),
        r.mig_profile,
    )


def _add_gpu(f: FamiliesBuilder, r: GpuReading, driver: str | None) -> None:
    labels = _gpu_labels(r)
    f.add(schema.GPU_INFO, (*labels, r.driver or driver or ""), 1.0)
    f.add(schema.GPU_LOST, labels, 1.0 if r.lost else 0.0)
    if r.lost:
        return
    simple = (
        (schema.GPU_UTILIZATION, r.utilization_ratio),
        (schema.GPU_MEMORY_USED, r.memory_used_bytes),
        (schema.GPU_MEMORY_TOTAL, r.memory_total_bytes),
        (schema.GPU_POWER, r.power_watts),
        (schema.GPU_ENERGY, r.energy_joules),
        (schema.GPU_TEMPERATURE, r.temperature_celsius),
        (schema.GPU_SM_CLOCK, r.sm_clock_hertz),
        (schema.GPU_XID_ERRORS, r.xid_errors),
        (schema.GPU_LAST_XID, r.last_xid),
    )
    for spec, value in simple:
        if value is not None:
            f.add(spec, labels, float(value))
    if r.throttle_reasons is not None:
        for reason, active in sorted(r.throttle_reasons.items()):
            f.add(schema.GPU_THROTTLED, (*labels, reason), 1.0 if active else 0.0)
    if r.ecc_errors is not None:
        for kind, count in sorted(r.ecc_errors.items()):
            f.add(schema.GPU_ECC_ERRORS, (*labels, kind), float(count))
    if r.remapped_rows is not None:
        for kind, count in sorted(r.remapped_rows.items()):
            f.add(schema.GPU_REMAPPED_ROWS, (*labels, kind), float(count))
    if r.row_remap_pending is not None:
        f.add(schema.GPU_ROW_REMAP_PENDING, labels, float(r.row_remap_pending))
    if r.row_remap_failed is not None:
        f.add(schema.GPU_ROW_REMAP_FAILED, labels, float(r.row_remap_failed))


def export_gpus(f: FamiliesBuilder, snap: Readings, _live: object = None) -> None:
    driver = driver_version(snap)
    for reading in merged_devices(snap):
        _add_gpu(f, reading, driver)
