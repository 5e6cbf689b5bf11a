"""The generated Kubernetes manifests (``gpuledger manifests``): the committed copy under
deploy/kubernetes/ is fresh, every core object passes the Kubernetes OpenAPI schemas
(kubernetes-validate, strict, offline), the prometheus-operator objects have the fields the
operator requires and select what they should, the pods are locked down, and the configs
they mount are ones the agent accepts."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from gpuledger import __version__
from gpuledger.agent.config import AgentConfig, ConfigError, load_config
from gpuledger.alerts.config import AlertsConfig
from gpuledger.chargeback.report.ratecard import default_card_text
from gpuledger.cli import app
from gpuledger.collectors.workload.podresources.source import PODRESOURCES_SOURCE
from gpuledger.deploy.kubernetes import common as k8s
from gpuledger.deploy.kubernetes.options import ManifestOptions
from gpuledger.deploy.kubernetes.output import GENERATED_HEADER, manifests, render, write_manifests
from tests.support.paths import REPO_ROOT

ROOT = REPO_ROOT
COMMITTED = ROOT / "deploy" / "kubernetes"
REGENERATE = "run `gpuledger manifests --out deploy/kubernetes`"

KUBERNETES_VERSION = "1.37"
"""The newest Kubernetes whose schemas the installed kubernetes-validate ships."""
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
NOT_API_OBJECTS = {"Kustomization"}

DEFAULT = manifests()
EVERYTHING_ON = ManifestOptions(
    namespace="gpu-observability",
    image="registry.example.com/gpuledger:1.2.3",
    runtime_class="nvidia",
    pod_resources=True,
    dcgm_url="http://$(HOST_IP):9400/metrics",
    metrics_require_token=True,
    priority_class="system-node-critical",
    prometheus_labels=(("release", "kube-prometheus-stack"),),
    dashboards_namespace="monitoring",
)
VARIANTS = {
    "defaults": ManifestOptions(),
    "everything-on": EVERYTHING_ON,
    "no-process-attribution": ManifestOptions(process_attribution=False),
}


def by_kind(docs: dict[str, dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in docs.values() if o["kind"] == kind]


def one(docs: dict[str, dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (obj,) = [o for o in by_kind(docs, kind) if o["metadata"]["name"] == name]
    return obj


def workloads(docs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in docs.values() if o["kind"] in ("DaemonSet", "Deployment")]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def all_containers(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A metav1.LabelSelector, as the API server and prometheus-operator evaluate it."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        present = key in labels
        ok = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[op]
        if not ok:
            return False
    return True


def container_env(container: dict[str, Any], node: str, host_ip: str) -> dict[str, str]:
    """The environment the kubelet gives the container: downward API fields resolved,
    ``$(VAR)`` expanded from the variables defined before it (as Kubernetes does)."""
    fields = {"spec.nodeName": node, "status.hostIP": host_ip}
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "valueFrom" in item:
            env[item["name"]] = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            env[item["name"]] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                lambda m: env.get(m[1], m[0]),
                item["value"],
            )
    return env


def mounted_file(spec: dict[str, Any], container: dict[str, Any], path: Path) -> dict[str, Any]:
    """The volume (and key) that provides ``path`` inside the container."""
    for mount in container["volumeMounts"]:
        parent = Path(mount["mountPath"])
        if path.parent == parent:
            (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
            return {"volume": volume, "key": path.name}
    raise AssertionError(f"{path} is on no volume of {container['name']}")


def load_mounted_config(
    tmp_path: Path, docs: dict[str, dict[str, Any]], workload: dict[str, Any], env: dict[str, str]
) -> AgentConfig:
    """Load the config file the workload's container is started with, from the ConfigMap."""
    container = pod_spec(workload)["containers"][0]
    args = container["args"]
    config_path = Path(args[args.index("--config") + 1])
    source = mounted_file(pod_spec(workload), container, config_path)
    cm = one(docs, "ConfigMap", source["volume"]["configMap"]["name"])
    local = tmp_path / config_path.name
    local.write_text(cm["data"][source["key"]], encoding="utf-8")
    return load_config(local, environ=env)


# --- the committed copy -----------------------------------------------------------------------
def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (the examples/ folder included) by relative path."""
    if not root.is_dir():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_committed_manifests_are_fresh(tmp_path: Path) -> None:
    write_manifests(tmp_path)
    fresh = _tree(tmp_path)
    committed = _tree(COMMITTED)
    assert any(n.startswith("examples/") for n in fresh)
    assert sorted(committed) == sorted(fresh), f"deploy/kubernetes/ is stale: {REGENERATE}"
    stale = sorted(n for n in fresh if fresh[n] != committed[n])
    assert not stale, f"deploy/kubernetes/ is stale ({', '.join(stale)}): {REGENERATE}"


def test_output_is_deterministic_and_drops_files_it_no_longer_generates(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_manifests(a, EVERYTHING_ON)
    write_manifests(b, EVERYTHING_ON)
    assert _tree(a) == _tree(b)
    (a / "dashboard-retired.yaml").write_text(GENERATED_HEADER + " (old)\nkind: X\n")
    (a / "examples" / "retired.yaml").write_text(GENERATED_HEADER + " (old)\nkind: X\n")
    (a / "my-patch.yaml").write_text("kind: Y\n")  # not ours: left alone
    write_manifests(a, EVERYTHING_ON)
    assert not (a / "dashboard-retired.yaml").exists()
    assert not (a / "examples" / "retired.yaml").exists()
    assert (a / "my-patch.yaml").exists()
    for path in b.glob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        assert text.startswith(GENERATED_HEADER)
        assert "&id0" not in text
        assert "*id0" not in text
        assert yaml.safe_load(text) == manifests(EVERYTHING_ON)[path.name]


# --- Kubernetes schemas -----------------------------------------------------------------------
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_core_object_passes_the_kubernetes_schema(variant: str) -> None:
    docs = manifests(VARIANTS[variant])
    core = {n: o for n, o in docs.items() if o["kind"] not in CRD_KINDS | NOT_API_OBJECTS}
    assert {o["kind"] for o in core.values()} == {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "DaemonSet",
        "Service",
        "PersistentVolumeClaim",
        "Deployment",
    }
    for name, obj in core.items():
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:  # pragma: no cover - on failure
            pytest.fail(f"{name}: {exc.message} at {list(exc.path)}")


def test_the_validator_is_real() -> None:
    ds = copy.deepcopy(DEFAULT["daemonset.yaml"])
    kubernetes_validate.validate(ds, KUBERNETES_VERSION, strict=True)
    pod_spec(ds)["containers"][0]["ports"][0]["containerPort"] = "nine"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, KUBERNETES_VERSION, strict=True)
    typo = copy.deepcopy(DEFAULT["daemonset.yaml"])
    pod_spec(typo)["hostPid"] = True  # strict: an unknown field is an error
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, KUBERNETES_VERSION, strict=True)


def test_kubernetes_version_is_the_newest_the_validator_ships() -> None:
    assert k8s.KUBERNETES_VERSION == KUBERNETES_VERSION
    from kubernetes_validate.utils import latest_version

    def minor(version: str) -> tuple[int, ...]:
        return tuple(int(p) for p in version.split(".")[:2])

    assert minor(latest_version()) >= minor(KUBERNETES_VERSION)


# --- kustomization ----------------------------------------------------------------------------
def test_kustomization_lists_every_object_but_the_alternative_monitor() -> None:
    kust = DEFAULT["kustomization.yaml"]
    assert kust["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kust["kind"] == "Kustomization"
    assert kust["namespace"] == "gpuledger"
    assert kust["labels"] == [
        {"pairs": {"app.kubernetes.io/part-of": "gpuledger"}, "includeSelectors": False}
    ]
    expected = [n for n in DEFAULT if n not in ("kustomization.yaml", "podmonitor.yaml")]
    assert kust["resources"] == expected
    for obj in DEFAULT.values():
        if obj["kind"] not in NOT_API_OBJECTS:
            assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "gpuledger"
    # dashboards in another namespace: the kustomization must not move them back
    other = manifests(ManifestOptions(dashboards_namespace="monitoring"))
    assert "namespace" not in other["kustomization.yaml"]
    dashboards = [o for o in by_kind(other, "ConfigMap") if "grafana_dashboard" in str(o)]
    assert len(dashboards) == 6
    assert {o["metadata"]["namespace"] for o in dashboards} == {"monitoring"}
    assert one(other, "DaemonSet", k8s.AGENT)["metadata"]["namespace"] == "gpuledger"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomize_builds_it(tmp_path: Path) -> None:
    write_manifests(tmp_path)
    built = subprocess.run(
        ["kubectl", "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert built.returncode == 0, built.stderr
    objects = [d for d in yaml.safe_load_all(built.stdout) if d]
    listed = [DEFAULT[n] for n in DEFAULT["kustomization.yaml"]["resources"]]
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(map(key, objects)) == sorted(map(key, listed))
    for obj in objects:
        if obj["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == "gpuledger"


# --- prometheus-operator objects (no CRD schema offline: checked by structure) -----------------
def _services_and_pods(docs: dict[str, dict[str, Any]]) -> tuple[list[Any], list[Any]]:
    return by_kind(docs, "Service"), workloads(docs)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_service_monitor_selects_the_services_and_their_named_port(variant: str) -> None:
    docs = manifests(VARIANTS[variant])
    sm = one(docs, "ServiceMonitor", "gpuledger")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert "namespaceSelector" not in sm["spec"]  # its own namespace, where the Services are
    services, pods = _services_and_pods(docs)
    chosen = [s for s in services if selects(sm["spec"]["selector"], s["metadata"]["labels"])]
    assert {s["metadata"]["name"] for s in chosen} == {k8s.AGENT, k8s.REPORTER}
    assert {s["metadata"]["namespace"] for s in chosen} == {sm["metadata"]["namespace"]}
    assert sm["spec"]["endpoints"]
    for ep in sm["spec"]["endpoints"]:
        assert ("port" in ep) != ("targetPort" in ep)
        assert ep["path"] == "/metrics"
        assert re.fullmatch(r"\d+s", ep["interval"])
        for svc in chosen:
            (port,) = [p for p in svc["spec"]["ports"] if p["name"] == ep["port"]]
            # ... and the Service's targetPort is a named port of the pods it selects
            backing = [w for w in pods if _backs(svc, w)]
            assert len(backing) == 1
            names = {p["name"] for p in pod_spec(backing[0])["containers"][0]["ports"]}
            assert port["targetPort"] in names
    agent_svc = one(docs, "Service", k8s.AGENT)
    assert agent_svc["spec"]["clusterIP"] == "None"  # one endpoint per node's agent


def _backs(service: dict[str, Any], workload: dict[str, Any]) -> bool:
    labels = workload["spec"]["template"]["metadata"]["labels"]
    return selects({"matchLabels": service["spec"]["selector"]}, labels)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_pod_monitor_selects_the_pods_and_their_named_port(variant: str) -> None:
    docs = manifests(VARIANTS[variant])
    pm = one(docs, "PodMonitor", "gpuledger")
    assert pm["apiVersion"] == "monitoring.coreos.com/v1"
    _, pods = _services_and_pods(docs)
    chosen = [
        w
        for w in pods
        if selects(pm["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])
    ]
    assert {w["metadata"]["name"] for w in chosen} == {k8s.AGENT, k8s.REPORTER}
    assert pm["spec"]["podMetricsEndpoints"]
    for ep in pm["spec"]["podMetricsEndpoints"]:
        assert ep["path"] == "/metrics"
        for w in chosen:
            names = {p["name"] for p in pod_spec(w)["containers"][0]["ports"]}
            assert ep["port"] in names
    # the two monitors scrape alike: whichever is used, the series are the same
    sm = one(docs, "ServiceMonitor", "gpuledger")
    assert pm["spec"]["podMetricsEndpoints"] == sm["spec"]["endpoints"]
    assert pm["spec"]["selector"] == sm["spec"]["selector"]


def test_scrape_keeps_the_series_labels_and_names_the_jobs_the_alerts_expect() -> None:
    (ep,) = DEFAULT["servicemonitor.yaml"]["spec"]["endpoints"]
    assert ep["honorLabels"] is True  # vLLM series' namespace/pod, every series' node
    relabel = ep["relabelings"]
    node = [r for r in relabel if r.get("targetLabel") == "node"]
    assert node == [
        {
            "action": "replace",
            "sourceLabels": ["__meta_kubernetes_pod_node_name"],
            "targetLabel": "node",
        }
    ]
    (job,) = [r for r in relabel if r.get("targetLabel") == "job"]
    assert job["sourceLabels"] == ["__meta_kubernetes_pod_label_app_kubernetes_io_component"]
    regex = AlertsConfig().agent_job_regex
    for workload in workloads(DEFAULT):
        component = workload["spec"]["template"]["metadata"]["labels"][
            "app.kubernetes.io/component"
        ]
        value = re.sub(r"\$1", component, job["replacement"])
        assert re.fullmatch(job["regex"], component)
        assert re.fullmatch(regex, value), f"job {value} escapes the AgentDown alert"
    (drop,) = [r for r in relabel if r["action"] == "labeldrop"]
    for label in ("namespace", "pod", "container", "service", "endpoint"):
        assert re.fullmatch(drop["regex"], label)
    for label in ("node", "job", "instance"):
        assert not re.fullmatch(drop["regex"], label)


def test_monitors_send_the_token_exactly_when_metrics_require_it(tmp_path: Path) -> None:
    for options, required in ((ManifestOptions(), False), (EVERYTHING_ON, True)):
        docs = manifests(options)
        env = container_env(pod_spec(one(docs, "DaemonSet", k8s.AGENT))["containers"][0], "n", "h")
        cfg = load_mounted_config(tmp_path, docs, one(docs, "DaemonSet", k8s.AGENT), env)
        assert cfg.http.metrics_require_token is required
        for ep in (
            *one(docs, "ServiceMonitor", "gpuledger")["spec"]["endpoints"],
            *one(docs, "PodMonitor", "gpuledger")["spec"]["podMetricsEndpoints"],
        ):
            if required:
                assert ep["authorization"] == {
                    "type": "Bearer",
                    "credentials": {"name": "gpuledger-api-token", "key": "token"},
                }
            else:
                assert "authorization" not in ep
                assert "bearerTokenSecret" not in ep


def test_prometheus_rule_structure_and_selector_labels() -> None:
    rule = DEFAULT["prometheusrule.yaml"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    assert rule["metadata"]["namespace"] == "gpuledger"
    groups = rule["spec"]["groups"]
    assert groups
    assert len({g["name"] for g in groups}) == len(groups)
    for group in groups:
        assert group["name"]
        assert group["rules"]
        for r in group["rules"]:
            assert isinstance(r["expr"], str)
            assert r["expr"]
            assert ("record" in r) != ("alert" in r)
    assert "release" not in rule["metadata"]["labels"]  # default: no selector label
    docs = manifests(EVERYTHING_ON)
    for kind in CRD_KINDS:
        (obj,) = by_kind(docs, kind)
        assert obj["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert obj["metadata"]["namespace"] == "gpu-observability"


# --- security ---------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_container_is_locked_down(variant: str) -> None:
    docs = manifests(VARIANTS[variant])
    seen = set()
    for workload in workloads(docs):
        spec = pod_spec(workload)
        assert not spec.get("hostNetwork")
        assert not spec.get("hostIPC")
        assert spec["enableServiceLinks"] is False
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in all_containers(spec):
            seen.add(c["name"])
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, c["name"]
            assert sc["readOnlyRootFilesystem"] is True, c["name"]
            assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            assert not sc.get("privileged")
            assert c["resources"]["requests"]
            assert c["resources"]["limits"]
            if c["name"] == "chown-state":  # the documented exception: root, CAP_CHOWN only
                assert sc["capabilities"]["add"] == ["CHOWN"]
                assert sc["runAsUser"] == 0
                assert c["volumeMounts"] == [{"name": "state", "mountPath": k8s.STATE_DIR}]
            elif (
                c["name"] == "agent"
                and workload["kind"] == "DaemonSet"
                and VARIANTS[variant].pod_resources
            ):  # opted in: root for the kubelet's pod-resources socket, still no caps
                assert "add" not in sc["capabilities"], c["name"]
                assert sc["runAsUser"] == sc["runAsGroup"] == 0
                assert sc["runAsNonRoot"] is False
            else:  # every other container, and the agent by default: non-root
                assert "add" not in sc["capabilities"], c["name"]
                assert sc["runAsNonRoot"] is True
                assert sc["runAsUser"] == sc["runAsGroup"] == 65532
    assert seen == {"chown-state", "agent", "reporter"}


def test_host_access_follows_process_attribution(tmp_path: Path) -> None:
    for on in (True, False):
        docs = manifests(ManifestOptions(process_attribution=on))
        ds = one(docs, "DaemonSet", k8s.AGENT)
        spec = pod_spec(ds)
        assert spec["hostPID"] is on
        host_paths = {v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
        base = {k8s.STATE_DIR}  # the pod-resources socket's directory only when opted in
        assert host_paths == (base | {"/proc"} if on else base)
        agent = spec["containers"][0]
        proc_mounts = [m for m in agent["volumeMounts"] if m["mountPath"] == "/host/proc"]
        assert proc_mounts == (
            [{"name": "host-proc", "mountPath": "/host/proc", "readOnly": True}] if on else []
        )
        cfg = load_mounted_config(tmp_path, docs, ds, container_env(agent, "n", "h"))
        assert cfg.attribution.proc_root == (Path("/host/proc") if on else None)
    # nothing else on the host is reachable, and only the state directory is writable
    for variant in VARIANTS.values():
        spec = pod_spec(one(manifests(variant), "DaemonSet", k8s.AGENT))
        host_volumes = {v["name"] for v in spec["volumes"] if "hostPath" in v}
        for m in spec["containers"][0]["volumeMounts"]:
            if m["name"] in host_volumes and m["name"] != "state":
                assert m.get("readOnly") is True, m
    for wl in workloads(DEFAULT):
        assert "hostPID" not in pod_spec(wl) or wl["kind"] == "DaemonSet"


def test_pod_resources_socket_is_opt_in_and_runs_the_agent_as_root(tmp_path: Path) -> None:
    def agent(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        container: dict[str, Any] = pod_spec(one(docs, "DaemonSet", k8s.AGENT))["containers"][0]
        return container

    def mounted(docs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        return [m for m in agent(docs)["volumeMounts"] if m["name"] == "pod-resources"]

    on = manifests(ManifestOptions(pod_resources=True))
    assert mounted(DEFAULT) == []  # non-root by default
    assert agent(DEFAULT)["securityContext"]["runAsUser"] == 65532
    assert agent(DEFAULT)["securityContext"]["runAsNonRoot"] is True
    assert mounted(on) == [
        {
            "name": "pod-resources",
            "mountPath": "/var/lib/kubelet/pod-resources",
            "readOnly": True,
        }
    ]
    volume = next(
        v
        for v in pod_spec(one(on, "DaemonSet", k8s.AGENT))["volumes"]
        if v["name"] == "pod-resources"
    )
    # a node without the directory still starts the agent (the collector is down there)
    assert volume["hostPath"] == {
        "path": "/var/lib/kubelet/pod-resources",
        "type": "DirectoryOrCreate",
    }
    sc = agent(on)["securityContext"]
    assert sc["runAsUser"] == sc["runAsGroup"] == 0  # the socket admits its owner only
    assert sc["runAsNonRoot"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    for opts, enabled in ((ManifestOptions(pod_resources=True), True), (ManifestOptions(), False)):
        docs = manifests(opts)
        ds = one(docs, "DaemonSet", k8s.AGENT)
        cfg = load_mounted_config(tmp_path, docs, ds, container_env(agent(docs), "n", "h"))
        assert cfg.section(PODRESOURCES_SOURCE).enabled is enabled


def test_rbac_is_exactly_what_the_pod_and_namespace_directories_need() -> None:
    (role,) = by_kind(DEFAULT, "ClusterRole")
    grants = {
        (group, resource, verb)
        for r in role["rules"]
        for group in r["apiGroups"]
        for resource in r["resources"]
        for verb in r["verbs"]
    }
    assert grants == {
        ("", "pods", "get"),
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("", "nodes", "get"),
        # the namespace directory: namespaces' labels name cost centers (issue 18)
        ("", "namespaces", "get"),
        ("", "namespaces", "list"),
    }
    assert all(set(r) == {"apiGroups", "resources", "verbs"} for r in role["rules"])
    (binding,) = by_kind(DEFAULT, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": k8s.AGENT, "namespace": "gpuledger"}
    ]
    assert not by_kind(DEFAULT, "Role")
    assert not by_kind(DEFAULT, "RoleBinding")
    ds, dep = one(DEFAULT, "DaemonSet", k8s.AGENT), one(DEFAULT, "Deployment", k8s.REPORTER)
    assert pod_spec(ds)["serviceAccountName"] == k8s.AGENT
    assert pod_spec(dep)["serviceAccountName"] == k8s.REPORTER
    assert pod_spec(dep)["automountServiceAccountToken"] is False
    reporter_sa = one(DEFAULT, "ServiceAccount", k8s.REPORTER)
    assert reporter_sa["automountServiceAccountToken"] is False


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_secrets_are_referenced_never_generated(variant: str) -> None:
    docs = manifests(VARIANTS[variant])
    assert not by_kind(docs, "Secret")
    text = "\n".join(render(n, o, VARIANTS[variant]) for n, o in docs.items())
    assert "kind: Secret\n" not in text
    for workload in workloads(docs):
        secrets = {
            v["secret"]["secretName"]: v["secret"]
            for v in pod_spec(workload)["volumes"]
            if "secret" in v
        }
        assert set(secrets) == {"gpuledger-ledger", "gpuledger-api-token"}
        assert secrets["gpuledger-ledger"]["items"] == [{"key": "url", "path": "url"}]
        assert secrets["gpuledger-api-token"]["items"] == [{"key": "token", "path": "token"}]
        # required: the agent refuses to start without either file (no silent SQLite)
        assert all(not s.get("optional") for s in secrets.values())


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_probes_use_healthz_and_readyz_on_the_named_port(variant: str) -> None:
    for workload in workloads(manifests(VARIANTS[variant])):
        (c,) = pod_spec(workload)["containers"]
        assert c["ports"] == [{"name": "metrics", "containerPort": 9835, "protocol": "TCP"}]
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}


# --- the workloads ----------------------------------------------------------------------------
def test_daemonset_scheduling_and_runtime() -> None:
    ds = one(DEFAULT, "DaemonSet", k8s.AGENT)
    spec = pod_spec(ds)
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    assert spec["terminationGracePeriodSeconds"] == 15
    assert ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == 1
    assert "runtimeClassName" not in spec
    assert "priorityClassName" not in spec
    agent = spec["containers"][0]
    assert agent["image"] == f"ghcr.io/gpuledger/gpuledger:{__version__}"
    env = {e["name"]: e for e in agent["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
    assert env["NVIDIA_DRIVER_CAPABILITIES"]["value"] == "utility"
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert "nvidia.com/gpu" not in str(agent["resources"])  # claims no GPU
    # sized from docs/performance.md: the request covers the measured steady RSS (66.9 MiB)
    assert agent["resources"] == {
        "requests": {"cpu": "50m", "memory": "128Mi"},
        "limits": {"cpu": "500m", "memory": "256Mi"},
    }
    (tmp,) = [m for m in agent["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert any(v["name"] == tmp["name"] and "emptyDir" in v for v in spec["volumes"])
    (state,) = [v for v in spec["volumes"] if v["name"] == "state"]
    assert state["hostPath"] == {"path": "/var/lib/gpuledger", "type": "DirectoryOrCreate"}
    on = pod_spec(one(manifests(EVERYTHING_ON), "DaemonSet", k8s.AGENT))
    assert on["runtimeClassName"] == "nvidia"
    assert on["priorityClassName"] == "system-node-critical"
    assert on["containers"][0]["image"] == "registry.example.com/gpuledger:1.2.3"


def test_reporter_deployment_and_its_volume() -> None:
    dep = one(DEFAULT, "Deployment", k8s.REPORTER)
    assert dep["spec"]["replicas"] == 1
    # the reporter runs the Dockerfile's reporter target: the agent's image has no matplotlib
    (reporter,) = pod_spec(dep)["containers"]
    assert reporter["image"] == f"ghcr.io/gpuledger/gpuledger:{__version__}-reporter"
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    pvc = one(DEFAULT, "PersistentVolumeClaim", "gpuledger-reports")
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "1Gi"
    spec = pod_spec(dep)
    (vol,) = [v for v in spec["volumes"] if "persistentVolumeClaim" in v]
    assert vol["persistentVolumeClaim"]["claimName"] == "gpuledger-reports"
    assert spec["securityContext"]["fsGroup"] == 65532  # the claim is writable by the agent
    assert "nodeSelector" not in spec
    assert "hostPID" not in spec
    svc = one(DEFAULT, "Service", k8s.REPORTER)
    assert _backs(svc, dep)
    assert not _backs(svc, one(DEFAULT, "DaemonSet", k8s.AGENT))


# --- the configs the pods are started with ----------------------------------------------------
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_agent_config_loads_and_points_at_the_mounts(variant: str, tmp_path: Path) -> None:
    options = VARIANTS[variant]
    docs = manifests(options)
    ds = one(docs, "DaemonSet", k8s.AGENT)
    spec, agent = pod_spec(ds), pod_spec(ds)["containers"][0]
    env = container_env(agent, node="gpu-node-17", host_ip="10.0.0.7")
    cfg = load_mounted_config(tmp_path, docs, ds, env)
    assert cfg.roles == ("node",)
    assert cfg.node_name == "gpu-node-17"
    assert (cfg.listen.host, cfg.listen.port) == ("0.0.0.0", 9835)
    assert cfg.log.format == "json"
    assert cfg.state_dir == Path("/var/lib/gpuledger")
    assert cfg.attribution.kubernetes.enabled
    assert cfg.vllm.enabled
    assert cfg.vllm.discovery.enabled
    if options.dcgm_url is None:
        assert not cfg.dcgm.enabled
    else:
        assert cfg.dcgm.enabled
        assert cfg.dcgm.url == "http://10.0.0.7:9400/metrics"  # $(HOST_IP) expanded
    ledger = mounted_file(spec, agent, Path(str(cfg.ledger.url_file)))
    assert ledger["volume"]["secret"]["secretName"] == "gpuledger-ledger"
    assert ledger["key"] == "url"
    assert cfg.http.api_token_file is not None
    token = mounted_file(spec, agent, cfg.http.api_token_file)
    assert token["volume"]["secret"]["secretName"] == "gpuledger-api-token"
    assert token["key"] == "token"
    state = [m for m in agent["volumeMounts"] if m["mountPath"] == str(cfg.state_dir)]
    assert state
    assert not state[0].get("readOnly")
    if cfg.attribution.proc_root is not None:
        assert any(m["mountPath"] == str(cfg.attribution.proc_root) for m in agent["volumeMounts"])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_reporter_config_loads_and_writes_to_the_claim(variant: str, tmp_path: Path) -> None:
    docs = manifests(VARIANTS[variant])
    dep = one(docs, "Deployment", k8s.REPORTER)
    spec, reporter = pod_spec(dep), pod_spec(dep)["containers"][0]
    cfg = load_mounted_config(tmp_path, docs, dep, container_env(reporter, "n", "h"))
    assert cfg.roles == ("reporter",)
    assert (cfg.listen.host, cfg.listen.port) == ("0.0.0.0", 9835)
    (claim,) = [
        m
        for m in reporter["volumeMounts"]
        if m["name"] == next(v["name"] for v in spec["volumes"] if "persistentVolumeClaim" in v)
    ]
    assert cfg.reports_dir().is_relative_to(claim["mountPath"])
    ledger = mounted_file(spec, reporter, Path(str(cfg.ledger.url_file)))
    assert ledger["volume"]["secret"]["secretName"] == "gpuledger-ledger"
    assert cfg.http.api_token_file is not None  # /reports/ is behind the token
    assert mounted_file(spec, reporter, cfg.http.api_token_file)["key"] == "token"


def test_service_links_stay_off_because_the_agent_refuses_unknown_variables(
    tmp_path: Path,
) -> None:
    ds = one(DEFAULT, "DaemonSet", k8s.AGENT)
    env = container_env(pod_spec(ds)["containers"][0], "n", "h")
    # what the kubelet injects for the gpuledger-reporter Service with service links on
    env |= {
        "GPULEDGER_REPORTER_SERVICE_HOST": "10.96.0.10",
        "GPULEDGER_REPORTER_PORT": "tcp://10.96.0.10:9835",
    }
    with pytest.raises(ConfigError, match="GPULEDGER_REPORTER_SERVICE_HOST"):
        load_mounted_config(tmp_path, DEFAULT, ds, env)
    for workload in workloads(DEFAULT):
        assert pod_spec(workload)["enableServiceLinks"] is False


def test_config_changes_roll_the_pods() -> None:
    def annotation(docs: dict[str, dict[str, Any]], kind: str, name: str) -> str:
        meta = one(docs, kind, name)["spec"]["template"]["metadata"]
        return str(meta["annotations"]["gpuledger.io/config-sha256"])

    other = manifests(ManifestOptions(process_attribution=False))
    assert annotation(DEFAULT, "DaemonSet", k8s.AGENT) != annotation(other, "DaemonSet", k8s.AGENT)
    assert annotation(DEFAULT, "Deployment", k8s.REPORTER) == annotation(
        other, "Deployment", k8s.REPORTER
    )


# --- the command ------------------------------------------------------------------------------
def test_cli_writes_and_lists_the_files(tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    result = CliRunner().invoke(app, ["manifests", "--out", str(out)])
    assert result.exit_code == 0, result.output
    listed = [Path(line) for line in result.stdout.splitlines() if line.strip()]
    base = [p.name for p in listed if p.parent == out]
    assert base == list(DEFAULT)
    assert sorted(p.name for p in out.glob("*.yaml")) == sorted(DEFAULT)
    examples = [p for p in listed if p.parent == out / "examples"]
    assert examples
    assert len(listed) == len(base) + len(examples)
    assert sorted(p.name for p in (out / "examples").iterdir()) == sorted(p.name for p in examples)
    assert (out / "daemonset.yaml").read_bytes() == (COMMITTED / "daemonset.yaml").read_bytes()


@pytest.mark.parametrize(
    ("image", "reporter_image", "expected"),
    [
        ("reg.example.com/gpuledger:1.2.3", None, "reg.example.com/gpuledger:1.2.3-reporter"),
        ("reg.example.com:5000/gpuledger", None, "reg.example.com:5000/gpuledger:latest-reporter"),
        ("r.example.com/g@sha256:" + "a" * 64, "r.example.com/rep:1", "r.example.com/rep:1"),
    ],
)
def test_reporter_image_follows_the_agent_image(
    image: str, reporter_image: str | None, expected: str
) -> None:
    options = ManifestOptions(image=image, reporter_image=reporter_image)
    assert options.reporter_ref == expected


def test_reporter_image_needed_for_a_digest() -> None:
    with pytest.raises(ValueError, match="--reporter-image"):
        ManifestOptions(image="r.example.com/g@sha256:" + "a" * 64)


def test_cli_flags_reach_the_objects(tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    result = CliRunner().invoke(
        app,
        [
            "manifests",
            "--out",
            str(out),
            "--namespace",
            "gpu-observability",
            "--image",
            "registry.example.com/gpuledger:1.2.3",
            "--runtime-class",
            "nvidia",
            "--pod-resources",
            "--dcgm-url",
            "http://$(HOST_IP):9400/metrics",
            "--metrics-require-token",
            "--priority-class",
            "system-node-critical",
            "--prometheus-label",
            "release=kube-prometheus-stack",
            "--dashboards-namespace",
            "monitoring",
        ],
    )
    assert result.exit_code == 0, result.output
    for name, obj in manifests(EVERYTHING_ON).items():
        assert yaml.safe_load((out / name).read_text(encoding="utf-8")) == obj, name
    off = tmp_path / "off"
    result = CliRunner().invoke(app, ["manifests", "--out", str(off), "--no-process-attribution"])
    assert result.exit_code == 0, result.output
    ds = yaml.safe_load((off / "daemonset.yaml").read_text(encoding="utf-8"))
    assert pod_spec(ds)["hostPID"] is False


@pytest.mark.parametrize(
    "args",
    [
        ["--prometheus-label", "release"],
        ["--prometheus-label", "bad key=x"],
        ["--namespace", "Not_A_Namespace"],
        ["--dcgm-url", "localhost:9400"],
    ],
)
def test_cli_refuses_bad_options(args: list[str], tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["manifests", "--out", str(tmp_path / "k"), *args])
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "k").exists()


def test_config_shapes_the_rule_and_the_reporter(tmp_path: Path) -> None:
    card = tmp_path / "card.yaml"
    card.write_text(default_card_text(), encoding="utf-8")
    config = tmp_path / "agent.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "alerts": {"ttft_p99_seconds": 0.25, "ttft_for": "7m"},
                "report": {
                    "fleet": "prod-eu",
                    "idle_policy": "share-weighted",
                    "rate_card": str(card),
                },
            }
        ),
        encoding="utf-8",
    )
    out = tmp_path / "k8s"
    result = CliRunner().invoke(app, ["manifests", "--out", str(out), "--config", str(config)])
    assert result.exit_code == 0, result.output
    rule = yaml.safe_load((out / "prometheusrule.yaml").read_text(encoding="utf-8"))
    default_rule = DEFAULT["prometheusrule.yaml"]
    assert rule != default_rule
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert any("0.25" in r["expr"] and r.get("for") == "7m" for r in alerts)
    cm = yaml.safe_load((out / "configmap.yaml").read_text(encoding="utf-8"))
    assert cm["data"]["rate-card.yaml"] == default_card_text()
    reporter = yaml.safe_load(cm["data"]["reporter.yaml"])
    assert reporter["report"]["fleet"] == "prod-eu"
    assert reporter["report"]["idle_policy"] == "share-weighted"
    assert reporter["report"]["rate_card"] == "/etc/gpuledger/config/rate-card.yaml"
    # the card is in the ConfigMap the reporter mounts at /etc/gpuledger/config
    dep = yaml.safe_load((out / "deployment-reporter.yaml").read_text(encoding="utf-8"))
    source = mounted_file(
        pod_spec(dep), pod_spec(dep)["containers"][0], Path(reporter["report"]["rate_card"])
    )
    assert source["volume"]["configMap"]["name"] == cm["metadata"]["name"]
    # and the config loads once the card is where the pod would find it
    reporter["report"]["rate_card"] = str(card)
    local = tmp_path / "reporter.yaml"
    local.write_text(yaml.safe_dump(reporter), encoding="utf-8")
    cfg = load_config(local, environ={})
    assert cfg.report.fleet == "prod-eu"


def test_the_configs_cluster_reaches_the_agent_and_the_reporter(tmp_path: Path) -> None:
    """Issue 18: ``gpuledger manifests --config`` with ``cluster: prod-eu`` writes it into
    both pods' configs; the default cluster writes nothing (the committed copy is it)."""
    cfg = load_config(None, environ={"GPULEDGER_CLUSTER": "prod-eu"})
    docs = manifests(ManifestOptions.from_config(cfg))
    agent_ds = one(docs, "DaemonSet", k8s.AGENT)
    env = container_env(pod_spec(agent_ds)["containers"][0], node="gpu-node-1", host_ip="h")
    assert load_mounted_config(tmp_path, docs, agent_ds, env).cluster == "prod-eu"
    reporter = one(docs, "Deployment", k8s.REPORTER)
    assert load_mounted_config(tmp_path, docs, reporter, {}).cluster == "prod-eu"
    plain = one(manifests(ManifestOptions()), "ConfigMap", k8s.CONFIG_MAP)
    assert all("cluster:" not in text for text in plain["data"].values())
    with pytest.raises(ValueError, match="cluster name"):
        ManifestOptions(cluster="prod eu")
