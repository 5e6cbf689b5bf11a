"""The dashboards as files: every board by uid, its JSON, the Grafana sidecar's
ConfigMap, and writing them (``gpuledger dashboards``; ``gpuledger manifests`` embeds the
ConfigMaps). The one module other parts import from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard

from gpuledger.dashboards.boards import agent, gpu_fleet, pgvector, services, tenants, vllm


def all_dashboards() -> dict[str, dashboard.Dashboard]:
    """Every dashboard, by uid."""
    built = [
        gpu_fleet.build(),
        services.build(),
        vllm.build(),
        tenants.build(),
        pgvector.build(),
        agent.build(),
    ]
    return {str(d.uid): d for d in built}


def panel_exprs(d: dashboard.Dashboard) -> list[str]:
    """Every target expression of every panel (rows included), in panel order."""
    out: list[str] = []
    for panel in _all_panels(d):
        for target in panel.targets or []:
            # a reloaded dashboard may hold the SDK's UnknownDataquery: read its JSON
            expr = _target_json(target).get("expr")
            if isinstance(expr, str) and expr:
                out.append(expr)
    return out


def _target_json(target: object) -> dict[str, object]:
    to_json_method = getattr(target, "to_json", None)
    data = to_json_method() if callable(to_json_method) else None
    return data if isinstance(data, dict) else {}


def _all_panels(d: dashboard.Dashboard) -> list[dashboard.Panel]:
    out: list[dashboard.Panel] = []
    for p in d.panels or []:
        if isinstance(p, dashboard.RowPanel):
            out.extend(p.panels)
        else:
            out.append(p)
    return out


def to_json(d: dashboard.Dashboard) -> str:
    return json.dumps(d, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def configmap(d: dashboard.Dashboard, namespace: str) -> dict[str, Any]:
    """A ConfigMap the Grafana sidecar picks up (label ``grafana_dashboard: "1"``)."""
    uid = str(d.uid)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": uid,
            "namespace": namespace,
            "labels": {
                "grafana_dashboard": "1",
                "app.kubernetes.io/name": "gpuledger",
                "app.kubernetes.io/component": "dashboards",
            },
            "annotations": {"grafana_folder": "gpuledger"},
        },
        "data": {f"{uid}.json": to_json(d)},
    }


def write_dashboards(out: Path, *, as_configmap: bool, namespace: str) -> list[Path]:
    """Write ``<uid>.json`` (or ``<uid>.configmap.yaml``) per dashboard into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for uid, d in all_dashboards().items():
        if as_configmap:
            path = out / f"{uid}.configmap.yaml"
            path.write_text(
                yaml.safe_dump(configmap(d, namespace), sort_keys=False), encoding="utf-8"
            )
        else:
            path = out / f"{uid}.json"
            path.write_text(to_json(d), encoding="utf-8")
        written.append(path)
    return written
