"""The Kubernetes API calls the agent makes, over httpx.

The agent lists and watches one node's pods (``GET /api/v1/pods?fieldSelector=...``,
``watch=true``) and lists namespaces (``GET /api/v1/namespaces``: their labels say which
cost center a namespace belongs to, ``docs/cost-centers.md``), and nothing else. The
official ``kubernetes`` client did the pods' calls for 126 MB of installed packages, half
of the node agent's image (issue 16); httpx is already a dependency. What the client did
for us and is kept here:

- **in-cluster config**: ``KUBERNETES_SERVICE_HOST``/``KUBERNETES_SERVICE_PORT``, the
  service account's ``token`` and ``ca.crt`` under
  ``/var/run/secrets/kubernetes.io/serviceaccount``, server
  ``https://`` + host:port (brackets for IPv6): client-go's ``InClusterConfig``
  (kubernetes/kubernetes ``staging/src/k8s.io/client-go/rest/config.go`` at
  047855f98056652ec3c6686797663462dfb1733b, ``func InClusterConfig``). The token file is
  re-read before every request, not once: a projected service-account token is rotated
  by the kubelet while the pod runs;
- **kubeconfig**: the current context's cluster (``server``,
  ``certificate-authority[-data]``, ``insecure-skip-tls-verify``) and user (``token``,
  ``tokenFile``, ``client-certificate[-data]``/``client-key[-data]``). ``exec`` and
  ``auth-provider`` plugins are refused with a clear error (a node agent runs in-cluster);
- ``host``: an explicit API server URL without credentials (``kubectl proxy``, tests).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import ssl
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from gpuledger.yamlio import safe_load

__all__ = [
    "SERVICE_ACCOUNT_DIR",
    "ApiConnection",
    "KubeApi",
    "KubeApiError",
    "connection_from_kubeconfig",
    "in_cluster_connection",
    "resolve_connection",
]

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeApiError(Exception):
    """The API answered with an error status, or no usable config was found."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class ApiConnection:
    """Where the API server is and how to authenticate to it."""

    server: str
    ca_file: Path | None = None
    ca_data: bytes | None = None
    insecure: bool = False
    token: str | None = None
    token_file: Path | None = None
    cert_data: bytes | None = None  # PEM client certificate and key (mutual TLS)
    key_data: bytes | None = None

    def bearer(self) -> str | None:
        """The token to send now (a token file is re-read: it rotates)."""
        if self.token_file is not None:
            return self.token_file.read_text(encoding="utf-8").strip() or None
        return self.token

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https://"):
            return True
        if self.insecure:
            return False
        ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        if self.ca_data is not None:
            ctx.load_verify_locations(cadata=self.ca_data.decode("ascii"))
        if self.cert_data is not None and self.key_data is not None:
            # ssl loads a key pair from files only: a private directory, gone after loading.
            with tempfile.TemporaryDirectory(prefix="gpuledger-kube-") as d:
                cert, key = Path(d) / "cert.pem", Path(d) / "key.pem"
                for path, data in ((cert, self.cert_data), (key, self.key_data)):
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "wb") as f:
                        f.write(data)
                ctx.load_cert_chain(str(cert), str(key))
        return ctx


def in_cluster_connection(
    environ: Mapping[str, str] | None = None, account_dir: Path = SERVICE_ACCOUNT_DIR
) -> ApiConnection | None:
    """The pod's service account, or ``None`` outside a pod."""
    env = os.environ if environ is None else environ
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    token = account_dir / "token"
    if not host or not port or not token.is_file():
        return None
    if ":" in host:  # IPv6
        host = f"[{host}]"
    ca = account_dir / "ca.crt"
    return ApiConnection(
        server=f"https://{host}:{port}",
        ca_file=ca if ca.is_file() else None,
        token_file=token,
    )


def _pick(items: object, name: object, what: str) -> Mapping[str, Any]:
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and item.get("name") == name:
                body = item.get(what)
                if isinstance(body, dict):
                    return body
    raise KubeApiError(f"kubeconfig: no {what} named {name!r}")


def _file_or_data(
    section: Mapping[str, Any], key: str, base: Path
) -> tuple[Path | None, bytes | None]:
    data = section.get(f"{key}-data")
    if isinstance(data, str) and data:
        return None, base64.b64decode(data)
    path = section.get(key)
    if isinstance(path, str) and path:
        p = Path(path)
        return (p if p.is_absolute() else base / p), None
    return None, None


def connection_from_kubeconfig(path: Path) -> ApiConnection:
    """The current context of a kubeconfig file (relative paths from its folder)."""
    try:
        doc = safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise KubeApiError(f"kubeconfig {path}: {exc}") from None
    if not isinstance(doc, dict):
        raise KubeApiError(f"kubeconfig {path}: not a mapping")
    base = path.parent
    context = _pick(doc.get("contexts"), doc.get("current-context"), "context")
    cluster = _pick(doc.get("clusters"), context.get("cluster"), "cluster")
    user: Mapping[str, Any] = (
        _pick(doc.get("users"), context["user"], "user") if context.get("user") else {}
    )
    if "exec" in user or "auth-provider" in user:
        raise KubeApiError(
            f"kubeconfig {path}: exec and auth-provider credentials are not supported; "
            "use a token, a client certificate or the in-cluster service account"
        )
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise KubeApiError(f"kubeconfig {path}: the cluster has no server")
    ca_file, ca_data = _file_or_data(cluster, "certificate-authority", base)
    cert_file, cert_data = _file_or_data(user, "client-certificate", base)
    key_file, key_data = _file_or_data(user, "client-key", base)
    if cert_file is not None:
        cert_data = cert_file.read_bytes()
    if key_file is not None:
        key_data = key_file.read_bytes()
    token_file = user.get("tokenFile")
    return ApiConnection(
        server=server.rstrip("/"),
        ca_file=ca_file,
        ca_data=ca_data,
        insecure=cluster.get("insecure-skip-tls-verify") is True,
        token=user.get("token") if isinstance(user.get("token"), str) else None,
        token_file=Path(token_file) if isinstance(token_file, str) and token_file else None,
        cert_data=cert_data,
        key_data=key_data,
    )


def resolve_connection(kubeconfig: Path | None, host: str | None) -> ApiConnection:
    """``host`` if given, else ``kubeconfig`` if given, else the in-cluster service
    account, else ``$KUBECONFIG`` or ``~/.kube/config`` (the client's order)."""
    if host is not None:
        return ApiConnection(server=host.rstrip("/"))
    if kubeconfig is not None:
        return connection_from_kubeconfig(kubeconfig)
    in_cluster = in_cluster_connection()
    if in_cluster is not None:
        return in_cluster
    default = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    path = Path(default) if default else Path.home() / ".kube" / "config"
    if not path.is_file():
        raise KubeApiError(
            "no Kubernetes config: not in a pod (KUBERNETES_SERVICE_HOST unset) and "
            f"no kubeconfig at {path}; set attribution.kubernetes.kubeconfig"
        )
    return connection_from_kubeconfig(path)


class KubeApi:
    """List and watch pods; JSON in, plain objects out. One watch at a time, which
    :meth:`interrupt` unblocks from another thread (a socket shutdown: closing an httpx
    response does not wake a thread blocked in its read)."""

    def __init__(self, connection: ApiConnection) -> None:
        self._conn = connection
        self._client = httpx.Client(
            base_url=connection.server, verify=connection.ssl_context(), trust_env=False
        )
        self._lock = threading.Lock()
        self._active: socket.socket | None = None

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        token = self._conn.bearer()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    @staticmethod
    def _check(resp: httpx.Response) -> None:
        if resp.status_code >= 400:
            reason = resp.reason_phrase or ""
            raise KubeApiError(f"HTTP {resp.status_code} {reason}".strip(), resp.status_code)

    def list_pods(self, field_selector: str, timeout_s: float) -> object:
        resp = self._client.get(
            "/api/v1/pods",
            params={"fieldSelector": field_selector},
            headers=self._headers(),
            timeout=timeout_s,
        )
        self._check(resp)
        return json.loads(resp.content)

    def list_namespaces(self, timeout_s: float) -> object:
        """``GET /api/v1/namespaces``: a ``NamespaceList`` (RBAC ``namespaces list``)."""
        resp = self._client.get("/api/v1/namespaces", headers=self._headers(), timeout=timeout_s)
        self._check(resp)
        return json.loads(resp.content)

    def watch_pods(
        self, field_selector: str, resource_version: str, timeout_seconds: int, connect_s: float
    ) -> Iterator[object]:
        params: dict[str, str | int] = {
            "fieldSelector": field_selector,
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": timeout_seconds,
        }
        timeout = httpx.Timeout(connect_s, read=timeout_seconds + 15.0)
        with self._client.stream(
            "GET", "/api/v1/pods", params=params, headers=self._headers(), timeout=timeout
        ) as resp:
            self._check(resp)
            stream = resp.extensions.get("network_stream")
            sock = stream.get_extra_info("socket") if stream is not None else None
            with self._lock:
                self._active = sock if isinstance(sock, socket.socket) else None
            try:
                for line in resp.iter_lines():
                    if line.strip():
                        yield json.loads(line)
            finally:
                with self._lock:
                    self._active = None

    def interrupt(self) -> None:
        """Unblock a watch that is waiting for the next event (from another thread)."""
        with self._lock:
            sock = self._active
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._client.close()
