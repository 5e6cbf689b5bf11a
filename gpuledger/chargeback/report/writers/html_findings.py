"""The HTML report's "Findings" section: what to change and what it would save, ranked,
each row with its evidence and the one assumption the saving rests on.

Only the page model lives here; the markup is ``templates/findings.html.j2``, included
near the top of the report's template (autoescaped: services and namespaces come from the
cluster, and an engine's sentences may quote them). The section is never blank: with no
finding it says whether none cleared the thresholds or none were computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from gpuledger.chargeback.findings.model import Finding
from gpuledger.chargeback.report.model import Report
from gpuledger.chargeback.report.writers.findings import (
    NONE_FOUND,
    NOT_COMPUTED,
    evidence_pairs,
    gpus_text,
)

KIND_LABELS: dict[str, str] = {
    "over_provisioned": "over-provisioned",
    "smaller_gpu_class": "smaller GPU class",
    "mig_fit": "MIG fit",
    "idle_capacity": "idle capacity",
    "zombie": "zombie / orphan",
}


@dataclass(frozen=True, slots=True)
class FindingRow:
    """One finding as the page shows it."""

    rank: int
    finding: Finding
    kind_label: str
    gpus_now: str
    gpus_recommended: str
    evidence: tuple[tuple[str, str], ...]  # (name, formatted value)
    peak_hours: tuple[str, ...]  # "2026-10-04 13:00 UTC"


@dataclass(frozen=True, slots=True)
class FindingsView:
    rows: tuple[FindingRow, ...]
    total_usd: float
    empty_text: str  # what the section says when it has no row


def peak_hour_text(unix: int) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M UTC")


def findings_view(report: Report) -> FindingsView:
    rows = tuple(
        FindingRow(
            rank=rank,
            finding=f,
            kind_label=KIND_LABELS.get(f.kind, f.kind),
            gpus_now=gpus_text(f.current_gpus),
            gpus_recommended=gpus_text(f.recommended_gpus),
            evidence=tuple(evidence_pairs(f)),
            peak_hours=tuple(peak_hour_text(h) for h in f.peak_hours),
        )
        for rank, f in enumerate(report.findings, start=1)
    )
    return FindingsView(
        rows=rows,
        total_usd=report.findings_savings_usd,
        empty_text=NONE_FOUND if report.findings_computed else NOT_COMPUTED,
    )
