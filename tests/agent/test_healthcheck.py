"""``gpuledger healthcheck`` (the image's HEALTHCHECK) against a real agent on plain HTTP,
TLS signed by a private CA (trustme) and mutual TLS, with nothing but the agent's config.

Before it, the HEALTHCHECK fetched ``http://127.0.0.1:PORT/healthz`` with urllib: against
these same agents it failed on TLS (plain HTTP to a TLS port; with ``HEALTHCHECK_URL``
set to https, the private CA was unknown) and could never pass mutual TLS.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml

from tests.support.harness import AgentProcess, free_port

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _pem(ca: trustme.CA, workdir: Path, name: str) -> tuple[Path, Path]:
    cert = ca.issue_cert("gpu-node-17.example.internal")  # not the loopback's name
    cert_path, key_path = workdir / f"{name}.pem", workdir / f"{name}.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    return cert_path, key_path


def _start(workdir: Path, http: dict[str, Any]) -> AgentProcess:
    agent = AgentProcess(
        workdir,
        {
            "simulate": {"enabled": True, "gpus": 1},
            "ledger": {"enabled": False},
            "http": http,
        },
    )
    if not http:
        return agent.start()

    def port_accepts(a: AgentProcess) -> bool:  # uvicorn serves (TLS or not: checked below)
        socket.create_connection(("127.0.0.1", a.port), timeout=1).close()
        return True

    return agent.start(ready=port_accepts, timeout=30)


def _healthcheck(config: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "gpuledger", "healthcheck", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture
def agents() -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        agent.stop()


def test_plain_http(tmp_path: Path, agents: list[AgentProcess]) -> None:
    agents.append(agent := _start(tmp_path, {}))
    code, out = _healthcheck(agent.config_path)
    assert code == 0, out
    assert f"http://127.0.0.1:{agent.port}/healthz: 200" in out
    agent.stop()
    code, out = _healthcheck(agent.config_path)
    assert code == 1
    assert "refused" in out.lower()


def test_tls_signed_by_a_private_ca(
    tmp_path: Path, ca: trustme.CA, agents: list[AgentProcess]
) -> None:
    cert, key = _pem(ca, tmp_path, "server")
    agents.append(agent := _start(tmp_path, {"tls_cert_file": str(cert), "tls_key_file": str(key)}))
    code, out = _healthcheck(agent.config_path)  # no CA bundle, no variable
    assert code == 0, out
    assert f"https://127.0.0.1:{agent.port}/healthz: 200" in out

    # the check trusts exactly the configured certificate: another one of the same CA fails
    other_cert, other_key = _pem(ca, tmp_path, "other")
    config = yaml.safe_load(agent.config_path.read_text())
    config["http"] = {"tls_cert_file": str(other_cert), "tls_key_file": str(other_key)}
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(config))
    code, out = _healthcheck(other)
    assert code == 1
    assert "CERTIFICATE_VERIFY_FAILED" in out


@pytest.mark.parametrize("client_ca_signed_server", [True, False])
def test_mutual_tls(
    tmp_path: Path, ca: trustme.CA, agents: list[AgentProcess], client_ca_signed_server: bool
) -> None:
    """The agent's own certificate is offered: accepted → 200; refused by a client CA
    that did not sign it → the verified handshake and the refusal show it serving."""
    cert, key = _pem(ca, tmp_path, "server")
    client_ca = ca if client_ca_signed_server else trustme.CA()
    ca_path = tmp_path / "client-ca.pem"
    client_ca.cert_pem.write_to_path(str(ca_path))
    http = {
        "tls_cert_file": str(cert),
        "tls_key_file": str(key),
        "tls_client_ca_file": str(ca_path),
    }
    agents.append(agent := _start(tmp_path, http))
    code, out = _healthcheck(agent.config_path)
    assert code == 0, out
    if client_ca_signed_server:
        assert out.strip().endswith(": 200")
    else:
        assert "serving (verified handshake; mutual TLS refused this check's certificate" in out
    # a client without any certificate gets no answer from this agent: mutual TLS is on
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", agent.port), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw) as tls:
                tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = tls.recv(100)
        except (ssl.SSLError, ConnectionResetError):
            answer = b""
    assert answer == b""


def test_mutual_tls_stopped_agent_is_unhealthy(tmp_path: Path, ca: trustme.CA) -> None:
    cert, key = _pem(ca, tmp_path, "server")
    ca_path = tmp_path / "client-ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    config = tmp_path / "agent.yaml"
    port = free_port()
    config.write_text(
        yaml.safe_dump(
            {
                "listen": {"host": "0.0.0.0", "port": port},
                "state_dir": str(tmp_path / "state"),
                "http": {
                    "tls_cert_file": str(cert),
                    "tls_key_file": str(key),
                    "tls_client_ca_file": str(ca_path),
                },
            }
        )
    )
    code, out = _healthcheck(config)
    assert code == 1
    assert f"https://127.0.0.1:{port}/healthz" in out  # 0.0.0.0 is dialled on loopback


def test_healthcheck_url_replaces_the_url(tmp_path: Path, agents: list[AgentProcess]) -> None:
    agents.append(agent := _start(tmp_path, {}))
    moved = tmp_path / "moved.yaml"
    moved.write_text(yaml.safe_dump({"listen": {"port": free_port()}}))
    assert _healthcheck(moved)[0] == 1
    url = f"http://127.0.0.1:{agent.port}/healthz"
    code, out = _healthcheck(moved, {"HEALTHCHECK_URL": url})
    assert code == 0, out


def test_bad_config_is_unhealthy_with_exit_1_not_docker_reserved_2(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("listen: {port: not-a-port}\n")
    code, out = _healthcheck(config)
    assert code == 1  # docker: 0 healthy, 1 unhealthy, 2 reserved
    assert "listen.port" in out
