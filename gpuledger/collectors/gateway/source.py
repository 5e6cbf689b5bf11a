"""The gateway source: per-tenant counters of the gateways in front of the engines, into
``gpuledger_tenant_*`` and the ledger's ``ledger_tenant_tokens``."""

from __future__ import annotations

from gpuledger.collectors.base import Schedule
from gpuledger.collectors.gateway.config import GatewayConfig
from gpuledger.collectors.gateway.export import export_gateway
from gpuledger.collectors.gateway.scrape import GATEWAY
from gpuledger.collectors.gateway.types import GatewayReading
from gpuledger.collectors.source import BuildContext, Built, LedgerSink, Readings, Source


def _build(cfg: GatewayConfig, ctx: BuildContext) -> Built[None]:
    if not cfg.enabled:
        return Built()
    from gpuledger.collectors.gateway.scrape import GatewayCollector

    interval = cfg.interval_seconds or ctx.default_interval_s
    # every endpoint is read in parallel: the whole run gets a little over one timeout
    schedule = Schedule(interval, cfg.timeout_seconds + 2.0, GatewayReading)
    return Built(collectors=((GatewayCollector(cfg), schedule),))


def observe_tenants(ledger: LedgerSink, snap: Readings, _live: object = None) -> None:
    """Per-tenant token and request deltas per (hour, service, model, tenant)."""
    reading = snap.reading(GATEWAY, GatewayReading)
    if reading is not None:
        ledger.observe_tenant_tokens(reading)


GATEWAY_SOURCE: Source[GatewayConfig, None] = Source(
    name=GATEWAY,
    reading=GatewayReading,
    config_key="gateways",
    config_model=GatewayConfig,
    build=_build,
    export=export_gateway,
    ledger=observe_tenants,
)
