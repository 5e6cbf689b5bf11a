"""The report grouped by who pays: each line's cost center, and a subtotal per cost
center that adds up to the month's totals (issue 18, ``docs/cost-centers.md``).

A line's cost center comes from :class:`~gpuledger.chargeback.costcenters.resolve.
CostCenterMap`: the static map of ``report.cost_centers`` and what the agent recorded in
the ledger for the month (``store.cost_centers``: the latest hour's label wins). A shared
service's tenant lines are the units there: each is billed to its own cost center
(``of_tenant``), and since a service's tenant lines add up to it, nothing is counted
twice or lost. Idle and unattributed capacity belong to nobody: they fall to
``__unassigned__`` (under the ``separate`` idle policy; the share policies have already
spread idle cost onto the service lines, which carry it to their cost centers).

Subtotals are summed exactly as :func:`~gpuledger.chargeback.report.build._totals` sums the
totals -- per GPU model part, an unpriced part's cost as 0 with its GPU-hours counted in
``unpriced_gpu_hours`` -- so Σ subtotals = totals, figure by figure.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime

from gpuledger.chargeback.costcenters.config import UNASSIGNED, CostCentersConfig
from gpuledger.chargeback.costcenters.resolve import CostCenterMap
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.chargeback.report.model import (
    CostCenterTotal,
    ModelLine,
    Report,
    ServiceLine,
    TenantLine,
    TenantModelPart,
)

_FIGURES = (
    "allocated_gpu_hours", "busy_gpu_hours", "energy_kwh", "capacity_cost_usd",
    "energy_cost_usd", "internal_cost_usd", "idle_share_usd", "total_cost_usd",
)  # fmt: skip


def cost_center_map(
    store: AuditableLedgerStore, config: CostCentersConfig, start: datetime, end: datetime
) -> CostCenterMap:
    """The month's map: the static rules over what the agents recorded in ``[start, end)``."""
    return CostCenterMap(config, recorded=store.cost_centers(start, end))


def assign(report: Report, centers: CostCenterMap) -> Report:
    """``report`` with every line and tenant line's cost center, and the subtotals."""
    lines = tuple(_assign_line(line, centers) for line in report.lines)
    return replace(report, lines=lines, cost_centers=subtotals(lines, report.totals.total_cost_usd))


def _assign_line(line: ServiceLine, centers: CostCenterMap) -> ServiceLine:
    tenants = tuple(
        replace(t, cost_center=centers.of_tenant(t.tenant, line.namespace, line.service))
        for t in line.tenants
    )
    return replace(line, cost_center=centers.of(line.namespace, line.service), tenants=tenants)


def _parts(line: ServiceLine) -> Iterable[tuple[str, str, Sequence[ModelLine | TenantModelPart]]]:
    """(cost center, line label, its per-GPU-model parts) of each unit a line bills."""
    if not line.tenants:
        yield line.cost_center, line.label, line.models
        return
    for t in line.tenants:
        yield t.cost_center, f"{line.label} tenant {t.tenant}", t.models or (_as_part(t),)


def _as_part(t: TenantLine) -> TenantModelPart:
    """A tenant line without per-model parts (built by hand) as one part of its own."""
    return TenantModelPart(
        gpu_model="", allocated_gpu_hours=t.allocated_gpu_hours,
        busy_gpu_hours=t.busy_gpu_hours, energy_kwh=t.energy_kwh,
        capacity_cost_usd=t.capacity_cost_usd, energy_cost_usd=t.energy_cost_usd,
        internal_cost_usd=t.internal_cost_usd, idle_share_usd=t.idle_share_usd,
        total_cost_usd=t.total_cost_usd,
    )  # fmt: skip


def subtotals(lines: Sequence[ServiceLine], total_cost_usd: float) -> tuple[CostCenterTotal, ...]:
    """One subtotal per cost center the lines name: costliest first (then by name),
    ``__unassigned__`` always last when present."""
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    labels: dict[str, list[str]] = defaultdict(list)
    for line in lines:
        for center, label, parts in _parts(line):
            labels[center].append(label)
            acc = sums[center]
            for part in parts:
                for name in _FIGURES:
                    acc[name] += getattr(part, name) or 0.0
                if part.internal_cost_usd is None:
                    acc["unpriced_gpu_hours"] += part.allocated_gpu_hours
    out = [
        CostCenterTotal(
            cost_center=center,
            lines=tuple(labels[center]),
            **{name: acc[name] for name in (*_FIGURES, "unpriced_gpu_hours")},
            share_ratio=acc["total_cost_usd"] / total_cost_usd if total_cost_usd else None,
        )
        for center, acc in sums.items()
    ]
    out.sort(key=lambda c: (c.cost_center == UNASSIGNED, -c.total_cost_usd, c.cost_center))
    return tuple(out)
