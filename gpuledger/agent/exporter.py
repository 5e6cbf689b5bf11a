"""Turn a snapshot into the normalized metric schema, in the Prometheus text format.

A client_python custom collector: families are built fresh from the immutable snapshot
(no long-lived metric objects to forget to clear when a GPU or a collector disappears).
Every family is created from its :class:`gpuledger.schema.MetricSpec`, so a name, type
or label set that the schema does not define cannot be exported.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from gpuledger import schema
from gpuledger.agent.merge import merge_devices
from gpuledger.agent.snapshot import Snapshot
from gpuledger.collectors.readings import GpuReading, GpuTelemetry
from gpuledger.schema import Kind, MetricSpec

GPU_SOURCES = ("nvml", "dcgm")


class _Families:
    """Lazily created families keyed by spec, with label arity checked on every add."""

    def __init__(self, node: str) -> None:
        self.node = node
        self._families: dict[str, Metric] = {}

    def add(self, spec: MetricSpec, labels: Sequence[str], value: float) -> None:
        if len(labels) != len(spec.labels):
            raise ValueError(f"{spec.name}: {len(labels)} label values for {spec.labels}")
        family = self._families.get(spec.name)
        if family is None:
            names = list(spec.all_labels)
            if spec.kind is Kind.COUNTER:
                family = CounterMetricFamily(spec.name, spec.help, labels=names)
            elif spec.kind is Kind.GAUGE:
                family = GaugeMetricFamily(spec.name, spec.help, labels=names)
            else:
                raise ValueError(f"{spec.name}: use add_histogram for histograms")
            self._families[spec.name] = family
        family.add_metric([self.node, *labels], value)  # type: ignore[attr-defined]

    def __iter__(self) -> Iterator[Metric]:
        return iter(self._families.values())


def _gpu_labels(r: GpuReading) -> tuple[str, ...]:
    return (
        str(r.index),
        r.uuid,
        r.model,
        "" if r.mig_instance is None else str(r.mig_instance),
        r.mig_profile,
    )


def _add_gpu(f: _Families, r: GpuReading, driver: str | None) -> None:
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


def _add_agent(f: _Families, snap: Snapshot, version: str) -> None:
    f.add(schema.BUILD_INFO, (version,), 1.0)
    for name in sorted(snap.collectors):
        state = snap.collectors[name]
        f.add(schema.COLLECTOR_UP, (name,), 1.0 if state.up else 0.0)
        if state.duration_s is not None:
            f.add(schema.COLLECTOR_DURATION, (name,), state.duration_s)
        if state.last_success_unix is not None:
            f.add(schema.COLLECTOR_LAST_SUCCESS, (name,), state.last_success_unix)


class SnapshotExporter:
    def __init__(self, node: str, version: str) -> None:
        self.node = node
        self.version = version

    def families(self, snap: Snapshot) -> Iterable[Metric]:
        f = _Families(self.node)
        telemetry = [snap.reading(src, GpuTelemetry) for src in GPU_SOURCES]
        driver = next((t.driver for t in telemetry if t is not None and t.driver), None)
        for reading in merge_devices(*telemetry):
            _add_gpu(f, reading, driver)
        _add_agent(f, snap, self.version)
        return list(f)

    def render(self, snap: Snapshot) -> bytes:
        families = self.families(snap)

        class _Once:
            def collect(self) -> Iterable[Metric]:
                return families

        return generate_latest(_Once())
