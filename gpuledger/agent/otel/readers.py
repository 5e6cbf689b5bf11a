"""The readers: how the schema's samples become OTLP metrics.

Every gauge and counter of :mod:`gpuledger.schema` is an observable instrument whose
callback (:func:`observer`) reads the samples of the agent's last exposition render,
never collects. The samples are pinned (:class:`Pin`) for the whole of one collection, so
one export never mixes two snapshots. The SDK has no observable histogram, so
:class:`SchemaReader`, after the SDK has collected the instruments, adds one OTLP
Histogram per histogram metric built from the same pinned samples, with the upstream
bucket boundaries as explicit bounds (cumulative temporality).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.metrics.export import Histogram as OtlpHistogram
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from gpuledger import schema
from gpuledger.collectors.textformat.render import MetricSamples, Series
from gpuledger.collectors.vllm.types import Histogram as PromHistogram
from gpuledger.schema import Kind, MetricSpec

log = logging.getLogger(__name__)

# Schema unit -> UCUM, as OTel wants units. Prometheus' OTLP ingestion appends the unit's
# word to a name that lacks it (and "_ratio" to every gauge of unit "1"); every schema name
# already ends in its unit's word, so the names come back unchanged. Unitless schema
# metrics (counts, flags, info) get no unit: "1" would make Prometheus add "_ratio".
UCUM_UNITS: dict[str, str] = {
    "": "",
    "ratio": "1",
    "seconds": "s",
    "bytes": "By",
    "watts": "W",
    "joules": "J",
    "hertz": "Hz",
    "celsius": "Cel",
    "days": "d",
}
# Names in which the unit is not the last word ("..._bytes_per_day", "..._days_until_full"):
# any unit would be appended by one of Prometheus' translation strategies, so these two
# travel without one (the description still says what they measure).
_NO_UNIT = frozenset({schema.PG_GROWTH.name, schema.PG_DAYS_UNTIL_FULL.name})


def otel_unit(spec: MetricSpec) -> str:
    """The UCUM unit a schema metric is exported with (see :data:`UCUM_UNITS`)."""
    if spec.name in _NO_UNIT:
        return ""
    return UCUM_UNITS[spec.unit]


def attributes(samples: MetricSamples, sample: Series) -> dict[str, str]:
    """The sample's labels, ``node`` included, as attributes. An empty label value means
    "absent" in the schema (Prometheus drops it too), so it is left out."""
    return {k: v for k, v in samples.labels(sample).items() if v != ""}


def histogram_buckets(hist: PromHistogram) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """Cumulative Prometheus buckets as OTLP explicit bounds and per-bucket counts.

    The finite ``le`` boundaries are the bounds, unchanged; ``counts`` has one more entry,
    the overflow bucket above the last bound (from the ``+Inf`` bucket, else the count).
    A bucket smaller than the one before it (a torn upstream read) counts 0.
    """
    bounds: list[float] = []
    counts: list[int] = []
    below = 0.0
    total: float | None = None
    for le, cumulative in hist.buckets:
        if math.isinf(le):
            total = cumulative
            continue
        bounds.append(le)
        counts.append(max(0, round(cumulative - below)))
        below = max(below, cumulative)
    counts.append(max(0, round((hist.count if total is None else total) - below)))
    return tuple(bounds), tuple(counts)


class Pin:
    """The samples one collection reads: taken by the first instrument callback of a
    collection and released once the reader has added the histograms, so every
    instrument and histogram of one export come from the same render. A pin left behind
    by a collection that failed half-way expires after a second."""

    MAX_AGE_S = 1.0

    def __init__(self, latest: Callable[[], MetricSamples]) -> None:
        self._latest = latest
        self._lock = threading.Lock()
        self._samples: MetricSamples | None = None
        self._at = 0.0

    def current(self) -> MetricSamples:
        with self._lock:
            now = time.monotonic()
            if self._samples is None or now - self._at > self.MAX_AGE_S:
                self._samples, self._at = self._latest(), now
            return self._samples

    def release(self) -> None:
        with self._lock:
            self._samples = None


class _HistogramPoints:
    """OTLP cumulative histogram points from the schema's histogram samples. A series'
    start time is when it was first exported, renewed when its count goes down (the
    engine restarted)."""

    def __init__(self) -> None:
        self._starts: dict[tuple[str, frozenset[tuple[str, str]]], tuple[int, float]] = {}

    def metrics(self, samples: MetricSamples, now_ns: int) -> list[Metric]:
        out: list[Metric] = []
        seen: set[tuple[str, frozenset[tuple[str, str]]]] = set()
        for spec, family in samples.families():
            if spec.kind is not Kind.HISTOGRAM:
                continue
            points: list[HistogramDataPoint] = []
            for sample in family:
                hist = sample.histogram
                if hist is None:
                    continue
                attrs = attributes(samples, sample)
                key = (spec.name, frozenset(attrs.items()))
                seen.add(key)
                bounds, counts = histogram_buckets(hist)
                count = sum(counts)
                start, last = self._starts.get(key, (now_ns, 0.0))
                if count < last:
                    start = now_ns
                self._starts[key] = (start, count)
                points.append(
                    HistogramDataPoint(
                        attributes=attrs,
                        start_time_unix_nano=start,
                        time_unix_nano=now_ns,
                        count=count,
                        sum=hist.sum,
                        bucket_counts=counts,
                        explicit_bounds=bounds,
                        # vLLM exposes no min/max: left unset in the protobuf
                        min=None,  # type: ignore[arg-type]
                        max=None,  # type: ignore[arg-type]
                    )
                )
            if points:
                out.append(
                    Metric(
                        name=spec.name,
                        description=spec.help,
                        unit=otel_unit(spec),
                        data=OtlpHistogram(
                            data_points=points,
                            aggregation_temporality=AggregationTemporality.CUMULATIVE,
                        ),
                    )
                )
        for key in [k for k in self._starts if k not in seen]:
            del self._starts[key]
        return out


class SchemaReader(PeriodicExportingMetricReader):
    """The periodic reader, plus the schema's histograms, added to what the SDK collected
    (from the same pinned samples) before it goes to the exporter."""

    def __init__(
        self,
        exporter: MetricExporter,
        pin: Pin,
        resource: Resource,
        scope: InstrumentationScope,
        *,
        export_interval_millis: float,
        export_timeout_millis: float,
    ) -> None:
        # set before the base class starts the collecting thread
        self._pin = pin
        self._resource = resource
        self._scope = scope
        self._histograms = _HistogramPoints()
        self._hist_lock = threading.Lock()
        super().__init__(
            exporter,
            export_interval_millis=export_interval_millis,
            export_timeout_millis=export_timeout_millis,
        )

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        try:
            metrics_data = self._with_histograms(metrics_data)
        except Exception:  # a bug here must not stop the rest of the export
            log.exception("OTLP: converting the histograms failed")
        finally:
            self._pin.release()
        super()._receive_metrics(metrics_data, timeout_millis=timeout_millis, **kwargs)

    def _with_histograms(self, data: MetricsData) -> MetricsData:
        with self._hist_lock:
            extra = self._histograms.metrics(self._pin.current(), time.time_ns())
        if not extra:
            return data
        resource_metrics = list(data.resource_metrics)
        if not resource_metrics:
            resource_metrics = [ResourceMetrics(self._resource, [], self._resource.schema_url)]
        first = resource_metrics[0]
        scopes = list(first.scope_metrics)
        for i, sm in enumerate(scopes):
            if sm.scope.name == self._scope.name:
                scopes[i] = ScopeMetrics(sm.scope, [*sm.metrics, *extra], sm.schema_url)
                break
        else:
            scopes.append(ScopeMetrics(self._scope, extra, self._scope.schema_url or ""))
        resource_metrics[0] = ResourceMetrics(first.resource, scopes, first.schema_url)
        return MetricsData(resource_metrics=resource_metrics)


def observer(pin: Pin, spec: MetricSpec) -> Callable[[CallbackOptions], Iterable[Observation]]:
    """The callback of ``spec``'s observable instrument: its samples from the pinned
    render, one observation per series."""

    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        samples = pin.current()
        return [Observation(s.value, attributes(samples, s)) for s in samples.of(spec)]

    return observe
