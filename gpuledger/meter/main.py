"""The meter's process: configuration in, one uvicorn server out, until SIGTERM.

Logs name the listen address and the upstream (credentials in its URL redacted); the
server's access log is off, since a request line is no business of the logs here and
some clients put keys in query strings.
"""

from __future__ import annotations

import logging
import os
import socket

import uvicorn

from gpuledger.meter.config import LoadedMeter
from gpuledger.meter.metrics import MeterMetrics
from gpuledger.meter.proxy import MeterApp
from gpuledger.redact import safe_url

log = logging.getLogger("gpuledger.meter")


def build_app(loaded: LoadedMeter) -> MeterApp:
    cfg = loaded.config
    node = cfg.node_name or os.environ.get("NODE_NAME") or socket.gethostname()
    metrics = MeterMetrics(
        node=node,
        cluster=cfg.cluster,
        service=cfg.service,
        namespace=cfg.namespace,
        max_tenants=cfg.tenant.max_tenants_per_service,
    )
    return MeterApp(loaded, metrics)


def server_for(app: MeterApp, loaded: LoadedMeter) -> uvicorn.Server:
    cfg = loaded.config
    config = uvicorn.Config(
        app,
        host=cfg.listen.host,
        port=cfg.listen.port,
        log_level=cfg.log_level,
        access_log=False,
        # the upstream's Server and Date headers are relayed; uvicorn's would duplicate them
        server_header=False,
        date_header=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
        timeout_keep_alive=int(max(1, cfg.timeouts.keep_alive_seconds)),
    )
    return uvicorn.Server(config)


def run(loaded: LoadedMeter) -> int:
    cfg = loaded.config
    logging.basicConfig(
        level=cfg.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    keys = len(loaded.key_hashes)
    log.info(
        "metering %s/%s at %s on %s:%d (tenant order %s, %d API keys)",
        cfg.namespace,
        cfg.service,
        safe_url(cfg.upstream),
        cfg.listen.host,
        cfg.listen.port,
        ",".join(cfg.tenant.order) or "none",
        keys,
    )
    server = server_for(build_app(loaded), loaded)
    server.run()
    return 0
