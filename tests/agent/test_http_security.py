"""The agent's HTTP surface as a security review tries it: TLS with a generated
certificate (and client certificates), the bearer token, bounded requests, bad TLS config."""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from gpuledger.agent.config import ConfigError, load_config
from tests.support.harness import AgentProcess, free_port

TOKEN = "tok-4f1e9c0d2b7a"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _write_pem(ca: trustme.CA, workdir: Path) -> dict[str, Path]:
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("prometheus.monitoring.svc")
    files = {
        "cert": workdir / "server.pem",
        "key": workdir / "server.key",
        "ca": workdir / "ca.pem",
        "client_cert": workdir / "client.pem",
        "client_key": workdir / "client.key",
    }
    server.cert_chain_pems[0].write_to_path(str(files["cert"]))
    server.private_key_pem.write_to_path(str(files["key"]))
    ca.cert_pem.write_to_path(str(files["ca"]))
    client.cert_chain_pems[0].write_to_path(str(files["client_cert"]))
    client.private_key_pem.write_to_path(str(files["client_key"]))
    return files


def _agent(workdir: Path, http: dict[str, Any]) -> AgentProcess:
    token = workdir / "token"
    token.write_text(TOKEN + "\n", encoding="utf-8")
    config = {
        "simulate": {"enabled": True, "gpus": 2},
        "collection": {"interval_seconds": 1},
        "ledger": {"enabled": False},
        "http": {"api_token_file": str(token), **http},
    }
    return AgentProcess(workdir, config)


def _https(
    port: int, path: str, ctx: ssl.SSLContext, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _start_tls(agent: AgentProcess, ctx: ssl.SSLContext) -> AgentProcess:
    """AgentProcess.start() waits on plain HTTP by default; a TLS agent is waited on over TLS."""
    return agent.start(ready=lambda a: _https(a.port, "/healthz", ctx)[0] == 200)


@pytest.fixture
def tls_agent(tmp_path: Path, ca: trustme.CA) -> Iterator[tuple[AgentProcess, dict[str, Path]]]:
    files = _write_pem(ca, tmp_path)
    agent = _agent(
        tmp_path, {"tls_cert_file": str(files["cert"]), "tls_key_file": str(files["key"])}
    )
    ctx = ssl.create_default_context(cafile=str(files["ca"]))
    _start_tls(agent, ctx)
    try:
        yield agent, files
    finally:
        agent.stop()


@pytest.mark.e2e
def test_tls_handshake_with_a_generated_certificate(
    tls_agent: tuple[AgentProcess, dict[str, Path]],
) -> None:
    agent, files = tls_agent
    ctx = ssl.create_default_context(cafile=str(files["ca"]))
    status, body = _https(agent.port, "/metrics", ctx)
    assert status == 200
    assert b"gpuledger_build_info" in body
    with (
        socket.create_connection(("127.0.0.1", agent.port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        peer = tls.getpeercert()
        assert ("IP Address", "127.0.0.1") in peer["subjectAltName"]
    # a client that does not trust the CA refuses the server
    with pytest.raises(ssl.SSLCertVerificationError):
        _https(agent.port, "/healthz", ssl.create_default_context())
    # plain HTTP on the TLS port gets no HTTP answer
    raw = socket.create_connection(("127.0.0.1", agent.port), timeout=5)
    raw.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        reply = raw.recv(4096)
    except OSError:
        reply = b""
    raw.close()
    assert b"gpuledger_build_info" not in reply
    assert not reply.startswith(b"HTTP/1.1 200")
    assert "https://127.0.0.1" in agent.log()


@pytest.mark.e2e
def test_mutual_tls_requires_a_client_certificate(tmp_path: Path, ca: trustme.CA) -> None:
    files = _write_pem(ca, tmp_path)
    agent = _agent(
        tmp_path,
        {
            "tls_cert_file": str(files["cert"]),
            "tls_key_file": str(files["key"]),
            "tls_client_ca_file": str(files["ca"]),
        },
    )
    with_client = ssl.create_default_context(cafile=str(files["ca"]))
    with_client.load_cert_chain(str(files["client_cert"]), str(files["client_key"]))
    _start_tls(agent, with_client)
    try:
        assert _https(agent.port, "/metrics", with_client)[0] == 200
        without = ssl.create_default_context(cafile=str(files["ca"]))
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            _https(agent.port, "/metrics", without)
    finally:
        agent.stop()


@pytest.mark.e2e
def test_token_required_and_request_bounded(tmp_path: Path) -> None:
    with _agent(tmp_path, {"max_request_bytes": 1024}) as agent:
        conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=5)

        def get(path: str, headers: dict[str, str] | None = None, body: bytes | None = None) -> int:
            conn.request("GET", path, body=body, headers=headers or {})
            resp = conn.getresponse()
            resp.read()
            return resp.status

        assert get("/metrics") == 200  # open by default: Prometheus scrapes it
        assert get("/healthz") == 200
        assert get("/api/v1/collectors") == 401
        assert get("/api/v1/collectors", {"Authorization": "Bearer wrong"}) == 401
        assert get("/api/v1/collectors", {"Authorization": f"Basic {TOKEN}"}) == 401
        assert get("/reports/", {}) == 401
        assert get("/api/v1/collectors", {"Authorization": f"Bearer {TOKEN}"}) == 200
        assert get("/api/v1/collectors", {"Authorization": f"bearer {TOKEN}"}) == 200
        assert get("/metrics", body=b"x" * 4096) == 413
        conn.close()
        # a huge declared body is refused before it is sent
        raw = socket.create_connection(("127.0.0.1", agent.port), timeout=5)
        raw.sendall(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n")
        assert raw.recv(64).startswith(b"HTTP/1.1 413")
        raw.close()
        # headers beyond the bound are refused, not buffered
        raw = socket.create_connection(("127.0.0.1", agent.port), timeout=5)
        raw.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 70000 + b"\r\n\r\n")
        reply = raw.recv(64)
        raw.close()
        assert reply.startswith(b"HTTP/1.1 431"), reply
        assert TOKEN not in agent.log()


def test_metrics_can_require_the_token(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from gpuledger.agent.runtime import AgentRuntime
    from gpuledger.agent.server import create_app
    from gpuledger.agent.snapshot import SnapshotStore

    app = create_app(
        AgentRuntime(SnapshotStore(lambda _s: b"m 1\n")),
        api_token=TOKEN,
        metrics_require_token=True,
    )
    client = TestClient(app)
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text == "m 1\n"
    assert client.get("/healthz").status_code == 200  # kubelet probes carry no token


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"GPULEDGER_HTTP__TLS_CERT_FILE": "/etc/hostname"}, "both"),
        ({"GPULEDGER_HTTP__TLS_CERT_FILE": "/nope.pem",
          "GPULEDGER_HTTP__TLS_KEY_FILE": "/nope.key"}, "no such file"),
        ({"GPULEDGER_HTTP__TLS_CLIENT_CA_FILE": "/etc/hostname"}, "tls_cert_file"),
        ({"GPULEDGER_HTTP__MAX_REQUEST_BYTES": "-1"}, "greater than or equal"),
    ],
)  # fmt: skip
def test_bad_tls_config_is_refused_naming_http(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(None, environ=env)
    assert any(key.startswith("http") for key, _ in exc.value.problems), exc.value.problems
    assert fragment in str(exc.value)


def test_free_port_helper_binds_loopback() -> None:
    assert 1024 < free_port() < 65536
