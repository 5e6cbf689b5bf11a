"""The simulated fleet's cost centers, so the demo's report groups by team.

Said the ways a cluster says them (``docs/cost-centers.md``): labels on three namespaces
(``team`` on two, ``cost-center`` on one), an annotation on the pods of a fourth, and
nothing on the rest, which the report lists as ``__unassigned__``. The live simulated
node hands these to the agent as its namespace directory and pod annotations (read by
the real lookup, ``chargeback/costcenters/labels.py``); the simulated month records what
that lookup would have seen (:func:`seen`), hour by hour.
"""

from __future__ import annotations

from collections.abc import Mapping

from gpuledger.chargeback.costcenters.config import CostCentersConfig
from gpuledger.chargeback.costcenters.labels import (
    NAMESPACE_LABEL,
    POD_ANNOTATION,
    first_cost_center,
)
from gpuledger.collectors.workload.namespaces import StaticNamespaceDirectory

NAMESPACE_LABELS: Mapping[str, Mapping[str, str]] = {
    "llm-prod": {"team": "ml-platform"},
    "search": {"team": "search-relevance"},
    "research": {"cost-center": "research"},
}
POD_ANNOTATIONS: Mapping[str, Mapping[str, str]] = {
    "safety": {"cost-center": "trust-and-safety"},  # by namespace: on each of its pods
}


def namespaces() -> StaticNamespaceDirectory:
    return StaticNamespaceDirectory(NAMESPACE_LABELS)


def seen(
    namespace: str, label_keys: tuple[str, ...] = CostCentersConfig().label_keys
) -> tuple[str, str] | None:
    """What the agent's lookup finds for a pod of ``namespace`` in the simulation."""
    return first_cost_center(
        label_keys,
        (
            (POD_ANNOTATION, POD_ANNOTATIONS.get(namespace)),
            (NAMESPACE_LABEL, NAMESPACE_LABELS.get(namespace)),
        ),
    )
