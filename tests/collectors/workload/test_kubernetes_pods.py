"""The Kubernetes pod directory against a real HTTP server standing in for the API server.

The stand-in serves ``GET /api/v1/pods`` (list and ``watch=true``) from a pod table the
test controls, records every request's query and Authorization header, and can fail
(500) or hang, over plain HTTP or TLS signed by a throwaway CA (trustme). The directory
under test reaches it with its httpx client (``kubeapi.py``) through ``host``, an
in-cluster service-account folder or a kubeconfig.
"""

from __future__ import annotations

import base64
import json
import queue
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import trustme

from gpuledger.collectors.workload import kubeapi
from gpuledger.collectors.workload.kubernetes import KubernetesPodDirectory, pod_from_api
from gpuledger.collectors.workload.pods import PodInfo, service_from_pod_name, service_name
from tests.support.standins import wait_until

NODE = "gpu-node-1"


def pod(
    uid: str,
    name: str,
    namespace: str = "llm-prod",
    *,
    labels: dict[str, str] | None = None,
    owner: tuple[str, str] | None = None,
    containers: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    rv: str = "100",
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": uid,
        "resourceVersion": rv,
        "creationTimestamp": "2025-01-06T08:00:00Z",
        "labels": labels or {},
    }
    if annotations:
        meta["annotations"] = annotations
    if owner is not None:
        meta["ownerReferences"] = [
            {
                "apiVersion": "apps/v1" if owner[0] != "Node" else "v1",
                "kind": owner[0],
                "name": owner[1],
                "uid": "00000000-0000-0000-0000-00000000beef",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return {
        "metadata": meta,
        "spec": {
            "nodeName": NODE,
            "containers": [{"name": n} for n in (containers or {}).values()],
        },
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {"name": n, "containerID": cid, "ready": True, "restartCount": 0}
                for cid, n in (containers or {}).items()
            ],
        },
    }


CHAT_UID = "2fc932ce-fdcc-454b-97bd-aadfdeb4c340"
CHAT_CID = "aaefb9d8feed2d453b543f6d928cede7a4dbefa6a0ae7c9b990dd234c56e93b9"
STATIC_HASH = "36b6d6be73b1065af369b3985edafa09"

PODS: list[dict[str, Any]] = [
    # Deployment → ReplicaSet, no name label: the pod-template-hash label says what to strip.
    pod(
        CHAT_UID,
        "chat-llama-70b-7d9c8b6f5d-x2x4k",
        labels={"pod-template-hash": "7d9c8b6f5d"},
        owner=("ReplicaSet", "chat-llama-70b-7d9c8b6f5d"),
        containers={f"containerd://{CHAT_CID}": "vllm"},
    ),
    # Labelled with app.kubernetes.io/name: the label wins over the owner.
    pod(
        "7d4424e6-bb13-42f4-a47a-45a4828bf54d",
        "embedder-6b7f9c4d8-h5k2p",
        "search",
        labels={
            "app.kubernetes.io/name": "embed-bge-m3",
            "app": "ignored",
            "pod-template-hash": "6b7f9c4d8",
        },
        owner=("ReplicaSet", "embedder-6b7f9c4d8"),
        containers={
            "cri-o://5eed917563583925ffdbd40a64efb2aaffe58638e57add8becaf460fe74f5b1c": "server"
        },
    ),
    # Only the legacy "app" label.
    pod(
        "a5c1f8d5-1919-434d-add7-4afaafdaef89",
        "reranker-0",
        "search",
        labels={"app": "rerank-bge-v2"},
        owner=("StatefulSet", "reranker"),
    ),
    # StatefulSet, unlabelled: the set's name.
    pod(
        "0125ec2f-b64a-4868-8f5b-94b56cbab864",
        "qwen-14b-tp-1",
        owner=("StatefulSet", "qwen-14b-tp"),
        containers={
            "docker://d0b3604b67ac7930dd34ba3a796627e3e4717d12309e90a4afe3f38b6816ac98": "worker"
        },
    ),
    # A Job created by a CronJob at 2025-01-06 02:00 UTC (minutes since the epoch).
    pod(
        "f9f89fd9-f49f-4cbe-b04b-cae5c9043de2",
        "nightly-eval-28937400-7xk2m",
        "llm-batch",
        labels={"batch.kubernetes.io/job-name": "nightly-eval-28937400"},
        owner=("Job", "nightly-eval-28937400"),
    ),
    # A plain Job.
    pod(
        "dc430cd3-34b7-4ea6-be26-ddfd88d7ddff",
        "finetune-lora-v3-abcde",
        "llm-batch",
        owner=("Job", "finetune-lora-v3"),
    ),
    # DaemonSet.
    pod(
        "1e597579-417e-482f-bf65-5fe170c3aebd",
        "nvidia-dcgm-exporter-4kx9z",
        "gpu-operator",
        owner=("DaemonSet", "nvidia-dcgm-exporter"),
    ),
    # A bare pod, no labels, no owner.
    pod("ae7a96fb-2bdc-46b0-96e2-78e4af94847b", "debug-shell", "default"),
    # A static pod's mirror: API uid differs from the kubelet's 32-hex uid.
    pod(
        "8b1c2d3e-4f50-4a6b-9c7d-8e9f0a1b2c3d",
        f"triton-static-{NODE}",
        "kube-system",
        owner=("Node", NODE),
        annotations={
            "kubernetes.io/config.mirror": STATIC_HASH,
            "kubernetes.io/config.hash": STATIC_HASH,
            "kubernetes.io/config.source": "file",
        },
    ),
]

EXPECTED_SERVICES = {
    "chat-llama-70b-7d9c8b6f5d-x2x4k": "chat-llama-70b",
    "embedder-6b7f9c4d8-h5k2p": "embed-bge-m3",
    "reranker-0": "rerank-bge-v2",
    "qwen-14b-tp-1": "qwen-14b-tp",
    "nightly-eval-28937400-7xk2m": "nightly-eval",
    "finetune-lora-v3-abcde": "finetune-lora-v3",
    "nvidia-dcgm-exporter-4kx9z": "nvidia-dcgm-exporter",
    "debug-shell": "debug-shell",
    f"triton-static-{NODE}": "triton-static",
}


class FakeApiServer:
    """``/api/v1/pods`` list + watch on 127.0.0.1."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.items: list[dict[str, Any]] = list(PODS)
        self.authorization: list[str | None] = []
        self.resource_version = "1000"
        self.mode = "ok"  # ok | 500 | hang
        self.queries: list[dict[str, list[str]]] = []
        self.list_requests = 0
        self.watch_requests = 0
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._stop = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                outer.queries.append(query)
                outer.authorization.append(self.headers.get("Authorization"))
                if url.path != "/api/v1/pods":
                    self._send(404, b'{"kind":"Status","code":404}')
                    return
                if query.get("watch") == ["true"]:
                    outer.watch_requests += 1
                    self._watch(float(query.get("timeoutSeconds", ["5"])[0]))
                    return
                outer.list_requests += 1
                if outer.mode == "hang":
                    outer._stop.wait(30)
                    return
                if outer.mode == "500":
                    self._send(500, b'{"kind":"Status","status":"Failure","code":500}')
                    return
                body = {
                    "kind": "PodList",
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": outer.resource_version},
                    "items": outer.items,
                }
                self._send(200, json.dumps(body).encode())

            def _watch(self, timeout_s: float) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                deadline = time.monotonic() + timeout_s
                try:
                    while time.monotonic() < deadline and not outer._stop.is_set():
                        try:
                            event = outer.events.get(timeout=0.05)
                        except queue.Empty:
                            continue
                        data = json.dumps(event).encode() + b"\n"
                        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                        self.wfile.flush()
                        if event.get("type") == "ERROR":
                            break
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.tls = tls is not None
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeApiServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer() as s:
        yield s


def directory(api: FakeApiServer, **kw: Any) -> KubernetesPodDirectory:
    kw.setdefault("watch", False)
    kw.setdefault("resync_seconds", 60.0)
    kw.setdefault("retry_seconds", 0.1)
    kw.setdefault("request_timeout_seconds", 2.0)
    return KubernetesPodDirectory(NODE, host=api.host, **kw)


def test_lists_this_nodes_pods_and_names_their_services(api: FakeApiServer) -> None:
    with directory(api) as pods:
        assert pods.wait_synced(10)
        assert pods.healthy
        assert pods.last_error is None
        assert api.queries[0]["fieldSelector"] == [f"spec.nodeName={NODE}"]
        assert len(pods.pods()) == len(PODS)
        got = {p.name: service_name(p) for p in pods.pods()}
        assert got == EXPECTED_SERVICES

        chat = pods.by_uid(CHAT_UID)
        assert chat is not None
        assert (chat.namespace, chat.name, chat.owner_kind) == (
            "llm-prod",
            "chat-llama-70b-7d9c8b6f5d-x2x4k",
            "ReplicaSet",
        )
        assert dict(chat.container_ids) == {CHAT_CID: "vllm"}
        assert pods.by_container_id(CHAT_CID) is chat
        assert pods.by_name("llm-prod", "chat-llama-70b-7d9c8b6f5d-x2x4k") is chat
        embed = pods.by_uid("7d4424e6-bb13-42f4-a47a-45a4828bf54d")
        assert embed is not None
        assert dict(embed.container_ids) == {
            "5eed917563583925ffdbd40a64efb2aaffe58638e57add8becaf460fe74f5b1c": "server"
        }
        # The static pod is found by the kubelet's uid, which is what its cgroup carries.
        static = pods.by_uid(STATIC_HASH)
        assert static is not None
        assert static.name == f"triton-static-{NODE}"
        assert pods.by_uid("00000000-0000-0000-0000-000000000000") is None


def test_lookups_never_touch_the_api(api: FakeApiServer) -> None:
    with directory(api, resync_seconds=3600) as pods:
        assert pods.wait_synced(10)
        before = (api.list_requests, api.watch_requests, len(api.queries))
        for _ in range(2000):
            pods.by_uid(CHAT_UID)
            pods.by_uid("11111111-2222-3333-4444-555555555555")
            pods.by_name("search", "reranker-0")
            pods.by_container_id("nope")
        assert (api.list_requests, api.watch_requests, len(api.queries)) == before


def test_api_500_keeps_the_last_good_index_then_recovers(
    api: FakeApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    with directory(api, resync_seconds=0.2) as pods:
        assert pods.wait_synced(10)
        api.mode = "500"
        wait_until(lambda: not pods.healthy)
        assert pods.last_error is not None
        assert "500" in pods.last_error
        assert pods.by_uid(CHAT_UID) is not None  # still served from the last good list
        n = api.list_requests
        wait_until(lambda: api.list_requests >= n + 3)  # it keeps retrying...
        failures = [r for r in caplog.records if "Kubernetes API failed" in r.getMessage()]
        assert len(failures) == 1  # ...but logs the state change once
        api.items = [p for p in PODS if p["metadata"]["uid"] != CHAT_UID]
        api.mode = "ok"
        wait_until(lambda: pods.healthy)
        assert not pods.last_error
        assert pods.by_uid(CHAT_UID) is None
        assert len(pods.pods()) == len(PODS) - 1


def test_api_hanging_times_out_and_keeps_the_index(api: FakeApiServer) -> None:
    with directory(api, resync_seconds=0.2, request_timeout_seconds=0.3) as pods:
        assert pods.wait_synced(10)
        api.mode = "hang"
        wait_until(lambda: not pods.healthy, timeout=15)
        assert pods.last_error is not None
        assert pods.by_uid(CHAT_UID) is not None
        t0 = time.monotonic()
        pods.close()
        assert time.monotonic() - t0 < 6


def test_unreachable_api_at_start(tmp_path: Path) -> None:
    with FakeApiServer() as s:
        host = s.host
    pods = KubernetesPodDirectory(NODE, host=host, retry_seconds=0.1, request_timeout_seconds=0.5)
    try:
        wait_until(lambda: pods.last_error is not None)
        assert not pods.healthy
        assert not pods.wait_synced(0)
        assert pods.by_uid(CHAT_UID) is None
    finally:
        pods.close()


def test_watch_applies_events_without_relisting(api: FakeApiServer) -> None:
    with directory(api, watch=True, resync_seconds=30) as pods:
        assert pods.wait_synced(10)
        wait_until(lambda: api.watch_requests >= 1)
        watch_query = next(q for q in api.queries if q.get("watch") == ["true"])
        assert watch_query["fieldSelector"] == [f"spec.nodeName={NODE}"]
        assert watch_query["resourceVersion"] == ["1000"]
        lists = api.list_requests

        new_uid = "3f0c9a7e-1d2b-4c3d-8e9f-0a1b2c3d4e5f"
        added = pod(
            new_uid,
            "guard-llama-8b-5c8d7f6b9-q8w7e",
            "safety",
            labels={"pod-template-hash": "5c8d7f6b9"},
            owner=("ReplicaSet", "guard-llama-8b-5c8d7f6b9"),
            rv="1001",
        )
        api.events.put({"type": "ADDED", "object": added})
        found = wait_until(lambda: pods.by_uid(new_uid))
        assert service_name(found) == "guard-llama-8b"
        api.events.put(
            {"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {"resourceVersion": "1002"}}}
        )
        api.events.put({"type": "DELETED", "object": PODS[0]})
        wait_until(lambda: pods.by_uid(CHAT_UID) is None)
        assert api.list_requests == lists
        assert pods.events == 2

        # 410 Gone: the watch's resourceVersion expired → relist.
        api.events.put(
            {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}
        )
        wait_until(lambda: api.list_requests > lists)
        wait_until(lambda: pods.by_uid(CHAT_UID) is not None)  # the list has it again
        assert pods.healthy


def test_close_interrupts_a_pending_watch(api: FakeApiServer) -> None:
    pods = directory(api, watch=True, resync_seconds=300)
    assert pods.wait_synced(10)
    wait_until(lambda: api.watch_requests >= 1)
    time.sleep(0.2)
    t0 = time.monotonic()
    pods.close()
    assert time.monotonic() - t0 < 3
    assert not pods._thread.is_alive()


def test_no_config_is_a_clear_error_not_an_exception(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    with KubernetesPodDirectory(NODE, retry_seconds=0.1) as pods:
        error = wait_until(lambda: pods.last_error)
    assert "no Kubernetes config" in error
    assert str(tmp_path / "absent") in error
    assert "attribution.kubernetes.kubeconfig" in error


def test_pod_from_api_rejects_junk() -> None:
    assert pod_from_api(None) is None
    assert pod_from_api({"metadata": {"name": "x"}}) is None
    minimal = pod_from_api(
        {"metadata": {"uid": "u", "namespace": "n", "name": "p", "labels": {"a": 1}}}
    )
    assert minimal == PodInfo(uid="u", namespace="n", name="p")


@pytest.mark.parametrize(
    ("pod_name", "expected"),
    [
        ("chat-llama-70b-7d9c8b6f5d-x2x4k", "chat-llama-70b"),
        ("embed-bge-m3-bcdfghjklm-2x4z7", "embed-bge-m3"),
        ("reranker-0", "reranker-0"),
        ("nvidia-dcgm-exporter-4kx9z", "nvidia-dcgm-exporter-4kx9z"),
    ],
)
def test_service_from_pod_name(pod_name: str, expected: str) -> None:
    assert service_from_pod_name(pod_name) == expected


def test_service_name_rules_in_isolation() -> None:
    rs = PodInfo(
        "u", "ns", "api-5f6d7c8b9-abcde", owner_kind="ReplicaSet", owner_name="api-5f6d7c8b9"
    )
    assert service_name(rs) == "api"
    # Hash not in the safe alphabet and no label: left alone.
    odd = PodInfo("u", "ns", "x", owner_kind="ReplicaSet", owner_name="api-v1")
    assert service_name(odd) == "api-v1"
    # The label decides even when the hash looks unusual.
    labelled = PodInfo(
        "u",
        "ns",
        "x",
        labels={"pod-template-hash": "aaaa"},
        owner_kind="ReplicaSet",
        owner_name="api-aaaa",
    )
    assert service_name(labelled) == "api"
    # A Job whose suffix is not a plausible CronJob schedule keeps its name.
    job = PodInfo("u", "ns", "x", owner_kind="Job", owner_name="backup-12345678")
    assert service_name(job) == "backup-12345678"
    # Custom label keys, in order.
    custom = PodInfo("u", "ns", "x", labels={"team/service": "billing", "app": "b"})
    assert service_name(custom, ("team/service", "app")) == "billing"
    assert service_name(custom, ("nope",)) == "x"


def test_short_resync_with_watch_does_not_hammer_the_api(api: FakeApiServer) -> None:
    with directory(api, watch=True, resync_seconds=0.5) as pods:
        assert pods.wait_synced(10)
        time.sleep(1.6)
        assert api.list_requests <= 5  # about one list per resync, not a busy loop


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_api(ca: trustme.CA) -> Iterator[FakeApiServer]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    with FakeApiServer(tls=ctx) as s:
        yield s


def test_in_cluster_service_account_over_tls_rereads_the_rotated_token(
    tls_api: FakeApiServer, ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pod's service account: KUBERNETES_SERVICE_HOST/PORT, the CA that signed the
    API server's certificate, and a bearer token read again for each request (the kubelet
    rotates bound tokens)."""
    account = tmp_path / "serviceaccount"
    account.mkdir()
    ca.cert_pem.write_to_path(str(account / "ca.crt"))
    (account / "token").write_text("token-one\n")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(tls_api.server.server_address[1]))
    monkeypatch.setattr(kubeapi, "SERVICE_ACCOUNT_DIR", account)
    connection = kubeapi.in_cluster_connection(account_dir=account)
    assert connection is not None
    assert connection.server == f"https://127.0.0.1:{tls_api.server.server_address[1]}"
    with KubernetesPodDirectory(
        NODE, connection=connection, watch=False, resync_seconds=0.2, retry_seconds=0.1
    ) as pods:
        assert pods.wait_synced(10)
        assert pods.by_uid(CHAT_UID) is not None
        assert tls_api.authorization[0] == "Bearer token-one"
        (account / "token").write_text("token-two\n")
        wait_until(lambda: "Bearer token-two" in tls_api.authorization)
    assert set(tls_api.authorization) == {"Bearer token-one", "Bearer token-two"}


def test_untrusted_api_certificate_is_an_error_not_a_sync(tls_api: FakeApiServer) -> None:
    connection = kubeapi.ApiConnection(server=tls_api.host)  # system CAs: not trustme's
    with KubernetesPodDirectory(NODE, connection=connection, retry_seconds=0.1) as pods:
        error = wait_until(lambda: pods.last_error)
        assert "CERTIFICATE_VERIFY_FAILED" in error
        assert not pods.healthy
        assert tls_api.list_requests == 0


def test_kubeconfig_current_context_with_inline_ca_and_token(
    tls_api: FakeApiServer, ca: trustme.CA, tmp_path: Path
) -> None:
    other = {"name": "other", "cluster": {"server": "https://192.0.2.1:6443"}}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "gpu",
        "clusters": [
            other,
            {
                "name": "lab",
                "cluster": {
                    "server": tls_api.host,
                    "certificate-authority-data": base64.b64encode(ca.cert_pem.bytes()).decode(),
                },
            },
        ],
        "users": [{"name": "agent", "user": {"token": "kubeconfig-token"}}],
        "contexts": [
            {"name": "elsewhere", "context": {"cluster": "other", "user": "agent"}},
            {"name": "gpu", "context": {"cluster": "lab", "user": "agent"}},
        ],
    }
    path = tmp_path / "config"
    path.write_text(json.dumps(config))  # JSON is YAML
    with KubernetesPodDirectory(NODE, kubeconfig=path, watch=False) as pods:
        assert pods.wait_synced(10)
        assert pods.by_uid(CHAT_UID) is not None
    assert tls_api.authorization[0] == "Bearer kubeconfig-token"


def test_kubeconfig_exec_plugin_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(
        "current-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://192.0.2.1:6443'}}]\n"
        "users: [{name: u, user: {exec: {command: aws}}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
    )
    with pytest.raises(kubeapi.KubeApiError, match="exec and auth-provider"):
        kubeapi.connection_from_kubeconfig(path)
