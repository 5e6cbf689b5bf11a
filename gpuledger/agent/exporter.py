"""Turn a snapshot into the normalized metric schema, in the Prometheus text format.

Shaped like a client_python custom collector -- families are built fresh from the
immutable snapshot each time, so nothing long-lived has to be cleared when a GPU or a
collector disappears -- but rendered here rather than by ``generate_latest``: that
function re-validates every label *name* on every sample and took ~25 ms for 400 series
on the reference machine (see bench/bench_agent.py), while the names here are fixed by
the schema and only label *values* need escaping. Every family is created from its
:class:`gpuledger.schema.MetricSpec`, so a name, type or label set that the schema does
not define cannot be exported; tests parse the output with prometheus_client's parser.
The samples are built once, in structured form (:class:`MetricSamples`), and the text is
written from them; the OTLP export (:mod:`gpuledger.agent.otel.export`) reads the same object.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from gpuledger import schema
from gpuledger.agent.snapshot import Snapshot
from gpuledger.chargeback.attribution.claims import IDLE
from gpuledger.chargeback.ledger.flusher import LedgerStatus
from gpuledger.chargeback.ledger.storage_growth import Growth, GrowthKey, days_until_full
from gpuledger.collectors.gpu.merge import merge_devices
from gpuledger.collectors.gpu.readings import GpuReading, GpuTelemetry
from gpuledger.collectors.pgvector.types import IndexBuild, PgTelemetry
from gpuledger.collectors.textformat.render import FamiliesBuilder, MetricSamples
from gpuledger.collectors.vllm.probe.runner import ProbeStatus
from gpuledger.collectors.vllm.types import VllmTelemetry

if TYPE_CHECKING:
    from gpuledger.agent.reporter import ReporterStatus

GPU_SOURCES = ("nvml", "dcgm")


def snapshot_devices(snap: Snapshot) -> tuple[GpuReading, ...]:
    """The snapshot's GPU readings merged into one per device (computed once per snapshot)."""
    cached = snap.memo.get("devices")
    if isinstance(cached, tuple):
        return cached
    devices = merge_devices(*(snap.reading(src, GpuTelemetry) for src in GPU_SOURCES))
    snap.memo["devices"] = devices
    return devices


def snapshot_driver(snap: Snapshot) -> str | None:
    for src in GPU_SOURCES:
        t = snap.reading(src, GpuTelemetry)
        if t is not None and t.driver:
            return t.driver
    return None


def _gpu_labels(r: GpuReading) -> tuple[str, ...]:
    return (
        str(r.index),
        r.uuid,
        r.model,
        "" if r.mig_instance is None else str(r.mig_instance),
        r.mig_profile,
    )


def _add_gpu(f: FamiliesBuilder, r: GpuReading, driver: str | None) -> None:
    labels = _gpu_labels(r)
    f.add(schema.GPU_INFO, (*labels, r.driver or driver or ""), 1.0)
    f.add(schema.GPU_LOST, labels, 1.0 if r.lost else 0.0)
    if r.lost:
        return
    simple = (
        (schema.GPU_UTILIZATION, r.utilization_ratio),
        (schema.GPU_MEMORY_USED, r.memory_used_bytes),
        (schema.GPU_MEMORY_TOTAL, r.memory_total_bytes),
        (schema.GPU_POWER, r.power_watts),
        (schema.GPU_ENERGY, r.energy_joules),
        (schema.GPU_TEMPERATURE, r.temperature_celsius),
        (schema.GPU_SM_CLOCK, r.sm_clock_hertz),
        (schema.GPU_XID_ERRORS, r.xid_errors),
        (schema.GPU_LAST_XID, r.last_xid),
    )
    for spec, value in simple:
        if value is not None:
            f.add(spec, labels, float(value))
    if r.throttle_reasons is not None:
        for reason, active in sorted(r.throttle_reasons.items()):
            f.add(schema.GPU_THROTTLED, (*labels, reason), 1.0 if active else 0.0)
    if r.ecc_errors is not None:
        for kind, count in sorted(r.ecc_errors.items()):
            f.add(schema.GPU_ECC_ERRORS, (*labels, kind), float(count))
    if r.remapped_rows is not None:
        for kind, count in sorted(r.remapped_rows.items()):
            f.add(schema.GPU_REMAPPED_ROWS, (*labels, kind), float(count))
    if r.row_remap_pending is not None:
        f.add(schema.GPU_ROW_REMAP_PENDING, labels, float(r.row_remap_pending))
    if r.row_remap_failed is not None:
        f.add(schema.GPU_ROW_REMAP_FAILED, labels, float(r.row_remap_failed))


def _add_agent(f: FamiliesBuilder, snap: Snapshot, version: str) -> None:
    f.add(schema.BUILD_INFO, (version,), 1.0)
    for name in sorted(snap.collectors):
        state = snap.collectors[name]
        f.add(schema.COLLECTOR_UP, (name,), 1.0 if state.up else 0.0)
        if state.duration_s is not None:
            f.add(schema.COLLECTOR_DURATION, (name,), state.duration_s)
        if state.last_success_unix is not None:
            f.add(schema.COLLECTOR_LAST_SUCCESS, (name,), state.last_success_unix)


_VLLM_GAUGES = (
    (schema.VLLM_REQUESTS_RUNNING, "requests_running"),
    (schema.VLLM_REQUESTS_WAITING, "requests_waiting"),
    (schema.VLLM_KV_CACHE_USAGE, "kv_cache_usage_ratio"),
    (schema.VLLM_PROMPT_TOKENS, "prompt_tokens"),
    (schema.VLLM_GENERATION_TOKENS, "generation_tokens"),
    (schema.VLLM_PREEMPTIONS, "preemptions"),
)
_VLLM_HISTOGRAMS = (
    (schema.VLLM_TTFT, "ttft"),
    (schema.VLLM_ITL, "inter_token_latency"),
    (schema.VLLM_E2E, "e2e_latency"),
    (schema.VLLM_QUEUE_TIME, "queue_time"),
)


def _add_vllm(f: FamiliesBuilder, telemetry: VllmTelemetry) -> None:
    for scrape in telemetry.endpoints:
        ep = scrape.endpoint
        f.add(
            schema.VLLM_ENDPOINT_UP,
            (ep.service, ep.namespace, ep.pod, ep.name),
            1.0 if scrape.up else 0.0,
        )
        for s in scrape.series:
            labels = (ep.service, ep.namespace, ep.pod, s.model_name, s.engine)
            for spec, attr in _VLLM_GAUGES:
                value = getattr(s, attr)
                if value is not None:
                    f.add(spec, labels, float(value))
            for reason, count in sorted(s.request_success.items()):
                f.add(schema.VLLM_REQUEST_SUCCESS, (*labels, reason), count)
            for spec, attr in _VLLM_HISTOGRAMS:
                hist = getattr(s, attr)
                if hist is not None:
                    f.add_histogram(spec, labels, hist)


def _add_probes(f: FamiliesBuilder, status: ProbeStatus) -> None:
    for ep_status in status.endpoints:
        ep = ep_status.endpoint
        labels = (ep.service, ep.namespace, ep.name, ep_status.model_name)
        f.add(schema.PROBE_SUCCESS, labels, float(ep_status.successes))
        for reason, count in sorted(ep_status.failures.items()):
            f.add(schema.PROBE_FAILURES, (*labels, reason), float(count))
        for reason, count in sorted(ep_status.skipped.items()):
            f.add(schema.PROBE_SKIPPED, (*labels, reason), float(count))
        last = ep_status.last_success
        if last is not None:
            for spec, value in (
                (schema.PROBE_TTFT, last.ttft_s),
                (schema.PROBE_TPOT, last.tpot_s),
                (schema.PROBE_E2E, last.e2e_s),
                (schema.PROBE_TOKENS_PER_SECOND, last.output_tokens_per_s),
            ):
                if value is not None:
                    f.add(spec, labels, value)
        verdict = ep_status.last_verdict
        if verdict is not None:
            for check, ok in (
                ("tokens_counted", verdict.tokens_counted),
                ("ttft_histogram_moved", verdict.ttft_histogram_moved),
                ("ttft_agrees", verdict.ttft_agrees),
            ):
                if ok is not None:
                    f.add(schema.PROBE_VALIDATION, (*labels, check), 1.0 if ok else 0.0)


def _build_progress(b: IndexBuild) -> float | None:
    if b.blocks_total > 0:
        return min(1.0, b.blocks_done / b.blocks_total)
    if b.tuples_total > 0:
        return min(1.0, b.tuples_done / b.tuples_total)
    return None


def _add_pg(f: FamiliesBuilder, telemetry: PgTelemetry, growth: Mapping[GrowthKey, Growth]) -> None:
    for db in telemetry.databases:
        f.add(schema.PG_DATABASE_UP, (db.name,), 1.0 if db.up else 0.0)
        if not db.up:
            continue
        if db.database_bytes is not None:
            f.add(schema.PG_DATABASE_BYTES, (db.name,), float(db.database_bytes))
        if db.capacity_bytes is not None:
            f.add(schema.PG_CAPACITY, (db.name,), float(db.capacity_bytes))
        f.add(schema.PG_SKIPPED_RELATIONS, (db.name,), float(len(db.skipped_locked)))
        for t in db.tables:
            labels = (db.name, t.schema, t.table)
            for kind, value in (
                ("heap", t.heap_bytes),
                ("toast", t.toast_bytes),
                ("index", t.index_bytes),
                ("total", t.total_bytes),
            ):
                f.add(schema.PG_TABLE_BYTES, (*labels, kind), float(value))
            f.add(schema.PG_TABLE_ROWS, labels, t.rows_estimate)
            if t.dead_tuples is not None:
                f.add(schema.PG_DEAD_TUPLES, labels, float(t.dead_tuples))
            for col in t.vector_columns:
                f.add(schema.PGVECTOR_DIMENSIONS, (*labels, col.name, col.type), col.dimensions)
            for idx in t.vector_indexes:
                f.add(schema.PGVECTOR_INDEX_BYTES, (*labels, idx.name, idx.method), idx.bytes)
                opts = idx.options
                f.add(
                    schema.PGVECTOR_INDEX_INFO,
                    (*labels, idx.name, idx.method, opts.get("m", ""),
                     opts.get("ef_construction", ""), opts.get("lists", "")),
                    1.0,
                )  # fmt: skip
            grown = growth.get((db.name, t.schema, t.table))
            if grown is not None:
                f.add(schema.PG_GROWTH, labels, grown.bytes_per_day)
        for b in db.index_builds:
            progress = _build_progress(b)
            if progress is not None:
                build_labels = (db.name, b.schema, b.table, b.index, b.phase)
                f.add(schema.PG_INDEX_BUILD_PROGRESS, build_labels, progress)
        whole = growth.get((db.name, "", ""))
        if whole is not None:
            f.add(schema.PG_GROWTH, (db.name, "", ""), whole.bytes_per_day)
            left = days_until_full(db.capacity_bytes, db.database_bytes, whole.bytes_per_day)
            if left is not None:
                f.add(schema.PG_DAYS_UNTIL_FULL, (db.name,), left)


def _add_ledger(f: FamiliesBuilder, status: LedgerStatus) -> None:
    for alloc in status.allocations:
        for share in alloc.shares:
            if share.owner.service == IDLE:
                continue
            mig = "" if share.mig_instance is None else str(share.mig_instance)
            o = share.owner
            labels = (alloc.uuid, mig, o.namespace, o.pod, o.container, o.service)
            f.add(schema.GPU_ALLOCATION, labels, share.share)
    life = status.lifetime
    for (service, namespace, model, kind), seconds in sorted(life.service_seconds.items()):
        f.add(schema.SERVICE_GPU_SECONDS, (service, namespace, model, kind), seconds)
    for model, seconds in sorted(life.idle_seconds.items()):
        f.add(schema.IDLE_GPU_SECONDS, (model,), seconds)
    for (service, namespace), joules in sorted(life.service_energy.items()):
        f.add(schema.SERVICE_ENERGY, (service, namespace), joules)
    f.add(schema.LEDGER_PENDING_ROWS, (), float(status.pending_rows))
    f.add(schema.LEDGER_FLUSH_FAILURES, (), float(status.flush_failures))


class SnapshotExporter:
    def __init__(
        self,
        node: str,
        version: str,
        ledger: Callable[[], LedgerStatus | None] | None = None,
        probes: Callable[[], ProbeStatus] | None = None,
        storage_growth: Callable[[], Mapping[GrowthKey, Growth]] | None = None,
        reporter: Callable[[], ReporterStatus | None] | None = None,
    ) -> None:
        self.node = node
        self.version = version
        self.ledger = ledger
        self.probes = probes
        self.storage_growth = storage_growth
        self.reporter = reporter
        self.latest = MetricSamples(node, {})  # the samples of the last render()

    def samples(self, snap: Snapshot) -> MetricSamples:
        """Every sample ``snap`` exports (with the ledger, probe, growth and reporter
        state as of now), in structured form; :meth:`render` writes exactly these."""
        f = FamiliesBuilder(self.node)
        driver = snapshot_driver(snap)
        for reading in snapshot_devices(snap):
            _add_gpu(f, reading, driver)
        vllm = snap.reading("vllm", VllmTelemetry)
        if vllm is not None:
            _add_vllm(f, vllm)
        pg = snap.reading("pgvector", PgTelemetry)
        if pg is not None:
            _add_pg(f, pg, self.storage_growth() if self.storage_growth is not None else {})
        if self.probes is not None:
            _add_probes(f, self.probes())
        status = self.ledger() if self.ledger is not None else None
        if status is not None:  # None: this agent keeps no ledger (reporter-only)
            _add_ledger(f, status)
        report = self.reporter() if self.reporter is not None else None
        if report is not None:
            f.add(schema.REPORT_RUNS, (), float(report.runs))
            f.add(schema.REPORT_FAILURES, (), float(report.failures))
            if report.last_success_unix is not None:
                f.add(schema.REPORT_LAST_SUCCESS, (), report.last_success_unix)
        _add_agent(f, snap, self.version)
        return f.build()

    def render(self, snap: Snapshot) -> bytes:
        """The Prometheus text of :meth:`samples`; those samples are kept as
        :attr:`latest` (what the OTLP export reads: the same values /metrics serves)."""
        built = self.samples(snap)
        self.latest = built
        return built.render()
