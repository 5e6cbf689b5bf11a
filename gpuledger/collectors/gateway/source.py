"""The gateway source: per-tenant counters of the gateways in front of the engines, into
``gpuledger_tenant_*`` and the ledger's ``ledger_tenant_tokens``."""

from __future__ import annotations

import os

from gpuledger.collectors.base import Schedule
from gpuledger.collectors.gateway.config import GatewayConfig, GatewayEndpointConfig
from gpuledger.collectors.gateway.export import export_gateway
from gpuledger.collectors.gateway.scrape import GATEWAY
from gpuledger.collectors.gateway.types import GatewayReading
from gpuledger.collectors.source import (
    BuildContext,
    Built,
    LedgerSink,
    Readings,
    Source,
    SourceConfigError,
)


def read_token(index: int, cfg: GatewayEndpointConfig) -> str | None:
    """The endpoint's bearer token, or None; a clear error naming the key (never the
    token) when it is configured but cannot be had."""
    where = f"gateways.endpoints[{index}]"
    if cfg.bearer_token_file is not None:
        try:
            token = cfg.bearer_token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise SourceConfigError(
                f"{where}.bearer_token_file", f"cannot read {cfg.bearer_token_file}: {reason}"
            ) from None
        if not token:
            raise SourceConfigError(
                f"{where}.bearer_token_file", f"{cfg.bearer_token_file} is empty"
            )
        return token
    if cfg.bearer_token_env is not None:
        token = os.environ.get(cfg.bearer_token_env, "").strip()
        if not token:
            raise SourceConfigError(
                f"{where}.bearer_token_env",
                f"environment variable {cfg.bearer_token_env} is not set or empty",
            )
        return token
    return None


def _build(cfg: GatewayConfig, ctx: BuildContext) -> Built[None]:
    if not cfg.enabled:
        return Built()
    from gpuledger.collectors.gateway.scrape import GatewayCollector

    tokens = tuple(read_token(i, e) for i, e in enumerate(cfg.endpoints))
    interval = cfg.interval_seconds or ctx.default_interval_s
    # every endpoint is read in parallel: the whole run gets a little over one timeout
    schedule = Schedule(interval, cfg.timeout_seconds + 2.0, GatewayReading)
    return Built(collectors=((GatewayCollector(cfg, tokens), schedule),))


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
