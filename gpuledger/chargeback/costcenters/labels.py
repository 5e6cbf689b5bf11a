"""What the agent sees of an owner's cost center: its pod's labels, then its pod's
annotations, then its namespace's labels.

For each source in that order, the first of ``report.cost_centers.label_keys`` (in the
keys' order) whose value :func:`~gpuledger.chargeback.costcenters.config.clean_cost_center`
accepts wins. A hostile value (control characters, too long, empty, ``__reserved__``) is
refused, never repaired, and the search goes on: to the next key, then the next source.
The pod comes first because the team that labelled its workload knows best; the
namespace is the fallback a platform team sets once. The ledger records the answer per
hour (``ledger/cost_centers.py``); the report then applies the static map's precedence
(``resolve.py``).

Lookups read memory only (the pod and namespace directories refresh in the background),
so this runs in the ledger listener on every attribution.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gpuledger.chargeback.attribution.claims import Owner
from gpuledger.chargeback.attribution.resolver import KubernetesAttributionConfig
from gpuledger.chargeback.costcenters.config import clean_cost_center
from gpuledger.collectors.workload.namespaces import NamespaceDirectory
from gpuledger.collectors.workload.pods import PodDirectory

POD_LABEL = "pod_label"
POD_ANNOTATION = "pod_annotation"
NAMESPACE_LABEL = "namespace_label"
SOURCES = (POD_LABEL, POD_ANNOTATION, NAMESPACE_LABEL)
"""The ledger's ``source`` values, in precedence order."""


def first_cost_center(
    label_keys: Sequence[str], sources: Sequence[tuple[str, Mapping[str, str] | None]]
) -> tuple[str, str] | None:
    """The first acceptable value of ``label_keys`` over ``sources`` (in order), with the
    source's name; None when no source has one."""
    for source, values in sources:
        if not values:
            continue
        for key in label_keys:
            raw = values.get(key)
            if raw is None:
                continue
            cleaned = clean_cost_center(raw)
            if cleaned is not None:
                return cleaned, source
    return None


class WorkloadCostCenters:
    """``owner → (cost center, source)`` from the pod directory and namespace labels: the
    ledger's ``cost_center_of``."""

    def __init__(
        self,
        label_keys: Sequence[str],
        pods: PodDirectory | None,
        namespaces: NamespaceDirectory | None,
    ) -> None:
        self.label_keys = tuple(label_keys)
        self.pods = pods
        self.namespaces = namespaces

    def __call__(self, owner: Owner) -> tuple[str, str] | None:
        pod = None
        if self.pods is not None and owner.pod:
            pod = self.pods.by_name(owner.namespace, owner.pod)
        namespace = None
        if self.namespaces is not None and owner.namespace:
            namespace = self.namespaces.labels(owner.namespace)
        return first_cost_center(
            self.label_keys,
            (
                (POD_LABEL, pod.labels if pod is not None else None),
                (POD_ANNOTATION, pod.annotations if pod is not None else None),
                (NAMESPACE_LABEL, namespace),
            ),
        )

    def close(self) -> None:
        """Stop the namespace directory's background thread, if it has one."""
        closer = getattr(self.namespaces, "close", None)
        if callable(closer):
            closer()


def build_lookup(
    label_keys: Sequence[str],
    pods: PodDirectory | None,
    kubernetes: KubernetesAttributionConfig,
    namespaces: NamespaceDirectory | None = None,
) -> WorkloadCostCenters:
    """The lookup an agent runs with: ``namespaces`` when given (the simulated node's),
    else the namespaces' labels read from the API when the pod directory is
    (``attribution.kubernetes``; same kubeconfig), else pods only. Built here, not in
    the agent, which imports no source's implementation."""
    if namespaces is None and kubernetes.enabled:
        from gpuledger.collectors.workload.namespaces import KubernetesNamespaceDirectory

        namespaces = KubernetesNamespaceDirectory(kubeconfig=kubernetes.kubeconfig)
    return WorkloadCostCenters(label_keys, pods, namespaces)
