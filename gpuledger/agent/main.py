"""Wire config -> collectors -> runtime -> HTTP server, and run until SIGTERM."""

from __future__ import annotations

import contextlib
import logging
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn

from gpuledger import __version__
from gpuledger.agent import logs
from gpuledger.agent.config import AgentConfig, ConfigError
from gpuledger.agent.exporter import SnapshotExporter
from gpuledger.agent.preflight import preflight
from gpuledger.agent.runtime import AgentRuntime
from gpuledger.agent.server import ASGIApp, create_app
from gpuledger.agent.snapshot import CollectorState, Snapshot, SnapshotStore
from gpuledger.chargeback.attribution.claims import Claim
from gpuledger.chargeback.ledger.model import StoreError
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.collectors import registry
from gpuledger.collectors.gpu.readings import GpuReading
from gpuledger.collectors.source import (
    AnySource,
    BuildContext,
    Built,
    Service,
    SourceConfigError,
)
from gpuledger.collectors.workload.podresources.types import PodResourcesBoard

if TYPE_CHECKING:
    from gpuledger.agent.otel.export import OtelExport
    from gpuledger.agent.reporter import Reporter
    from gpuledger.chargeback.attribution.resolver import WorkloadResolver
    from gpuledger.chargeback.costcenters.labels import WorkloadCostCenters
    from gpuledger.chargeback.delivery.send import Deliverer
    from gpuledger.chargeback.ledger.cost_centers import CostCenterLookup
    from gpuledger.chargeback.ledger.flusher import Ledger
    from gpuledger.chargeback.ledger.storage_growth import StorageGrowth
    from gpuledger.sim.kubelet import SimulatedKubelet
    from gpuledger.sim.node import SimulatedNode

log = logging.getLogger("gpuledger.agent")


def build_workload_resolver(
    cfg: AgentConfig, sim: SimulatedNode | None, allocations: PodResourcesBoard | None = None
) -> WorkloadResolver:
    """Who holds a device. A simulated node is attributed through the real path: its
    processes get cgroup files under the state directory and its pods a directory.
    ``allocations`` is what the pod-resources source (when enabled) publishes."""
    from gpuledger.chargeback.attribution.resolver import WorkloadResolver, build_resolver
    from gpuledger.sim.attribution import simulated_sources

    if sim is None:
        return build_resolver(cfg.attribution, cfg.node_name, allocations)
    proc_root, pods = simulated_sources(
        sim, cfg.state_dir / "simulated-proc", node_name=cfg.node_name
    )
    return WorkloadResolver(
        proc_root=proc_root,
        pods=pods,
        static=None,
        label_keys=cfg.attribution.label_keys,
        allocations=allocations,
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


def build_sources(
    cfg: AgentConfig, ctx: BuildContext, live: dict[str, object]
) -> list[tuple[AnySource, Built[object]]]:
    """Every registered source built from its section, in registry order; each one's
    live state goes into ``live`` (the exporter's) under its name. A section that cannot
    be used here is a config error naming its key."""
    out: list[tuple[AnySource, Built[object]]] = []
    for source in registry.sources():
        try:
            built = source.build(cfg.section(source), ctx)
        except SourceConfigError as exc:
            raise ConfigError([(exc.key, exc.message)]) from None
        if built.live is not None:
            live[source.name] = built.live
        out.append((source, built))
    return out


def _build_delivery(cfg: AgentConfig, url: str) -> Deliverer | None:
    """The report's delivery (``report.delivery``), its record in the same ledger."""
    if cfg.report.delivery is None:
        return None
    from gpuledger.chargeback.delivery.contents import DeliveryError
    from gpuledger.chargeback.delivery.record import open_delivery_log
    from gpuledger.chargeback.delivery.send import Deliverer

    try:
        record = open_delivery_log(url, cfg.report.fleet)
    except (ValueError, DeliveryError) as exc:
        raise ConfigError([("report.delivery", str(exc))]) from None
    return Deliverer(cfg.report.delivery, record, fleet=cfg.report.fleet)


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


def build_cost_center_lookup(
    cfg: AgentConfig, resolver: WorkloadResolver, sim: SimulatedNode | None
) -> WorkloadCostCenters:
    """What the ledger records as each owner's cost center: pod labels, annotations, then
    namespace labels (``docs/cost-centers.md``); a simulated node's namespaces are the
    simulation's (``sim/costcenters.py``)."""
    from gpuledger.chargeback.costcenters.labels import build_lookup

    namespaces = None
    if sim is not None:
        from gpuledger.sim.costcenters import namespaces as simulated_namespaces

        namespaces = simulated_namespaces()
    keys = cfg.report.cost_centers.label_keys
    return build_lookup(keys, resolver.pods, cfg.attribution.kubernetes, namespaces)


def _build_ledger(
    cfg: AgentConfig,
    claims_for: Callable[[GpuReading], Sequence[Claim]],
    cost_center_of: CostCenterLookup | None = None,
) -> Ledger:
    from gpuledger.chargeback.ledger.flusher import Ledger
    from gpuledger.chargeback.ledger.spool import Spool

    try:
        spool = Spool(cfg.spool_path(), cluster=cfg.cluster)
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
        cluster=cfg.cluster,
        cost_center_of=cost_center_of,
    )


class Agent:
    """Everything one agent process runs, built from its config: the ``node`` role's
    collectors and ledger, the ``reporter`` role's monthly chargeback, or both."""

    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        token = _read_token(cfg.http.api_token_file)
        self.resolver: WorkloadResolver | None = None
        self.sim_kubelet: SimulatedKubelet | None = None
        self.ledger: Ledger | None = None
        self.cost_centers: WorkloadCostCenters | None = None  # what the ledger records
        self.services: list[Service] = []  # the sources' background work (probes)
        self.reporter: Reporter | None = None
        self.otel: OtelExport | None = None
        self.live: dict[str, object] = {}  # each source's live state, by source name
        exporter = SnapshotExporter(
            node=cfg.node_name,
            version=__version__,
            ledger=lambda: self.ledger.status() if self.ledger is not None else None,
            reporter=lambda: self.reporter.status() if self.reporter is not None else None,
            live=self.live,
            cluster=cfg.cluster,
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
            attribution=self._attribution if self.resolver is not None else None,
            cost_centers=cfg.report.cost_centers,
        )

    def _build_node(self, cfg: AgentConfig) -> None:
        sim = _simulated_node(cfg)
        allocations = PodResourcesBoard()
        self.resolver = resolver = build_workload_resolver(cfg, sim, allocations)
        if sim is not None:  # the simulated node's kubelet, read through the real client
            from gpuledger.sim.kubelet import SimulatedKubelet

            socket = cfg.state_dir / "simulated-kubelet.sock"
            # unix socket paths are limited to ~107 bytes: else a short temporary one
            self.sim_kubelet = SimulatedKubelet(
                sim, socket if len(str(socket)) < 100 else None
            ).start()
        if cfg.ledger.enabled:
            self.cost_centers = build_cost_center_lookup(cfg, resolver, sim)
            self.ledger = _build_ledger(cfg, resolver.claims, self.cost_centers)
        otel = self.otel
        ctx = BuildContext(
            node_name=cfg.node_name,
            default_interval_s=cfg.collection.interval_seconds,
            snapshot=lambda: self.runtime.store.snapshot,
            label_keys=cfg.attribution.label_keys,
            pods=resolver.pods,
            pod_resources=allocations,
            nvml=sim.nvml if sim is not None else None,
            kubelet_socket=self.sim_kubelet.socket if self.sim_kubelet is not None else None,
            ledger=self.ledger,
            storage_growth=self._storage_growth if self.ledger is not None else None,
            probe_spans=otel.on_probe if otel is not None and cfg.otel.probe_spans else None,
        )
        self._add_slurm_health(cfg, resolver)
        hooks: dict[str, tuple[AnySource, object]] = {}
        for source, built in build_sources(cfg, ctx, self.live):
            for collector, schedule in built.collectors:
                self.runtime.add(collector, schedule)
                hooks[collector.name] = (source, built.live)
            self.services.extend(built.services)
        if self.ledger is not None:
            ledger = self.ledger

            def on_update(snap: Snapshot, state: CollectorState) -> None:
                entry = hooks.get(state.name)
                if entry is not None and entry[0].ledger is not None:
                    entry[0].ledger(ledger, snap, entry[1])

            self.runtime.store.subscribe(on_update)

    def _add_slurm_health(self, cfg: AgentConfig, resolver: WorkloadResolver) -> None:
        """The resolver's own health checks (``gpuledger_collector_up{collector="slurm"}``:
        0 while ``scontrol`` lookups fail), run like any collector; they read memory only."""
        for collector, schedule in resolver.health_collectors(cfg.collection.interval_seconds):
            self.runtime.add(collector, schedule)

    def _attribution(self) -> list[dict[str, object]]:
        """``GET /api/v1/attribution``: each device's owners at its last attribution and
        the source that decided them."""
        assert self.resolver is not None
        return [
            {
                "uuid": d.uuid,
                "index": d.index,
                "mig_instance": d.mig_instance,
                "mig_device_uuid": d.mig_device_uuid,
                "decided_by": d.decided_by,
                "owners": [
                    {
                        "namespace": o.namespace,
                        "service": o.service,
                        "pod": o.pod,
                        "container": o.container,
                    }
                    for o in d.owners
                ],
            }
            for _key, d in sorted(
                self.resolver.decisions.items(), key=lambda kv: (kv[1].index, kv[0][1] or -1)
            )
        ]

    def _storage_growth(self, window_s: float, min_samples: int) -> StorageGrowth:
        """Growth over ``window_s`` from the samples the ledger's spool keeps (for a day
        past the window)."""
        from gpuledger.chargeback.ledger.storage_growth import StorageGrowth

        assert self.ledger is not None
        self.ledger.storage_retain_s = window_s + 86400.0
        return StorageGrowth(
            self.ledger.spool,
            self.cfg.node_name,
            window_s=window_s,
            min_samples=min_samples,
            cluster=self.cfg.cluster,
        )

    @staticmethod
    def _build_reporter(
        cfg: AgentConfig, store: AuditableLedgerStore | None, on_run: Callable[[], None]
    ) -> Reporter:
        """The reporter reads the node's own ledger store when this process has one,
        else opens the configured (fleet) ledger read-only: it never migrates it."""
        from gpuledger.agent.reporter import Reporter
        from gpuledger.chargeback.report.monthly import findings_provider
        from gpuledger.redact import safe_url

        url = cfg.ledger_url()
        if store is None:
            store = _open_ledger_store(url)
        return Reporter(
            cfg.report,
            store,
            cfg.reports_dir(),
            store_label=safe_url(url),
            on_run=on_run,
            findings=findings_provider(cfg.report),
            delivery=_build_delivery(cfg, url),
        )

    def start(self) -> None:
        if self.otel is not None:
            self.otel.start()
        if self.ledger is not None:
            self.ledger.start()
        self.runtime.start()
        for service in self.services:
            service.start()
        if self.reporter is not None:
            self.reporter.start()

    def stop(self) -> None:
        if self.reporter is not None:
            self.reporter.stop()
        for service in reversed(self.services):
            service.stop()
        if self.otel is not None:  # a last export, bounded (~2 s) even if the receiver hangs
            self.otel.stop()
        self.runtime.stop()
        if self.ledger is not None:
            self.ledger.stop()
        elif self.reporter is not None:
            self.reporter.store.close()
        if self.resolver is not None:
            self.resolver.close()
        if self.cost_centers is not None:
            self.cost_centers.close()
        if self.sim_kubelet is not None:
            self.sim_kubelet.stop()


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
    preflight(cfg)
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
