"""What a reporter exports, read back through prometheus_client's own parser: per family,
``{sorted labels: value}`` with the labels every series carries (``node``, ``cluster``)
left out, so a test states only the labels its family adds."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from gpuledger.agent.exporter import SnapshotExporter
from gpuledger.agent.reporter import Reporter
from gpuledger.agent.snapshot import Snapshot

Exposed = dict[str, dict[tuple[tuple[str, str], ...], float]]
EVERY_SERIES = frozenset({"node", "cluster"})


def exposed(reporter: Reporter) -> Exposed:
    text = SnapshotExporter("node-r", "1", reporter=reporter.status).render(Snapshot(version=1))
    out: Exposed = {}
    for fam in text_string_to_metric_families(text.decode()):
        for s in fam.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k not in EVERY_SERIES))
            out.setdefault(s.name, {})[labels] = s.value
    return out
