"""Wire config -> collectors -> runtime -> HTTP server, and run until SIGTERM."""

from __future__ import annotations

import contextlib
import logging
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn

from gpuledger import __version__
from gpuledger.agent import logs
from gpuledger.agent.config import AgentConfig, ConfigError
from gpuledger.agent.exporter import SnapshotExporter, snapshot_devices
from gpuledger.agent.runtime import AgentRuntime, Schedule
from gpuledger.agent.server import ASGIApp, create_app
from gpuledger.agent.snapshot import CollectorState, Snapshot, SnapshotStore
from gpuledger.chargeback.attribution.claims import Claim
from gpuledger.chargeback.ledger.model import StoreError
from gpuledger.chargeback.ledger.storage_growth import Growth, GrowthKey
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.collectors.base import Collector
from gpuledger.collectors.gpu.readings import GpuReading, GpuTelemetry
from gpuledger.collectors.pgvector.types import PgTelemetry
from gpuledger.collectors.vllm.probe.runner import ProbeStatus
from gpuledger.collectors.vllm.types import ProbeResult, VllmTelemetry

if TYPE_CHECKING:
    from gpuledger.agent.otel.export import OtelExport
    from gpuledger.agent.reporter import Reporter
    from gpuledger.chargeback.attribution.resolver import WorkloadResolver
    from gpuledger.chargeback.ledger.flusher import Ledger
    from gpuledger.chargeback.ledger.storage_growth import StorageGrowth
    from gpuledger.collectors.vllm.probe.runner import ProbeRunner
    from gpuledger.sim.node import SimulatedNode

log = logging.getLogger("gpuledger.agent")


def build_workload_resolver(cfg: AgentConfig, sim: SimulatedNode | None) -> WorkloadResolver:
    """Who holds a device. A simulated node is attributed through the real path: its
    processes get cgroup files under the state directory and its pods a directory."""
    from gpuledger.chargeback.attribution.resolver import WorkloadResolver, build_resolver
    from gpuledger.sim.attribution import simulated_sources

    if sim is None:
        return build_resolver(cfg.attribution, cfg.node_name)
    proc_root, pods = simulated_sources(
        sim, cfg.state_dir / "simulated-proc", node_name=cfg.node_name
    )
    return WorkloadResolver(
        proc_root=proc_root, pods=pods, static=None, label_keys=cfg.attribution.label_keys
    )


def _read_token(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError([("http.api_token_file", f"cannot read: {exc.strerror}")]) from None
    if not token:
        raise ConfigError([("http.api_token_file", "file is empty")])
    return token


def _simulated_node(cfg: AgentConfig) -> SimulatedNode | None:
    if not cfg.simulate.enabled:
        return None
    from gpuledger.sim.node import SimulatedNode

    lose = cfg.simulate.lose_gpu
    return SimulatedNode(
        cfg.simulate.seed,
        cfg.simulate.gpus,
        clock=time.time,
        lose_gpu=None if lose is None else lose.index,
        lose_after_s=0.0 if lose is None else lose.after_seconds,
    )


def _nvml_collector(sim: SimulatedNode | None) -> Collector:
    from gpuledger.collectors.gpu.nvml import NvmlCollector

    if sim is not None:
        return NvmlCollector(sim.nvml)
    from gpuledger.collectors.gpu.nvml_backend import load_real

    return NvmlCollector(load_real())


def build_collectors(
    cfg: AgentConfig, sim: SimulatedNode | None = None
) -> list[tuple[Collector, Schedule]]:
    out: list[tuple[Collector, Schedule]] = []
    if cfg.nvml.enabled:
        out.append(
            (
                _nvml_collector(sim),
                Schedule(cfg.interval_for(cfg.nvml), cfg.nvml.timeout_seconds, GpuTelemetry),
            )
        )
    if cfg.dcgm.enabled:
        from gpuledger.collectors.gpu.dcgm import DcgmCollector

        dcgm = DcgmCollector(
            cfg.dcgm.url, timeout_s=cfg.dcgm.timeout_seconds, max_bytes=cfg.dcgm.max_bytes
        )
        out.append(
            (dcgm, Schedule(cfg.interval_for(cfg.dcgm), cfg.dcgm.timeout_seconds, GpuTelemetry))
        )
    return out


def _open_ledger_store(url: str) -> AuditableLedgerStore:
    """The store named by ``ledger.url``; a bad URL or an unopenable store is a config
    error naming the key (the password never in the message)."""
    from gpuledger.chargeback.ledger.store import open_store
    from gpuledger.redact import safe_url

    try:
        return open_store(url)
    except ValueError as exc:
        raise ConfigError([("ledger.url", str(exc))]) from None
    except StoreError as exc:
        raise ConfigError([("ledger.url", f"cannot open {safe_url(url)}: {exc}")]) from None


def _build_otel(cfg: AgentConfig, exporter: SnapshotExporter) -> OtelExport:
    """The OTLP export (the ``otel`` extra): imported only when ``otel.enabled``."""
    from gpuledger.agent.otel.config import require_sdk

    require_sdk()
    from gpuledger.agent.otel.export import OtelExport

    return OtelExport(
        cfg.otel, node=cfg.node_name, version=__version__, samples=lambda: exporter.latest
    )


def _fan_out(
    *callbacks: Callable[[ProbeResult], None] | None,
) -> Callable[[ProbeResult], None] | None:
    """One ``on_result`` for several consumers; one that fails does not starve the rest."""
    present = [c for c in callbacks if c is not None]
    if len(present) <= 1:
        return present[0] if present else None

    def each(result: ProbeResult) -> None:
        for callback in present:
            try:
                callback(result)
            except Exception:
                log.exception("probe result consumer %r failed", callback)

    return each


def _build_ledger(cfg: AgentConfig, claims_for: Callable[[GpuReading], Sequence[Claim]]) -> Ledger:
    from gpuledger.chargeback.ledger.flusher import Ledger
    from gpuledger.chargeback.ledger.spool import Spool

    try:
        spool = Spool(cfg.spool_path())
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(
            [("ledger.spool_path", f"cannot open {cfg.spool_path()}: {exc}")]
        ) from None
    store = _open_ledger_store(cfg.ledger_url())
    return Ledger(
        cfg.node_name,
        spool=spool,
        store=store,
        claims_for=claims_for,
        policy=cfg.ledger.split_policy,
        max_gap_s=cfg.max_gap_s(),
        flush_interval_s=cfg.ledger.flush_interval_seconds,
    )


class Agent:
    """Everything one agent process runs, built from its config: the ``node`` role's
    collectors and ledger, the ``reporter`` role's monthly chargeback, or both."""

    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        token = _read_token(cfg.http.api_token_file)
        self.resolver: WorkloadResolver | None = None
        self.ledger: Ledger | None = None
        self.probes: ProbeRunner | None = None
        self.growth: StorageGrowth | None = None
        self.reporter: Reporter | None = None
        self.latest_growth: Mapping[GrowthKey, Growth] = {}
        self.otel: OtelExport | None = None
        exporter = SnapshotExporter(
            node=cfg.node_name,
            version=__version__,
            ledger=lambda: self.ledger.status() if self.ledger is not None else None,
            probes=lambda: self.probes.status() if self.probes is not None else ProbeStatus(),
            storage_growth=lambda: self.latest_growth,
            reporter=lambda: self.reporter.status() if self.reporter is not None else None,
        )
        self.runtime = AgentRuntime(SnapshotStore(exporter.render))
        if cfg.otel.enabled:
            self.otel = _build_otel(cfg, exporter)
        if cfg.has_role("node"):
            self._build_node(cfg)
        ledger_store = self.ledger.store if self.ledger is not None else None
        if cfg.has_role("reporter"):
            self.reporter = self._build_reporter(cfg, ledger_store, self.runtime.store.refresh)
            ledger_store = ledger_store or self.reporter.store
        self.app = create_app(
            self.runtime,
            api_token=token,
            metrics_require_token=cfg.http.metrics_require_token,
            ledger_store=ledger_store,
            reports_dir=cfg.reports_dir() if self.reporter is not None else None,
            max_request_bytes=cfg.http.max_request_bytes,
        )

    def _build_node(self, cfg: AgentConfig) -> None:
        sim = _simulated_node(cfg)
        self.resolver = resolver = build_workload_resolver(cfg, sim)
        if cfg.ledger.enabled:
            self.ledger = _build_ledger(cfg, resolver.claims)
        collectors = build_collectors(cfg, sim)
        if cfg.vllm.enabled:
            collectors.append(self._vllm_collector(cfg, resolver))
            if cfg.probes.enabled:
                self.probes = self._probe_runner(cfg)
        if cfg.pgvector.enabled:
            collectors.append(self._pgvector_collector(cfg))
        gpu_sources = {c.name for c, _ in collectors if c.name in ("nvml", "dcgm")}
        for collector, schedule in collectors:
            self.runtime.add(collector, schedule)
        if self.ledger is not None:
            ledger = self.ledger

            def on_update(snap: Snapshot, state: CollectorState) -> None:
                if state.name in gpu_sources:
                    ledger.observe(snapshot_devices(snap))
                elif state.name == "vllm":
                    telemetry = snap.reading("vllm", VllmTelemetry)
                    if telemetry is not None:
                        ledger.observe_vllm(telemetry)
                elif state.name == "pgvector" and self.growth is not None:
                    pg = snap.reading("pgvector", PgTelemetry)
                    if pg is not None:
                        self.growth.record(pg)
                        self.latest_growth = self.growth.compute(time.time())

            self.runtime.store.subscribe(on_update)

    @staticmethod
    def _build_reporter(
        cfg: AgentConfig, store: AuditableLedgerStore | None, on_run: Callable[[], None]
    ) -> Reporter:
        """The reporter reads the node's own ledger store when this process has one,
        else opens the configured (fleet) ledger read-only: it never migrates it."""
        from gpuledger.agent.reporter import Reporter
        from gpuledger.redact import safe_url

        url = cfg.ledger_url()
        if store is None:
            store = _open_ledger_store(url)
        return Reporter(
            cfg.report, store, cfg.reports_dir(), store_label=safe_url(url), on_run=on_run
        )

    def _vllm_collector(
        self, cfg: AgentConfig, resolver: WorkloadResolver
    ) -> tuple[Collector, Schedule]:
        from gpuledger.collectors.vllm.discovery import EndpointSource
        from gpuledger.collectors.vllm.scrape import VllmCollector

        try:
            self.vllm_endpoints = EndpointSource(
                cfg.vllm,
                pods=resolver.pods,
                label_keys=cfg.attribution.label_keys,
                node_name=cfg.node_name,
            )
        except ValueError as exc:
            raise ConfigError([("vllm", str(exc))]) from None
        collector = VllmCollector(
            self.vllm_endpoints, timeout_s=cfg.vllm.timeout_seconds, max_bytes=cfg.vllm.max_bytes
        )
        # the whole collection (all endpoints in parallel) gets a little over one timeout
        schedule = Schedule(
            cfg.interval_for(cfg.vllm), cfg.vllm.timeout_seconds + 2.0, VllmTelemetry
        )
        return collector, schedule

    def _pgvector_collector(self, cfg: AgentConfig) -> tuple[Collector, Schedule]:
        from gpuledger.chargeback.ledger.storage_growth import StorageGrowth
        from gpuledger.collectors.pgvector.catalog import PgvectorCollector

        pg = cfg.pgvector
        if self.ledger is not None:  # growth needs the spool for its samples
            window = pg.growth_window_days * 86400.0
            self.ledger.storage_retain_s = window + 86400.0
            self.growth = StorageGrowth(
                self.ledger.spool, cfg.node_name, window_s=window, min_samples=pg.growth_min_samples
            )
        # a database that hangs is given up on by the collector itself; the runner's
        # timeout is the backstop: connect + a few statement timeouts
        worst = max(
            db.connect_timeout_s + 3 * db.statement_timeout_ms / 1000 + 5 for db in pg.databases
        )
        return PgvectorCollector(pg.databases), Schedule(pg.interval_seconds, worst, PgTelemetry)

    def _probe_runner(self, cfg: AgentConfig) -> ProbeRunner:
        from gpuledger.collectors.vllm.probe.runner import ProbeRunner

        p = cfg.probes
        ledger = self.ledger
        spans = self.otel.on_probe if self.otel is not None and cfg.otel.probe_spans else None
        return ProbeRunner(
            self.vllm_endpoints,
            lambda: self.runtime.store.snapshot.reading("vllm", VllmTelemetry),
            interval_s=p.interval_seconds,
            timeout_s=p.timeout_seconds,
            max_tokens=p.max_tokens,
            prompt=p.prompt,
            model=p.model,
            queue_threshold=p.queue_threshold,
            api=p.api,
            on_result=_fan_out(ledger.record_probe if ledger is not None else None, spans),
            on_verdict=ledger.record_verdict if ledger is not None else None,
        )

    def start(self) -> None:
        if self.otel is not None:
            self.otel.start()
        if self.ledger is not None:
            self.ledger.start()
        self.runtime.start()
        if self.probes is not None:
            self.probes.start()
        if self.reporter is not None:
            self.reporter.start()

    def stop(self) -> None:
        if self.reporter is not None:
            self.reporter.stop()
        if self.probes is not None:
            self.probes.stop()
        if self.otel is not None:  # a last export, bounded (~2 s) even if the receiver hangs
            self.otel.stop()
        self.runtime.stop()
        if self.ledger is not None:
            self.ledger.stop()
        elif self.reporter is not None:
            self.reporter.store.close()
        if self.resolver is not None:
            self.resolver.close()


def build(cfg: AgentConfig) -> tuple[AgentRuntime, ASGIApp]:
    agent = Agent(cfg)
    return agent.runtime, agent.app


class _Server(uvicorn.Server):
    """uvicorn, minus its re-raising of SIGTERM after shutdown.

    uvicorn re-raises the signal it caught once it has stopped serving, which kills the
    process with the default handler before the agent's own cleanup (collectors closed,
    NVML shut down, later the ledger spool flushed) can run. Here a signal only asks the
    server to stop; ``run_agent`` then finishes the shutdown and exits 0.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        def on_signal(sig: int, _frame: object) -> None:
            if self.should_exit:
                self.force_exit = True
            self.should_exit = True
            log.info("received %s, shutting down", signal.Signals(sig).name)

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def uvicorn_config(cfg: AgentConfig, app: ASGIApp) -> uvicorn.Config:
    """The HTTP server: bind address from config, optional TLS (and client certificates),
    bounded concurrency; request bodies are bounded in the app itself."""
    import ssl

    http = cfg.http
    tls: dict[str, object] = {}
    if http.tls:
        tls = {"ssl_certfile": str(http.tls_cert_file), "ssl_keyfile": str(http.tls_key_file)}
        if http.tls_client_ca_file is not None:
            tls["ssl_ca_certs"] = str(http.tls_client_ca_file)
            tls["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    return uvicorn.Config(
        app,
        host=cfg.listen.host,
        port=cfg.listen.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
        limit_concurrency=http.max_concurrent_connections,
        h11_max_incomplete_event_size=16 * 1024,  # request line + headers
        server_header=False,
        **tls,  # type: ignore[arg-type]
    )


def run_agent(cfg: AgentConfig) -> int:
    logs.configure(cfg.log.level, cfg.log.format)
    agent = Agent(cfg)
    runtime = agent.runtime
    server = _Server(uvicorn_config(cfg, agent.app))
    agent.start()
    log.info(
        "gpuledger agent %s serving %s://%s:%d/metrics",
        __version__,
        "https" if cfg.http.tls else "http",
        cfg.listen.host,
        cfg.listen.port,
        extra={
            "fields": {
                "node": cfg.node_name,
                "roles": ",".join(cfg.roles),
                "collectors": ",".join(r.name for r in runtime.runners),
                "simulated": cfg.simulate.enabled,
            }
        },
    )
    try:
        server.run()
    finally:
        agent.stop()
        log.info("gpuledger agent stopped")
    return 0
