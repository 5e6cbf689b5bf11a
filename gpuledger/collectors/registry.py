"""Every data source the agent knows, in export order: the one list to extend.

Adding a source is a package under ``collectors/`` (its reader, its config model, its
export of schema families and, optionally, what it feeds the ledger: see
:class:`~gpuledger.collectors.source.Source`), its families in :mod:`gpuledger.schema`,
and one line in :data:`_BUILT_IN` below. The agent's config, wiring, exporter and ledger
listener loop over :func:`sources`; none of them names a source.

The order is the ``/metrics`` order of the sources' families (and the order collectors
are scheduled and built in: a source may use what an earlier one provided, as the probes
use the vLLM source's endpoints).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from gpuledger.collectors.gateway.source import GATEWAY_SOURCE
from gpuledger.collectors.gpu.source import DCGM_SOURCE, NVML_SOURCE
from gpuledger.collectors.pgvector.source import PGVECTOR_SOURCE
from gpuledger.collectors.source import AnySource
from gpuledger.collectors.vllm.probe.source import PROBES_SOURCE
from gpuledger.collectors.vllm.source import VLLM_SOURCE
from gpuledger.collectors.workload.podresources.source import PODRESOURCES_SOURCE

_BUILT_IN: tuple[AnySource, ...] = (
    NVML_SOURCE,
    DCGM_SOURCE,
    VLLM_SOURCE,
    GATEWAY_SOURCE,
    PGVECTOR_SOURCE,
    PROBES_SOURCE,
    PODRESOURCES_SOURCE,
)

_sources: list[AnySource] = []


def register(source: AnySource) -> None:
    """Add a source after the others; its name and config key must be new."""
    for known in _sources:
        if source.name == known.name or source.config_key == known.config_key:
            raise ValueError(f"source {source.name!r} ({source.config_key}:) is registered")
    _sources.append(source)


def unregister(source: AnySource) -> None:
    _sources.remove(source)


@contextlib.contextmanager
def registered(source: AnySource) -> Iterator[AnySource]:
    """``source`` registered for the duration of the block (tests)."""
    register(source)
    try:
        yield source
    finally:
        unregister(source)


def sources() -> tuple[AnySource, ...]:
    return tuple(_sources)


for _source in _BUILT_IN:
    register(_source)
