"""The probes as a source: no collector of their own, a background runner that probes
the vLLM source's endpoints (so only when ``vllm.enabled``), writes each result and
verdict to the ledger (and to OTLP spans when the agent exports them) and exports its
status."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from gpuledger.collectors.source import BuildContext, Built, Source
from gpuledger.collectors.vllm.export import VLLM
from gpuledger.collectors.vllm.probe.config import ProbesConfig
from gpuledger.collectors.vllm.probe.export import export_probes
from gpuledger.collectors.vllm.types import ProbeResult, VllmTelemetry

if TYPE_CHECKING:
    from gpuledger.collectors.vllm.probe.runner import ProbeStatus

log = logging.getLogger(__name__)

PROBES = "probes"


def fan_out(
    *callbacks: Callable[[ProbeResult], None] | None,
) -> Callable[[ProbeResult], None] | None:
    """One ``on_result`` for several consumers; one that fails does not starve the rest."""
    present = [c for c in callbacks if c is not None]
    if len(present) <= 1:
        return present[0] if present else None

    def each(result: ProbeResult) -> None:
        for callback in present:
            try:
                callback(result)
            except Exception:
                log.exception("probe result consumer %r failed", callback)

    return each


def _build(cfg: ProbesConfig, ctx: BuildContext) -> Built[Callable[[], ProbeStatus]]:
    from gpuledger.collectors.vllm.discovery import EndpointSource

    endpoints = ctx.lookup(EndpointSource)  # provided by the vLLM source when enabled
    if not cfg.enabled or endpoints is None:
        return Built()
    from gpuledger.collectors.vllm.probe.runner import ProbeRunner

    ledger = ctx.ledger
    snapshot = ctx.snapshot
    runner = ProbeRunner(
        endpoints,
        lambda: snapshot().reading(VLLM, VllmTelemetry),
        interval_s=cfg.interval_seconds,
        timeout_s=cfg.timeout_seconds,
        max_tokens=cfg.max_tokens,
        prompt=cfg.prompt,
        model=cfg.model,
        queue_threshold=cfg.queue_threshold,
        api=cfg.api,
        on_result=fan_out(ledger.record_probe if ledger is not None else None, ctx.probe_spans),
        on_verdict=ledger.record_verdict if ledger is not None else None,
    )
    return Built(services=(runner,), live=runner.status)


PROBES_SOURCE: Source[ProbesConfig, Callable[[], ProbeStatus]] = Source(
    name=PROBES,
    reading=None,
    config_key=PROBES,
    config_model=ProbesConfig,
    build=_build,
    export=export_probes,
)
