"""OTLP/HTTP export: the metric schema and probe spans, received by a real HTTP server.

The receiver below is a ``ThreadingHTTPServer`` on 127.0.0.1 that decodes what arrives
with the OTLP protobuf classes (``ExportMetricsServiceRequest`` /
``ExportTraceServiceRequest``), gzip included, records each request with its headers,
and can be told to answer 500 or to hang. Expectations come from the agent's own
Prometheus exposition of the same snapshot, from a second, independently built
simulated node, and from hand-made histograms.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import yaml
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from prometheus_client.parser import text_string_to_metric_families

from gpuledger import schema
from gpuledger.agent.config import AgentConfig, ConfigError, load_config
from gpuledger.agent.exporter import SnapshotExporter
from gpuledger.agent.main import Agent
from gpuledger.agent.otel import export as otel
from gpuledger.agent.otel import health as otel_health
from gpuledger.agent.otel import readers as otel_readers
from gpuledger.agent.otel.config import OtelConfig, parse_headers_text
from gpuledger.agent.snapshot import CollectorState, Snapshot
from gpuledger.collectors.vllm.probe.source import fan_out
from gpuledger.collectors.vllm.types import (
    EndpointScrape,
    Histogram,
    ProbeResult,
    VllmEndpoint,
    VllmSeries,
    VllmTelemetry,
)
from gpuledger.sim.node import SimulatedNode
from tests.support.harness import free_port
from tests.support.paths import REPO_ROOT
from tests.support.standins import wait_until
from tests.support.vllm_standin import TTFT_BUCKETS, VllmBehaviour, VllmStandIn

SEED = 7
GPUS = 3  # idle, shared, MIG: whole GPUs and MIG instances
NODE = "node-otel"
SECRET = "otlp-s3cret-token-0123456789"
INF = math.inf
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE


# -- the receiver -------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    message: Any


@dataclass
class OtlpReceiver:
    """OTLP/HTTP (protobuf) on 127.0.0.1; ``mode`` is ok, 500 or hang."""

    mode: str = "ok"
    received: list[Received] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                mode = receiver.mode
                with receiver._lock:
                    receiver.attempts[self.path] += 1
                if mode == "hang":
                    receiver._release.wait(30)
                    self.close_connection = True
                    return
                if mode == "500":
                    self._reply(500, b"receiver says no", "text/plain")
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path == "/v1/metrics":
                    message: Any = ExportMetricsServiceRequest.FromString(body)
                    reply = ExportMetricsServiceResponse().SerializeToString()
                elif self.path == "/v1/traces":
                    message = ExportTraceServiceRequest.FromString(body)
                    reply = ExportTraceServiceResponse().SerializeToString()
                else:
                    self._reply(404, b"", "text/plain")
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    receiver.received.append(Received(self.path, headers, message))
                self._reply(200, reply, "application/x-protobuf")

            def _reply(self, status: int, payload: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def set_mode(self, mode: str) -> None:
        if mode == "hang":
            self._release.clear()
        else:
            self._release.set()
        self.mode = mode

    def of(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    def close(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver()
    try:
        yield r
    finally:
        r.close()


# -- decoding -----------------------------------------------------------------------


def any_value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind is not None else None


def kv(attrs: Any) -> dict[str, Any]:
    return {a.key: any_value(a.value) for a in attrs}


def schema_metrics(req: ExportMetricsServiceRequest) -> dict[str, Metric]:
    out: dict[str, Metric] = {}
    for rm in req.resource_metrics:
        for sm in rm.scope_metrics:
            if sm.scope.name == otel.SCOPE:
                for m in sm.metrics:
                    assert m.name not in out, f"{m.name} exported twice in one request"
                    out[m.name] = m
    return out


def points(m: Metric) -> Any:
    return getattr(m, m.WhichOneof("data")).data_points


def number(point: Any) -> float:
    return float(point.as_double if point.WhichOneof("value") == "as_double" else point.as_int)


Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def by_attributes(m: Metric) -> dict[frozenset[tuple[str, Any]], float]:
    return {frozenset(kv(p.attributes).items()): number(p) for p in points(m)}


def otlp_series(req: ExportMetricsServiceRequest) -> Series:
    out: Series = {}
    for name, m in schema_metrics(req).items():
        if m.WhichOneof("data") in ("gauge", "sum"):
            for p in points(m):
                out[(name, frozenset(kv(p.attributes).items()))] = number(p)
    return out


def exposition_series(text: str) -> Series:
    """Gauges and counters of the /metrics text; empty labels are "absent"."""
    out: Series = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            spec = schema.BY_NAME.get(s.name)
            if spec is None or spec.kind is schema.Kind.HISTOGRAM:
                continue
            labels = frozenset((k, v) for k, v in s.labels.items() if v != "")
            out[(s.name, labels)] = s.value
    return out


def spans(receiver: OtlpReceiver) -> list[tuple[dict[str, Any], Span]]:
    out = []
    for r in receiver.of("/v1/traces"):
        for rs in r.message.resource_spans:
            for ss in rs.scope_spans:
                out.extend((kv(rs.resource.attributes), s) for s in ss.spans)
    return out


# -- building agents ----------------------------------------------------------------


def agent_config(tmp_path: Path, **sections: Any) -> AgentConfig:
    doc: dict[str, Any] = {
        "state_dir": str(tmp_path / "state"),
        "node_name": NODE,
        "simulate": {"enabled": True, "gpus": GPUS, "seed": SEED},
        "nvml": {"interval_seconds": 3600},  # one collection: a snapshot that stays put
        "podresources": {"interval_seconds": 3600},  # the simulated kubelet's, likewise
        "ledger": {"flush_interval_seconds": 3600},
    }
    for key, value in sections.items():
        doc[key] = {**doc.get(key, {}), **value}
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return load_config(path, environ={})


def otel_section(receiver: OtlpReceiver, **extra: Any) -> dict[str, Any]:
    return {
        "enabled": True,
        "endpoint": receiver.url,
        "interval_seconds": 0.5,
        "timeout_seconds": 2,
        **extra,
    }


@pytest.fixture
def running() -> Iterator[list[Agent]]:
    agents: list[Agent] = []
    try:
        yield agents
    finally:
        for a in agents:
            a.stop()


def start(agents: list[Agent], cfg: AgentConfig) -> Agent:
    agent = Agent(cfg)
    agents.append(agent)
    agent.start()
    return agent


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    out = []
    for r in caplog.records:
        out.append(r.getMessage())
        if r.exc_text:
            out.append(r.exc_text)
    return out


# -- metrics ------------------------------------------------------------------------


def test_metrics_export_carries_the_schema_with_the_exposition_values(
    tmp_path: Path,
    receiver: OtlpReceiver,
    running: list[Agent],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    headers_file = tmp_path / "otlp-headers"
    headers_file.write_text(f"# mounted Secret\nAuthorization: Bearer {SECRET}\n", "utf-8")
    cfg = agent_config(
        tmp_path,
        otel=otel_section(
            receiver,
            headers={"X-Scope-OrgID": "tenant-a"},
            headers_file=str(headers_file),
            resource_attributes={"deployment.environment": "test"},
        ),
    )
    agent = start(running, cfg)
    store = agent.runtime.store
    nvml = wait_until(lambda: (s := store.snapshot.collectors.get("nvml")) and s.up and s)
    # the simulated kubelet's one run too, before the snapshot is taken as settled
    wait_until(lambda: (s := store.snapshot.collectors.get("podresources")) and s.up)
    version = store.snapshot.version
    seen = len(receiver.of("/v1/metrics"))
    wait_until(lambda: len(receiver.of("/v1/metrics")) >= seen + 2, timeout=10)
    assert store.snapshot.version == version, "the snapshot moved: comparison is void"
    first, last = receiver.of("/v1/metrics")[seen : seen + 2]
    req = last.message

    # 1. every gauge and counter sample of /metrics, and nothing else, with equal values
    expected = exposition_series(store.rendered.body.decode())
    got = otlp_series(req)
    assert got == expected
    assert len(got) > 50

    # 2. names, kinds, units, descriptions, temporality
    metrics = schema_metrics(req)
    for name, m in metrics.items():
        spec = schema.BY_NAME[name]
        assert m.description == spec.help
        assert m.unit == otel_readers.otel_unit(spec)
        if spec.kind is schema.Kind.GAUGE:
            assert m.WhichOneof("data") == "gauge", name
        else:
            assert spec.kind is schema.Kind.COUNTER
            assert m.WhichOneof("data") == "sum", name
            assert m.sum.is_monotonic
            assert m.sum.aggregation_temporality == CUMULATIVE
    units = {n: metrics[n].unit for n in (
        "gpuledger_gpu_power_watts", "gpuledger_gpu_energy_joules_total",
        "gpuledger_gpu_memory_used_bytes", "gpuledger_gpu_temperature_celsius",
        "gpuledger_gpu_sm_clock_hertz", "gpuledger_gpu_utilization_ratio",
        "gpuledger_collector_duration_seconds", "gpuledger_gpu_info", "gpuledger_gpu_lost",
    )}  # fmt: skip
    assert units == {
        "gpuledger_gpu_power_watts": "W", "gpuledger_gpu_energy_joules_total": "J",
        "gpuledger_gpu_memory_used_bytes": "By", "gpuledger_gpu_temperature_celsius": "Cel",
        "gpuledger_gpu_sm_clock_hertz": "Hz", "gpuledger_gpu_utilization_ratio": "1",
        "gpuledger_collector_duration_seconds": "s", "gpuledger_gpu_info": "",
        "gpuledger_gpu_lost": "",
    }  # fmt: skip

    # 3. cumulative counters keep their start time across exports
    energy = metrics["gpuledger_gpu_energy_joules_total"]
    before = {
        frozenset(kv(p.attributes).items()): p
        for p in points(schema_metrics(first.message)["gpuledger_gpu_energy_joules_total"])
    }
    for p in points(energy):
        prev = before[frozenset(kv(p.attributes).items())]
        assert 0 < p.start_time_unix_nano == prev.start_time_unix_nano < p.time_unix_nano
        assert number(p) >= number(prev)

    # 4. against an independently built node: identity of every device, memory, power
    sim = SimulatedNode(SEED, GPUS)
    power = by_attributes(metrics["gpuledger_gpu_power_watts"])
    memory = by_attributes(metrics["gpuledger_gpu_memory_total_bytes"])
    t_end = nvml.last_success_unix
    for g in sim.gpus:
        board = {
            "cluster": "default",
            "node": NODE,
            "gpu": str(g.index),
            "uuid": g.uuid,
            "model": g.model.name,
        }
        watts = power[frozenset(board.items())]
        window = [sim.power_watts(g.index, t_end - 3.0 + i * 0.01) for i in range(301)]
        assert min(window) - 0.01 <= watts <= max(window) + 0.01
        for d in g.devices:
            attrs = dict(board)
            if d.mig_instance is not None:
                attrs |= {"mig_instance": str(d.mig_instance), "mig_profile": d.mig_profile}
            assert memory[frozenset(attrs.items())] == d.memory_total_bytes
    assert any(d.mig_instance is not None for g in sim.gpus for d in g.devices)
    assert len(power) == GPUS  # board-level only: MIG instances carry no power series

    # 5. the resource, the scope, the headers (and the secret in no log line)
    resource = kv(req.resource_metrics[0].resource.attributes)
    assert resource["service.name"] == "gpuledger"
    assert resource["k8s.node.name"] == resource["host.name"] == NODE
    assert resource["service.instance.id"] == NODE
    assert resource["deployment.environment"] == "test"
    assert resource["telemetry.sdk.language"] == "python"
    assert last.headers["authorization"] == f"Bearer {SECRET}"
    assert last.headers["x-scope-orgid"] == "tenant-a"
    assert last.headers["content-encoding"] == "gzip"
    assert last.headers["content-type"] == "application/x-protobuf"
    assert agent.otel is not None
    health = agent.otel.metrics_health.status()
    assert health.failures == 0
    assert not health.failing
    logged = messages(caplog)
    assert any("OTLP metrics export to" in m and "is working" in m for m in logged)
    assert not [m for m in logged if SECRET in m]
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry")]


def test_a_stable_snapshot_is_exported_from_one_render() -> None:
    """Every instrument of one collection reads the same pinned samples."""
    exporter = SnapshotExporter("n", "1")
    renders = iter(range(1, 1000))

    def latest() -> Any:
        exporter.render(Snapshot(version=next(renders)))
        return exporter.latest

    pin = otel_readers.Pin(latest)
    a, b = pin.current(), pin.current()
    assert a is b
    pin.release()
    assert pin.current() is not a


# -- histograms ---------------------------------------------------------------------


def vllm_snapshot(ttft: Histogram) -> Snapshot:
    ep = VllmEndpoint(url="http://10.0.0.9:8000", service="chat", namespace="llm", pod="vllm-0")
    series = VllmSeries(model_name="m/llama", engine="0", requests_running=1.0, ttft=ttft,
                        request_success=MappingProxyType({"stop": 7.0}))  # fmt: skip
    state = CollectorState(
        "vllm",
        up=True,
        reading=VllmTelemetry(endpoints=(EndpointScrape(ep, True, series=(series,)),)),
    )
    return Snapshot(version=1, collectors=MappingProxyType({"vllm": state}))


def cumulative(counts: list[int], total_sum: float) -> Histogram:
    running, buckets = 0, []
    for le, c in zip((*TTFT_BUCKETS, INF), counts, strict=True):
        running += c
        buckets.append((le, float(running)))
    return Histogram(buckets=tuple(buckets), sum=total_sum, count=float(running))


def test_histogram_buckets_conversion() -> None:
    hist = Histogram(buckets=((0.1, 1.0), (0.5, 4.0), (1.0, 4.0), (INF, 6.0)), sum=3.5, count=6.0)
    assert otel_readers.histogram_buckets(hist) == ((0.1, 0.5, 1.0), (1, 3, 0, 2))
    torn = Histogram(buckets=((0.1, 3.0), (0.5, 2.0), (INF, 5.0)), sum=1.0, count=5.0)
    assert otel_readers.histogram_buckets(torn) == ((0.1, 0.5), (3, 0, 2))
    no_inf = Histogram(buckets=((1.0, 2.0),), sum=1.0, count=3.0)
    assert otel_readers.histogram_buckets(no_inf) == ((1.0,), (2, 1))


def test_histograms_are_exported_with_upstream_bounds(receiver: OtlpReceiver) -> None:
    counts = [0, 1, 2, 0, 0, 0, 0, 3, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    snaps = [
        vllm_snapshot(cumulative(counts, 2.75)),
        vllm_snapshot(cumulative([c * 2 for c in counts], 5.5)),
        vllm_snapshot(cumulative([1] + [0] * 22, 0.0005)),  # the engine restarted
    ]
    exporter = SnapshotExporter("node-h", "1")
    cfg = OtelConfig(enabled=True, endpoint=receiver.url, interval_seconds=3600, compression="none")
    export = otel.OtelExport(cfg, node="node-h", version="1", samples=lambda: exporter.latest)
    export.start()
    try:
        for snap in snaps:
            exporter.render(snap)
            export.force_flush()
    finally:
        export.stop()
    reqs = receiver.of("/v1/metrics")
    assert len(reqs) >= 3
    assert reqs[0].headers.get("content-encoding") is None  # compression: none
    got = [schema_metrics(r.message)[schema.VLLM_TTFT.name] for r in reqs[:3]]
    for m in got:
        assert m.unit == "s"
        assert m.description == schema.VLLM_TTFT.help
        assert m.histogram.aggregation_temporality == CUMULATIVE
    (p0,), (p1,), (p2,) = (list(m.histogram.data_points) for m in got)
    assert list(p0.explicit_bounds) == list(TTFT_BUCKETS)
    assert list(p0.bucket_counts) == counts
    assert (p0.count, p0.sum) == (8, 2.75)
    assert not p0.HasField("min")
    assert not p0.HasField("max")
    assert kv(p0.attributes) == {
        "cluster": "default", "node": "node-h", "service": "chat", "namespace": "llm",
        "pod": "vllm-0", "model_name": "m/llama", "engine": "0",
    }  # fmt: skip
    assert list(p1.bucket_counts) == [c * 2 for c in counts]
    assert p1.count == 16
    assert p1.start_time_unix_nano == p0.start_time_unix_nano < p1.time_unix_nano
    assert p2.count == 1
    assert p2.start_time_unix_nano > p1.start_time_unix_nano
    # the other vLLM metrics of the same snapshot came with it
    assert "gpuledger_vllm_request_success_total" in schema_metrics(reqs[0].message)


# -- probe spans --------------------------------------------------------------------


def probe(ok: bool, **kw: Any) -> ProbeResult:
    ep = VllmEndpoint(url="http://10.0.0.9:8000", service="chat", namespace="llm",
                      api_key="sk-never-exported")  # fmt: skip
    base: dict[str, Any] = {"endpoint": ep, "model_name": "m/llama", "started_unix": 1.7e9}
    if ok:
        base |= {"ttft_s": 0.25, "tpot_s": 0.02, "e2e_s": 0.4, "output_tokens_per_s": 50.0,
                 "prompt_tokens": 9, "completion_tokens": 8}  # fmt: skip
    return ProbeResult(ok=ok, **(base | kw))


def test_probe_spans_for_a_success_and_a_failure(receiver: OtlpReceiver) -> None:
    cfg = OtelConfig(enabled=True, endpoint=receiver.url + "/v1/metrics", interval_seconds=3600)
    empty = SnapshotExporter("node-s", "1").latest
    export = otel.OtelExport(cfg, node="node-s", version="1", samples=lambda: empty)
    assert export.traces_url == receiver.url + "/v1/traces"  # a signal URL as the base
    export.start()
    t0 = time.time()
    try:
        export.on_probe(probe(True))
        export.on_probe(probe(False, reason="timeout", detail="timed out waiting for it",
                              started_unix=t0 - 3))  # fmt: skip
        export.force_flush()
    finally:
        export.stop()
    got = {kv(s.attributes)["ok"]: (res, s) for res, s in spans(receiver)}
    assert set(got) == {True, False}
    res, good = got[True]
    assert res["service.name"] == "gpuledger"
    assert res["k8s.node.name"] == "node-s"
    assert good.name == "gpuledger.probe"
    assert good.kind == Span.SpanKind.SPAN_KIND_CLIENT
    assert good.status.code == Status.StatusCode.STATUS_CODE_OK
    assert good.start_time_unix_nano == int(1.7e9 * 1e9)
    assert good.end_time_unix_nano - good.start_time_unix_nano == pytest.approx(0.4e9, abs=1e3)
    assert kv(good.attributes) == {
        "node": "node-s", "endpoint": "http://10.0.0.9:8000", "service": "chat",
        "namespace": "llm", "model_name": "m/llama", "ok": True, "ttft_s": 0.25,
        "tpot_s": 0.02, "e2e_s": 0.4, "output_tokens_per_s": 50.0, "prompt_tokens": 9,
        "completion_tokens": 8,
    }  # fmt: skip
    _, bad = got[False]
    assert bad.status.code == Status.StatusCode.STATUS_CODE_ERROR
    assert bad.status.message == "timeout"
    attrs = kv(bad.attributes)
    assert attrs["reason"] == "timeout"
    assert attrs["ok"] is False
    assert attrs["detail"] == "timed out waiting for it"
    assert not {"ttft_s", "tpot_s", "e2e_s"} & set(attrs)
    assert bad.start_time_unix_nano == int((t0 - 3) * 1e9)
    assert bad.end_time_unix_nano >= int(t0 * 1e9)  # failures end when the result came
    for r in receiver.of("/v1/traces"):
        assert b"sk-never-exported" not in r.message.SerializeToString()


def test_agent_probes_feed_spans_histograms_and_the_ledger(
    tmp_path: Path, receiver: OtlpReceiver, running: list[Agent]
) -> None:
    behaviour = VllmBehaviour(served_model="m/standin", first_token_delay_s=0.05)
    with VllmStandIn(behaviour) as vllm:
        cfg = agent_config(
            tmp_path,
            simulate={"enabled": False},
            nvml={"enabled": False},
            collection={"interval_seconds": 0.3},
            vllm={
                "enabled": True,
                "endpoints": [{"url": vllm.url, "service": "chat", "namespace": "llm"}],
            },
            probes={"interval_seconds": 0.5, "max_tokens": 4, "timeout_seconds": 5},
            otel=otel_section(receiver),
        )
        agent = start(running, cfg)

        def probe_span() -> Any:
            ok = [s for _, s in spans(receiver) if kv(s.attributes).get("ok") is True]
            return ok[0] if ok else None

        span = wait_until(probe_span, timeout=15)
        attrs = kv(span.attributes)
        assert attrs["endpoint"] == vllm.url
        assert attrs["model_name"] == "m/standin"
        assert attrs["completion_tokens"] == 4
        assert attrs["ttft_s"] >= 0.05
        assert agent.ledger is not None
        assert agent.ledger.spool.pending_probes()

        def ttft() -> Any:
            for r in reversed(receiver.of("/v1/metrics")):
                m = schema_metrics(r.message).get("gpuledger_vllm_time_to_first_token_seconds")
                if m is not None and m.histogram.data_points[0].count >= 1:
                    return m
            return None

        (point,) = wait_until(ttft, timeout=10).histogram.data_points
        assert list(point.explicit_bounds) == list(TTFT_BUCKETS)
        assert sum(point.bucket_counts) == point.count
        assert kv(point.attributes)["service"] == "chat"


def test_fan_out_feeds_every_consumer_even_when_one_fails() -> None:
    got: list[str] = []

    def broken(_r: ProbeResult) -> None:
        raise RuntimeError("bug")

    both = fan_out(broken, lambda r: got.append(r.model_name))
    assert both is not None
    both(probe(True))
    assert got == ["m/llama"]
    only = fan_out(None, broken)
    assert only is broken
    assert fan_out(None, None) is None


# -- faults -------------------------------------------------------------------------


def test_receiver_500_then_hanging_never_blocks_the_agent(
    tmp_path: Path,
    receiver: OtlpReceiver,
    running: list[Agent],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    headers_file = tmp_path / "h.yaml"
    headers_file.write_text(yaml.safe_dump({"Authorization": f"Bearer {SECRET}"}), "utf-8")
    receiver.set_mode("500")
    cfg = agent_config(
        tmp_path,
        nvml={"interval_seconds": 0.2},
        otel=otel_section(
            receiver, interval_seconds=0.3, timeout_seconds=1, headers_file=str(headers_file)
        ),
    )
    agent = start(running, cfg)
    assert agent.otel is not None
    health = agent.otel.metrics_health
    store = agent.runtime.store

    wait_until(lambda: health.status().failures >= 3, timeout=10)
    receiver.set_mode("ok")
    wait_until(lambda: not health.status().failing, timeout=10)
    failures = health.status().failures
    receiver.set_mode("hang")
    v0, body0 = store.snapshot.version, store.rendered.body
    wait_until(lambda: health.status().failures >= failures + 2, timeout=10)
    assert store.snapshot.version >= v0 + 5, "collection stalled while the export hung"
    assert store.rendered.body != body0
    assert receiver.attempts["/v1/metrics"] > len(receiver.of("/v1/metrics"))

    t0 = time.monotonic()
    agent.stop()
    running.remove(agent)
    assert time.monotonic() - t0 < 4.0

    ours = [
        r
        for r in caplog.records
        if r.name == "gpuledger.agent.otel.health" and receiver.url in r.getMessage()
    ]
    warned = [r.getMessage() for r in ours if r.levelno == logging.WARNING]
    failed = [m for m in warned if " failed: " in m]
    assert len(failed) == 2, failed  # one per failing episode, not one per interval
    assert "500" in failed[0]
    assert "timeout" in failed[1]
    assert len([r for r in ours if "recovered after" in r.getMessage()]) == 1
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry")]
    assert not [m for m in messages(caplog) if SECRET in m]
    assert SECRET not in str(health.status())


def test_stop_is_bounded_while_an_export_hangs(receiver: OtlpReceiver) -> None:
    receiver.set_mode("hang")
    exporter = SnapshotExporter("n", "1")
    exporter.render(Snapshot())
    cfg = OtelConfig(enabled=True, endpoint=receiver.url, interval_seconds=0.2, timeout_seconds=60)
    export = otel.OtelExport(cfg, node="n", version="1", samples=lambda: exporter.latest)
    export.start()
    export.on_probe(probe(True))
    wait_until(lambda: receiver.attempts["/v1/metrics"] >= 1, timeout=5)
    t0 = time.monotonic()
    export.stop(timeout_s=1.0)
    assert time.monotonic() - t0 < 2.0


def test_receiver_down_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    exporter = SnapshotExporter("n", "1")
    exporter.render(Snapshot())
    cfg = OtelConfig(enabled=True, endpoint=f"http://127.0.0.1:{free_port()}",
                     interval_seconds=0.1, timeout_seconds=0.3, probe_spans=False)  # fmt: skip
    export = otel.OtelExport(cfg, node="n", version="1", samples=lambda: exporter.latest)
    export.start()
    try:
        wait_until(lambda: export.metrics_health.status().failures >= 3, timeout=10)
    finally:
        export.stop()
    # (an export abandoned by an earlier test may still log: only this endpoint's count)
    failed = [m for m in messages(caplog) if " failed: " in m and cfg.endpoint in m]
    assert len(failed) == 1, failed
    assert "Connection refused" in failed[0] or "connect" in failed[0].lower()
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry")]


def test_health_logs_state_changes_and_scrubs_header_values(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gpuledger.agent.otel.health")
    scrub = otel_health.Scrubber({"Authorization": f"Bearer {SECRET}"})
    health = otel_health.ExportHealth("metrics", "http://user:pw@c:4318/v1/metrics?k=v", scrub)
    for _ in range(5):
        health.record(False, [f"HTTP 401 for token {SECRET}", "again"])
    health.record(True)
    health.record(True)
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 2
    assert "failed: HTTP 401 for token ***; again" in logged[0]
    assert "recovered after 5 failed exports" in logged[1]
    assert not [m for m in logged if SECRET in m or "pw" in m or "k=v" in m]
    status = health.status()
    assert (status.exports, status.failures, status.failing) == (7, 5, False)
    assert status.last_error is not None
    assert SECRET not in status.last_error


# -- optional dependency -----------------------------------------------------------


def run_python(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )


ENV = """{{"GPULEDGER_STATE_DIR": {state!r}, "GPULEDGER_SIMULATE__ENABLED": "true",
        "GPULEDGER_SIMULATE__GPUS": "2", "GPULEDGER_NVML__INTERVAL_SECONDS": "0.1",
        "GPULEDGER_OTEL__ENABLED": {enabled!r}}}"""


# What the ``otel`` extra brings. The OpenTelemetry *API* (``opentelemetry``,
# ``opentelemetry.trace``, ...) is imported by FastAPI itself (>= 0.16x depends on
# opentelemetry-api), so the base install has it; the SDK and the exporter it does not.
OTEL_EXTRA = ("opentelemetry.sdk", "opentelemetry.exporter", "opentelemetry.proto")
OTEL_PIPELINE = tuple(f"gpuledger.agent.otel.{m}" for m in ("export", "health", "readers", "spans"))


def test_disabled_otel_imports_no_opentelemetry_sdk(tmp_path: Path) -> None:
    env = ENV.format(state=str(tmp_path / "state"), enabled="false")
    code = f"""
import json, sys, time
OTEL_EXTRA = {OTEL_EXTRA!r}
OTEL_PIPELINE = {OTEL_PIPELINE!r}
import gpuledger.cli
from gpuledger.agent.config import load_config
from gpuledger.agent.main import Agent
agent = Agent(load_config(None, environ={env}))
agent.start()
time.sleep(0.5)
agent.stop()
assert agent.otel is None
print(json.dumps(sorted(m for m in sys.modules
                        if m.startswith(OTEL_EXTRA) or m in OTEL_PIPELINE)))
"""
    done = run_python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_enabled_without_the_sdk_is_a_config_error(tmp_path: Path) -> None:
    env = ENV.format(state=str(tmp_path / "state"), enabled="true")
    code = f"""
import json, sys

class NoOtel:
    def find_spec(self, name, path=None, target=None):
        if name.startswith({OTEL_EXTRA!r}):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, NoOtel())
from gpuledger.agent.config import ConfigError, load_config
from gpuledger.agent.main import Agent
try:
    Agent(load_config(None, environ={env}))
except ConfigError as exc:
    print(json.dumps(exc.problems))
"""
    done = run_python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    ((key, message),) = json.loads(done.stdout.splitlines()[-1])
    assert key == "otel.enabled"
    assert "install gpuledger[otel]" in message


# -- config -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("otel_doc", "key"),
    [
        ({"enabled": True, "intervall_seconds": 5}, "otel.intervall_seconds"),
        ({"endpoint": "grpc://collector:4317"}, "otel.endpoint"),
        ({"endpoint": "collector:4318"}, "otel.endpoint"),
        ({"endpoint": "http://user:hunter2@collector:4318"}, "otel.endpoint"),
        ({"endpoint": "http://collector:4318/?token=hunter2"}, "otel.endpoint"),
        ({"metrics_endpoint": "ftp://collector/v1/metrics"}, "otel.metrics_endpoint"),
        ({"compression": "zstd"}, "otel.compression"),
        ({"headers": {"Bad Header": "x"}}, "otel.headers"),
        ({"interval_seconds": 0}, "otel.interval_seconds"),
    ],
)
def test_bad_otel_config_is_refused_with_the_key(
    tmp_path: Path, otel_doc: dict[str, Any], key: str
) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump({"otel": otel_doc}), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert [k for k, _ in err.value.problems] == [key]
    assert "hunter2" not in str(err.value)


def test_unknown_otel_environment_variable_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, environ={"GPULEDGER_OTEL__ENDPIONT": "http://x:4318"})
    assert err.value.problems == [("GPULEDGER_OTEL__ENDPIONT", "no such setting")]


def test_signal_urls_follow_the_otlp_endpoint_convention() -> None:
    base = OtelConfig(endpoint="https://otlp.example.com:4318/prefix/")
    assert base.signal_url("metrics") == "https://otlp.example.com:4318/prefix/v1/metrics"
    assert base.signal_url("traces") == "https://otlp.example.com:4318/prefix/v1/traces"
    full = OtelConfig(endpoint="http://c:4318/v1/traces")
    assert full.signal_url("metrics") == "http://c:4318/v1/metrics"
    explicit = OtelConfig(metrics_endpoint="http://m:9090/api/v1/otlp/v1/metrics")
    assert explicit.signal_url("metrics") == "http://m:9090/api/v1/otlp/v1/metrics"
    assert explicit.signal_url("traces") == "http://127.0.0.1:4318/v1/traces"
    assert "s3cr" not in repr(OtelConfig(headers={"Authorization": "Bearer s3cr"}))


def test_headers_file_formats(tmp_path: Path) -> None:
    assert parse_headers_text("# c\n\nAuthorization: Bearer a:b=\nX-Org:  t1 \n") == {
        "Authorization": "Bearer a:b=",
        "X-Org": "t1",
    }
    assert parse_headers_text('Authorization: "Bearer x #1"\n') == {"Authorization": "Bearer x #1"}
    assert parse_headers_text("{Authorization: Bearer y, X-Org: 2}") == {
        "Authorization": "Bearer y",
        "X-Org": "2",
    }
    f = tmp_path / "h"
    f.write_text("X-Org: file\n", "utf-8")
    cfg = OtelConfig(headers={"x-org": "inline", "X-Keep": "k"}, headers_file=f)
    assert cfg.resolved_headers() == {"X-Keep": "k", "X-Org": "file"}


@pytest.mark.parametrize(
    "content", [f"Authorization Bearer {SECRET}\n", f"- Bearer {SECRET}\n", "", "[unclosed"]
)
def test_bad_headers_file_names_the_key_and_quotes_no_value(tmp_path: Path, content: str) -> None:
    f = tmp_path / "h"
    f.write_text(content, "utf-8")
    with pytest.raises(ConfigError) as err:
        OtelConfig(headers_file=f).resolved_headers()
    ((key, message),) = err.value.problems
    assert key == "otel.headers_file"
    assert SECRET not in message
    with pytest.raises(ConfigError) as missing:
        OtelConfig(headers_file=tmp_path / "absent").resolved_headers()
    assert missing.value.problems[0][0] == "otel.headers_file"


# -- names through Prometheus' OTLP ingestion -----------------------------------------

# A port of prometheus/otlptranslator (metric_namer.go, unit_namer.go): what Prometheus
# names an OTLP metric in its two suffix-adding translation strategies.
UNIT_WORDS = {"d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds",
              "By": "bytes", "J": "joules", "W": "watts", "Cel": "celsius", "Hz": "hertz",
              "1": "", "%": "percent"}  # fmt: skip
PER_WORDS = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week"}


def unit_suffixes(unit: str) -> tuple[str, str]:
    main, _, per = unit.partition("/")
    main, per = main.strip(), per.strip()
    main_word = UNIT_WORDS.get(main, main) if main and not set(main) & set("{}") else ""
    per_word = f"per_{PER_WORDS.get(per, per)}" if per and not set(per) & set("{}") else ""
    return main_word, per_word


def underscore_escaping_with_suffixes(name: str, unit: str, kind: schema.Kind) -> str:
    tokens = [t for t in re.split(r"[^a-zA-Z0-9:]+", name) if t]
    main, per = unit_suffixes(unit)
    if main and main not in tokens:
        tokens.append(main)
    if per and per not in tokens:
        tokens.append(per)
    if kind is schema.Kind.COUNTER:
        tokens = [t for t in tokens if t != "total"] + ["total"]
    if unit == "1" and kind is schema.Kind.GAUGE:
        tokens = [t for t in tokens if t != "ratio"] + ["ratio"]
    return "_".join(tokens)


def utf8_with_suffixes(name: str, unit: str, kind: schema.Kind) -> str:
    def trim(n: str, suffix: str) -> str:
        return n[: -(len(suffix) + 1)] if n.endswith(suffix) and len(n) > len(suffix) + 1 else n

    tail: list[str] = []
    if unit == "1" and kind is schema.Kind.GAUGE:
        name, tail = trim(name, "ratio"), ["_ratio", *tail]
    if kind is schema.Kind.COUNTER:
        name, tail = trim(name, "total"), ["_total", *tail]
    main, per = unit_suffixes(unit)
    if per:
        name, tail = trim(name, per), [f"_{per}", *tail]
    if main and not name.endswith(main):
        name += f"_{main}"
    return name + "".join(tail)


def test_every_schema_name_survives_prometheus_otlp_translation() -> None:
    assert {s.unit for s in schema.SPECS} <= set(otel_readers.UCUM_UNITS)
    for spec in schema.SPECS:
        unit = otel_readers.otel_unit(spec)
        for translate in (underscore_escaping_with_suffixes, utf8_with_suffixes):
            assert translate(spec.name, unit, spec.kind) == spec.name, (spec.name, unit)
    # why unitless metrics carry no "1", and why two metrics carry no unit at all
    gauge = schema.Kind.GAUGE
    lost = "gpuledger_gpu_lost"
    assert underscore_escaping_with_suffixes(lost, "1", gauge) == "gpuledger_gpu_lost_ratio"
    days = schema.PG_DAYS_UNTIL_FULL.name
    assert utf8_with_suffixes(days, "d", gauge) == days + "_days"
    grown = schema.PG_GROWTH.name
    assert underscore_escaping_with_suffixes(grown, "By/d", schema.Kind.GAUGE) != grown
    assert utf8_with_suffixes(grown, "By", schema.Kind.GAUGE) != grown


def test_attribute_and_observation_shapes() -> None:
    exporter = SnapshotExporter("node-a", "1")
    exporter.render(Snapshot())
    (build,) = exporter.latest.of(schema.BUILD_INFO)
    assert otel_readers.attributes(exporter.latest, build) == {
        "cluster": "default",
        "node": "node-a",
        "version": "1",
    }
