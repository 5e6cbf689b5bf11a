"""The ``examples/`` of ``gpuledger manifests``: a vLLM endpoint with ``gpuledger meter`` as
a sidecar. Every object passes the Kubernetes schemas; the sidecar is locked down; the
meter's config in the ConfigMap loads with the meter's own loader and points at the
mounts; the Service reaches the meter, not vLLM; the agent's example ``gateways:`` section
loads with the agent's config model and reads the meter through that Service."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import kubernetes_validate
import openai
import pytest
import yaml

from gpuledger.agent.config import load_config
from gpuledger.collectors.gateway.scrape import GatewayCollector
from gpuledger.deploy.kubernetes.options import ManifestOptions
from gpuledger.deploy.kubernetes.output import GENERATED_HEADER, write_manifests
from gpuledger.meter.config import load_meter, parse_config
from tests.support.meter_harness import MeterProcess, free_port
from tests.support.openai_standin import OpenAIBehaviour, OpenAIStandIn
from tests.support.paths import REPO_ROOT

KUBERNETES_VERSION = "1.37"
OPTIONS = {
    "defaults": ManifestOptions(),
    "custom": ManifestOptions(namespace="gpu-observability", image="reg.example/gpuledger:9.9"),
}
NOT_API_OBJECTS = {"Kustomization"}


def example_files(tmp_path: Path, options: ManifestOptions) -> dict[str, str]:
    """The text of each file ``gpuledger manifests`` writes into ``examples/``."""
    write_manifests(tmp_path, options)
    return {p.name: p.read_text(encoding="utf-8") for p in (tmp_path / "examples").iterdir()}


def docs_of(files: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {name: yaml.safe_load(text) for name, text in files.items()}


def one(docs: dict[str, dict[str, Any]], kind: str, *, front: bool = False) -> dict[str, Any]:
    """The sidecar example's object of ``kind`` (or the front alternative's)."""
    (obj,) = [
        o for n, o in docs.items() if o.get("kind") == kind and n.endswith("-front.yaml") is front
    ]
    return obj


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    (c,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return c


def volume_for(deployment: dict[str, Any], c: dict[str, Any], path: Path) -> dict[str, Any]:
    """The volume whose mount holds the file ``path`` in container ``c``."""
    for mount in c["volumeMounts"]:
        if path.parent == Path(mount["mountPath"]):
            spec = deployment["spec"]["template"]["spec"]
            (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
            return dict(volume)
    raise AssertionError(f"{path} is on no volume of {c['name']}")


@pytest.fixture(params=sorted(OPTIONS))
def variant(
    request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[ManifestOptions, dict[str, Any]]:
    options = OPTIONS[request.param]
    return options, docs_of(example_files(tmp_path / "out", options))


def test_examples_are_written_apart_from_the_base_and_say_so(tmp_path: Path) -> None:
    files = example_files(tmp_path, ManifestOptions())
    base = yaml.safe_load((tmp_path / "kustomization.yaml").read_text(encoding="utf-8"))
    assert not any("examples" in r for r in base["resources"])
    assert sorted(files) == sorted(
        [
            "agent-gateways-front.yaml",
            "agent-gateways.yaml",
            "configmap-meter-front.yaml",
            "deployment-meter-front.yaml",
            "service-meter-front.yaml",
            "configmap-meter.yaml",
            "deployment-endpoint.yaml",
            "kustomization.yaml",
            "networkpolicy-endpoint.yaml",
            "service-endpoint.yaml",
        ]
    )
    for name, text in files.items():
        assert text.startswith(GENERATED_HEADER), name
        assert "EXAMPLE, not applied by the base's kustomization.yaml" in text, name
    kust = yaml.safe_load(files["kustomization.yaml"])
    sidecar = sorted(
        n
        for n in files
        if n not in ("kustomization.yaml", "agent-gateways.yaml") and "front" not in n
    )
    assert sorted(kust["resources"]) == sidecar  # the front alternative is not listed
    # no Secret object, and no key: the key file is the operator's to create
    assert all("kind: Secret\n" not in t for t in files.values())


def test_every_example_object_passes_the_kubernetes_schema(
    variant: tuple[ManifestOptions, dict[str, Any]],
) -> None:
    _, docs = variant
    kinds = set()
    for name, obj in docs.items():
        if name.startswith("agent-gateways") or obj["kind"] in NOT_API_OBJECTS:
            continue
        kinds.add(obj["kind"])
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:  # pragma: no cover - on failure
            pytest.fail(f"{name}: {exc.message} at {list(exc.path)}")
    assert kinds == {"ConfigMap", "Deployment", "Service", "NetworkPolicy"}


@pytest.mark.parametrize("front", [False, True])
def test_the_meter_container_is_locked_down(
    variant: tuple[ManifestOptions, dict[str, Any]], front: bool
) -> None:
    options, docs = variant
    dep = one(docs, "Deployment", front=front)
    meter = container(dep, "meter")
    assert meter["image"] == options.image  # the agent's image
    assert meter["command"] == ["gpuledger"]
    assert meter["args"][:2] == ["meter", "--config"]
    sc = meter["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == sc["runAsGroup"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not sc.get("privileged")
    # a core of its own (docs/performance.md), no CPU limit to throttle it
    assert meter["resources"]["requests"]["cpu"] == "1"
    assert "cpu" not in meter["resources"]["limits"]
    assert meter["resources"]["limits"]["memory"]
    assert "nvidia.com/gpu" not in str(meter["resources"])
    for probe in ("livenessProbe", "readinessProbe"):
        assert meter[probe]["httpGet"] == {"path": "/metrics", "port": "http"}
    spec = dep["spec"]["template"]["spec"]
    assert spec["enableServiceLinks"] is False
    assert not spec.get("hostNetwork")
    assert not spec.get("hostPID")


def test_the_meter_config_loads_and_points_at_the_mounts(
    variant: tuple[ManifestOptions, dict[str, Any]], tmp_path: Path
) -> None:
    _, docs = variant
    dep, cm = one(docs, "Deployment"), one(docs, "ConfigMap")
    meter = container(dep, "meter")
    config_path = Path(meter["args"][meter["args"].index("--config") + 1])
    source = volume_for(dep, meter, config_path)
    assert source["configMap"]["name"] == cm["metadata"]["name"]
    text = cm["data"][config_path.name]
    cfg = parse_config(yaml.safe_load(text))
    assert (cfg.service, cfg.namespace) == ("chat-llama-70b", "llm-prod")
    assert cfg.upstream == "http://127.0.0.1:8000"
    assert cfg.listen.host == "0.0.0.0"
    # the meter listens on the container's named port, vLLM on the upstream's port
    (port,) = meter["ports"]
    assert (port["name"], port["containerPort"]) == ("http", cfg.listen.port)
    vllm = container(dep, "vllm")
    assert vllm["ports"][0]["containerPort"] == urlsplit(cfg.upstream).port
    assert cfg.listen.port != urlsplit(cfg.upstream).port
    # the key file is the Secret's key, mounted read-only, readable by the meter's group
    assert cfg.tenant.api_keys_file is not None
    keys = volume_for(dep, meter, cfg.tenant.api_keys_file)
    assert keys["secret"]["items"] == [
        {"key": cfg.tenant.api_keys_file.name, "path": cfg.tenant.api_keys_file.name}
    ]
    assert not keys["secret"].get("optional")  # the meter exits 2 without it
    assert keys["secret"]["defaultMode"] == 0o440
    assert dep["spec"]["template"]["spec"]["securityContext"]["fsGroup"] == 65532
    # the whole file loads with the meter's own loader once the key file is where the pod
    # would find it (a key made up here; the example ships none)
    key_file = tmp_path / "keys.yaml"
    key_file.write_text("sk-team-a-000: team-a\nsk-team-b-111: team-b\n", encoding="utf-8")
    data = yaml.safe_load(text)
    data["tenant"]["api_keys_file"] = str(key_file)
    local = tmp_path / "meter.yaml"
    local.write_text(yaml.safe_dump(data), encoding="utf-8")
    loaded = load_meter(local)
    assert sorted(loaded.key_hashes.values()) == ["team-a", "team-b"]
    assert "sk-team-a-000" not in loaded.key_hashes  # held as hashes
    # node label from spec.nodeName, stable across the meter's restarts on a node
    env = {e["name"]: e for e in meter["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}


def test_the_service_reaches_the_meter_and_vllm_stays_scrapable(
    variant: tuple[ManifestOptions, dict[str, Any]],
) -> None:
    options, docs = variant
    dep, svc, policy = one(docs, "Deployment"), one(docs, "Service"), one(docs, "NetworkPolicy")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())
    (port,) = svc["spec"]["ports"]
    assert port["targetPort"] == "http"
    assert port["targetPort"] in {p["name"] for p in container(dep, "meter")["ports"]}
    # the node agent's vLLM discovery finds vLLM on the pod IP
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    vllm = container(dep, "vllm")
    assert int(annotations["gpuledger.io/vllm-port"]) == vllm["ports"][0]["containerPort"]
    args = vllm["args"]
    assert args[args.index("--host") + 1] == "0.0.0.0"
    assert "--enable-prompt-tokens-details" in args  # cached-prompt tokens in usage
    # callers get only the meter's port; vLLM's only from gpuledger's namespace
    assert all(labels.get(k) == v for k, v in policy["spec"]["podSelector"]["matchLabels"].items())
    open_rule, agent_rule = policy["spec"]["ingress"]
    assert "from" not in open_rule
    meter_port = container(dep, "meter")["ports"][0]["containerPort"]
    assert open_rule["ports"] == [{"port": meter_port, "protocol": "TCP"}]
    assert agent_rule["ports"] == [{"port": vllm["ports"][0]["containerPort"], "protocol": "TCP"}]
    (peer,) = agent_rule["from"]
    assert peer["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": options.namespace
    }


def test_the_agent_gateways_example_loads_and_reads_the_meter_through_the_service(
    variant: tuple[ManifestOptions, dict[str, Any]], tmp_path: Path
) -> None:
    _, docs = variant
    section = docs["agent-gateways.yaml"]
    assert set(section) == {"gateways"}
    local = tmp_path / "agent.yaml"
    local.write_text(yaml.safe_dump(section), encoding="utf-8")
    cfg = load_config(local, environ={})
    assert cfg.gateways.enabled
    (endpoint,) = cfg.gateways.endpoints
    assert endpoint.preset == "gpuledger-meter"
    svc = one(docs, "Service")
    url = urlsplit(endpoint.url)
    assert url.hostname == f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc"
    assert url.port == svc["spec"]["ports"][0]["port"]
    assert url.path == "/metrics"


def test_the_committed_examples_are_the_generated_ones() -> None:
    committed = REPO_ROOT / "deploy" / "kubernetes" / "examples"
    assert (committed / "deployment-endpoint.yaml").is_file()
    text = (committed / "agent-gateways.yaml").read_text(encoding="utf-8")
    assert "Put it in exactly ONE agent's config" in text


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomize_builds_the_examples(tmp_path: Path) -> None:
    files = example_files(tmp_path, ManifestOptions())
    built = subprocess.run(
        ["kubectl", "kustomize", str(tmp_path / "examples")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert built.returncode == 0, built.stderr
    objects = [d for d in yaml.safe_load_all(built.stdout) if d]
    listed = yaml.safe_load(files["kustomization.yaml"])["resources"]
    assert sorted(o["kind"] for o in objects) == sorted(
        yaml.safe_load(files[n])["kind"] for n in listed
    )


def test_the_example_meter_runs_and_the_example_agent_entry_reads_its_tenants(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The example's meter.yaml run by the real CLI (only the addresses and the key
    file's path moved to this machine) in front of a vLLM-format stand-in, the official
    SDK as the callers, and the agent's gateway collector built from the example's
    ``gateways:`` entry (its URL moved to the meter) reading what the meter counted."""
    docs = docs_of(example_files(tmp_path / "out", ManifestOptions()))
    dep, cm = one(docs, "Deployment"), one(docs, "ConfigMap")
    vllm_args = container(dep, "vllm")["args"]
    model = vllm_args[vllm_args.index("--model") + 1]
    meter_yaml = yaml.safe_load(cm["data"]["meter.yaml"])
    keys = tmp_path / "keys.yaml"
    keys.write_text("sk-a-not-real: team-a\nsk-b-not-real: team-b\n", encoding="utf-8")
    monkeypatch.setenv("NODE_NAME", "gpu-node-3")  # what spec.nodeName gives the sidecar
    with OpenAIStandIn(OpenAIBehaviour(model=model, cached_tokens=2)) as up:
        meter_yaml["upstream"] = up.url
        meter_yaml["listen"] = {"host": "127.0.0.1", "port": free_port()}
        meter_yaml["tenant"]["api_keys_file"] = str(keys)
        config = tmp_path / "meter.yaml"
        config.write_text(yaml.safe_dump(meter_yaml), encoding="utf-8")
        with MeterProcess(config, tmp_path / "meter.log") as meter:
            # the probe path the example uses answers 200 on the meter itself
            assert httpx.get(meter.url + "/metrics", timeout=5).status_code == 200
            section = docs["agent-gateways.yaml"]["gateways"]
            section["endpoints"][0]["url"] = meter.url + "/metrics"
            agent_yaml = tmp_path / "agent.yaml"
            agent_yaml.write_text(yaml.safe_dump({"gateways": section}), encoding="utf-8")
            collector = GatewayCollector(load_config(agent_yaml, environ={}).gateways)
            try:

                def call(key: str, n: int, stream: bool) -> None:
                    client = openai.OpenAI(base_url=meter.url + "/v1", api_key=key)
                    messages: Any = [{"role": "user", "content": "one two three"}]
                    if stream:
                        for _ in client.chat.completions.create(
                            model=model, messages=messages, max_tokens=n, stream=True
                        ):
                            pass
                    else:
                        client.chat.completions.create(model=model, messages=messages, max_tokens=n)

                call("sk-a-not-real", 4, stream=False)
                call("sk-b-not-real", 3, stream=True)
                collector.collect()  # the agent's first sight: a baseline per series
                before = len(up.served)
                call("sk-a-not-real", 5, stream=True)
                call("sk-a-not-real", 6, stream=False)
                call("sk-b-not-real", 7, stream=False)
                reading = collector.collect()
            finally:
                collector.close()
            log = meter.log()
    served = up.served[before:]
    assert len(served) == 3
    expected = {
        "team-a": (2, sum(s.prompt_tokens for s in served[:2]), 4, 11),
        "team-b": (1, served[2].prompt_tokens, 2, 7),
    }
    got = {
        t.tenant: (t.requests, t.prompt_tokens, t.cached_prompt_tokens, t.generation_tokens)
        for t in reading.totals
    }
    assert got == expected
    assert {(t.namespace, t.service, t.model_name) for t in reading.totals} == {
        ("llm-prod", "chat-llama-70b", model)
    }
    assert "not-real" not in log  # the keys never reach the meter's logs


def test_the_front_alternative_meters_the_endpoints_service(
    variant: tuple[ManifestOptions, dict[str, Any]], tmp_path: Path
) -> None:
    """The meter as a Deployment of its own: its upstream is the endpoint's Service, its
    Service reaches the meter, and its agent entry reads that Service's /metrics."""
    _, docs = variant
    dep, cm = one(docs, "Deployment", front=True), one(docs, "ConfigMap", front=True)
    meter = container(dep, "meter")
    assert [c["name"] for c in dep["spec"]["template"]["spec"]["containers"]] == ["meter"]
    config_path = Path(meter["args"][meter["args"].index("--config") + 1])
    assert volume_for(dep, meter, config_path)["configMap"]["name"] == cm["metadata"]["name"]
    cfg = parse_config(yaml.safe_load(cm["data"][config_path.name]))
    endpoint = one(docs, "Service")
    upstream = urlsplit(cfg.upstream)
    assert (
        upstream.hostname
        == f"{endpoint['metadata']['name']}.{endpoint['metadata']['namespace']}.svc"
    )
    assert upstream.port == endpoint["spec"]["ports"][0]["port"]
    assert (cfg.service, cfg.namespace) == ("chat-llama-70b", "llm-prod")  # the endpoint's
    assert cfg.tenant.api_keys_file is not None
    assert volume_for(dep, meter, cfg.tenant.api_keys_file)["secret"]["secretName"]
    svc = one(docs, "Service", front=True)
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())
    assert not all(  # the endpoint's own Service does not select the meter
        labels.get(k) == v for k, v in endpoint["spec"]["selector"].items()
    )
    assert svc["spec"]["ports"][0]["targetPort"] == meter["ports"][0]["name"]
    local = tmp_path / "agent.yaml"
    local.write_text(yaml.safe_dump(docs["agent-gateways-front.yaml"]), encoding="utf-8")
    (entry,) = load_config(local, environ={}).gateways.endpoints
    assert entry.preset == "gpuledger-meter"
    url = urlsplit(entry.url)
    assert url.hostname == f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc"
    assert url.port == svc["spec"]["ports"][0]["port"]
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
