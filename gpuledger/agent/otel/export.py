"""OTLP/HTTP export of the metric schema, and one span per synthetic probe.

Only imported when ``otel.enabled`` (it needs the ``otel`` extra); see ``docs/otel.md``.

Metrics: every gauge and counter of :mod:`gpuledger.schema` is an observable instrument
(ObservableGauge / ObservableCounter, cumulative) of the meter ``gpuledger``, named
exactly as in the schema; their callbacks read the samples of the agent's last
exposition render (:attr:`SnapshotExporter.latest <gpuledger.agent.exporter.
SnapshotExporter.latest>`), never collect. The samples are pinned for the whole of one
collection, so one export never mixes two snapshots. The SDK has no observable
histogram, so the vLLM histograms go in through the metric reader: after the SDK has
collected the instruments, :class:`_SchemaReader` adds one OTLP Histogram per histogram
metric built from the same pinned samples, with the upstream bucket boundaries as
explicit bounds (cumulative temporality).

Export never blocks the agent: it runs on the SDK's own threads, a failure is counted
and logged once per change of state (the OTLP exporter's own per-attempt log records
are kept out of the log and only their gist is quoted, header values scrubbed), and
:meth:`OtelExport.stop` returns within its timeout even when the receiver hangs.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import requests
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.metrics.export import Histogram as OtlpHistogram
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from gpuledger import schema
from gpuledger.agent.otel.config import OtelConfig, Signal
from gpuledger.collectors.http import redact_url
from gpuledger.collectors.textformat.render import MetricSamples, Series
from gpuledger.collectors.vllm.types import Histogram as PromHistogram
from gpuledger.collectors.vllm.types import ProbeResult
from gpuledger.schema import Kind, MetricSpec

log = logging.getLogger(__name__)

SCOPE = "gpuledger"
SPAN_NAME = "gpuledger.probe"
DEFAULT_STOP_TIMEOUT_S = 2.0

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

_CUMULATIVE: dict[type, AggregationTemporality] = dict.fromkeys(
    (
        Counter,
        UpDownCounter,
        Histogram,
        ObservableCounter,
        ObservableUpDownCounter,
        ObservableGauge,
    ),
    AggregationTemporality.CUMULATIVE,
)
# The OTLP exporters log every failed attempt and retry; the agent logs a change of state.
_OTLP_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http._common",
    "opentelemetry.exporter.otlp.common.http",
)
_DETAIL_CHARS = 300


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


# -- export health ------------------------------------------------------------------


class _OtlpLogCapture(logging.Filter):
    """Keeps the OTLP exporters' records out of the log; the exporting thread collects
    what they said about the attempt it is making (:meth:`take`)."""

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            try:
                message = record.getMessage()
            except Exception:
                message = str(record.msg)
            self.note(message)
        return False

    def note(self, message: str) -> None:
        said: list[str] = getattr(self._local, "said", [])
        if len(said) < 4 and message not in said:
            said.append(message)
        self._local.said = said

    def take(self) -> list[str]:
        said: list[str] = getattr(self._local, "said", [])
        self._local.said = []
        return said


_CAPTURE = _OtlpLogCapture()


_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")


class _RecordingSession(requests.Session):
    """Notes why a request failed: the OTLP client keeps the exception to itself when it
    gives up on its deadline ("due to timeout, max retries or shutdown")."""

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        try:
            return super().send(request, **kwargs)
        except Exception as exc:
            found = _ERRNO.search(str(exc))
            why = found.group(1) if found else str(exc)
            _CAPTURE.note(f"{type(exc).__name__}: {why}")
            raise


def _install_capture() -> None:
    for name in _OTLP_LOGGERS:
        logger = logging.getLogger(name)
        if _CAPTURE not in logger.filters:
            logger.addFilter(_CAPTURE)


class _Scrubber:
    """Removes header values (and each long word of them: the token of ``Bearer <t>``)
    from text that came from the HTTP stack."""

    def __init__(self, headers: dict[str, str]) -> None:
        secrets: set[str] = set()
        for value in headers.values():
            if len(value) >= 4:
                secrets.add(value)
            secrets.update(word for word in value.split() if len(word) >= 8)
        self._secrets = sorted(secrets, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        text = text.replace("\n", " ")
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text[:_DETAIL_CHARS]


@dataclass(frozen=True, slots=True)
class HealthStatus:
    signal: Signal
    exports: int
    failures: int
    failing: bool
    last_error: str | None


class ExportHealth:
    """Counts one signal's exports and failures; logs when the state changes (first
    success, failing, recovered), never on every interval."""

    def __init__(self, signal: Signal, url: str, scrub: Callable[[str], str]) -> None:
        self.signal: Signal = signal
        self._where = redact_url(url)
        self._scrub = scrub
        self._lock = threading.Lock()
        self._exports = 0
        self._failures = 0
        self._ok: bool | None = None
        self._failed_run = 0
        self._last_error: str | None = None

    def record(self, ok: bool, said: Sequence[str] = ()) -> None:
        detail = self._scrub("; ".join(said)) if said else "no detail"
        with self._lock:
            self._exports += 1
            before = self._ok
            self._ok = ok
            if ok:
                failed_run, self._failed_run = self._failed_run, 0
            else:
                self._failures += 1
                self._failed_run += 1
                self._last_error = detail
        if ok and before is None:
            log.info("OTLP %s export to %s is working", self.signal, self._where)
        elif ok and before is False:
            log.info(
                "OTLP %s export to %s recovered after %d failed exports",
                self.signal,
                self._where,
                failed_run,
            )
        elif not ok and before is not False:
            log.warning(
                "OTLP %s export to %s failed: %s (logged again only once it recovers)",
                self.signal,
                self._where,
                detail,
            )

    def status(self) -> HealthStatus:
        with self._lock:
            return HealthStatus(
                self.signal, self._exports, self._failures, self._ok is False, self._last_error
            )


def _failure(exc: BaseException) -> list[str]:
    return [f"{type(exc).__name__}: {exc}"]


class _TrackedMetricExporter(MetricExporter):
    """The OTLP metric exporter, with its outcome recorded and no exception escaping."""

    def __init__(self, inner: OTLPMetricExporter, health: ExportHealth) -> None:
        super().__init__(preferred_temporality=_CUMULATIVE)
        self._inner = inner
        self._health = health

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        _CAPTURE.take()
        try:
            result = self._inner.export(metrics_data, timeout_millis=timeout_millis)
        except Exception as exc:
            self._health.record(False, _failure(exc))
            return MetricExportResult.FAILURE
        self._health.record(result is MetricExportResult.SUCCESS, _CAPTURE.take())
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        with contextlib.suppress(Exception):
            self._inner.shutdown(timeout_millis=timeout_millis)


class _TrackedSpanExporter(SpanExporter):
    def __init__(self, inner: OTLPSpanExporter, health: ExportHealth) -> None:
        self._inner = inner
        self._health = health

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        _CAPTURE.take()
        try:
            result = self._inner.export(spans)
        except Exception as exc:
            self._health.record(False, _failure(exc))
            return SpanExportResult.FAILURE
        self._health.record(result is SpanExportResult.SUCCESS, _CAPTURE.take())
        return result

    def shutdown(self) -> None:
        with contextlib.suppress(Exception):
            self._inner.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


# -- metrics ------------------------------------------------------------------------


class _Pin:
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


class _SchemaReader(PeriodicExportingMetricReader):
    """The periodic reader, plus the schema's histograms, added to what the SDK collected
    (from the same pinned samples) before it goes to the exporter."""

    def __init__(
        self,
        exporter: MetricExporter,
        pin: _Pin,
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


# -- spans --------------------------------------------------------------------------


def _endpoint_label(name: str) -> str:
    """The endpoint as the probe metrics label it; redacted should it carry credentials
    or a query (config refuses both, discovery never builds them)."""
    safe = redact_url(name)
    return name if safe.rstrip("/") == name.rstrip("/") else safe


def probe_span_attributes(result: ProbeResult, node: str) -> dict[str, str | bool | int | float]:
    """What a probe span carries: the schema's probe labels (the endpoint as its name,
    which holds no credentials), the outcome and the probe's measurements."""
    ep = result.endpoint
    attrs: dict[str, str | bool | int | float] = {
        "node": node,
        "endpoint": _endpoint_label(ep.name),
        "service": ep.service,
        "namespace": ep.namespace,
        "pod": ep.pod,
        "model_name": result.model_name,
        "ok": result.ok,
        "reason": result.reason or "",
        "detail": "" if result.ok else result.detail,
    }
    measured = (
        ("ttft_s", result.ttft_s),
        ("tpot_s", result.tpot_s),
        ("e2e_s", result.e2e_s),
        ("output_tokens_per_s", result.output_tokens_per_s),
        ("prompt_tokens", result.prompt_tokens),
        ("completion_tokens", result.completion_tokens),
    )
    attrs.update({k: v for k, v in measured if v is not None})
    return {k: v for k, v in attrs.items() if v != ""}


# -- the whole --------------------------------------------------------------------


class OtelExport:
    """The agent's OTLP pipeline: built (headers read, ConfigError on a bad file) at
    construction, running between :meth:`start` and :meth:`stop`."""

    def __init__(
        self,
        cfg: OtelConfig,
        *,
        node: str,
        version: str,
        samples: Callable[[], MetricSamples],
    ) -> None:
        self.cfg = cfg
        self.node = node
        self.version = version
        self._headers = cfg.resolved_headers()
        scrub = _Scrubber(self._headers)
        self.metrics_url = cfg.signal_url("metrics")
        self.traces_url = cfg.signal_url("traces")
        self.metrics_health = ExportHealth("metrics", self.metrics_url, scrub)
        self.traces_health = ExportHealth("traces", self.traces_url, scrub)
        self._pin = _Pin(samples)
        self.resource_attributes: dict[str, str] = {
            "service.name": "gpuledger",
            "service.version": version,
            "service.instance.id": node,
            "host.name": node,
            "k8s.node.name": node,
            **cfg.resource_attributes,
        }
        self._meter_provider: MeterProvider | None = None
        self._tracer_provider: TracerProvider | None = None
        self._tracer: Tracer | None = None

    def _compression(self) -> Compression:
        return Compression.Gzip if self.cfg.compression == "gzip" else Compression.NoCompression

    def start(self) -> None:
        if self._meter_provider is not None:
            raise RuntimeError("OtelExport already started")
        _install_capture()
        cfg = self.cfg
        resource = Resource.create(self.resource_attributes)
        scope = InstrumentationScope(SCOPE, self.version)
        metric_exporter = OTLPMetricExporter(
            endpoint=self.metrics_url,
            headers=self._headers,
            timeout=cfg.timeout_seconds,
            compression=self._compression(),
            session=_RecordingSession(),
            preferred_temporality=_CUMULATIVE,
        )
        reader = _SchemaReader(
            _TrackedMetricExporter(metric_exporter, self.metrics_health),
            self._pin,
            resource,
            scope,
            export_interval_millis=cfg.interval_seconds * 1000,
            export_timeout_millis=cfg.timeout_seconds * 1000,
        )
        provider = MeterProvider(resource=resource, metric_readers=[reader], shutdown_on_exit=False)
        meter = provider.get_meter(SCOPE, self.version)
        for spec in schema.SPECS:
            if spec.kind is Kind.HISTOGRAM:
                continue  # added by the reader
            create = (
                meter.create_observable_counter
                if spec.kind is Kind.COUNTER
                else meter.create_observable_gauge
            )
            create(
                spec.name,
                callbacks=[self._observer(spec)],
                unit=otel_unit(spec),
                description=spec.help,
            )
        self._meter_provider = provider
        if cfg.probe_spans:
            tracer_provider = TracerProvider(
                resource=resource, sampler=ALWAYS_ON, shutdown_on_exit=False
            )
            span_exporter = OTLPSpanExporter(
                endpoint=self.traces_url,
                headers=self._headers,
                timeout=cfg.timeout_seconds,
                compression=self._compression(),
                session=_RecordingSession(),
            )
            tracer_provider.add_span_processor(
                BatchSpanProcessor(
                    _TrackedSpanExporter(span_exporter, self.traces_health),
                    schedule_delay_millis=min(cfg.interval_seconds, 5.0) * 1000,
                    export_timeout_millis=cfg.timeout_seconds * 1000,
                )
            )
            self._tracer_provider = tracer_provider
            self._tracer = tracer_provider.get_tracer(SCOPE, self.version)
        log.info(
            "OTLP export to %s every %gs%s",
            redact_url(self.metrics_url),
            cfg.interval_seconds,
            f", probe spans to {redact_url(self.traces_url)}" if cfg.probe_spans else "",
        )

    def _observer(self, spec: MetricSpec) -> Callable[[CallbackOptions], Iterable[Observation]]:
        pin = self._pin

        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            samples = pin.current()
            return [Observation(s.value, attributes(samples, s)) for s in samples.of(spec)]

        return observe

    def on_probe(self, result: ProbeResult) -> None:
        """One span per probe (the ProbeRunner's ``on_result``)."""
        tracer = self._tracer
        if tracer is None:
            return
        start_ns = int(result.started_unix * 1e9)
        end_unix = result.started_unix + result.e2e_s if result.e2e_s is not None else time.time()
        span = tracer.start_span(
            SPAN_NAME,
            context=Context(),  # always a root span
            kind=SpanKind.CLIENT,
            start_time=start_ns,
            attributes=probe_span_attributes(result, self.node),
        )
        if result.ok:
            span.set_status(Status(StatusCode.OK))
        else:
            span.set_status(Status(StatusCode.ERROR, result.reason or "failed"))
        span.end(end_time=max(start_ns, int(end_unix * 1e9)))

    def force_flush(self, timeout_s: float = 5.0) -> None:
        """Export now (tests; a diagnostic)."""
        if self._meter_provider is not None:
            self._meter_provider.force_flush(timeout_millis=timeout_s * 1000)
        if self._tracer_provider is not None:
            self._tracer_provider.force_flush(timeout_millis=int(timeout_s * 1000))

    def status(self) -> tuple[HealthStatus, HealthStatus]:
        return self.metrics_health.status(), self.traces_health.status()

    def stop(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        """Flush (a last metrics export, queued spans) and shut down, within ``timeout_s``
        whatever the receiver does: what has not gone by then is dropped."""
        self._tracer = None
        meter_provider, self._meter_provider = self._meter_provider, None
        tracer_provider, self._tracer_provider = self._tracer_provider, None
        deadline = time.monotonic() + timeout_s
        workers: list[threading.Thread] = []
        if meter_provider is not None:
            mp = meter_provider
            workers.append(
                threading.Thread(
                    target=lambda: mp.shutdown(timeout_millis=timeout_s * 1000),
                    name="otel-metrics-shutdown",
                    daemon=True,
                )
            )
        if tracer_provider is not None:
            workers.append(
                threading.Thread(
                    target=tracer_provider.shutdown, name="otel-traces-shutdown", daemon=True
                )
            )
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        late = [w.name for w in workers if w.is_alive()]
        if late:
            log.warning(
                "OTLP export did not finish within %gs of shutdown (%s); the rest is dropped",
                timeout_s,
                ", ".join(late),
            )
