"""``/api/v1/usage?group_by=cost_center,...``: the ledger's GPU-seconds by who pays.

The store groups by what a ledger row holds (namespace, service, GPU model, node, hour);
a cost center is not a column but a mapping of (namespace, service) -- the static rules of
``report.cost_centers`` over what the agents recorded in the period
(:class:`~gpuledger.chargeback.costcenters.resolve.CostCenterMap`, the report's own
rule). So the read is grouped in SQL by the other keys plus (namespace, service), then
folded here: a few hundred groups, whatever the fleet's size.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from gpuledger.chargeback.costcenters.config import CostCentersConfig
from gpuledger.chargeback.costcenters.resolve import CostCenterMap
from gpuledger.chargeback.ledger.model import LedgerStore

COST_CENTER = "cost_center"
"""The ``group_by`` key a cost center is asked for by."""
_SUMS = ("allocated_gpu_seconds", "busy_gpu_seconds", "energy_joules", "allocated_gpu_hours")


def usage_by_cost_center(
    store: LedgerStore,
    start: datetime,
    end: datetime,
    group_by: Sequence[str],
    config: CostCentersConfig,
    *,
    node: str | None = None,
) -> list[dict[str, object]]:
    """Rows like ``UsageGroup.as_json``: the keys of ``group_by`` (``cost_center`` among
    them) in its order, then the sums; ordered by the keys. ValueError names an unknown
    key (the store's own check)."""
    keys = list(dict.fromkeys(group_by))
    read = list(dict.fromkeys([*(k for k in keys if k != COST_CENTER), "namespace", "service"]))
    rows = store.usage(start, end, read, node=node)
    centers = CostCenterMap(config, recorded=store.cost_centers(start, end))
    sums: dict[tuple[object, ...], list[float]] = {}
    for r in rows:
        center = centers.of(r.namespace or "", r.service or "")
        key = tuple(center if k == COST_CENTER else getattr(r, k) for k in keys)
        acc = sums.setdefault(key, [0.0] * len(_SUMS))
        for i, name in enumerate(_SUMS):
            acc[i] += float(getattr(r, name))
    ordered = sorted(sums, key=lambda k: tuple("" if v is None else str(v) for v in k))
    return [
        {**dict(zip(keys, key, strict=True)), **dict(zip(_SUMS, sums[key], strict=True))}
        for key in ordered
    ]
