"""What the agent sees of an owner's cost center (issue 18): pod labels, then pod
annotations, then namespace labels; within each, ``label_keys`` in order; a hostile
value is refused and the search falls through to the next key and source."""

from __future__ import annotations

import json
from pathlib import Path

from gpuledger.chargeback.attribution.claims import Owner
from gpuledger.chargeback.attribution.resolver import KubernetesAttributionConfig
from gpuledger.chargeback.costcenters.labels import WorkloadCostCenters, build_lookup
from gpuledger.collectors.workload.namespaces import StaticNamespaceDirectory
from gpuledger.collectors.workload.pods import PodInfo, StaticPodDirectory
from tests.support.standins import Behaviour, StandIn, wait_until

KEYS = ("cost-center", "team")


def _pod(name: str, ns: str, labels: dict[str, str], annotations: dict[str, str]) -> PodInfo:
    return PodInfo(uid=f"uid-{name}", namespace=ns, name=name, labels=labels,
                   annotations=annotations)  # fmt: skip


PODS = StaticPodDirectory(
    [
        _pod("labelled", "ml", {"team": "from-team", "cost-center": "from-cc"}, {"team": "ann"}),
        _pod("annotated", "ml", {"app": "x"}, {"team": "annotated-team"}),
        _pod("bare", "ml", {}, {}),
        # a forged CSV/e-mail line, a reserved name, blank: refused, the next source wins
        _pod(
            "hostile",
            "ml",
            {"cost-center": "evil\r\nBcc: all@corp", "team": "__idle__"},
            {"cost-center": "   "},
        ),
        _pod("too-long", "web", {"team": "x" * 129}, {}),
    ]
)
NAMESPACES = StaticNamespaceDirectory({"ml": {"team": "ml-platform"}, "web": {}})


def test_precedence_pod_label_then_annotation_then_namespace() -> None:
    seen = WorkloadCostCenters(KEYS, PODS, NAMESPACES)
    assert seen(Owner("ml", "svc", pod="labelled")) == ("from-cc", "pod_label")  # key order
    assert seen(Owner("ml", "svc", pod="annotated")) == ("annotated-team", "pod_annotation")
    assert seen(Owner("ml", "svc", pod="bare")) == ("ml-platform", "namespace_label")
    assert seen(Owner("ml", "svc", pod="not-in-directory")) == ("ml-platform", "namespace_label")
    assert seen(Owner("web", "svc", pod="unknown")) is None
    # other label keys, in their order
    team_first = WorkloadCostCenters(("team", "cost-center"), PODS, NAMESPACES)
    assert team_first(Owner("ml", "svc", pod="labelled")) == ("from-team", "pod_label")


def test_a_hostile_value_falls_through() -> None:
    seen = WorkloadCostCenters(KEYS, PODS, NAMESPACES)
    assert seen(Owner("ml", "svc", pod="hostile")) == ("ml-platform", "namespace_label")
    assert seen(Owner("web", "svc", pod="too-long")) is None


def test_without_directories_nothing_is_seen() -> None:
    assert WorkloadCostCenters(KEYS, None, None)(Owner("ml", "svc", pod="labelled")) is None
    assert WorkloadCostCenters(KEYS, PODS, None)(Owner("ml", "svc", pod="bare")) is None


def test_an_agent_with_the_pod_directory_reads_namespace_labels_from_the_api(
    tmp_path: Path,
) -> None:
    """``build_lookup`` as the agent runs it: ``attribution.kubernetes`` enabled, its
    kubeconfig pointing at a real HTTP server serving a ``NamespaceList``."""
    body = {"kind": "NamespaceList", "apiVersion": "v1", "metadata": {}, "items": [
        {"metadata": {"name": "ml", "labels": {"team": "ml-platform"}}},
    ]}  # fmt: skip
    behaviour = Behaviour(body=json.dumps(body).encode(), content_type="application/json")
    with StandIn(behaviour) as api:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            "apiVersion: v1\ncurrent-context: t\n"
            f"clusters: [{{name: c, cluster: {{server: '{api.url}'}}}}]\n"
            "contexts: [{name: t, context: {cluster: c}}]\nusers: []\n",
            encoding="utf-8",
        )
        k8s = KubernetesAttributionConfig(enabled=True, kubeconfig=kubeconfig)
        lookup = build_lookup(KEYS, None, k8s)
        try:
            wait_until(lambda: lookup(Owner("ml", "svc")) is not None)
            assert lookup(Owner("ml", "svc")) == ("ml-platform", "namespace_label")
            assert lookup(Owner("other", "svc")) is None
        finally:
            lookup.close()
    assert build_lookup(KEYS, None, KubernetesAttributionConfig()).namespaces is None
