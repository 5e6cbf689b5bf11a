"""Merge NVML and dcgm-exporter readings into one reading per device.

The precedence is documented in ``docs/metrics.md`` (generated from gpuledger.schema):
NVML first for everything it reads in-process, DCGM first for utilization (its
graphics-engine-active is a true time fraction and exists per MIG instance) and for the
last XID code; the XID *count* only from NVML's event set; Kubernetes workloads only from
DCGM; processes only from NVML. A device only one source sees is exported from that
source alone. A GPU NVML reports as lost is exported as lost, without DCGM's (stale)
values.
"""

from __future__ import annotations

from dataclasses import fields, replace

from gpuledger.collectors.gpu.readings import DeviceKey, GpuReading, GpuTelemetry

NVML, DCGM = "nvml", "dcgm"

_DEFAULT_ORDER = (NVML, DCGM)
_ORDER: dict[str, tuple[str, ...]] = {
    "utilization_ratio": (DCGM, NVML),
    "last_xid": (DCGM, NVML),
    "xid_errors": (NVML,),
    "workloads": (DCGM,),
    "processes": (NVML,),
}
_IDENTITY = frozenset({"uuid", "mig_instance"})
_MERGED_FIELDS = tuple(f.name for f in fields(GpuReading) if f.name not in _IDENTITY)


def _present(value: object) -> bool:
    if value is None:
        return False
    return not (isinstance(value, tuple | str) and not value)


def merge_devices(*telemetry: GpuTelemetry | None) -> tuple[GpuReading, ...]:
    """One reading per ``(uuid, mig_instance)``, ordered by GPU index then instance."""
    by_source: dict[str, dict[DeviceKey, GpuReading]] = {}
    keys: dict[DeviceKey, None] = {}
    for t in telemetry:
        if t is None:
            continue
        table = by_source.setdefault(t.source, {})
        for reading in t.gpus:
            table[reading.key] = reading
            keys[reading.key] = None

    merged: list[GpuReading] = []
    for key in keys:
        candidates = {src: table[key] for src, table in by_source.items() if key in table}
        nvml = candidates.get(NVML)
        if nvml is not None and nvml.lost:
            merged.append(nvml)
            continue
        if len(candidates) == 1:
            merged.append(next(iter(candidates.values())))
            continue
        base = nvml if nvml is not None else next(iter(candidates.values()))
        changes: dict[str, object] = {}
        for name in _MERGED_FIELDS:
            order = _ORDER.get(name, _DEFAULT_ORDER)
            for src in order:
                candidate = candidates.get(src)
                if candidate is not None and _present(value := getattr(candidate, name)):
                    changes[name] = value
                    break
        merged.append(replace(base, **changes))  # type: ignore[arg-type]
    merged.sort(key=lambda r: (r.index, -1 if r.mig_instance is None else r.mig_instance))
    return tuple(merged)
