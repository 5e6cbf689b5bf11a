"""The ConfigMap (the node agent's ``agent.yaml``, the reporter's ``reporter.yaml``, a
custom rate card) and the Secrets it refers to but never holds, mounted the same way in
both pods."""

from __future__ import annotations

from typing import Any

from gpuledger.cluster import DEFAULT_CLUSTER
from gpuledger.deploy.kubernetes.common import (
    API_TOKEN_SECRET,
    API_TOKEN_SECRET_KEY,
    CONFIG_DIR,
    CONFIG_MAP,
    HOST_PROC,
    LEDGER_DIR,
    LEDGER_SECRET,
    LEDGER_SECRET_KEY,
    PORT,
    RATE_CARD_KEY,
    REPORTER,
    REPORTS_PVC,
    STATE_DIR,
    TOKEN_DIR,
    dump_yaml,
    object_meta,
)
from gpuledger.deploy.kubernetes.options import ManifestOptions


def _secret_volume(name: str, secret: str, key: str) -> dict[str, Any]:
    # Not optional: the agent refuses to start without the file (see the module doc).
    # 0440 + the pod's fsGroup: readable by the agent's group, nobody else.
    return {
        "name": name,
        "secret": {
            "secretName": secret,
            "items": [{"key": key, "path": key}],
            "defaultMode": 0o440,
        },
    }


def config_volumes() -> list[dict[str, Any]]:
    return [
        {"name": "config", "configMap": {"name": CONFIG_MAP}},
        _secret_volume("ledger", LEDGER_SECRET, LEDGER_SECRET_KEY),
        _secret_volume("api-token", API_TOKEN_SECRET, API_TOKEN_SECRET_KEY),
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
    ]


def config_mounts() -> list[dict[str, Any]]:
    return [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "ledger", "mountPath": LEDGER_DIR, "readOnly": True},
        {"name": "api-token", "mountPath": TOKEN_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 -- an emptyDir, the root fs is read-only
    ]


def _http(o: ManifestOptions) -> dict[str, Any]:
    return {
        "api_token_file": f"{TOKEN_DIR}/{API_TOKEN_SECRET_KEY}",
        "metrics_require_token": o.metrics_require_token,
    }


def _cluster(o: ManifestOptions) -> dict[str, str]:
    """``cluster:`` when the config named one (left out for the default, so a single
    cluster's manifests stay as they were)."""
    return {} if o.cluster == DEFAULT_CLUSTER else {"cluster": o.cluster}


def agent_config(o: ManifestOptions) -> dict[str, Any]:
    """The node agent's ``agent.yaml``. ``node_name`` is left out: the agent reads
    ``$NODE_NAME``, which the DaemonSet sets from ``spec.nodeName``."""
    return {
        "roles": ["node"],
        **_cluster(o),
        "state_dir": STATE_DIR,
        "listen": {"host": "0.0.0.0", "port": PORT},
        "log": {"format": "json"},
        "http": _http(o),
        # The URL comes from GPULEDGER_DCGM__URL in the DaemonSet (it needs $(HOST_IP)).
        "dcgm": {"enabled": o.dcgm_url is not None},
        "ledger": {"url_file": f"{LEDGER_DIR}/{LEDGER_SECRET_KEY}"},
        "attribution": {
            "proc_root": HOST_PROC if o.process_attribution else None,
            "kubernetes": {"enabled": True},
        },
        "vllm": {"enabled": True, "discovery": {"enabled": True}},
        "podresources": {"enabled": o.pod_resources},
    }


def reporter_config(o: ManifestOptions) -> dict[str, Any]:
    """The reporter's ``reporter.yaml``: the ``report:`` section as given (only what
    differs from the defaults), with the output on the PersistentVolumeClaim and a
    custom rate card read from the ConfigMap."""
    report: dict[str, Any] = o.report.model_dump(
        mode="json", exclude_defaults=True, exclude={"out_dir", "rate_card"}
    )
    report["out_dir"] = f"{STATE_DIR}/reports"
    if o.rate_card_text is not None:
        report["rate_card"] = f"{CONFIG_DIR}/{RATE_CARD_KEY}"
    return {
        "roles": ["reporter"],
        **_cluster(o),
        # Not a GPU node: the reporter's own series (build info, reporter runs) say so.
        "node_name": REPORTER,
        "state_dir": STATE_DIR,
        "listen": {"host": "0.0.0.0", "port": PORT},
        "log": {"format": "json"},
        "http": _http(o),
        "ledger": {"url_file": f"{LEDGER_DIR}/{LEDGER_SECRET_KEY}"},
        "report": report,
    }


_AGENT_YAML_HEADER = f"""\
# gpuledger node agent (roles: [node]). Mounted at {CONFIG_DIR}/agent.yaml.
# node_name: from $NODE_NAME (the DaemonSet sets it from spec.nodeName).
# ledger.url_file: the PostgreSQL DSN, Secret {LEDGER_SECRET} key {LEDGER_SECRET_KEY}.
# http.api_token_file: Secret {API_TOKEN_SECRET} key {API_TOKEN_SECRET_KEY}; /api/* needs it.
# dcgm: the URL, when enabled, comes from GPULEDGER_DCGM__URL in the DaemonSet.
# GPULEDGER_* environment variables override any key here.
"""

_REPORTER_YAML_HEADER = f"""\
# gpuledger reporter (roles: [reporter]): last month's chargeback on report.schedule
# (UTC), read from the fleet PostgreSQL (Secret {LEDGER_SECRET}; read-only access is
# enough), written to the PersistentVolumeClaim {REPORTS_PVC} and served at /reports/
# behind the API token.
"""


def config_map(o: ManifestOptions) -> dict[str, Any]:
    data = {
        "agent.yaml": _AGENT_YAML_HEADER + dump_yaml(agent_config(o)),
        "reporter.yaml": _REPORTER_YAML_HEADER + dump_yaml(reporter_config(o)),
    }
    if o.rate_card_text is not None:
        data[RATE_CARD_KEY] = o.rate_card_text
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(CONFIG_MAP, "config", o.namespace),
        "data": data,
    }


def notes(o: ManifestOptions) -> dict[str, str]:
    """The header comments of this family's files."""
    return {
        "configmap.yaml": f"""\
# agent.yaml (the DaemonSet) and reporter.yaml (the reporter Deployment). Secrets are
# referenced, never generated: create them before applying (docs/deploy.md):
#   kubectl -n {o.namespace} create secret generic {LEDGER_SECRET} \\
#     --from-literal={LEDGER_SECRET_KEY}='postgresql://USER:PASSWORD@HOST:5432/gpuledger'
#   kubectl -n {o.namespace} create secret generic {API_TOKEN_SECRET} \\
#     --from-literal={API_TOKEN_SECRET_KEY}="$(openssl rand -hex 32)"
# Both are required volumes: the agent refuses to start without either file (it never
# falls back to a node-local SQLite ledger that finance would not see).
""",
    }
