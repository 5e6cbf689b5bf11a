"""dcgm-exporter as a GPU source: its ``/metrics`` page turned into :class:`GpuTelemetry`.

dcgm-exporter has no client library and no stable schema: each generation renamed fields,
labels and units (see ``docs/upstream-dcgm.md`` for the sources). This module is the one
place that knows those generations; whatever page it reads, it hands the agent the same
values in base units, so nothing downstream ever changes with the exporter's version.

Rows are keyed by the physical GPU's ``UUID`` label plus ``GPU_I_ID`` for a MIG instance.
The exporter repeats board-level values (power, energy, clocks, ...) on every GPU-instance
row of a MIG-enabled GPU; they are read once, into the board reading, so that summing energy
over a node's readings never counts a joule more than once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import httpx

from gpuledger.collectors.base import CollectorError
from gpuledger.collectors.gpu.readings import (
    GpuReading,
    GpuTelemetry,
    WorkloadRef,
    decode_throttle_reasons,
)
from gpuledger.collectors.http import fetch, redact_url
from gpuledger.collectors.textformat.parse import (
    DEFAULT_MAX_SAMPLES,
    ExpositionError,
    MetricFamily,
    parse,
)

DEFAULT_URL = "http://127.0.0.1:9400/metrics"
DEFAULT_MAX_BYTES = 16 * 1024 * 1024

_MIB = 1024 * 1024

# DCGM writes "<<<NULL>>>" (DCGM_STR_BLANK) into a string field it could not read; seen in the
# exporter's GPU_I_PROFILE label (NVIDIA/gpu-monitoring-tools#193). It means "unknown", not a
# profile named "<<<NULL>>>".
_DCGM_STR_BLANK = "<<<NULL>>>"
# DCGM's numeric blanks (DCGM_FP64_BLANK = 2**47, the INT64 blanks near 2**63) mean "no value"
# (not supported, not yet sampled). No real value of a field read here comes near 2**47 in
# its upstream unit (2**47 mJ is ~39 MWh; bytes, Hz and counts are far below), so anything at
# or above it is treated as absent.
_DCGM_BLANK_FLOOR = 2.0**47

_MIG_SLICES_RE = re.compile(r"(\d+)g\.")


@dataclass(frozen=True, slots=True)
class _Source:
    """One upstream spelling of a quantity and the factor to its base unit."""

    name: str
    scale: float = 1.0
    divide: bool = False  # divide by ``scale`` (exact for %, mJ) rather than multiply


def _s(name: str, scale: float = 1.0, *, divide: bool = False) -> _Source:
    return _Source(name, scale, divide)


# Newest spelling first: a page never carries both generations of one field, but if a site
# CSV lists both, the base-unit field wins.
_QUANTITIES: Mapping[str, tuple[_Source, ...]] = {
    "engine_util": (_s("DCGM_FI_PROF_GR_ENGINE_UTIL_RATIO"), _s("DCGM_FI_PROF_GR_ENGINE_ACTIVE")),
    "gpu_util_ratio": (_s("DCGM_FI_DEV_GPU_UTIL_RATIO"),),
    "gpu_util_percent": (_s("DCGM_FI_DEV_GPU_UTIL", 100.0, divide=True),),
    "fb_used": (_s("DCGM_FI_DEV_FB_USED_BYTES"), _s("DCGM_FI_DEV_FB_USED", _MIB)),
    "fb_free": (_s("DCGM_FI_DEV_FB_FREE_BYTES"), _s("DCGM_FI_DEV_FB_FREE", _MIB)),
    "fb_reserved": (_s("DCGM_FI_DEV_FB_RESERVED_BYTES"), _s("DCGM_FI_DEV_FB_RESERVED", _MIB)),
    "power": (_s("DCGM_FI_DEV_BOARD_POWER_WATTS"), _s("DCGM_FI_DEV_POWER_USAGE")),
    "energy": (
        _s("DCGM_FI_DEV_GPU_ENERGY_JOULES_TOTAL"),
        _s("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", 1000.0, divide=True),
    ),
    "temperature": (_s("DCGM_FI_DEV_GPU_TEMP_CELSIUS"), _s("DCGM_FI_DEV_GPU_TEMP")),
    "sm_clock": (_s("DCGM_FI_DEV_SM_CLOCK_HERTZ"), _s("DCGM_FI_DEV_SM_CLOCK", 1e6)),
    "throttle": (_s("DCGM_FI_DEV_CLOCKS_EVENT_REASONS"), _s("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS")),
    "xid": (_s("DCGM_FI_DEV_XID_ERROR"), _s("DCGM_FI_DEV_XID_ERRORS")),
    "ecc_sbe": (_s("DCGM_FI_DEV_ECC_SBE_AGG_TOTAL"),),
    "ecc_dbe": (_s("DCGM_FI_DEV_ECC_DBE_AGG_TOTAL"),),
    "rows_correctable": (
        _s("DCGM_FI_DEV_ROW_REMAP_CORRECTABLE_TOTAL"),
        _s("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS"),
    ),
    "rows_uncorrectable": (
        _s("DCGM_FI_DEV_ROW_REMAP_UNCORRECTABLE_TOTAL"),
        _s("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS"),
    ),
    "rows_failed": (_s("DCGM_FI_DEV_ROW_REMAP_FAILED"), _s("DCGM_FI_DEV_ROW_REMAP_FAILURE")),
    "rows_pending": (_s("DCGM_FI_DEV_ROW_REMAP_PENDING"),),
}
_BY_NAME: Mapping[str, tuple[str, _Source]] = {
    src.name: (quantity, src) for quantity, srcs in _QUANTITIES.items() for src in srcs
}
_RANK: Mapping[str, int] = {
    src.name: rank for srcs in _QUANTITIES.values() for rank, src in enumerate(srcs)
}

# What a MIG instance owns; every other quantity belongs to the board.
_INSTANCE_QUANTITIES = frozenset(
    {"engine_util", "gpu_util_ratio", "gpu_util_percent", "fb_used", "fb_free", "fb_reserved"}
)


@dataclass
class _Device:
    """Everything the page says about one (uuid, GPU_I_ID)."""

    uuid: str
    gi: int | None
    index: int = -1
    model: str = ""
    profile: str = ""
    driver: str | None = None
    values: dict[str, tuple[int, float]] = field(default_factory=dict)  # quantity -> (rank, v)
    workloads: dict[tuple[str, str, str, str | None], None] = field(default_factory=dict)

    def put(self, quantity: str, rank: int, value: float) -> None:
        held = self.values.get(quantity)
        if held is None or rank < held[0]:
            self.values[quantity] = (rank, value)

    def get(self, quantity: str) -> float | None:
        held = self.values.get(quantity)
        return None if held is None else held[1]


class DcgmCollector:
    """Reads one dcgm-exporter (normally the node-local DaemonSet pod on :9400)."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        timeout_s: float = 5.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_samples: int = DEFAULT_MAX_SAMPLES,
        name: str = "dcgm",
    ) -> None:
        self.name = name
        self.url = url
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.max_samples = max_samples
        # No redirects: a /metrics endpoint that redirects is misconfigured, and following
        # one could carry the agent to a host it was never told to scrape.
        self._client = httpx.Client(follow_redirects=False, trust_env=False)

    def collect(self) -> GpuTelemetry:
        body = fetch(self._client, self.url, timeout_s=self.timeout_s, max_bytes=self.max_bytes)
        try:
            families = parse(body, max_bytes=self.max_bytes, max_samples=self.max_samples)
        except ExpositionError as exc:
            raise CollectorError(f"unreadable page from {redact_url(self.url)}: {exc}") from None
        return parse_page(families, where=redact_url(self.url))

    def close(self) -> None:
        self._client.close()


def parse_page(
    families: Mapping[str, MetricFamily], *, where: str = "dcgm-exporter"
) -> GpuTelemetry:
    """Turn parsed families into readings; separate from :meth:`DcgmCollector.collect` so
    that a page saved from a node can be replayed without a server."""
    if not any(name.startswith("DCGM_FI_") for name in families):
        raise CollectorError(f"no DCGM_FI_* series in the page from {where}: not a dcgm-exporter")

    devices: dict[tuple[str, int | None], _Device] = {}
    notes: dict[str, None] = {}
    hostname: str | None = None
    driver: str | None = None

    for family in families.values():
        for sample in family.samples:
            known = _BY_NAME.get(sample.name)
            if known is None:
                continue
            labels = sample.labels
            uuid = labels.get("UUID") or labels.get("uuid") or ""
            if not uuid or uuid == _DCGM_STR_BLANK:
                notes[f"{sample.name} row without a GPU UUID ignored"] = None
                continue
            gi: int | None = None
            gi_text = labels.get("GPU_I_ID")
            if gi_text is not None and gi_text != "":
                gi = _parse_int(gi_text)
                if gi is None:
                    # A MIG row whose instance cannot be identified cannot be attributed to
                    # any instance, and must not be taken for the whole GPU either.
                    notes[f"MIG row with GPU_I_ID={gi_text!r} on {uuid} ignored"] = None
                    continue
            dev = devices.get((uuid, gi))
            if dev is None:
                dev = devices[(uuid, gi)] = _Device(uuid, gi)
                index = _parse_int(labels.get("gpu", ""))
                dev.index = index if index is not None else -1
                dev.model = labels.get("modelName", "")
                profile = labels.get("GPU_I_PROFILE", "")
                if profile == _DCGM_STR_BLANK:
                    notes[f"MIG instance {gi} on {uuid} has no readable profile (<<<NULL>>>)"] = (
                        None
                    )
                    profile = ""
                dev.profile = profile
            drv = labels.get("DCGM_FI_SYSTEM_DRIVER_VERSION") or labels.get(
                "DCGM_FI_DRIVER_VERSION"
            )
            if drv and drv != _DCGM_STR_BLANK:
                dev.driver = dev.driver or drv
                driver = driver or drv
            host = labels.get("hostname") or labels.get("Hostname")
            if host and hostname is None:
                hostname = host
            pod = labels.get("pod", "")
            if pod:
                vgpu = labels.get("vgpu") or None
                ref = (labels.get("namespace", ""), pod, labels.get("container", ""), vgpu)
                dev.workloads[ref] = None
            value = _to_base(known[1], sample.value)
            if value is None:
                continue
            dev.put(known[0], _RANK[sample.name], value)

    gpus = _readings(devices, notes)
    return GpuTelemetry(
        source="dcgm", gpus=gpus, driver=driver, hostname=hostname, notes=tuple(notes)
    )


def _readings(
    devices: Mapping[tuple[str, int | None], _Device], notes: dict[str, None]
) -> tuple[GpuReading, ...]:
    by_uuid: dict[str, list[_Device]] = {}
    for dev in devices.values():
        by_uuid.setdefault(dev.uuid, []).append(dev)
    out: list[GpuReading] = []
    for uuid in sorted(by_uuid, key=lambda u: (min(d.index for d in by_uuid[u]), u)):
        devs = by_uuid[uuid]
        instances = sorted((d for d in devs if d.gi is not None), key=lambda d: d.gi or 0)
        whole = next((d for d in devs if d.gi is None), None)
        if not instances:
            assert whole is not None
            out.append(_reading(whole, board=whole, instance=whole, mig=False, notes=notes))
            continue
        # Board values: from a row without GPU_I_ID if the exporter wrote one, else from the
        # instance rows, where they are repeated; the lowest GPU_I_ID is used so the choice
        # is stable from one scrape to the next.
        board = _merge_board(([whole] if whole else []) + instances)
        first = instances[0]
        parent = _Device(uuid, None, index=first.index, model=first.model, driver=first.driver)
        out.append(_reading(parent, board=board, instance=None, mig=True, notes=notes))
        for inst in instances:
            out.append(_reading(inst, board=None, instance=inst, mig=False, notes=notes))
    return tuple(out)


def _merge_board(devs: Iterable[_Device]) -> _Device:
    merged = _Device("", None)
    for dev in devs:
        for quantity, held in dev.values.items():
            if quantity not in _INSTANCE_QUANTITIES and quantity not in merged.values:
                merged.values[quantity] = held
    return merged


def _reading(
    dev: _Device,
    *,
    board: _Device | None,
    instance: _Device | None,
    mig: bool,
    notes: dict[str, None],
) -> GpuReading:
    b = board.get if board is not None else (lambda _q: None)
    utilization = memory_used = memory_total = None
    workloads: tuple[WorkloadRef, ...] = ()
    if instance is not None:
        utilization = _utilization(instance, notes)
        memory_used = instance.get("fb_used")
        free = instance.get("fb_free")
        if memory_used is not None and free is not None:
            memory_total = memory_used + free + (instance.get("fb_reserved") or 0.0)
        workloads = tuple(
            WorkloadRef(namespace=ns, pod=pod, container=ctr, vgpu=vgpu)
            for ns, pod, ctr, vgpu in instance.workloads
        )
    throttle = b("throttle")
    sbe, dbe = b("ecc_sbe"), b("ecc_dbe")
    ecc = {k: int(v) for k, v in (("corrected", sbe), ("uncorrected", dbe)) if v is not None}
    rc, ru = b("rows_correctable"), b("rows_uncorrectable")
    rows = {k: int(v) for k, v in (("correctable", rc), ("uncorrectable", ru)) if v is not None}
    failed, pending, xid = b("rows_failed"), b("rows_pending"), b("xid")
    slices = None
    if dev.gi is not None and (m := _MIG_SLICES_RE.match(dev.profile)):
        slices = int(m.group(1))
    return GpuReading(
        uuid=dev.uuid,
        index=dev.index,
        model=dev.model,
        mig_instance=dev.gi,
        mig_profile=dev.profile if dev.gi is not None else "",
        mig_enabled=mig,
        mig_slices=slices,
        driver=dev.driver,
        memory_used_bytes=memory_used,
        memory_total_bytes=memory_total,
        utilization_ratio=utilization,
        power_watts=b("power"),
        energy_joules=b("energy"),
        temperature_celsius=b("temperature"),
        sm_clock_hertz=b("sm_clock"),
        throttle_reasons=decode_throttle_reasons(int(throttle)) if throttle is not None else None,
        last_xid=int(xid) if xid is not None else None,
        ecc_errors=ecc or None,
        remapped_rows=rows or None,
        row_remap_pending=bool(pending) if pending is not None else None,
        row_remap_failed=bool(failed) if failed is not None else None,
        workloads=workloads,
    )


def _utilization(dev: _Device, notes: dict[str, None]) -> float | None:
    """Engine-active first: it is a true time fraction and exists per MIG instance, while
    GPU_UTIL is "a kernel was running" and is not reported in MIG mode."""
    engine = dev.get("engine_util")
    if engine is not None:
        return engine
    ratio = dev.get("gpu_util_ratio")
    if ratio is not None:
        if ratio > 1.0:
            # DCGM 4.6's bindings give the name GPU_UTIL_RATIO to field 203, whose value is
            # an integer percent; a "ratio" above 1 can only be that. (A percent of 0 or 1
            # cannot be told from a ratio; those read as 0 and 1 -- off by at most 1 %.)
            notes[f"DCGM_FI_DEV_GPU_UTIL_RATIO={ratio:g} on {dev.uuid} read as a percent"] = None
            return ratio / 100.0
        return ratio
    return dev.get("gpu_util_percent")


def _to_base(src: _Source, raw: float) -> float | None:
    if math.isnan(raw) or math.isinf(raw) or raw < 0 or raw >= _DCGM_BLANK_FLOOR:
        return None  # DCGM blank / not supported, or a value no such field can take
    return raw / src.scale if src.divide else raw * src.scale


def _parse_int(text: str) -> int | None:
    return int(text) if text.isdigit() else None
