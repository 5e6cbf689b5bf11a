"""The contract between a source and the agent runtime.

Modelled on node_exporter's collectors: each source is one object with a ``name`` and a
``collect()`` that either returns a complete, immutable reading or raises. The runtime
(``gpuledger.agent.runtime``) owns timeouts, scheduling and the ``collector_up`` metric, so
a collector never catches an error just to hide it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


class CollectorError(Exception):
    """A collection failed in a way worth one clear log line (not a traceback)."""


class CollectorDisabled(CollectorError):
    """The source cannot work on this host at all (e.g. no NVML library): the runtime
    logs the message once, reports ``up=0`` and stops scheduling the collector."""


@runtime_checkable
class Collector(Protocol):
    name: str

    def collect(self) -> object:
        """Read the source once and return an immutable reading; raise on failure."""
        ...

    def close(self) -> None:
        """Release handles (NVML shutdown, HTTP clients). Called once at agent stop."""
        ...
