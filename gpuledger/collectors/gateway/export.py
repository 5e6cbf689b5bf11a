"""The tenant families: per gateway endpoint its ``up`` and unmapped series, per
(service, namespace, model, tenant) the counted requests and tokens since the agent
started, per service the tenants folded into ``__other__``. Tenant names come from
callers (hostile ones included); the renderer escapes every label value."""

from __future__ import annotations

from gpuledger import schema
from gpuledger.collectors.gateway.scrape import GATEWAY
from gpuledger.collectors.gateway.types import GatewayReading
from gpuledger.collectors.source import Readings
from gpuledger.collectors.textformat.render import FamiliesBuilder

_COUNTERS = (
    (schema.TENANT_REQUESTS, "requests"),
    (schema.TENANT_PROMPT_TOKENS, "prompt_tokens"),
    (schema.TENANT_CACHED_PROMPT_TOKENS, "cached_prompt_tokens"),
    (schema.TENANT_GENERATION_TOKENS, "generation_tokens"),
)


def export_gateway(f: FamiliesBuilder, snap: Readings, _live: object = None) -> None:
    reading = snap.reading(GATEWAY, GatewayReading)
    if reading is None:
        return
    for t in reading.totals:
        labels = (t.service, t.namespace, t.model_name, t.tenant)
        for spec, attr in _COUNTERS:
            f.add(spec, labels, float(getattr(t, attr)))
    for ns, svc, n in reading.overflow_tenants:
        f.add(schema.TENANT_OVERFLOW, (svc, ns), float(n))
    for scrape in reading.scrapes:
        f.add(schema.TENANT_GATEWAY_UP, (scrape.endpoint,), 1.0 if scrape.up else 0.0)
        if scrape.up:
            f.add(schema.TENANT_UNMAPPED_SERIES, (scrape.endpoint,), float(scrape.unmapped_series))
