"""The pod-resources source's record: ``podresources:`` → one collector, whose answers
the attribution reads from the board the agent shares through
:attr:`BuildContext.pod_resources`."""

from __future__ import annotations

import contextlib

from gpuledger.collectors.base import CollectorError, Schedule
from gpuledger.collectors.source import BuildContext, Built, Source
from gpuledger.collectors.workload.podresources.collector import NAME, PodResourcesCollector
from gpuledger.collectors.workload.podresources.config import PodResourcesConfig
from gpuledger.collectors.workload.podresources.types import PodResourcesReading


def _build(cfg: PodResourcesConfig, ctx: BuildContext) -> Built[None]:
    if not cfg.enabled and ctx.kubelet_socket is None:
        return Built()
    socket = ctx.kubelet_socket or cfg.socket  # a simulated node's kubelet is always read
    collector = PodResourcesCollector(
        socket,
        timeout_s=cfg.timeout_seconds,
        board=ctx.pod_resources,
        keep_last_s=cfg.keep_last_seconds,
    )
    interval = cfg.interval_seconds or ctx.default_interval_s
    # The runtime's deadline is a little past the client's: the client's own timeout
    # ends a call first and is the error that gets logged.
    # /readyz does not wait for it: a node without the socket still serves the rest.
    schedule = Schedule(
        interval, 2 * cfg.timeout_seconds + 1.0, PodResourcesReading, gates_readiness=False
    )
    # A first answer before the first GPU reading is attributed (bounded by the timeout):
    # without it, an allocated device would read as idle until the collector's first run.
    # A failure here is left to that run to report.
    with contextlib.suppress(CollectorError):
        collector.collect()
    return Built(collectors=((collector, schedule),))


PODRESOURCES_SOURCE: Source[PodResourcesConfig, None] = Source(
    name=NAME,
    reading=PodResourcesReading,
    config_key=NAME,
    config_model=PodResourcesConfig,
    build=_build,
)
