"""The HTML report's "What changed" section: each spend anomaly of the month, its cost
against the service's baseline, its robust z, and the part(s) of the service that
drove it (GPU model, tenant, idle, or the service as a whole).

Only the page model lives here; the markup is ``templates/anomalies.html.j2``, included
after the Findings (autoescaped: services, namespaces, GPU models and tenants come from
the cluster). The section is never blank: with no anomaly it says whether none left the
baseline or none were computed.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpuledger.chargeback.anomalies.model import SpendAnomaly
from gpuledger.chargeback.report.model import Report

NONE_FOUND = "no day's spend left its service's baseline this month"
NOT_COMPUTED = "spend anomalies were not computed for this report (report.anomalies.enabled)"
DRIVER_LABELS = {"gpu_model": "GPU model", "tenant": "tenant", "idle": "idle", "service": "service"}


@dataclass(frozen=True, slots=True)
class DriverCell:
    kind: str
    label: str  # "GPU model", "tenant", ...
    name: str
    change_usd: float
    day_usd: float
    baseline_usd: float


@dataclass(frozen=True, slots=True)
class AnomalyRow:
    anomaly: SpendAnomaly
    score_text: str  # "+26.98" / "−4.10"
    drivers: tuple[DriverCell, ...]


@dataclass(frozen=True, slots=True)
class AnomaliesView:
    rows: tuple[AnomalyRow, ...]
    increases_usd: float
    drops_usd: float
    empty_text: str


def signed(value: float, digits: int = 2) -> str:
    """``+1.23`` / ``−1.23`` (a real minus sign)."""
    return f"{'+' if value >= 0 else '−'}{abs(value):,.{digits}f}"


def _row(a: SpendAnomaly) -> AnomalyRow:
    cells = tuple(
        DriverCell(d.kind, DRIVER_LABELS[d.kind], d.name, d.change_usd, d.day_usd, d.baseline_usd)
        for d in a.drivers
    )
    return AnomalyRow(anomaly=a, score_text=signed(a.score), drivers=cells)


def anomalies_view(report: Report) -> AnomaliesView:
    rows = tuple(_row(a) for a in report.anomalies)
    return AnomaliesView(
        rows=rows,
        increases_usd=sum(a.change_usd for a in report.anomalies if a.change_usd > 0),
        drops_usd=sum(a.change_usd for a in report.anomalies if a.change_usd < 0),
        empty_text=NONE_FOUND if report.anomalies_computed else NOT_COMPUTED,
    )
