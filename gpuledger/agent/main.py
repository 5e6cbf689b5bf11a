"""Wire config -> collectors -> runtime -> HTTP server, and run until SIGTERM."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from gpuledger import __version__
from gpuledger.agent import logs
from gpuledger.agent.config import AgentConfig, ConfigError
from gpuledger.agent.exporter import SnapshotExporter
from gpuledger.agent.runtime import AgentRuntime, Schedule
from gpuledger.agent.server import ASGIApp, create_app
from gpuledger.agent.snapshot import SnapshotStore
from gpuledger.collectors.base import Collector
from gpuledger.collectors.readings import GpuTelemetry

log = logging.getLogger("gpuledger.agent")


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


def _nvml_collector(cfg: AgentConfig) -> Collector:
    from gpuledger.collectors.nvml import NvmlCollector

    if cfg.simulate.enabled:
        from gpuledger.collectors.simulation import simulated_nvml_api

        return NvmlCollector(simulated_nvml_api(seed=cfg.simulate.seed, gpus=cfg.simulate.gpus))
    from gpuledger.collectors.nvml_backend import load_real

    return NvmlCollector(load_real())


def build_collectors(cfg: AgentConfig) -> list[tuple[Collector, Schedule]]:
    out: list[tuple[Collector, Schedule]] = []
    if cfg.nvml.enabled:
        out.append(
            (
                _nvml_collector(cfg),
                Schedule(cfg.interval_for(cfg.nvml), cfg.nvml.timeout_seconds, GpuTelemetry),
            )
        )
    if cfg.dcgm.enabled:
        from gpuledger.collectors.dcgm import DcgmCollector

        dcgm = DcgmCollector(
            cfg.dcgm.url, timeout_s=cfg.dcgm.timeout_seconds, max_bytes=cfg.dcgm.max_bytes
        )
        out.append(
            (dcgm, Schedule(cfg.interval_for(cfg.dcgm), cfg.dcgm.timeout_seconds, GpuTelemetry))
        )
    return out


def build(cfg: AgentConfig) -> tuple[AgentRuntime, ASGIApp]:
    token = _read_token(cfg.http.api_token_file)
    exporter = SnapshotExporter(node=cfg.node_name, version=__version__)
    runtime = AgentRuntime(SnapshotStore(exporter.render))
    for collector, schedule in build_collectors(cfg):
        runtime.add(collector, schedule)
    app = create_app(runtime, api_token=token, metrics_require_token=cfg.http.metrics_require_token)
    return runtime, app


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


def run_agent(cfg: AgentConfig) -> int:
    logs.configure(cfg.log.level, cfg.log.format)
    runtime, app = build(cfg)
    server = _Server(
        uvicorn.Config(
            app,
            host=cfg.listen.host,
            port=cfg.listen.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
    )
    runtime.start()
    log.info(
        "gpuledger agent %s serving http://%s:%d/metrics",
        __version__,
        cfg.listen.host,
        cfg.listen.port,
        extra={
            "fields": {
                "node": cfg.node_name,
                "collectors": ",".join(r.name for r in runtime.runners),
                "simulated": cfg.simulate.enabled,
            }
        },
    )
    try:
        server.run()
    finally:
        runtime.stop()
        log.info("gpuledger agent stopped")
    return 0
