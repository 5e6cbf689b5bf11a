"""The ``examples/`` of ``gpuledger manifests``: a shared vLLM endpoint with ``gpuledger
meter`` as a sidecar, and the node agent's ``gateways:`` entry that reads it.

Examples, not part of the install: they describe the operator's own inference workload
(its model, GPUs and namespace are placeholders), so they are written under
``examples/`` with a kustomization of their own that the base's does not list. They are
generated (not hand-written) so that the tests hold them to the same checks as the base:
the Kubernetes schemas, the meter's own config model, the agent's config model.

Why the pod looks as it does (the long form is in the files' header comments):

* The meter takes the port the Service targets, so every caller is metered and nothing
  changes for them; vLLM keeps listening on the pod IP (not 127.0.0.1) because the node
  agent's vLLM discovery scrapes ``/metrics`` at the pod IP. The NetworkPolicy closes that
  bypass: only the gpuledger namespace reaches vLLM's port directly.
* The meter's ``node`` label comes from ``spec.nodeName`` (``$NODE_NAME``), a stable value:
  the agent identifies an upstream series by all its labels, and a label that changed
  with every pod (the hostname) would make each restarted meter a new series whose first
  reading is only a baseline.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpuledger.deploy.kubernetes.common import (
    APP,
    RUN_AS_USER,
    config_hash,
    container_security,
    copy_resources,
    dump_yaml,
)
from gpuledger.deploy.kubernetes.options import ManifestOptions

EXAMPLES_DIR = "examples"
ENDPOINT = "chat-llama-70b"
ENDPOINT_NAMESPACE = "llm-prod"
MODEL = "meta-llama/Llama-3.1-70B-Instruct"
VLLM_IMAGE = "vllm/vllm-openai:v0.11.0"
VLLM_PORT = 8000
METER_PORT = 9840
METER_PORT_NAME = "http"
METER_CONFIG_MAP = f"{ENDPOINT}-meter"
FRONT = f"{ENDPOINT}-metered"  # the alternative: the meter in front of the endpoint's Service
FRONT_CONFIG_MAP = f"{FRONT}-meter"
METER_KEYS_SECRET = f"{ENDPOINT}-meter-keys"
METER_KEYS_KEY = "keys.yaml"
METER_CONFIG_DIR = "/etc/gpuledger-meter/config"
METER_KEYS_DIR = "/etc/gpuledger-meter/keys"
SERVICE_PORT = VLLM_PORT  # callers keep the port they used before the meter

# docs/performance.md, "Metering proxy overhead": ~1.2 CPU-s per 1,000 sixteen-token
# streams (~0.07 ms of CPU per relayed SSE event); 200 streams at 20 tokens/s need ~0.3 of
# a core, and a core of its own keeps the meter from queueing behind other work. RSS 57 MiB
# after 2,200 streamed requests. No CPU limit: CFS throttling would add exactly the
# latency the request avoids.
METER_RESOURCES: Mapping[str, Mapping[str, str]] = {
    "requests": {"cpu": "1", "memory": "128Mi"},
    "limits": {"memory": "256Mi"},
}

_LABELS = {"app.kubernetes.io/name": ENDPOINT, "app.kubernetes.io/component": "model-endpoint"}


_FRONT_LABELS = {"app.kubernetes.io/name": FRONT, "app.kubernetes.io/component": "meter"}


def _meta(name: str, labels: Mapping[str, str] = _LABELS) -> dict[str, Any]:
    return {"name": name, "namespace": ENDPOINT_NAMESPACE, "labels": dict(labels)}


def meter_config(*, front: bool = False) -> dict[str, Any]:
    """The meter's ``meter.yaml`` (keys of :class:`gpuledger.meter.config.MeterConfig`):
    vLLM over the pod's loopback (sidecar), or the endpoint's Service (``front``)."""
    host = f"{ENDPOINT}.{ENDPOINT_NAMESPACE}.svc" if front else "127.0.0.1"
    return {
        "listen": {"host": "0.0.0.0", "port": METER_PORT},
        "upstream": f"http://{host}:{VLLM_PORT}",
        "service": ENDPOINT,
        "namespace": ENDPOINT_NAMESPACE,
        "tenant": {
            "order": ["api_key", "header", "user"],
            "header": "X-Tenant",
            "api_keys_file": f"{METER_KEYS_DIR}/{METER_KEYS_KEY}",
            "max_tenants_per_service": 100,
        },
    }


_METER_YAML_HEADER = f"""\
# gpuledger meter in front of vLLM in the same pod (docs/meter.md). Mounted at
# {METER_CONFIG_DIR}/meter.yaml. node_name: from $NODE_NAME (spec.nodeName).
# tenant.api_keys_file: Secret {METER_KEYS_SECRET} key {METER_KEYS_KEY}, a mapping
# "API key: tenant", read once at start and kept only as SHA-256 hashes.
"""


def meter_config_map() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(METER_CONFIG_MAP),
        "data": {"meter.yaml": _METER_YAML_HEADER + dump_yaml(meter_config())},
    }


def front_config_map() -> dict[str, Any]:
    header = _METER_YAML_HEADER.replace("vLLM in the same pod", f"the Service {ENDPOINT}")
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(FRONT_CONFIG_MAP, _FRONT_LABELS),
        "data": {"meter.yaml": header + dump_yaml(meter_config(front=True))},
    }


def meter_container(o: ManifestOptions) -> dict[str, Any]:
    """The sidecar: the agent's image, non-root, read-only root, no capabilities."""
    probe = {"httpGet": {"path": "/metrics", "port": METER_PORT_NAME}, "timeoutSeconds": 3}
    return {
        "name": "meter",
        "image": o.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["gpuledger"],
        "args": ["meter", "--config", f"{METER_CONFIG_DIR}/meter.yaml"],
        "ports": [{"name": METER_PORT_NAME, "containerPort": METER_PORT, "protocol": "TCP"}],
        "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
        "resources": copy_resources(METER_RESOURCES),
        # /metrics is the meter's own path (every other one, /health included, is vLLM's):
        # the meter stays live and ready while vLLM loads its weights.
        "livenessProbe": {**probe, "periodSeconds": 20, "failureThreshold": 3},
        "readinessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 3},
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "meter-config", "mountPath": METER_CONFIG_DIR, "readOnly": True},
            {"name": "meter-keys", "mountPath": METER_KEYS_DIR, "readOnly": True},
            {"name": "meter-tmp", "mountPath": "/tmp"},  # noqa: S108 -- an emptyDir
        ],
    }


def _vllm_container() -> dict[str, Any]:
    return {
        "name": "vllm",
        "image": VLLM_IMAGE,
        "args": [
            "--model",
            MODEL,
            # 0.0.0.0, not 127.0.0.1: the node agent scrapes vLLM's /metrics at the pod IP
            "--host",
            "0.0.0.0",
            "--port",
            str(VLLM_PORT),
            "--tensor-parallel-size",
            "8",
            # usage.prompt_tokens_details.cached_tokens: the meter's cached-prompt counter
            "--enable-prompt-tokens-details",
        ],
        "ports": [{"name": "vllm", "containerPort": VLLM_PORT, "protocol": "TCP"}],
        "resources": {"limits": {"nvidia.com/gpu": "8"}},
        "readinessProbe": {
            "httpGet": {"path": "/health", "port": "vllm"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
    }


def endpoint_deployment(o: ManifestOptions) -> dict[str, Any]:
    config_text = dump_yaml(meter_config())
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(ENDPOINT),
        "spec": {
            # one replica: the agent's entry reads one meter page through the Service
            "replicas": 1,
            "selector": {"matchLabels": dict(_LABELS)},
            "template": {
                "metadata": {
                    "labels": dict(_LABELS),
                    "annotations": {
                        # the node agent's vLLM discovery (vllm.discovery) scrapes this port
                        "gpuledger.io/vllm-port": str(VLLM_PORT),
                        "gpuledger.io/meter-config-sha256": config_hash(config_text),
                    },
                },
                "spec": {
                    "enableServiceLinks": False,
                    "securityContext": {
                        # the key file (0440) is readable by the meter's group
                        "fsGroup": RUN_AS_USER,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [_vllm_container(), meter_container(o)],
                    "volumes": _meter_volumes(METER_CONFIG_MAP),
                },
            },
        },
    }


def _meter_volumes(config_map: str) -> list[dict[str, Any]]:
    return [
        {"name": "meter-config", "configMap": {"name": config_map}},
        {
            "name": "meter-keys",
            "secret": {
                "secretName": METER_KEYS_SECRET,
                "items": [{"key": METER_KEYS_KEY, "path": METER_KEYS_KEY}],
                "defaultMode": 0o440,
            },
        },
        {"name": "meter-tmp", "emptyDir": {"sizeLimit": "16Mi"}},
    ]


def front_deployment(o: ManifestOptions) -> dict[str, Any]:
    """The alternative: the meter as a Deployment of its own in front of the endpoint's
    Service (callers switch to the meter's Service)."""
    config_text = dump_yaml(meter_config(front=True))
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(FRONT, _FRONT_LABELS),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": dict(_FRONT_LABELS)},
            "template": {
                "metadata": {
                    "labels": dict(_FRONT_LABELS),
                    "annotations": {"gpuledger.io/meter-config-sha256": config_hash(config_text)},
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": RUN_AS_USER,
                        "runAsGroup": RUN_AS_USER,
                        "fsGroup": RUN_AS_USER,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [meter_container(o)],
                    "volumes": _meter_volumes(FRONT_CONFIG_MAP),
                },
            },
        },
    }


def front_service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(FRONT, _FRONT_LABELS),
        "spec": {
            "type": "ClusterIP",
            "selector": dict(_FRONT_LABELS),
            "ports": [
                {
                    "name": "http",
                    "port": SERVICE_PORT,
                    "targetPort": METER_PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }


def endpoint_service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(ENDPOINT),
        "spec": {
            "type": "ClusterIP",
            "selector": dict(_LABELS),
            "ports": [
                {
                    "name": "http",
                    "port": SERVICE_PORT,
                    "targetPort": METER_PORT_NAME,  # the meter, not vLLM
                    "protocol": "TCP",
                }
            ],
        },
    }


def endpoint_network_policy(o: ManifestOptions) -> dict[str, Any]:
    """Callers reach only the meter; vLLM's own port only from gpuledger's namespace."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(ENDPOINT),
        "spec": {
            "podSelector": {"matchLabels": dict(_LABELS)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"ports": [{"port": METER_PORT, "protocol": "TCP"}]},
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": o.namespace}
                            },
                            "podSelector": {"matchLabels": {"app.kubernetes.io/name": APP}},
                        }
                    ],
                    "ports": [{"port": VLLM_PORT, "protocol": "TCP"}],
                },
            ],
        },
    }


def agent_gateways(*, front: bool = False) -> dict[str, Any]:
    """The ``gateways:`` section of the agent config that reads the meter's page."""
    url = f"http://{FRONT if front else ENDPOINT}.{ENDPOINT_NAMESPACE}.svc:{SERVICE_PORT}/metrics"
    return {"gateways": {"enabled": True, "endpoints": [{"url": url, "preset": "gpuledger-meter"}]}}


EXAMPLE_OBJECTS = (
    "configmap-meter.yaml",
    "deployment-endpoint.yaml",
    "service-endpoint.yaml",
    "networkpolicy-endpoint.yaml",
)


def examples(o: ManifestOptions) -> dict[str, dict[str, Any]]:
    """The example files by name (inside ``examples/``), their kustomization last."""
    out: dict[str, dict[str, Any]] = {
        "configmap-meter.yaml": meter_config_map(),
        "deployment-endpoint.yaml": endpoint_deployment(o),
        "service-endpoint.yaml": endpoint_service(),
        "networkpolicy-endpoint.yaml": endpoint_network_policy(o),
        "agent-gateways.yaml": agent_gateways(),
        # the alternative, not in the kustomization: the meter in front of the Service
        "configmap-meter-front.yaml": front_config_map(),
        "deployment-meter-front.yaml": front_deployment(o),
        "service-meter-front.yaml": front_service(),
        "agent-gateways-front.yaml": agent_gateways(front=True),
    }
    out["kustomization.yaml"] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": list(EXAMPLE_OBJECTS),
    }
    return out


_FRONT_NOTE = f"""\
# The alternative to the sidecar, not in kustomization.yaml: the meter as a Deployment of
# its own in front of the endpoint's Service (upstream http://{ENDPOINT}.{ENDPOINT_NAMESPACE}.svc:{VLLM_PORT},
# the endpoint's Service targeting vLLM as before). Callers switch to
# http://{FRONT}.{ENDPOINT_NAMESPACE}.svc:{SERVICE_PORT}; whoever keeps calling the endpoint's
# Service is not metered. One replica: each replica counts only what passed through it,
# so with more, each replica's /metrics must be read on its own. Same sidecar container
# (image, uid {RUN_AS_USER}, read-only root, no capabilities, CPU request 1) and key Secret.
# Never combine with the sidecar files: their Service already targets a meter (every
# token counted twice) and their NetworkPolicy admits vLLM's port only from gpuledger.
"""


def notes(o: ManifestOptions) -> dict[str, str]:
    """The header comments of the example files."""
    req = METER_RESOURCES["requests"]
    example = (
        "# EXAMPLE, not applied by the base's kustomization.yaml (it does not list examples/).\n"
    )
    return {
        "kustomization.yaml": example
        + f"""\
# A shared vLLM endpoint ({ENDPOINT_NAMESPACE}/{ENDPOINT}) with gpuledger meter as a sidecar.
# Adapt the model, GPUs and names, create the key Secret, then: kubectl apply -k .
#   kubectl -n {ENDPOINT_NAMESPACE} create secret generic {METER_KEYS_SECRET} \\
#     --from-file={METER_KEYS_KEY}=./keys.yaml      # "API key: tenant" per line
# (or a kustomize secretGenerator with the same name and key; never commit the keys).
# Then add agent-gateways.yaml's section to ONE agent's config (see that file).
# The *-front.yaml files are the alternative (the meter in front of the endpoint's
# Service), deliberately not listed here: use one or the other.
""",
        "configmap-meter.yaml": example
        + f"""\
# The meter's own config (gpuledger/meter/config.py; docs/meter.md): upstream vLLM on
# 127.0.0.1:{VLLM_PORT} in the same pod, the gpuledger service/namespace of every series.
""",
        "deployment-endpoint.yaml": example
        + f"""\
# vLLM serving {MODEL} with gpuledger meter as a sidecar.
# - meter: the gpuledger image (`gpuledger meter --config ...`), uid {RUN_AS_USER}, read-only
#   root, all capabilities dropped; listens on :{METER_PORT}, the port the Service targets,
#   so every caller is metered and nothing changes for them. Probes: GET /metrics (the
#   meter's own path; every other path is vLLM's).
# - CPU request {req["cpu"]}: docs/performance.md ("Metering proxy overhead") measured
#   ~0.07 ms of CPU per relayed SSE event, ~0.3 of a core for 200 streams at 20 tokens/s;
#   a core of its own keeps it from queueing behind other work. No CPU limit (throttling
#   adds latency); memory request {req["memory"]} (57 MiB RSS measured).
# - vLLM listens on 0.0.0.0:{VLLM_PORT}, not 127.0.0.1: the node agent's vLLM discovery
#   (annotation gpuledger.io/vllm-port) scrapes its /metrics at the pod IP. The
#   NetworkPolicy keeps callers off that port.
# - The API-key Secret {METER_KEYS_SECRET} is required: the meter exits 2 without it.
# - One replica: agent-gateways.yaml reads the meter through the Service, which reaches
#   one pod. With more replicas each replica's /metrics must be read on its own (a
#   Service address lands on a different replica each time).
""",
        "service-endpoint.yaml": example
        + f"""\
# Callers keep http://{ENDPOINT}.{ENDPOINT_NAMESPACE}.svc:{SERVICE_PORT}; the port now
# targets the meter (targetPort {METER_PORT_NAME}), not vLLM.
""",
        "networkpolicy-endpoint.yaml": example
        + f"""\
# Only the meter's port is open to callers; vLLM's own port ({VLLM_PORT}) only to the
# gpuledger pods in namespace {o.namespace} (the node agent's vLLM scrape and probes).
# Needs a CNI that enforces NetworkPolicy.
""",
        "configmap-meter-front.yaml": example + _FRONT_NOTE,
        "deployment-meter-front.yaml": example + _FRONT_NOTE,
        "service-meter-front.yaml": example + _FRONT_NOTE,
        "agent-gateways-front.yaml": example
        + """\
# The gateways: entry for the alternative (deployment-meter-front.yaml): the same rule as
# agent-gateways.yaml, exactly ONE agent's config, one replica read through its Service.
""",
        "agent-gateways.yaml": example
        + """\
# Not a Kubernetes object: the gateways: section of an agent config (AgentConfig) that
# reads the meter's page with the preset gpuledger-meter (service and namespace come
# from the page's own labels).
# Put it in exactly ONE agent's config: every agent with this section reads the page and
# stores its tokens under its own node, so in the DaemonSet's shared agent.yaml N nodes
# would count every token N times. There is no per-node meter discovery (like vLLM's)
# yet; docs/deploy.md, "Deploy the meter as a sidecar".
""",
    }
