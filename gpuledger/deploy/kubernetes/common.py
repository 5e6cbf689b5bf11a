"""The names, paths, labels and security context every family of objects shares: one
place to read what the agent's pods are called, where they mount what, and which labels
select them."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import yaml

from gpuledger.agent.config import DEFAULT_PORT

KUBERNETES_VERSION = "1.37"
"""The Kubernetes API version the core objects are validated against in the tests
(``kubernetes-validate``'s strict schemas); they use nothing newer than 1.25 (seccomp and
Pod Security labels), so any supported cluster takes them."""

RUN_AS_USER = 65532
"""The image's non-root user and group (the distroless ``nonroot`` convention)."""

PORT = DEFAULT_PORT
PORT_NAME = "metrics"
APP = "gpuledger"
AGENT = "gpuledger-agent"
REPORTER = "gpuledger-reporter"
CONFIG_MAP = "gpuledger-config"
REPORTS_PVC = "gpuledger-reports"
LEDGER_SECRET = "gpuledger-ledger"  # noqa: S105 -- a name, not a secret
LEDGER_SECRET_KEY = "url"  # noqa: S105 -- a name, not a secret
API_TOKEN_SECRET = "gpuledger-api-token"  # noqa: S105 -- a name, not a secret
API_TOKEN_SECRET_KEY = "token"  # noqa: S105 -- a name, not a secret

STATE_DIR = "/var/lib/gpuledger"
CONFIG_DIR = "/etc/gpuledger/config"
LEDGER_DIR = "/etc/gpuledger/ledger"
TOKEN_DIR = "/etc/gpuledger/api-token"  # noqa: S105 -- a name, not a secret
HOST_PROC = "/host/proc"
POD_RESOURCES_DIR = "/var/lib/kubelet/pod-resources"
RATE_CARD_KEY = "rate-card.yaml"


def selector_labels(component: str) -> dict[str, str]:
    """Selector labels: never change them, a DaemonSet's selector is immutable."""
    return {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": component}


def object_labels(component: str) -> dict[str, str]:
    return {**selector_labels(component), "app.kubernetes.io/part-of": APP}


def object_meta(name: str, component: str, namespace: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = object_labels(component)
    return meta


def container_security(*, add: tuple[str, ...] = (), run_as_root: bool = False) -> dict[str, Any]:
    caps: dict[str, Any] = {"drop": ["ALL"]}
    if add:
        caps["add"] = list(add)
    uid = 0 if run_as_root else RUN_AS_USER
    return {
        "runAsNonRoot": not run_as_root,
        "runAsUser": uid,
        "runAsGroup": uid,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": caps,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def dump_yaml(doc: Any) -> str:
    return yaml.safe_dump(doc, sort_keys=False, width=100000, allow_unicode=True)


def config_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def copy_resources(m: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    return {k: dict(v) for k, v in m.items()}
