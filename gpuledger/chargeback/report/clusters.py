"""The report grouped by cluster (issue 18): one fleet ledger, several clusters.

Each :class:`~gpuledger.chargeback.report.model.ModelLine` is one service's GPU time on
one GPU model in one cluster, so a cluster's figures are the sum of its model lines, as
charged (after the idle policy). Idle capacity is shared only within its own cluster
(``build.share_idle``), so the clusters' totals add up to the report's under every idle
policy, and a figure the rate card cannot price keeps the cluster's total unpriced
(``None``), never 0.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace

from gpuledger.chargeback.report.model import ClusterTotal, ModelLine, ServiceLine
from gpuledger.chargeback.report.units import sum_or_none


def cluster_totals(lines: Sequence[ServiceLine]) -> tuple[ClusterTotal, ...]:
    """Per cluster, in name order: the sums of its model lines over every report line."""
    models: dict[str, list[ModelLine]] = defaultdict(list)
    services: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for line in lines:
        for ml in line.models:
            models[ml.cluster].append(ml)
            if line.kind == "service":
                services[ml.cluster].add((line.namespace, line.service))
    return tuple(
        ClusterTotal(
            cluster=cluster,
            allocated_gpu_hours=sum(m.allocated_gpu_hours for m in held),
            busy_gpu_hours=sum(m.busy_gpu_hours for m in held),
            energy_kwh=sum(m.energy_kwh for m in held),
            internal_cost_usd=sum_or_none(m.internal_cost_usd for m in held),
            idle_share_usd=sum(m.idle_share_usd for m in held),
            total_cost_usd=sum_or_none(m.total_cost_usd for m in held),
            services=len(services[cluster]),
        )
        for cluster, held in sorted(models.items())
    )


def by_gpu_model(models: Sequence[ModelLine]) -> dict[str, ModelLine]:
    """A service's model lines merged across clusters, one per GPU model: what a reader
    that knows GPU models but not clusters (the tenant split, which divides a service's
    GPU-seconds per GPU model) needs. Rates are the card's per GPU model, the same in every
    cluster; hours, energy, costs and idle shares add (an unpriced part stays unpriced)."""
    out: dict[str, ModelLine] = {}
    for ml in models:
        prev = out.get(ml.gpu_model)
        if prev is None:
            out[ml.gpu_model] = ml
            continue
        out[ml.gpu_model] = replace(
            prev,
            allocated_gpu_hours=prev.allocated_gpu_hours + ml.allocated_gpu_hours,
            busy_gpu_hours=prev.busy_gpu_hours + ml.busy_gpu_hours,
            energy_kwh=prev.energy_kwh + ml.energy_kwh,
            capacity_cost_usd=sum_or_none((prev.capacity_cost_usd, ml.capacity_cost_usd)),
            energy_cost_usd=sum_or_none((prev.energy_cost_usd, ml.energy_cost_usd)),
            internal_cost_usd=sum_or_none((prev.internal_cost_usd, ml.internal_cost_usd)),
            idle_share_usd=prev.idle_share_usd + ml.idle_share_usd,
            total_cost_usd=sum_or_none((prev.total_cost_usd, ml.total_cost_usd)),
            cluster="*",
        )
    return out
