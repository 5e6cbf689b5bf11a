"""The two GPU sources: NVML in-process and dcgm-exporter over HTTP. Each has its own
section, collector and schedule; their readings are merged into one GPU export
(:func:`.export.export_gpus`) and one feed of the ledger, whichever of them updated."""

from __future__ import annotations

from gpuledger.collectors.base import Schedule
from gpuledger.collectors.gpu.config import DcgmConfig, NvmlConfig
from gpuledger.collectors.gpu.export import export_gpus, merged_devices
from gpuledger.collectors.gpu.merge import DCGM, NVML
from gpuledger.collectors.gpu.readings import GpuTelemetry
from gpuledger.collectors.source import BuildContext, Built, LedgerSink, Readings, Source


def _build_nvml(cfg: NvmlConfig, ctx: BuildContext) -> Built[None]:
    if not cfg.enabled:
        return Built()
    from gpuledger.collectors.gpu.nvml import NvmlCollector

    if ctx.nvml is not None:
        api = ctx.nvml
    else:
        from gpuledger.collectors.gpu.nvml_backend import load_real

        api = load_real()
    interval = cfg.interval_seconds or ctx.default_interval_s
    schedule = Schedule(interval, cfg.timeout_seconds, GpuTelemetry)
    return Built(collectors=((NvmlCollector(api), schedule),))


def _build_dcgm(cfg: DcgmConfig, ctx: BuildContext) -> Built[None]:
    if not cfg.enabled:
        return Built()
    from gpuledger.collectors.gpu.dcgm import DcgmCollector

    collector = DcgmCollector(
        cfg.url,
        timeout_s=cfg.timeout_seconds,
        max_bytes=cfg.max_bytes,
        max_samples=cfg.max_samples,
    )
    interval = cfg.interval_seconds or ctx.default_interval_s
    return Built(collectors=((collector, Schedule(interval, cfg.timeout_seconds, GpuTelemetry)),))


def observe_gpus(ledger: LedgerSink, snap: Readings, _live: object = None) -> None:
    """Every GPU update (either source, up or down) is one observation of the merged
    devices: the ledger integrates GPU-seconds between observations."""
    ledger.observe(merged_devices(snap))


NVML_SOURCE: Source[NvmlConfig, None] = Source(
    name=NVML,
    reading=GpuTelemetry,
    config_key=NVML,
    config_model=NvmlConfig,
    build=_build_nvml,
    export=export_gpus,
    ledger=observe_gpus,
    paces_ledger=True,
)
DCGM_SOURCE: Source[DcgmConfig, None] = Source(
    name=DCGM,
    reading=GpuTelemetry,
    config_key=DCGM,
    config_model=DcgmConfig,
    build=_build_dcgm,
    export=export_gpus,
    ledger=observe_gpus,
)
