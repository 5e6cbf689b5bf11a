"""OTLP/HTTP export of the metric schema, and one span per synthetic probe.

Only imported when ``otel.enabled`` (it needs the ``otel`` extra); see ``docs/otel.md``.

:class:`OtelExport` wires the pipeline: the metric readers
(:mod:`~gpuledger.agent.otel.readers`: the schema's gauges and counters as observable
instruments of the meter ``gpuledger``, named exactly as in the schema, and the vLLM
histograms added by the reader, all from the samples of the agent's last exposition
render (:attr:`SnapshotExporter.latest <gpuledger.agent.exporter.SnapshotExporter.latest>`),
never a collection), the probe spans (:mod:`~gpuledger.agent.otel.spans`) and the
exporters wrapped so that each signal's health is known
(:mod:`~gpuledger.agent.otel.health`).

Export never blocks the agent: it runs on the SDK's own threads, a failure is counted
and logged once per change of state, and :meth:`OtelExport.stop` returns within its
timeout even when the receiver hangs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Tracer

from gpuledger import schema
from gpuledger.agent.otel.config import OtelConfig
from gpuledger.agent.otel.health import (
    CUMULATIVE,
    ExportHealth,
    HealthStatus,
    RecordingSession,
    Scrubber,
    TrackedMetricExporter,
    TrackedSpanExporter,
    install_capture,
)
from gpuledger.agent.otel.readers import Pin, SchemaReader, observer, otel_unit
from gpuledger.agent.otel.spans import record_probe
from gpuledger.collectors.http import redact_url
from gpuledger.collectors.textformat.render import MetricSamples
from gpuledger.collectors.vllm.types import ProbeResult
from gpuledger.schema import Kind

log = logging.getLogger(__name__)

SCOPE = "gpuledger"
DEFAULT_STOP_TIMEOUT_S = 2.0


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
        scrub = Scrubber(self._headers)
        self.metrics_url = cfg.signal_url("metrics")
        self.traces_url = cfg.signal_url("traces")
        self.metrics_health = ExportHealth("metrics", self.metrics_url, scrub)
        self.traces_health = ExportHealth("traces", self.traces_url, scrub)
        self._pin = Pin(samples)
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
        install_capture()
        cfg = self.cfg
        resource = Resource.create(self.resource_attributes)
        scope = InstrumentationScope(SCOPE, self.version)
        metric_exporter = OTLPMetricExporter(
            endpoint=self.metrics_url,
            headers=self._headers,
            timeout=cfg.timeout_seconds,
            compression=self._compression(),
            session=RecordingSession(),
            preferred_temporality=CUMULATIVE,
        )
        reader = SchemaReader(
            TrackedMetricExporter(metric_exporter, self.metrics_health),
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
                callbacks=[observer(self._pin, spec)],
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
                session=RecordingSession(),
            )
            tracer_provider.add_span_processor(
                BatchSpanProcessor(
                    TrackedSpanExporter(span_exporter, self.traces_health),
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

    def on_probe(self, result: ProbeResult) -> None:
        """One span per probe (the ProbeRunner's ``on_result``)."""
        tracer = self._tracer
        if tracer is not None:
            record_probe(tracer, result, self.node)

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
