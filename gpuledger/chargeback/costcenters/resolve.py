"""A line's cost center, from the static map and what the agent recorded.

Precedence, most specific first (``docs/cost-centers.md``):
1. a static rule naming the namespace and the service;
2. the label the agent recorded for the service (pod labels, then pod annotations, then
   namespace labels: ``labels.py``; the latest hour of the period: ``store.cost_centers``);
3. a static rule naming the whole namespace;
4. ``__unassigned__``.
A static service rule beats a label because it is how finance corrects one; a label
beats a namespace-wide rule because the team that labelled its workload knows best.
A tenant's cost center is its own entry in ``tenants:``, else its service's.
"""

from __future__ import annotations

from collections.abc import Mapping

from gpuledger.chargeback.costcenters.config import UNASSIGNED, CostCentersConfig


class CostCenterMap:
    def __init__(
        self,
        config: CostCentersConfig | None = None,
        recorded: Mapping[tuple[str, str], str] | None = None,
    ) -> None:
        config = config or CostCentersConfig()
        self._services = {
            (r.namespace, r.service): r.cost_center for r in config.static if r.service
        }
        self._namespaces = {r.namespace: r.cost_center for r in config.static if not r.service}
        self._tenants = dict(config.tenants)
        self._recorded = dict(recorded or {})

    def of(self, namespace: str, service: str) -> str:
        key = (namespace, service)
        if key in self._services:
            return self._services[key]
        if key in self._recorded:
            return self._recorded[key]
        return self._namespaces.get(namespace, UNASSIGNED)

    def of_tenant(self, tenant: str, namespace: str, service: str) -> str:
        return self._tenants.get(tenant) or self.of(namespace, service)

    def names(self) -> set[str]:
        """Every cost center the map can name (for validating budgets); recorded labels
        included, ``__unassigned__`` always."""
        return {
            *self._services.values(),
            *self._namespaces.values(),
            *self._tenants.values(),
            *self._recorded.values(),
            UNASSIGNED,
        }
