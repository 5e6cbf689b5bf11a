"""What the OTLP export says about itself: each signal's exports and failures, logged once
per change of state, with the OTLP exporters' own per-attempt records kept out of the
log and only their gist quoted (header values scrubbed).

The SDK's exporters retry and log every failed attempt, and the reason a request failed
stays inside the HTTP client; the wrappers here note that reason, count the outcome and
never let an exception reach the SDK's threads, so export never blocks or breaks the
agent and :meth:`~gpuledger.agent.otel.export.OtelExport.status` can say why it fails.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import requests
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricsData,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from gpuledger.agent.otel.config import Signal
from gpuledger.collectors.http import redact_url

log = logging.getLogger(__name__)

# Every instrument kind exported cumulative, as /metrics serves it (the OTLP exporter and
# the wrapper around it must prefer the same temporality).
CUMULATIVE: dict[type, AggregationTemporality] = dict.fromkeys(
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


class RecordingSession(requests.Session):
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


def install_capture() -> None:
    for name in _OTLP_LOGGERS:
        logger = logging.getLogger(name)
        if _CAPTURE not in logger.filters:
            logger.addFilter(_CAPTURE)


class Scrubber:
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


class TrackedMetricExporter(MetricExporter):
    """The OTLP metric exporter, with its outcome recorded and no exception escaping."""

    def __init__(self, inner: OTLPMetricExporter, health: ExportHealth) -> None:
        super().__init__(preferred_temporality=CUMULATIVE)
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


class TrackedSpanExporter(SpanExporter):
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
