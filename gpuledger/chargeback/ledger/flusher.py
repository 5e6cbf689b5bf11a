"""The agent's ledger: snapshot -> shares -> accumulator -> spool -> store.

Runs as a snapshot listener (in the collector's thread, after each update) plus one
flusher thread. The listener never touches the central store, so a database outage
cannot slow collection; the flusher retries with exponential backoff and logs once per
state change. At start the accumulator resumes from the spool's running totals.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from gpuledger.chargeback.attribution.claims import Claim
from gpuledger.chargeback.attribution.shares import GpuAllocation, SplitPolicy, allocate
from gpuledger.chargeback.ledger.accumulator import Accumulator, LifetimeTotals
from gpuledger.chargeback.ledger.cost_centers import CostCenterLookup, CostCenterRecorder
from gpuledger.chargeback.ledger.engine_time import EngineTimeAccumulator
from gpuledger.chargeback.ledger.model import HOUR, LedgerStore, StoreError, hour_start
from gpuledger.chargeback.ledger.spool import Spool
from gpuledger.chargeback.ledger.tables import ProbeRecord
from gpuledger.chargeback.ledger.tenant_tokens import TenantTokenAccumulator
from gpuledger.chargeback.ledger.tokens import TokenAccumulator
from gpuledger.cluster import DEFAULT_CLUSTER
from gpuledger.collectors.gateway.types import GatewayReading
from gpuledger.collectors.gpu.readings import GpuReading
from gpuledger.collectors.vllm.types import ProbeResult, ProbeVerdict, VllmTelemetry

log = logging.getLogger(__name__)

_R = TypeVar("_R")

RETAIN_HOURS = 48  # in memory and in the spool after flushing: covers a clock stepped back
MAX_BACKOFF_S = 300.0


@dataclass(frozen=True, slots=True)
class LedgerStatus:
    allocations: tuple[GpuAllocation, ...]
    lifetime: LifetimeTotals
    pending_rows: int
    flush_failures: int
    last_flush_error: str | None


class Ledger:
    def __init__(
        self,
        node: str,
        *,
        spool: Spool,
        store: LedgerStore | None,
        claims_for: Callable[[GpuReading], Sequence[Claim]],
        policy: SplitPolicy = "usage",
        max_gap_s: float = 60.0,
        flush_interval_s: float = 30.0,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
        storage_retain_s: float = 8 * 86400.0,
        cluster: str = DEFAULT_CLUSTER,
        cost_center_of: CostCenterLookup | None = None,
    ) -> None:
        self.node = node
        self.cluster = cluster
        """Every row this ledger writes carries it (with ``node``: node names repeat
        across clusters); a store it migrates gives the rows already there this name."""
        self.spool = spool
        self.store = store
        self._claims_for = claims_for
        self._policy = policy
        self._wall = wall
        self._mono = mono
        self.flush_interval_s = flush_interval_s
        self.storage_retain_s = storage_retain_s  # the growth window's samples stay local
        self.accumulator = Accumulator(node, max_gap_s=max_gap_s, cluster=cluster)
        self.tokens = TokenAccumulator(node, cluster=cluster)
        self.tenant_tokens = TenantTokenAccumulator(node, cluster=cluster)
        self.engine_time = EngineTimeAccumulator(node, cluster=cluster)
        # the cost center seen on each owner's workload, per hour (None: not looked up)
        self.cost_centers = (
            CostCenterRecorder(node, cost_center_of, cluster=cluster)
            if cost_center_of is not None
            else None
        )
        self._last_probe: dict[tuple[str, str], ProbeRecord] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._flush_lock = threading.Lock()
        self._failures = 0
        self._consecutive_failures = 0
        self._last_error: str | None = None
        self._pending = 0
        self._migrated = False

    def start(self) -> None:
        since = hour_start(self._wall()) - RETAIN_HOURS * HOUR
        # Only this cluster's buckets resume: rows spooled under another name (the config's
        # cluster changed) keep it and are flushed as they are, never re-counted under
        # the new one.
        usage, coverage = self.spool.load(since)
        usage, coverage = self._own(usage), self._own(coverage)
        self.accumulator.restore(usage, coverage)
        token_rows, baselines = self.spool.load_tokens(since)
        self.tokens.restore(self._own(token_rows), baselines)
        tenant_rows, tenant_baselines, tenant_seen = self.spool.load_tenant_tokens(since)
        self.tenant_tokens.restore(
            self._own(tenant_rows), tenant_baselines, tenant_seen, self._wall()
        )
        engine_rows, engine_baselines = self.spool.load_engine_time(since)
        self.engine_time.restore(self._own(engine_rows), engine_baselines)
        if self.cost_centers is not None:
            self.cost_centers.restore(self._own(self.spool.load_cost_centers(since)))
        self._pending = self.spool.pending_count() + self.spool.pending_extra_count()
        if usage:
            log.info(
                "ledger resumed from the spool",
                extra={"fields": {"buckets": len(usage), "pending_rows": self._pending}},
            )
        if self.store is not None:
            self._thread = threading.Thread(
                target=self._flush_loop, name="ledger-flush", daemon=True
            )
            self._thread.start()

    def _own(self, rows: Sequence[_R]) -> list[_R]:
        return [r for r in rows if getattr(r, "cluster", None) == self.cluster]

    # --- the listener ---------------------------------------------------------------
    def observe(self, devices: Sequence[GpuReading]) -> None:
        allocations = allocate(devices, self._claims_for, self._policy)
        wall = self._wall()
        self.accumulator.observe(wall, self._mono(), allocations)
        usage, coverage = self.accumulator.drain_dirty()
        self.spool.write(usage, coverage)
        if self.cost_centers is not None:
            self.spool.write_cost_centers(self.cost_centers.observe(wall, allocations))

    def observe_vllm(self, telemetry: VllmTelemetry) -> None:
        """Token deltas from the engines' counters, and prefill/decode seconds and
        prefix-cache tokens from their histograms, into the current hour."""
        wall = self._wall()
        self.tokens.observe(wall, telemetry)
        rows, baselines = self.tokens.drain_dirty()
        self.spool.write_tokens(rows, baselines)
        self.engine_time.observe(wall, telemetry)
        engine_rows, engine_baselines = self.engine_time.drain_dirty()
        self.spool.write_engine_time(engine_rows, engine_baselines)

    def observe_tenant_tokens(self, reading: GatewayReading) -> None:
        """Per-tenant token and request deltas from gateway counters, into the current
        hour (with their counter baselines, in one spool transaction)."""
        self.tenant_tokens.observe(self._wall(), reading)
        rows, baselines, seen, forgotten = self.tenant_tokens.drain_dirty()
        self.spool.write_tenant_tokens(rows, baselines, seen, forgotten)

    def record_probe(self, result: ProbeResult) -> None:
        ep = result.endpoint
        record = ProbeRecord(
            started_unix=result.started_unix, node=self.node, endpoint=ep.name,
            namespace=ep.namespace, service=ep.service, model_name=result.model_name,
            ok=result.ok, reason=result.reason, ttft_s=result.ttft_s, tpot_s=result.tpot_s,
            e2e_s=result.e2e_s, output_tokens_per_s=result.output_tokens_per_s,
            prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
            cluster=self.cluster,
        )  # fmt: skip
        self._last_probe[(ep.name, result.model_name)] = record
        self.tokens.observe_probe(result)
        rows, baselines = self.tokens.drain_dirty()
        self.spool.write_tokens(rows, baselines)
        self.spool.write_probe(record)

    def record_verdict(self, verdict: ProbeVerdict) -> None:
        """Attach a verdict to the probe it judged (the endpoint's last one)."""
        key = (verdict.endpoint.name, verdict.model_name)
        record = self._last_probe.get(key)
        if record is None:
            return
        judged = replace(
            record,
            tokens_counted=verdict.tokens_counted,
            ttft_histogram_moved=verdict.ttft_histogram_moved,
            ttft_agrees=verdict.ttft_agrees,
        )
        self._last_probe[key] = judged
        self.spool.write_probe(judged)

    # --- the flusher ----------------------------------------------------------------
    def flush_once(self) -> bool:
        """Send every pending row; True when the spool is drained (or nothing to do)."""
        if self.store is None:
            return True
        with self._flush_lock:
            usage, coverage, seq = self.spool.pending()
            token_rows = self.spool.pending_tokens()
            probes = self.spool.pending_probes()
            storage = self.spool.pending_storage_samples()
            tenant_rows = self.spool.pending_tenant_tokens()
            engine_rows = self.spool.pending_engine_time()
            cost_center_rows = self.spool.pending_cost_centers()
            try:
                if not self._migrated:  # here, not at start: a database that is down
                    self.store.migrate(default_cluster=self.cluster)  # at start must not stop it
                    self._migrated = True
                if usage or coverage:
                    self.store.upsert(usage, coverage)
                self.store.upsert_tokens(token_rows)
                self.store.upsert_probes(probes)
                self.store.insert_storage_samples(storage)
                if tenant_rows:
                    self.store.upsert_tenant_tokens(tenant_rows)
                if engine_rows:
                    self.store.upsert_engine_time(engine_rows)
                if cost_center_rows:
                    self.store.upsert_cost_centers(cost_center_rows)
            except StoreError as exc:
                self._failures += 1
                self._consecutive_failures += 1
                if self._consecutive_failures == 1:
                    log.warning("ledger flush failed, rows stay in the spool: %s", exc)
                elif str(exc) != self._last_error:
                    log.info("ledger flush still failing: %s", exc)
                self._last_error = str(exc)
                self._pending = self.spool.pending_count() + self.spool.pending_extra_count()
                return False
            if usage or coverage:
                self.spool.mark_flushed(usage, coverage, seq)
            # rows read after `seq` was taken may carry a newer seq: they stay pending
            # and are sent again, as running totals (harmless)
            self.spool.mark_tokens_flushed(token_rows, seq)
            self.spool.mark_probes_flushed(probes, seq)
            self.spool.mark_storage_flushed(storage, seq)
            self.spool.mark_tenant_tokens_flushed(tenant_rows, seq)
            self.spool.mark_engine_time_flushed(engine_rows, seq)
            self.spool.mark_cost_centers_flushed(cost_center_rows, seq)
            if self._last_error is not None:
                log.info("ledger flush recovered")
            self._last_error = None
            self._consecutive_failures = 0
            now_hour = hour_start(self._wall())
            self.accumulator.forget_before(now_hour - RETAIN_HOURS * HOUR)
            self.tokens.forget_before(now_hour - RETAIN_HOURS * HOUR)
            self.tenant_tokens.forget_before(now_hour - RETAIN_HOURS * HOUR)
            self.engine_time.forget_before(now_hour - RETAIN_HOURS * HOUR)
            if self.cost_centers is not None:
                self.cost_centers.forget_before(now_hour - RETAIN_HOURS * HOUR)
            self.spool.prune(now_hour - RETAIN_HOURS * HOUR)
            self.spool.prune_extra(now_hour - RETAIN_HOURS * HOUR)
            self.spool.prune_storage_samples(self._wall() - self.storage_retain_s)
            self._pending = self.spool.pending_count() + self.spool.pending_extra_count()
            return self._pending == 0

    def _flush_loop(self) -> None:
        # The first pass runs at once: it migrates the store (so /api/v1/usage answers
        # from the start) and sends what a previous run left in the spool.
        while not self._stop.is_set() and not self.spool.closed:
            try:
                self.flush_once()
            except Exception:  # a bug here must not end flushing for the process lifetime
                log.exception("ledger flush raised unexpectedly")
            delay = self.flush_interval_s
            if self._consecutive_failures:
                backoff = self.flush_interval_s * 2 ** min(self._consecutive_failures, 10)
                delay = min(MAX_BACKOFF_S, backoff)
            self._wake.wait(delay)
            self._wake.clear()

    def request_flush(self) -> None:
        self._wake.set()

    def status(self) -> LedgerStatus:
        return LedgerStatus(
            allocations=self.accumulator.latest,
            lifetime=self.accumulator.lifetime(),
            pending_rows=self._pending,
            flush_failures=self._failures,
            last_flush_error=self._last_error,
        )

    def stop(self, final_flush_timeout_s: float = 2.0) -> None:
        """Stop the flusher and try one last flush, bounded so shutdown stays quick."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        if self.store is not None:
            last = threading.Thread(target=self._final_flush, daemon=True)
            last.start()
            last.join(timeout=final_flush_timeout_s)

    def _final_flush(self) -> None:
        try:
            self.flush_once()
        except Exception as exc:  # the spool still has the rows; the next start sends them
            log.info("final ledger flush skipped: %s", exc)
