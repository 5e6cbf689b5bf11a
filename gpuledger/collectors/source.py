"""What a data source is to the agent: one :class:`Source` record per source.

Modelled on node_exporter's ``registerCollector`` and blackbox_exporter's prober map: the
agent never names a source. It reads each source's config section
(:attr:`Source.config_key`, validated by :attr:`Source.config_model`), asks
:attr:`Source.build` for the collectors to schedule, lets :attr:`Source.export` write the
source's schema families on every render and, when the node keeps a ledger, calls
:attr:`Source.ledger` after each update of one of the source's collectors. The records
are listed in :mod:`gpuledger.collectors.registry`.

Everything the agent hands a source is typed here against small protocols --
:class:`Readings` for its snapshot, :class:`LedgerSink` for its ledger -- so that no module
under ``collectors/`` imports the agent or the chargeback stages.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

from gpuledger.collectors.base import Collector, Schedule
from gpuledger.collectors.workload.pods import DEFAULT_LABEL_KEYS

if TYPE_CHECKING:
    from gpuledger.collectors.gateway.types import GatewayReading
    from gpuledger.collectors.gpu.nvml_backend import NvmlApi
    from gpuledger.collectors.gpu.readings import GpuReading
    from gpuledger.collectors.pgvector.growth import GrowthTracker
    from gpuledger.collectors.textformat.render import FamiliesBuilder
    from gpuledger.collectors.vllm.types import ProbeResult, ProbeVerdict, VllmTelemetry
    from gpuledger.collectors.workload.podresources.types import PodResourcesBoard
    from gpuledger.collectors.workload.pods import PodDirectory

T = TypeVar("T")
ConfigT = TypeVar("ConfigT", bound=BaseModel)
LiveT = TypeVar("LiveT")


class Readings(Protocol):
    """What a source sees of the agent's snapshot: every collector's last good reading,
    by collector name, and a memo for values derived once per snapshot (the merged GPU
    list the export and the ledger both use). ``gpuledger.agent.snapshot.Snapshot`` is one."""

    def reading(self, name: str, kind: type[T]) -> T | None: ...

    @property
    def memo(self) -> dict[str, object]: ...


class LedgerSink(Protocol):
    """What a source may feed the hourly ledger; ``chargeback.ledger.flusher.Ledger`` is
    one. Calls come from collector threads (after an update) or a probe's thread."""

    def observe(self, devices: Sequence[GpuReading]) -> None: ...

    def observe_vllm(self, telemetry: VllmTelemetry) -> None: ...

    def record_probe(self, result: ProbeResult) -> None: ...

    def record_verdict(self, verdict: ProbeVerdict) -> None: ...

    def observe_tenant_tokens(self, reading: GatewayReading) -> None: ...


class Service(Protocol):
    """Background work a source runs besides its collectors (the probe runner): started
    after the collectors, stopped before them."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class SourceConfigError(Exception):
    """A section that validated but cannot be used on this host (an API key file that
    cannot be read): the agent refuses to start, naming ``key``."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What the agent offers every source's :attr:`Source.build`, beyond its section."""

    node_name: str
    default_interval_s: float  # collection.interval_seconds: a section without its own
    snapshot: Callable[[], Readings]  # the agent's current snapshot, read at call time
    label_keys: tuple[str, ...] = DEFAULT_LABEL_KEYS  # attribution's service-name labels
    pods: PodDirectory | None = None  # this node's pods (Kubernetes or static), if known
    # The kubelet's device allocations, shared with the attribution (podresources:).
    pod_resources: PodResourcesBoard | None = None
    nvml: NvmlApi | None = None  # a simulated node's NVML in place of the real library
    # A simulated node's kubelet socket in place of the configured one (always read).
    kubelet_socket: Path | None = None
    ledger: LedgerSink | None = None  # None: this agent keeps no ledger
    # Growth over a window (seconds) from at least n samples, kept by the ledger's spool;
    # None without a ledger.
    storage_growth: Callable[[float, int], GrowthTracker] | None = None
    probe_spans: Callable[[ProbeResult], None] | None = None  # OTLP spans, when enabled
    _shared: dict[type, object] = field(default_factory=dict, repr=False)

    def provide(self, value: object) -> None:
        """Hand ``value`` to the sources built after this one, by its type (the vLLM
        source's endpoint list, which the probes use)."""
        self._shared[type(value)] = value

    def lookup(self, kind: type[T]) -> T | None:
        value = self._shared.get(kind)
        return value if isinstance(value, kind) else None


@dataclass(frozen=True, slots=True)
class Built(Generic[LiveT]):
    """What one source's build produced: collectors to schedule, background services,
    and ``live`` -- state kept outside the snapshot that its export and ledger hook read
    (the probe runner's status, the latest storage growth); None when there is none."""

    collectors: tuple[tuple[Collector, Schedule], ...] = ()
    services: tuple[Service, ...] = ()
    live: LiveT | None = None


@dataclass(frozen=True, slots=True)
class Source(Generic[ConfigT, LiveT]):
    """One data source, as the agent's wiring, config, exporter and ledger see it."""

    name: str  # the source's name: its collector's ``collector`` label, where it has one
    reading: type | None  # what its collector returns (None: it schedules no collector)
    config_key: str  # the top-level YAML key (and GPULEDGER_<KEY>__* variables)
    config_model: type[ConfigT]
    build: Callable[[ConfigT, BuildContext], Built[LiveT]]
    # Writes the source's schema families from the snapshot (and its live state). An
    # export several sources share -- NVML and dcgm-exporter merged into one GPU export --
    # is one function named by each, and runs once per render.
    export: Callable[[FamiliesBuilder, Readings, LiveT | None], None] | None = None
    # Called after each update of one of this source's collectors, with the ledger.
    ledger: Callable[[LedgerSink, Readings, LiveT | None], None] | None = None
    # The ledger's default gap (4 intervals) is measured in this source's interval.
    paces_ledger: bool = False


AnySource = Source[Any, Any]
