"""The contract between a collector and the agent runtime.

Modelled on node_exporter's collectors: each collector is one object with a ``name`` and a
``collect()`` that either returns a complete, immutable reading or raises, run on its
:class:`Schedule`. The runtime (``gpuledger.agent.runtime``) owns timeouts, scheduling and
the ``collector_up`` metric, so a collector never catches an error just to hide it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Schedule:
    """How the runtime runs one collector: every ``interval_s``, abandoned after
    ``timeout_s``; a reading that is not an ``expect`` counts as a failed run."""

    interval_s: float
    timeout_s: float
    expect: type  # the reading type this collector must return
    # False: /readyz does not wait for this collector's first success (an optional input,
    # such as the kubelet's pod-resources socket, that a node may not offer).
    gates_readiness: bool = True


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
