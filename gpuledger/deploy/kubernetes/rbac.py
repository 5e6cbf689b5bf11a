"""The Namespace, the ServiceAccounts and the agent's ClusterRole and binding: who the
pods run as and the least they may read from the API."""

from __future__ import annotations

from typing import Any

from gpuledger.deploy.kubernetes.common import AGENT, REPORTER, object_meta
from gpuledger.deploy.kubernetes.options import ManifestOptions


def namespace(o: ManifestOptions) -> dict[str, Any]:
    meta = object_meta(o.namespace, "namespace", None)
    # The agent needs hostPath volumes (and hostPID with process attribution), which the
    # baseline and restricted Pod Security levels refuse.
    meta["labels"]["pod-security.kubernetes.io/enforce"] = "privileged"
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def agent_service_account(o: ManifestOptions) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": object_meta(AGENT, "agent", o.namespace),
        "automountServiceAccountToken": True,  # it lists and watches this node's pods
    }


def reporter_service_account(o: ManifestOptions) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": object_meta(REPORTER, "reporter", o.namespace),
        "automountServiceAccountToken": False,  # the reporter never calls the API
    }


def cluster_role(o: ManifestOptions) -> dict[str, Any]:
    """Least privilege: the pod directory lists and watches pods with
    ``fieldSelector=spec.nodeName=<node>`` (the selector narrows what is returned, not what
    is authorized, so the grant is cluster-wide). ``nodes get`` is granted for reading the
    agent's own Node; the current code reads only pods, so an audit for unused grants may
    patch it out. ``namespaces get, list``: the namespaces' labels name their cost center
    (``docs/cost-centers.md``; listed every few minutes, no watch). Nothing else: no
    Secrets, no writes."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": object_meta(AGENT, "agent", None),
        "rules": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list"]},
        ],
    }


def cluster_role_binding(o: ManifestOptions) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": object_meta(AGENT, "agent", None),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": AGENT},
        "subjects": [{"kind": "ServiceAccount", "name": AGENT, "namespace": o.namespace}],
    }


def notes(o: ManifestOptions) -> dict[str, str]:
    """The header comments of this family's files."""
    return {
        "namespace.yaml": """\
# Pod Security level privileged: the agent's hostPath volumes (and hostPID) need it.
""",
    }
