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
