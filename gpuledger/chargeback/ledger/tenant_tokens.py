"""Per-tenant token and request running totals per hour, from a gateway's counters.

Each upstream counter series (a gateway's per-key, per-model, per-status... series) is
differenced on its own with the shared rule of :mod:`gpuledger.collectors.counters`
(reset → the new value is the delta; first sight → baseline only; a missed scrape → the
next delta covers it), then added to its (hour, namespace, service, model, tenant) bucket
in the hour the agent sees it. The baselines go to the spool in the same transaction as
the totals, so an agent restart neither re-counts nor skips a delta: tokens a gateway
served while the agent was down are counted when it is back, unless the gateway also
restarted meanwhile.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

from gpuledger.chargeback.ledger.hourly import HourlyBuckets
from gpuledger.chargeback.ledger.model import hour_start
from gpuledger.chargeback.ledger.tables import TenantTokenRow
from gpuledger.collectors.counters import CounterTracker
from gpuledger.collectors.gateway.types import KINDS, GatewayReading

_COLUMN = {kind: i for i, kind in enumerate(KINDS)}  # row order: requests, prompt, ...


class TenantTokenAccumulator:
    def __init__(self, node: str) -> None:
        self.node = node
        self._lock = threading.Lock()
        self._buckets = HourlyBuckets(len(KINDS), TenantTokenRow)
        self._counters = CounterTracker()
        self._dirty_baselines: set[str] = set()

    @property
    def resets(self) -> int:
        return self._counters.resets

    def restore(self, rows: Iterable[TenantTokenRow], baselines: Mapping[str, float]) -> None:
        with self._lock:
            for r in rows:
                totals = (r.requests, r.prompt_tokens, r.cached_prompt_tokens, r.generation_tokens)
                self._buckets.restore(r.key, totals)
            self._counters = CounterTracker(baselines)

    def observe(self, wall: float, reading: GatewayReading) -> None:
        hour = hour_start(wall)
        with self._lock:
            for scrape in reading.scrapes:
                if not scrape.up:
                    continue  # the next good scrape's delta covers the gap
                for s in scrape.samples:
                    delta = self._counters.advance(s.series, s.value)
                    self._dirty_baselines.add(s.series)
                    key = (hour, self.node, s.namespace, s.service, s.model_name, s.tenant)
                    self._buckets.add(key, _COLUMN[s.kind], delta)

    def drain_dirty(self) -> tuple[list[TenantTokenRow], dict[str, float]]:
        with self._lock:
            rows = self._buckets.drain()
            baselines: dict[str, float] = {}
            for series in self._dirty_baselines:
                value = self._counters.baseline(series)
                if value is not None:
                    baselines[series] = value
            self._dirty_baselines.clear()
        return rows, baselines

    def forget_before(self, hour: int) -> None:
        with self._lock:
            self._buckets.forget_before(hour)
