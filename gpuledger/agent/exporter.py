"""Turn a snapshot into the normalized metric schema, in the Prometheus text format.

Shaped like a client_python custom collector -- families are built fresh from the
immutable snapshot each time, so nothing long-lived has to be cleared when a GPU or a
collector disappears. Each source writes its own families (its ``export`` in the
registry, :mod:`gpuledger.collectors.registry`); this module adds what is the agent's:
the ledger's allocations and totals, the reporter's runs, build info and collector
health. The samples are built once, in structured form
(:class:`~gpuledger.collectors.textformat.render.MetricSamples`), and the text is written
from them; the OTLP export (:mod:`gpuledger.agent.otel.export`) reads the same object.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from gpuledger import schema
from gpuledger.agent.anomaly_refresh import export_spend
from gpuledger.agent.budget_refresh import export_budgets
from gpuledger.agent.snapshot import Snapshot
from gpuledger.chargeback.attribution.claims import IDLE
from gpuledger.chargeback.findings.model import FINDING_KINDS
from gpuledger.chargeback.ledger.flusher import LedgerStatus
from gpuledger.cluster import DEFAULT_CLUSTER
from gpuledger.collectors import registry
from gpuledger.collectors.source import Readings
from gpuledger.collectors.textformat.render import FamiliesBuilder, MetricSamples

if TYPE_CHECKING:
    from gpuledger.agent.reporter import ReporterStatus

Export = Callable[[FamiliesBuilder, Readings, Any], None]


def _add_agent(f: FamiliesBuilder, snap: Snapshot, version: str) -> None:
    f.add(schema.BUILD_INFO, (version,), 1.0)
    for name in sorted(snap.collectors):
        state = snap.collectors[name]
        f.add(schema.COLLECTOR_UP, (name,), 1.0 if state.up else 0.0)
        if state.duration_s is not None:
            f.add(schema.COLLECTOR_DURATION, (name,), state.duration_s)
        if state.last_success_unix is not None:
            f.add(schema.COLLECTOR_LAST_SUCCESS, (name,), state.last_success_unix)


def _add_ledger(f: FamiliesBuilder, status: LedgerStatus) -> None:
    for alloc in status.allocations:
        for share in alloc.shares:
            if share.owner.service == IDLE:
                continue
            mig = "" if share.mig_instance is None else str(share.mig_instance)
            o = share.owner
            labels = (alloc.uuid, mig, o.namespace, o.pod, o.container, o.service)
            f.add(schema.GPU_ALLOCATION, labels, share.share)
    life = status.lifetime
    for (service, namespace, model, kind), seconds in sorted(life.service_seconds.items()):
        f.add(schema.SERVICE_GPU_SECONDS, (service, namespace, model, kind), seconds)
    for model, seconds in sorted(life.idle_seconds.items()):
        f.add(schema.IDLE_GPU_SECONDS, (model,), seconds)
    for (service, namespace), joules in sorted(life.service_energy.items()):
        f.add(schema.SERVICE_ENERGY, (service, namespace), joules)
    f.add(schema.LEDGER_PENDING_ROWS, (), float(status.pending_rows))
    f.add(schema.LEDGER_FLUSH_FAILURES, (), float(status.flush_failures))


def _add_findings(f: FamiliesBuilder, report: ReporterStatus) -> None:
    """The latest report's findings: savings per (kind, namespace, service), summed where
    a service has several findings of one kind, and a count for every kind. Nothing before
    a report with computed findings exists: not computed is not zero."""
    if report.findings_month is None:
        return
    savings: dict[tuple[str, str, str], float] = {}
    counts = dict.fromkeys(FINDING_KINDS, 0)
    for finding in report.findings:
        labels = (str(finding.kind), finding.namespace, finding.service)
        savings[labels] = savings.get(labels, 0.0) + finding.monthly_savings_usd
        counts[finding.kind] = counts.get(finding.kind, 0) + 1
    for key, usd in sorted(savings.items()):
        f.add(schema.FINDING_SAVINGS, key, usd)
    for kind, n in counts.items():
        f.add(schema.FINDINGS, (kind,), float(n))


def _add_deliveries(f: FamiliesBuilder, report: ReporterStatus) -> None:
    """The report's delivery tries per (channel, outcome), zeros included, and each
    channel's last success; nothing when no delivery is configured."""
    for (channel, outcome), n in report.deliveries:
        f.add(schema.REPORT_DELIVERIES, (channel, outcome), float(n))
    for channel, at in report.delivery_last_success:
        f.add(schema.REPORT_DELIVERY_LAST_SUCCESS, (channel,), at)


class SnapshotExporter:
    """Renders a snapshot: every registered source's families (an export several sources
    share runs once), then the agent's own -- the ledger's, the reporter's, build info and
    each collector's up/duration/last success.

    ``live`` maps a source's name to its live state (what its build returned besides
    collectors: the probe runner's status, the latest storage growth); the agent fills it
    as it builds the sources, and a render reads it as of that moment."""

    def __init__(
        self,
        node: str,
        version: str,
        ledger: Callable[[], LedgerStatus | None] | None = None,
        reporter: Callable[[], ReporterStatus | None] | None = None,
        live: Mapping[str, object] | None = None,
        cluster: str = DEFAULT_CLUSTER,
    ) -> None:
        self.node = node
        self.cluster = cluster
        self.version = version
        self.ledger = ledger
        self.reporter = reporter
        self.live: Mapping[str, object] = live if live is not None else {}
        self.latest = MetricSamples(node, {}, cluster=cluster)  # the samples of the last render()

    def _exports(self) -> list[tuple[Export, object]]:
        """Each distinct export in registry order, with the live state of the first
        source that names it."""
        seen: dict[Export, object] = {}
        for source in registry.sources():
            if source.export is not None and source.export not in seen:
                seen[source.export] = self.live.get(source.name)
        return list(seen.items())

    def samples(self, snap: Snapshot) -> MetricSamples:
        """Every sample ``snap`` exports (with the ledger, probe, growth and reporter
        state as of now), in structured form; :meth:`render` writes exactly these."""
        f = FamiliesBuilder(self.node, cluster=self.cluster)
        for export, live in self._exports():
            export(f, snap, live)
        status = self.ledger() if self.ledger is not None else None
        if status is not None:  # None: this agent keeps no ledger (reporter-only)
            _add_ledger(f, status)
        report = self.reporter() if self.reporter is not None else None
        if report is not None:
            f.add(schema.REPORT_RUNS, (), float(report.runs))
            f.add(schema.REPORT_FAILURES, (), float(report.failures))
            if report.last_success_unix is not None:
                f.add(schema.REPORT_LAST_SUCCESS, (), report.last_success_unix)
            _add_findings(f, report)
            export_budgets(f, report.budgets)
            _add_deliveries(f, report)
            export_spend(f, report.spend)
        _add_agent(f, snap, self.version)
        return f.build()

    def render(self, snap: Snapshot) -> bytes:
        """The Prometheus text of :meth:`samples`; those samples are kept as
        :attr:`latest` (what the OTLP export reads: the same values /metrics serves)."""
        built = self.samples(snap)
        self.latest = built
        return built.render()
