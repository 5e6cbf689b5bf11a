"""Which vLLM endpoints the agent scrapes: static configuration plus annotated pods."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gpuledger.collectors.vllm.config import VllmConfig, VllmDiscoveryConfig
from gpuledger.collectors.vllm.discovery import EndpointSource, endpoint_from_pod
from gpuledger.collectors.workload.kubernetes import pod_from_api
from gpuledger.collectors.workload.pods import PodInfo, StaticPodDirectory

PORT = "gpuledger.io/vllm-port"


def _pod(name: str, ip: str | None, annotations: dict[str, str], **kw: object) -> PodInfo:
    return PodInfo(
        uid=f"uid-{name}",
        namespace=str(kw.pop("namespace", "llm")),
        name=name,
        pod_ip=ip,
        annotations=annotations,
        node_name=str(kw.pop("node_name", "gpu-1")),
        **kw,  # type: ignore[arg-type]
    )


def test_defaults_and_extra_keys_refused() -> None:
    cfg = VllmConfig()
    assert (cfg.enabled, cfg.interval_seconds, cfg.timeout_seconds) == (False, None, 5.0)
    assert cfg.max_bytes == 16 * 1024 * 1024
    assert cfg.endpoints == []
    assert cfg.discovery == VllmDiscoveryConfig()
    assert cfg.discovery.annotation_port == PORT
    assert cfg.discovery.annotation_path == "gpuledger.io/vllm-path"
    assert cfg.discovery.annotation_scheme == "gpuledger.io/vllm-scheme"
    with pytest.raises(ValidationError, match=r"endpoints\.0\.token"):
        VllmConfig.model_validate(
            {"endpoints": [{"url": "http://a:1", "service": "x", "token": 1}]}
        )
    with pytest.raises(ValidationError, match="credentials"):
        VllmConfig.model_validate({"endpoints": [{"url": "http://u:p@a:1", "service": "x"}]})
    with pytest.raises(ValidationError, match="not both"):
        VllmConfig.model_validate(
            {
                "endpoints": [
                    {"url": "http://a:1", "service": "x", "api_key_env": "K", "api_key_file": "/k"}
                ]
            }
        )
    with pytest.raises(ValidationError, match=r"discovery\.port"):
        VllmConfig.model_validate({"discovery": {"port": 1}})


def test_static_endpoints_with_keys_from_file_and_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("sk-from-file\n", encoding="utf-8")
    monkeypatch.setenv("VLLM_KEY", "sk-from-env")
    cfg = VllmConfig.model_validate(
        {
            "enabled": True,
            "endpoints": [
                {"url": "http://10.0.0.5:8000/", "service": "chat", "namespace": "llm",
                 "api_key_file": str(key_file)},
                {"url": "https://vllm.example:443", "service": "embed", "api_key_env": "VLLM_KEY"},
                {"url": "http://10.0.0.7:8000", "service": "open"},
            ]
        }
    )  # fmt: skip
    source = EndpointSource(cfg, None)
    monkeypatch.setenv("VLLM_KEY", "changed")  # read once, at construction
    key_file.write_text("changed", encoding="utf-8")
    a, b, c = source()
    assert (a.url, a.metrics_url, a.service, a.namespace, a.pod) == (
        "http://10.0.0.5:8000",
        "http://10.0.0.5:8000/metrics",
        "chat",
        "llm",
        "",
    )
    assert a.api_key == "sk-from-file"
    assert (b.url, b.service, b.api_key) == ("https://vllm.example:443", "embed", "sk-from-env")
    assert c.api_key is None
    assert "sk-from" not in repr(a) + repr(b)


def test_missing_key_file_or_env_names_the_key(tmp_path: Path) -> None:
    cfg = VllmConfig.model_validate(
        {"endpoints": [{"url": "http://a:1", "service": "x"},
                       {"url": "http://b:1", "service": "y",
                        "api_key_file": str(tmp_path / "nope")}]}
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"vllm\.endpoints\[1\]\.api_key_file: cannot read"):
        EndpointSource(cfg, None)
    (tmp_path / "empty").write_text("  \n", encoding="utf-8")
    cfg = VllmConfig.model_validate(
        {
            "endpoints": [
                {"url": "http://b:1", "service": "y", "api_key_file": str(tmp_path / "empty")}
            ]
        }
    )
    with pytest.raises(ValueError, match=r"endpoints\[0\]\.api_key_file: .* is empty"):
        EndpointSource(cfg, None)
    cfg = VllmConfig.model_validate(
        {"endpoints": [{"url": "http://b:1", "service": "y", "api_key_env": "GPULEDGER_NO_SUCH"}]}
    )
    with pytest.raises(ValueError, match="GPULEDGER_NO_SUCH is not set"):
        EndpointSource(cfg, None)


def test_discovered_pods_and_dedup_by_url() -> None:
    pods = StaticPodDirectory(
        [
            # named by its app label; default path and scheme
            _pod("chat-7d9f8b6c5d-x2k4p", "10.0.0.5", {PORT: "8000"},
                 labels={"app.kubernetes.io/name": "chat"}),
            # named by its Deployment (ReplicaSet hash stripped); path and scheme annotated
            _pod("embed-5c7d8f9b4-abcde", "10.0.0.6", {PORT: " 8443 ",
                 "gpuledger.io/vllm-path": "custom/metrics", "gpuledger.io/vllm-scheme": "HTTPS"},
                 owner_kind="ReplicaSet", owner_name="embed-5c7d8f9b4", namespace="emb"),
            _pod("v6", "fd00::7", {PORT: "8000"}),  # IPv6
            _pod("pending", None, {PORT: "8000"}),  # no IP yet
            _pod("bad-port", "10.0.0.8", {PORT: "http"}),
            _pod("bad-scheme", "10.0.0.9", {PORT: "8000", "gpuledger.io/vllm-scheme": "grpc"}),
            _pod("no-annotation", "10.0.0.10", {}),
            _pod("elsewhere", "10.0.1.1", {PORT: "8000"}, node_name="gpu-2"),
        ]
    )  # fmt: skip
    cfg = VllmConfig.model_validate(
        {"endpoints": [{"url": "http://10.0.0.5:8000", "service": "static-chat"}],
         "discovery": {"enabled": True}}
    )  # fmt: skip
    eps = EndpointSource(cfg, pods, node_name="gpu-1")()
    by_url = {e.metrics_url: e for e in eps}
    assert list(by_url) == [
        "http://10.0.0.5:8000/metrics",  # static first; the discovered duplicate dropped
        "https://10.0.0.6:8443/custom/metrics",
        "http://[fd00::7]:8000/metrics",
    ]
    assert by_url["http://10.0.0.5:8000/metrics"].service == "static-chat"
    embed = by_url["https://10.0.0.6:8443/custom/metrics"]
    assert (embed.service, embed.namespace, embed.pod) == ("embed", "emb", "embed-5c7d8f9b4-abcde")
    assert embed.api_key is None
    # Without the static entry, the chat pod is found and named by its label.
    ep = endpoint_from_pod(pods.pods[0], cfg.discovery)
    assert ep is not None
    assert (ep.url, ep.service, ep.namespace, ep.pod) == (
        "http://10.0.0.5:8000",
        "chat",
        "llm",
        "chat-7d9f8b6c5d-x2k4p",
    )
    assert endpoint_from_pod(pods.pods[0], cfg.discovery, label_keys=()) is not None


def test_discovery_reads_only_the_directory_cache() -> None:
    class Counting(StaticPodDirectory):
        calls = 0

        def __getattribute__(self, name: str) -> object:
            if name == "pods":
                type(self).calls += 1
            return super().__getattribute__(name)

    directory = Counting([_pod("a", "10.0.0.1", {PORT: "8000"})])
    cfg = VllmConfig.model_validate({"discovery": {"enabled": True}})
    source = EndpointSource(cfg, directory)
    before = Counting.calls
    assert [e.url for e in source()] == ["http://10.0.0.1:8000"]
    assert Counting.calls == before + 1


def test_discovery_off_ignores_pods_and_on_needs_a_directory() -> None:
    pods = StaticPodDirectory([_pod("a", "10.0.0.1", {PORT: "8000"})])
    assert EndpointSource(VllmConfig(), pods)() == []
    with pytest.raises(ValueError, match="needs a pod directory"):
        EndpointSource(VllmConfig.model_validate({"discovery": {"enabled": True}}), None)


def test_pod_from_api_fills_ip_and_annotations() -> None:
    pod = pod_from_api(
        {
            "metadata": {"uid": "u1", "namespace": "llm", "name": "chat-0",
                         "annotations": {PORT: "8000", "n": 1}},
            "spec": {"nodeName": "gpu-1"},
            "status": {"podIP": "10.0.0.5"},
        }
    )  # fmt: skip
    assert pod is not None
    assert pod.pod_ip == "10.0.0.5"
    assert dict(pod.annotations) == {PORT: "8000"}  # non-string values dropped
    bare = pod_from_api({"metadata": {"uid": "u2", "namespace": "a", "name": "b"}})
    assert bare is not None
    assert bare.pod_ip is None
    assert dict(bare.annotations) == {}
