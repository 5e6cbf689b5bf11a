"""The vLLM source: every vLLM server on the node (static and discovered), scraped in
parallel; its token counters feed the ledger. The probes are a source of their own
(:mod:`.probe.source`) that reuses this one's endpoint list."""

from __future__ import annotations

from gpuledger.collectors.base import Schedule
from gpuledger.collectors.source import (
    BuildContext,
    Built,
    LedgerSink,
    Readings,
    Source,
    SourceConfigError,
)
from gpuledger.collectors.vllm.config import VllmConfig
from gpuledger.collectors.vllm.export import VLLM, export_vllm
from gpuledger.collectors.vllm.types import VllmTelemetry


def _build(cfg: VllmConfig, ctx: BuildContext) -> Built[None]:
    if not cfg.enabled:
        return Built()
    from gpuledger.collectors.vllm.discovery import EndpointSource
    from gpuledger.collectors.vllm.scrape import VllmCollector

    try:
        endpoints = EndpointSource(
            cfg, pods=ctx.pods, label_keys=ctx.label_keys, node_name=ctx.node_name
        )
    except ValueError as exc:  # an API key that cannot be read, discovery without pods
        raise SourceConfigError(VLLM, str(exc)) from None
    ctx.provide(endpoints)
    collector = VllmCollector(
        endpoints,
        timeout_s=cfg.timeout_seconds,
        max_bytes=cfg.max_bytes,
        max_samples=cfg.max_samples,
    )
    # the whole collection (all endpoints in parallel) gets a little over one timeout
    interval = cfg.interval_seconds or ctx.default_interval_s
    schedule = Schedule(interval, cfg.timeout_seconds + 2.0, VllmTelemetry)
    return Built(collectors=((collector, schedule),))


def observe_tokens(ledger: LedgerSink, snap: Readings, _live: object = None) -> None:
    """Prompt and generation token deltas per (hour, service, model) into the ledger."""
    telemetry = snap.reading(VLLM, VllmTelemetry)
    if telemetry is not None:
        ledger.observe_vllm(telemetry)


VLLM_SOURCE: Source[VllmConfig, None] = Source(
    name=VLLM,
    reading=VllmTelemetry,
    config_key=VLLM,
    config_model=VllmConfig,
    build=_build,
    export=export_vllm,
    ledger=observe_tokens,
)
