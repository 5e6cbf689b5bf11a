"""Per-tenant token and request running totals per hour, from a gateway's counters.

Each upstream counter series (a gateway's per-key, per-model, per-status... series) is
differenced on its own with the shared rule of :mod:`gpuledger.collectors.counters`
(reset → the new value is the delta; first sight → baseline only, unless the series is
new on an endpoint's page read before, when its whole value is the delta; a missed
scrape → the next delta covers it), then added to its (hour, namespace, service, model,
tenant) bucket in the hour the agent sees it. The baselines go to the spool in the same
transaction as the totals, so an agent restart neither re-counts nor skips a delta:
tokens a gateway served while the agent was down are counted when it is back, unless the
gateway also restarted meanwhile. Whether a page was read before is a marker among the
baselines, so a series that appeared while the agent was down counts whole too.

Baselines not seen for ``PRUNE_AFTER_S`` (24 h: a deleted key, a model gone) are
forgotten, in memory and in the spool; when each was last seen is spooled with it, so the
agent's own downtime counts towards that age.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from functools import partial

from gpuledger.chargeback.ledger.hourly import HourlyBuckets
from gpuledger.chargeback.ledger.model import hour_start
from gpuledger.chargeback.ledger.tables import TenantTokenRow
from gpuledger.cluster import DEFAULT_CLUSTER
from gpuledger.collectors.counters import (
    PRUNE_AFTER_S,
    PRUNE_EVERY_S,
    CounterTracker,
    page_key,
)
from gpuledger.collectors.gateway.types import KINDS, GatewayReading

_COLUMN = {kind: i for i, kind in enumerate(KINDS)}  # row order: requests, prompt, ...


class TenantTokenAccumulator:
    def __init__(self, node: str, *, cluster: str = DEFAULT_CLUSTER) -> None:
        self.node = node
        self.cluster = cluster
        self._lock = threading.Lock()
        self._buckets = HourlyBuckets(len(KINDS), partial(TenantTokenRow, cluster=cluster))
        self._counters = CounterTracker()
        self._dirty_baselines: set[str] = set()
        self._forgotten: set[str] = set()
        self._pruned_at: float | None = None

    @property
    def resets(self) -> int:
        return self._counters.resets

    def restore(
        self,
        rows: Iterable[TenantTokenRow],
        baselines: Mapping[str, float],
        seen: Mapping[str, float] | None = None,
        now: float = 0.0,
    ) -> None:
        with self._lock:
            for r in rows:
                totals = (r.requests, r.prompt_tokens, r.cached_prompt_tokens, r.generation_tokens)
                self._buckets.restore(r.key, totals)
            self._counters = CounterTracker(baselines, seen, now=now)

    def observe(self, wall: float, reading: GatewayReading) -> None:
        hour = hour_start(wall)
        with self._lock:
            for scrape in reading.scrapes:
                if not scrape.up:
                    continue  # the next good scrape's delta covers the gap
                known = self._counters.page(scrape.endpoint, wall)
                self._dirty_baselines.add(page_key(scrape.endpoint))
                for s in scrape.samples:
                    delta = self._counters.advance(s.series, s.value, now=wall, known_page=known)
                    self._dirty_baselines.add(s.series)
                    key = (hour, self.node, s.namespace, s.service, s.model_name, s.tenant)
                    self._buckets.add(key, _COLUMN[s.kind], delta)
            # after the readings, so what this reading saw is never forgotten by it
            if self._pruned_at is None or wall - self._pruned_at >= PRUNE_EVERY_S:
                self._pruned_at = wall
                gone = self._counters.prune(wall, PRUNE_AFTER_S)
                self._forgotten.update(gone)
                self._dirty_baselines.difference_update(gone)

    def drain_dirty(
        self,
    ) -> tuple[list[TenantTokenRow], dict[str, float], dict[str, float], list[str]]:
        """Changed rows, changed baselines and when they were seen, forgotten baselines."""
        with self._lock:
            rows = self._buckets.drain()
            baselines: dict[str, float] = {}
            seen: dict[str, float] = {}
            for series in self._dirty_baselines:
                value = self._counters.baseline(series)
                when = self._counters.last_seen(series)
                if value is not None and when is not None:
                    baselines[series] = value
                    seen[series] = when
            self._dirty_baselines.clear()
            forgotten = sorted(self._forgotten)
            self._forgotten.clear()
        return rows, baselines, seen, forgotten

    def forget_before(self, hour: int) -> None:
        with self._lock:
            self._buckets.forget_before(hour)
