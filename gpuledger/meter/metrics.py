"""The meter's counters and their exposition (the families of the schema's ``meter`` group).

Counted per (model, tenant) for the one service the meter fronts; the per-service tenant
cap is applied here, when a request is counted, so only tenants that really used the
endpoint take a place. Uncounted requests carry only a reason: their tenant and model are
not known to be right (a malformed or missing usage).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from enum import StrEnum

from gpuledger import schema
from gpuledger.cluster import DEFAULT_CLUSTER
from gpuledger.collectors.textformat.render import FamiliesBuilder
from gpuledger.meter.tenants import TenantCap
from gpuledger.meter.usage import Usage


class Uncounted(StrEnum):
    NO_USAGE = "no_usage"
    UPSTREAM_ERROR = "upstream_error"
    CLIENT_DISCONNECT = "client_disconnect"
    MALFORMED = "malformed"


class MeterMetrics:
    def __init__(
        self,
        *,
        node: str,
        service: str,
        namespace: str,
        max_tenants: int,
        cluster: str = DEFAULT_CLUSTER,
    ) -> None:
        self._node = node
        self._cluster = cluster
        self._service = service
        self._namespace = namespace
        self._cap = TenantCap(max_tenants)
        self._lock = threading.Lock()
        # (model, tenant) -> [requests, prompt, cached, generation]
        self._counted: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        self._uncounted: dict[Uncounted, int] = dict.fromkeys(Uncounted, 0)

    def count(self, tenant: str, model: str, usage: Usage) -> None:
        tenant = self._cap.admit(tenant)
        with self._lock:
            row = self._counted[(model, tenant)]
            row[0] += 1
            row[1] += usage.prompt_tokens
            row[2] += usage.cached_prompt_tokens
            row[3] += usage.completion_tokens

    def miss(self, reason: Uncounted) -> None:
        with self._lock:
            self._uncounted[reason] += 1

    def render(self) -> bytes:
        """Prometheus text of every family (uncounted reasons always present, at 0)."""
        with self._lock:
            counted = sorted((k, tuple(v)) for k, v in self._counted.items())
            uncounted = dict(self._uncounted)
        out = FamiliesBuilder(self._node, cluster=self._cluster)
        base = (self._service, self._namespace)
        specs = (
            schema.METER_REQUESTS,
            schema.METER_PROMPT_TOKENS,
            schema.METER_CACHED_PROMPT_TOKENS,
            schema.METER_GENERATION_TOKENS,
        )
        for i, spec in enumerate(specs):
            for (model, tenant), values in counted:
                out.add(spec, (*base, model, tenant), values[i])
        for reason in Uncounted:
            out.add(schema.METER_UNCOUNTED, (*base, reason.value), uncounted[reason])
        return out.build().render()
