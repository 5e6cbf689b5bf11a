"""The gateway collector: reads every configured gateway page in parallel (bounded by
``collectors/http.fetch``), maps its per-tenant counters, and keeps the running totals
since the agent started that ``/metrics`` exports (deltas by the shared counter rule, so
a gateway restart never makes an exported counter go backwards or count twice).

One endpoint failing marks that endpoint down (its samples are simply absent: the next
good scrape's delta covers the gap); every endpoint failing fails the collection, so
``gpuledger_collector_up{collector="gateway"}`` goes to 0 and the agent goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx

from gpuledger.collectors.base import CollectorError
from gpuledger.collectors.counters import PRUNE_AFTER_S, PRUNE_EVERY_S, CounterTracker
from gpuledger.collectors.gateway.config import GatewayConfig
from gpuledger.collectors.gateway.mapping import (
    Endpoint,
    TenantCap,
    matching_samples,
    placement,
    resolve,
    series_id,
    tenant_of,
)
from gpuledger.collectors.gateway.types import (
    KINDS,
    CounterSample,
    GatewayReading,
    GatewayScrape,
    TenantKey,
    TenantTotals,
)
from gpuledger.collectors.http import fetch
from gpuledger.collectors.textformat.parse import ExpositionError, parse

log = logging.getLogger(__name__)

GATEWAY = "gateway"


class GatewayCollector:
    name = GATEWAY

    def __init__(self, cfg: GatewayConfig, tokens: Sequence[str | None] = ()) -> None:
        self.endpoints = tuple(resolve(e) for e in cfg.endpoints)
        # kept apart from the endpoints (whose repr may be logged), one per endpoint
        padded = [*tokens, *([None] * len(self.endpoints))][: len(self.endpoints)]
        self._headers: tuple[dict[str, str] | None, ...] = tuple(
            None if token is None else {"Authorization": f"Bearer {token}"} for token in padded
        )
        self.timeout_s = cfg.timeout_seconds
        self.max_bytes = cfg.max_bytes
        self.max_samples = cfg.max_samples
        self._client = httpx.Client(follow_redirects=False)
        self._pool = ThreadPoolExecutor(max_workers=min(8, max(1, len(self.endpoints))),
                                        thread_name_prefix="gateway")  # fmt: skip
        self._cap = TenantCap(cfg.max_tenants_per_service)
        self._counters = CounterTracker()
        self._totals: dict[TenantKey, list[float]] = {}
        self._lock = threading.Lock()
        self._down: set[str] = set()  # endpoints down while others answer: logged once
        self._pruned_at: float | None = None

    def _scrape(self, ep: Endpoint, headers: dict[str, str] | None) -> GatewayScrape:
        try:
            body = fetch(self._client, ep.url, timeout_s=self.timeout_s, max_bytes=self.max_bytes,
                         headers=headers)  # fmt: skip
            families = parse(body, max_bytes=self.max_bytes, max_samples=self.max_samples)
        except CollectorError as exc:
            return GatewayScrape(ep.name, up=False, error=str(exc))
        except ExpositionError as exc:
            return GatewayScrape(ep.name, up=False, error=f"{ep.name}: bad exposition: {exc}")
        samples: list[CounterSample] = []
        unmapped = 0
        for kind, s in matching_samples(families, ep):
            where = placement(ep, s.labels)
            if where is None:
                unmapped += 1
                continue
            ns, svc, model = where
            samples.append(CounterSample(series_id(ep, s), kind, s.value, ns, svc, model,
                                         tenant_of(ep, s.labels)))  # fmt: skip
        return GatewayScrape(ep.name, up=True, samples=tuple(samples), unmapped_series=unmapped)

    def collect(self) -> GatewayReading:
        scrapes = list(self._pool.map(self._scrape, self.endpoints, self._headers))
        if scrapes and not any(s.up for s in scrapes):
            raise CollectorError("; ".join(s.error or s.endpoint for s in scrapes))
        with self._lock:
            self._log_changes(scrapes)
            capped: list[GatewayScrape] = []
            now = time.monotonic()
            for scrape in scrapes:
                # a series new on a page read before counts whole (counters.py)
                known = scrape.up and self._counters.page(scrape.endpoint, now)
                samples = tuple(self._count(s, known, now) for s in scrape.samples)
                capped.append(GatewayScrape(scrape.endpoint, scrape.up, scrape.error, samples,
                                            scrape.unmapped_series))  # fmt: skip
            if self._pruned_at is None or now - self._pruned_at >= PRUNE_EVERY_S:
                self._pruned_at = now
                self._counters.prune(now, PRUNE_AFTER_S)
            totals = tuple(TenantTotals(*k, *v) for k, v in sorted(self._totals.items()))
            return GatewayReading(tuple(capped), totals, self._cap.folded(),
                                  self._counters.resets)  # fmt: skip

    def _log_changes(self, scrapes: Sequence[GatewayScrape]) -> None:
        """One line when an endpoint goes down while others answer, one when it is back
        (the runtime logs the collector's own state; errors carry no secrets)."""
        for scrape in scrapes:
            if not scrape.up and scrape.endpoint not in self._down:
                self._down.add(scrape.endpoint)
                log.warning("gateway endpoint down: %s", scrape.error)
            elif scrape.up and scrape.endpoint in self._down:
                self._down.discard(scrape.endpoint)
                log.info("gateway endpoint recovered: %s", scrape.endpoint)

    def _count(self, s: CounterSample, known_page: bool, now: float) -> CounterSample:
        """``s`` with its tenant under the cap, its delta added to the running totals."""
        tenant = self._cap.apply(s.namespace, s.service, s.tenant)
        key = (s.namespace, s.service, s.model_name, tenant)
        totals = self._totals.setdefault(key, [0.0] * len(KINDS))
        delta = self._counters.advance(s.series, s.value, now=now, known_page=known_page)
        totals[KINDS.index(s.kind)] += delta
        if tenant == s.tenant:
            return s
        return CounterSample(s.series, s.kind, s.value, s.namespace, s.service, s.model_name,
                             tenant)  # fmt: skip

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()
