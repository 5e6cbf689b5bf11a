"""What Prometheus and Grafana take from the install: the ServiceMonitor and PodMonitor
(prometheus-operator), the PrometheusRule, and the dashboards' sidecar ConfigMaps."""

from __future__ import annotations

from typing import Any

from gpuledger.alerts.rules import prometheus_rule
from gpuledger.chargeback.report.ratecard import load_rate_card, parse_rate_card
from gpuledger.dashboards.output import all_dashboards, configmap
from gpuledger.deploy.kubernetes.common import (
    API_TOKEN_SECRET,
    API_TOKEN_SECRET_KEY,
    APP,
    PORT_NAME,
    object_labels,
)
from gpuledger.deploy.kubernetes.options import ManifestOptions

MONITORS_NOT_IN_KUSTOMIZATION = ("podmonitor.yaml",)
"""Written but not listed in ``kustomization.yaml``: the ServiceMonitor and the PodMonitor
scrape the same pods, and listing both would store every series twice."""


MONITORED_COMPONENTS = ("agent", "reporter")


def _monitor_labels(o: ManifestOptions, component: str) -> dict[str, str]:
    return {**object_labels(component), **dict(o.prometheus_labels)}


def _monitor_selector() -> dict[str, Any]:
    return {
        "matchLabels": {"app.kubernetes.io/name": APP},
        "matchExpressions": [
            {
                "key": "app.kubernetes.io/component",
                "operator": "In",
                "values": list(MONITORED_COMPONENTS),
            }
        ],
    }


def _scrape_endpoint(o: ManifestOptions) -> dict[str, Any]:
    """One scrape endpoint, the same for both monitors so either gives the same series."""
    endpoint: dict[str, Any] = {
        "port": PORT_NAME,
        "path": "/metrics",
        # The collection interval: a faster scrape only re-reads the same snapshot.
        "interval": "15s",
        "scrapeTimeout": "10s",
        # The series' own labels win: vLLM series carry the served pod's namespace/pod,
        # and every series already carries node.
        "honorLabels": True,
        "relabelings": [
            # node on the target: applies only to series without their own (up, scrape_*)
            {
                "action": "replace",
                "sourceLabels": ["__meta_kubernetes_pod_node_name"],
                "targetLabel": "node",
            },
            # job gpuledger-agent / gpuledger-reporter, whichever monitor scrapes
            {
                "action": "replace",
                "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_component"],
                "regex": "(.+)",
                "targetLabel": "job",
                "replacement": "gpuledger-$1",
            },
            # the agent pod's own namespace/pod/container/service must not be attached to
            # GPU series that have none (honorLabels would keep them where absent)
            {"action": "labeldrop", "regex": "namespace|pod|container|service|endpoint"},
        ],
    }
    if o.metrics_require_token:
        endpoint["authorization"] = {
            "type": "Bearer",
            "credentials": {"name": API_TOKEN_SECRET, "key": API_TOKEN_SECRET_KEY},
        }
    return endpoint


def service_monitor(o: ManifestOptions) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {
            "name": APP,
            "namespace": o.namespace,
            "labels": _monitor_labels(o, "monitoring"),
        },
        "spec": {"selector": _monitor_selector(), "endpoints": [_scrape_endpoint(o)]},
    }


def pod_monitor(o: ManifestOptions) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {
            "name": APP,
            "namespace": o.namespace,
            "labels": _monitor_labels(o, "monitoring"),
        },
        "spec": {"selector": _monitor_selector(), "podMetricsEndpoints": [_scrape_endpoint(o)]},
    }


def rule(o: ManifestOptions) -> dict[str, Any]:
    card = (
        parse_rate_card(o.rate_card_text, "rate card")
        if o.rate_card_text is not None
        else load_rate_card(None)
    )
    return prometheus_rule(
        o.alerts,
        namespace=o.namespace,
        name=APP,
        labels={"app.kubernetes.io/part-of": APP, **dict(o.prometheus_labels)},
        card=card,
    )


def dashboard_config_maps(o: ManifestOptions) -> dict[str, dict[str, Any]]:
    """The dashboards' sidecar ConfigMaps, named ``<uid>-dashboard`` so that none shares a
    name with the agent's own objects (the sidecar only reads the label and the data)."""
    out: dict[str, dict[str, Any]] = {}
    for uid, d in all_dashboards().items():
        cm = configmap(d, o.ns_dash)
        cm["metadata"]["name"] = f"{uid}-dashboard"
        cm["metadata"]["labels"]["app.kubernetes.io/part-of"] = APP
        out[f"dashboard-{uid.removeprefix(APP + '-')}.yaml"] = cm
    return out


def notes(o: ManifestOptions) -> dict[str, str]:
    """The header comments of this family's files."""
    return {
        "servicemonitor.yaml": """\
# Scrapes the agents and the reporter (Services labelled app.kubernetes.io/name=gpuledger).
# Use this or podmonitor.yaml, never both (every series would be stored twice).
# honorLabels: the series' own namespace/pod (vLLM) and node win over the target's; a
# Prometheus with overrideHonorLabels: true would rename them exported_*.
""",
        "podmonitor.yaml": """\
# The same scrape as servicemonitor.yaml, for a Prometheus that selects PodMonitors.
# Not in kustomization.yaml: swap it for servicemonitor.yaml there, never list both.
""",
        "prometheusrule.yaml": """\
# Recording and alert rules (gpuledger.alerts); shaped by the alerts: section of --config.
""",
    }
