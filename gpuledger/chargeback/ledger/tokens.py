"""Token counts per (hour, service, model) from vLLM's cumulative counters.

vLLM's ``prompt_tokens_total``/``generation_tokens_total`` count since the engine started.
Each scrape's delta against the last value seen for the same series (endpoint, model,
engine) is added to the current hour. A value lower than the last one means the engine
restarted: the counter began again at 0, so the whole new value is the delta (tokens the
old engine served after our last scrape are lost with it -- nothing can recover them).
The first value ever seen for a series only sets the baseline: tokens served before the
agent first looked cannot be placed in an hour. The baselines are persisted in the spool,
so tokens served while the agent itself was restarting are counted, in the hour the agent
sees them.

The delta rule is :func:`gpuledger.collectors.counters.counter_delta`, shared with the
gateway counters (``tenant_tokens.py``).

Probe tokens (the agent's own synthetic requests) are kept in separate columns so that
billable traffic = engine − probe.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import partial

from gpuledger.chargeback.ledger.hourly import HourlyBuckets
from gpuledger.chargeback.ledger.model import hour_start
from gpuledger.chargeback.ledger.tables import TokenRow
from gpuledger.cluster import DEFAULT_CLUSTER
from gpuledger.collectors.counters import counter_delta
from gpuledger.collectors.vllm.types import ProbeResult, VllmTelemetry

TokenKey = tuple[int, str, str, str, str]  # hour, node, namespace, service, model_name


@dataclass(frozen=True, slots=True)
class Baseline:
    prompt: float
    generation: float


def series_key(endpoint: str, model_name: str, engine: str) -> str:
    return f"{endpoint}|{model_name}|{engine}"


class TokenAccumulator:
    def __init__(self, node: str, *, cluster: str = DEFAULT_CLUSTER) -> None:
        self.node = node
        self.cluster = cluster
        self._lock = threading.Lock()
        self._buckets = HourlyBuckets(4, partial(TokenRow, cluster=cluster))
        self._baselines: dict[str, Baseline] = {}
        self._dirty_baselines: set[str] = set()
        self.resets = 0

    def restore(self, rows: Iterable[TokenRow], baselines: Mapping[str, Baseline]) -> None:
        with self._lock:
            for r in rows:
                self._buckets.restore(
                    r.key,
                    (r.prompt_tokens, r.generation_tokens, r.probe_prompt_tokens,
                     r.probe_generation_tokens),
                )  # fmt: skip
            self._baselines.update(baselines)

    def _add(self, key: TokenKey, column: int, value: float) -> None:
        self._buckets.add(key, column, value)

    def observe(self, wall: float, telemetry: VllmTelemetry) -> None:
        hour = hour_start(wall)
        with self._lock:
            for scrape in telemetry.endpoints:
                if not scrape.up:
                    continue  # a missed scrape is caught up by the next delta
                ep = scrape.endpoint
                for s in scrape.series:
                    if s.prompt_tokens is None or s.generation_tokens is None:
                        continue
                    skey = series_key(ep.name, s.model_name, s.engine)
                    prev = self._baselines.get(skey)
                    if prev is not None and (
                        s.prompt_tokens < prev.prompt or s.generation_tokens < prev.generation
                    ):
                        self.resets += 1
                    key = (hour, self.node, ep.namespace, ep.service, s.model_name)
                    before_p = None if prev is None else prev.prompt
                    before_g = None if prev is None else prev.generation
                    self._add(key, 0, counter_delta(before_p, s.prompt_tokens))
                    self._add(key, 1, counter_delta(before_g, s.generation_tokens))
                    self._baselines[skey] = Baseline(s.prompt_tokens, s.generation_tokens)
                    self._dirty_baselines.add(skey)

    def observe_probe(self, result: ProbeResult) -> None:
        if not result.ok:
            return
        ep = result.endpoint
        key = (hour_start(result.started_unix), self.node, ep.namespace, ep.service,
               result.model_name)  # fmt: skip
        with self._lock:
            self._add(key, 2, float(result.prompt_tokens or 0))
            self._add(key, 3, float(result.completion_tokens or 0))

    def drain_dirty(self) -> tuple[list[TokenRow], dict[str, Baseline]]:
        with self._lock:
            rows = self._buckets.drain()
            baselines = {k: self._baselines[k] for k in self._dirty_baselines}
            self._dirty_baselines.clear()
        return rows, baselines

    def forget_before(self, hour: int) -> None:
        with self._lock:
            self._buckets.forget_before(hour)
