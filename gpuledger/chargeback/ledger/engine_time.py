"""The engine's own time accounting per (hour, service, model), from vLLM's histograms.

vLLM V1 engines observe, per finished request, the seconds it spent in prefill
(``vllm:request_prefill_time_seconds``) and in decode (``request_decode_time_seconds``),
and count prompt tokens looked up in / found in the prefix cache. The histograms' ``_sum``
and ``_count`` and those counters are cumulative since the engine started, so they are
differenced like the token counters: per upstream series (endpoint, model, engine), with
the shared rule of :mod:`gpuledger.collectors.counters`. A histogram's ``_sum`` and
``_count`` (and the cache's queries and hits) are taken as one group that resets together
(:func:`~gpuledger.collectors.counters.joint_deltas`): after an engine restart a count
may already be above its old baseline while the sum is not, and differencing them apart
would count the new engine short.

The deltas go to the hour the agent sees them, summed over the service's endpoints and
engines. The baselines go to the spool in the same transaction as the totals, so an agent
restart neither re-counts nor skips. An engine that does not export a group adds nothing
for it (V0 before ~0.6.3 has no prefill/decode histograms; prefix-cache counters are V1
only): absent, never 0.

The seconds are per-request wall-clock intervals as the engine measured them, not
exclusive GPU time: under continuous batching many requests' intervals overlap, so an
hour's decode seconds can be many times 3,600. They are weights, not GPU-seconds. They
include the agent's own probe requests (few and tiny); the report, not the ledger, turns
them into per-token weights.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping
from functools import partial

from gpuledger.chargeback.ledger.hourly import HourlyBuckets
from gpuledger.chargeback.ledger.model import hour_start
from gpuledger.chargeback.ledger.tables import EngineTimeRow
from gpuledger.cluster import DEFAULT_CLUSTER
from gpuledger.collectors.counters import joint_deltas
from gpuledger.collectors.vllm.types import Histogram, VllmSeries, VllmTelemetry

EngineKey = tuple[int, str, str, str, str]  # hour, node, namespace, service, model_name

GROUPS: tuple[tuple[str, tuple[str, str], tuple[int, int]], ...] = (
    ("prefill", ("sum", "count"), (0, 2)),
    ("decode", ("sum", "count"), (1, 3)),
    ("prefix_cache", ("queries", "hits"), (4, 5)),
)
"""Each group: its name, its two members (baseline suffixes) and the row columns
(prefill_seconds, decode_seconds, prefill_requests, decode_requests,
prefix_cache_queries, prefix_cache_hits) their deltas add to."""


def _group_values(s: VllmSeries, group: str) -> tuple[float, float] | None:
    """The group's two cumulative values in ``s``, or None when the engine does not
    export it (or exports something that is not a count: NaN, negative)."""
    if group == "prefix_cache":
        if s.prefix_cache_queries is None or s.prefix_cache_hits is None:
            return None
        values = (s.prefix_cache_queries, s.prefix_cache_hits)
    else:
        h: Histogram | None = s.prefill_time if group == "prefill" else s.decode_time
        if h is None:
            return None
        values = (h.sum, h.count)
    if not all(math.isfinite(v) and v >= 0 for v in values):
        return None
    return values


def series_prefix(endpoint: str, model_name: str, engine: str, group: str) -> str:
    """Baseline key stem of one group of one upstream series (members append ``|sum``...)."""
    return f"{endpoint}|{model_name}|{engine}|{group}"


class EngineTimeAccumulator:
    def __init__(self, node: str, *, cluster: str = DEFAULT_CLUSTER) -> None:
        self.node = node
        self.cluster = cluster
        self._lock = threading.Lock()
        self._buckets = HourlyBuckets(6, partial(EngineTimeRow, cluster=cluster))
        self._baselines: dict[str, float] = {}
        self._dirty_baselines: set[str] = set()
        self.resets = 0

    def restore(self, rows: Iterable[EngineTimeRow], baselines: Mapping[str, float]) -> None:
        with self._lock:
            for r in rows:
                self._buckets.restore(r.key, (
                    r.prefill_seconds, r.decode_seconds, r.prefill_requests,
                    r.decode_requests, r.prefix_cache_queries, r.prefix_cache_hits,
                ))  # fmt: skip
            self._baselines.update(baselines)

    def observe(self, wall: float, telemetry: VllmTelemetry) -> None:
        hour = hour_start(wall)
        with self._lock:
            for scrape in telemetry.endpoints:
                if not scrape.up:
                    continue  # a missed scrape is caught up by the next delta
                ep = scrape.endpoint
                key = (hour, self.node, ep.namespace, ep.service)
                for s in scrape.series:
                    for group, members, columns in GROUPS:
                        values = _group_values(s, group)
                        if values is None:
                            continue
                        stem = series_prefix(ep.name, s.model_name, s.engine, group)
                        self._advance((*key, s.model_name), stem, members, columns, values)

    def _advance(
        self,
        key: EngineKey,
        stem: str,
        members: tuple[str, str],
        columns: tuple[int, int],
        values: tuple[float, float],
    ) -> None:
        names = [f"{stem}|{m}" for m in members]
        stored = [self._baselines.get(n) for n in names]
        previous = None if any(v is None for v in stored) else [float(v or 0.0) for v in stored]
        if previous is not None and any(c < p for p, c in zip(previous, values, strict=True)):
            self.resets += 1
        deltas = joint_deltas(previous, values)
        for name, value in zip(names, values, strict=True):
            self._baselines[name] = value
            self._dirty_baselines.add(name)
        for column, delta in zip(columns, deltas, strict=True):
            self._buckets.add(key, column, delta)

    def drain_dirty(self) -> tuple[list[EngineTimeRow], dict[str, float]]:
        with self._lock:
            rows = self._buckets.drain()
            baselines = {k: self._baselines[k] for k in self._dirty_baselines}
            self._dirty_baselines.clear()
        return rows, baselines

    def forget_before(self, hour: int) -> None:
        with self._lock:
            self._buckets.forget_before(hour)
