"""The image as a user runs it (``make image-test``): built with podman from the
repository's Dockerfile against a base made from Debian packages
(``deploy/image-test/base.sh``), then run the way docs/deploy.md says.

Checked: the size target (≤ 250 MB for the agent), the user (65532) and a HEALTHCHECK
that survives ``podman build --format docker``; a read-only root with only the documented
state volume; ``/readyz``; the HEALTHCHECK passing on plain HTTP, on TLS signed by a
private CA and on mutual TLS; an unwritable state directory and a container-id node name
refused with messages that say what to do (no traceback); the node label from
``--hostname``; the reporter target's HTML report; the time SIGTERM takes.

Skipped, with the reason, where podman cannot run (not installed, not root).
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.support.harness import free_port, http_get
from tests.support.paths import REPO_ROOT
from tests.support.podman import (
    BASE_SCRIPT,
    BASE_TAG,
    IMAGE_TAG,
    REPORTER_TAG,
    Podman,
    cache_dir,
    podman_prefix,
    ulimits,
    why_no_engine,
)
from tests.support.standins import wait_until

pytestmark = pytest.mark.image

MAX_AGENT_IMAGE_BYTES = 250_000_000  # issue 16: the node agent's image ≤ 250 MB
STATE_VOLUME = "/var/lib/gpuledger"
CONFIG = "/etc/gpuledger/config/agent.yaml"


def _build(podman: Podman, tag: str, *target: str) -> None:
    podman.run(
        "build",
        "--format",
        "docker",  # OCI image configs have no HEALTHCHECK: podman would drop it
        "--network",
        "host",
        *ulimits(),
        "--build-arg",
        f"BASE={BASE_TAG}",
        *target,
        "-t",
        tag,
        str(REPO_ROOT),
        timeout=900,
    )


@pytest.fixture(scope="module")
def podman() -> Podman:
    reason = why_no_engine()
    if reason is not None:
        pytest.skip(f"no container engine: {reason}")
    engine = Podman(tuple(podman_prefix()))
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "PODMAN": " ".join(engine.prefix),  # base.sh splits it on spaces
        "GPULEDGER_IMAGE_CACHE": str(cache_dir()),
    }
    subprocess.run([str(BASE_SCRIPT), BASE_TAG], check=True, timeout=900, env=env)
    probe = engine.run(
        "run", "--rm", "--network", "host", *ulimits(), BASE_TAG, "true", check=False
    )
    if probe.returncode != 0:
        pytest.skip(f"podman cannot run a container here: {probe.stderr.strip()[-500:]}")
    return engine


@pytest.fixture(scope="module")
def image(podman: Podman) -> str:
    # Earlier builds' untagged layers older than a day go; today's stay as the build cache.
    podman.run("image", "prune", "-f", "--filter", "until=24h", check=False)
    _build(podman, IMAGE_TAG)
    return IMAGE_TAG


@pytest.fixture
def containers(podman: Podman) -> Iterator[list[str]]:
    started: list[str] = []
    yield started
    for cid in started:
        podman.run("rm", "-f", "-t", "0", cid, check=False)


@pytest.fixture
def volume(podman: Podman) -> Iterator[str]:
    name = f"gpuledger-test-{uuid.uuid4().hex[:8]}"
    podman.run("volume", "create", name)
    yield name
    podman.run("volume", "rm", "-f", name, check=False)


def _inspect(podman: Podman, image: str) -> dict[str, object]:
    data = json.loads(podman.run("image", "inspect", image).stdout)
    assert isinstance(data, list)
    return dict(data[0])


def _agent(
    podman: Podman, image: str, volume: str, port: int, *opts: str, args: tuple[str, ...] = ()
) -> str:
    return podman.container(
        image,
        "agent",
        "--config",
        CONFIG,
        "--simulate",
        *args,
        opts=[
            "-v",
            f"{volume}:{STATE_VOLUME}",
            "-e",
            f"GPULEDGER_LISTEN__PORT={port}",
            "-e",
            "GPULEDGER_SIMULATE__GPUS=2",
            *opts,
        ],
    )


def _ready(port: int, scheme: str = "http") -> None:
    def up() -> bool:
        try:
            return http_get(f"{scheme}://127.0.0.1:{port}/readyz", timeout=2)[0] == 200
        except OSError:
            return False

    wait_until(up, timeout=90)


def _healthcheck(podman: Podman, cid: str) -> subprocess.CompletedProcess[str]:
    return podman.run("healthcheck", "run", cid, check=False, timeout=60)


# --- the image itself --------------------------------------------------------------------
def test_agent_image_size_user_and_healthcheck(podman: Podman, image: str) -> None:
    info = _inspect(podman, image)
    size = int(str(info["Size"]))
    print(f"agent image: {size / 1e6:.1f} MB (podman image inspect .Size)")
    assert size <= MAX_AGENT_IMAGE_BYTES, f"{size / 1e6:.1f} MB"
    config = info["Config"]
    assert isinstance(config, dict)
    assert config["User"] == "65532:65532"
    health = info.get("Healthcheck")  # podman puts it beside Config, not in it
    assert isinstance(health, dict), "the HEALTHCHECK was dropped (build --format docker)"
    assert health["Test"][:3] == ["CMD", "gpuledger", "healthcheck"]
    assert STATE_VOLUME in (config.get("Volumes") or {})
    ids = podman.run("run", "--rm", *ulimits(), "--entrypoint", "id", image).stdout
    assert ids.startswith("uid=65532(gpuledger) gid=65532(gpuledger)")
    # neither the HTML report's packages nor the Kubernetes client are in the agent
    probe = (
        "import importlib.util as u; "
        "print([m for m in ('matplotlib', 'jinja2', 'kubernetes') if u.find_spec(m)])"
    )
    out = podman.run("run", "--rm", *ulimits(), "--entrypoint", "python", image, "-c", probe)
    assert out.stdout.strip() == "[]"


# --- running it --------------------------------------------------------------------------
def test_read_only_root_with_the_state_volume_serves_and_stops_fast(
    podman: Podman, image: str, volume: str, containers: list[str]
) -> None:
    port = free_port()
    cid = _agent(podman, image, volume, port)
    containers.append(cid)
    _ready(port)
    status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    assert b"gpuledger_collector_up" in body
    health = _healthcheck(podman, cid)
    assert health.returncode == 0, health.stdout + health.stderr
    # the spool is on the volume, nothing else was written: the root is read-only
    listing = podman.run("exec", cid, "ls", STATE_VOLUME).stdout.split()
    assert "spool.db" in listing
    touch = podman.run("exec", cid, "touch", "/opt/gpuledger/x", check=False)
    assert touch.returncode != 0
    assert "Read-only file system" in touch.stderr + touch.stdout
    t0 = time.monotonic()
    podman.run("stop", "-t", "20", cid, timeout=60)
    stopped_in = time.monotonic() - t0
    print(f"SIGTERM → exit: {stopped_in:.2f} s (podman stop, including podman's own overhead)")
    state = json.loads(podman.run("inspect", cid).stdout)[0]["State"]
    assert state["ExitCode"] == 0, state
    assert stopped_in < 5.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private CA's server certificate, readable by uid 65532 in the container."""
    d = tmp_path_factory.mktemp("pki")
    d.chmod(0o755)
    ca = trustme.CA()
    server = ca.issue_cert("gpu-node-17.example.internal")
    server.cert_chain_pems[0].write_to_path(str(d / "server.pem"))
    server.private_key_pem.write_to_path(str(d / "server.key"))
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    trustme.CA().cert_pem.write_to_path(str(d / "other-ca.pem"))
    for f in d.iterdir():
        f.chmod(0o644)
    return d


@pytest.mark.parametrize("client_ca", [None, "ca.pem", "other-ca.pem"])
def test_healthcheck_with_tls_and_mutual_tls(
    podman: Podman,
    image: str,
    volume: str,
    containers: list[str],
    pki: Path,
    client_ca: str | None,
) -> None:
    port = free_port()
    env = [
        "-e",
        "GPULEDGER_HTTP__TLS_CERT_FILE=/pki/server.pem",
        "-e",
        "GPULEDGER_HTTP__TLS_KEY_FILE=/pki/server.key",
    ]
    if client_ca is not None:
        env += ["-e", f"GPULEDGER_HTTP__TLS_CLIENT_CA_FILE=/pki/{client_ca}"]
    cid = _agent(podman, image, volume, port, "-v", f"{pki}:/pki:ro", *env)
    containers.append(cid)

    def serving() -> bool:
        logs = podman.run("logs", cid, check=False)
        return "serving https://" in logs.stdout + logs.stderr

    wait_until(serving, timeout=90)
    health = wait_until(lambda: (h := _healthcheck(podman, cid)).returncode == 0 and h, 30)
    assert health
    state = podman.run("inspect", "--format", "{{.State.Health.Status}}", cid).stdout.strip()
    assert state == "healthy"


def test_unwritable_state_dir_and_container_id_node_name_say_what_to_do(
    podman: Podman, image: str
) -> None:
    opts = ["run", "--rm", "--network", "host", "--read-only", "--cap-drop", "all", *ulimits()]
    # --simulate with the state directory moved onto the read-only root
    out = podman.run(
        *opts,
        "-e",
        "GPULEDGER_STATE_DIR=/opt/state",
        image,
        "agent",
        "--config",
        CONFIG,
        "--simulate",
        check=False,
    )
    text = " ".join((out.stdout + out.stderr).split())  # the console wraps long lines
    assert out.returncode == 2, text
    assert "/opt/state is not writable (Read-only file system)" in text
    assert "GPULEDGER_STATE_DIR" in text
    assert "Traceback" not in text
    # demo: its --out on the read-only root
    out = podman.run(
        *opts, image, "demo", "--no-serve", "--history", "0", "--out", "/opt/demo", check=False
    )
    text = " ".join((out.stdout + out.stderr).split())
    assert out.returncode == 2, text
    assert "/opt/demo is not writable" in text
    assert "Traceback" not in text
    # a plain container: the hostname is the container's id (with --network host podman
    # would give it the host's name, so this one has a network of its own)
    plain = [o for o in opts if o not in ("--network", "host")]
    out = podman.run(*plain, image, check=False, timeout=60)
    text = " ".join((out.stdout + out.stderr).split())
    assert out.returncode == 2, text
    assert "node_name" in text
    assert "GPULEDGER_NODE_NAME" in text


def test_node_label_from_hostname(
    podman: Podman, image: str, volume: str, containers: list[str]
) -> None:
    port = free_port()
    cid = _agent(podman, image, volume, port, "--hostname", "gpu-node-7")
    containers.append(cid)
    _ready(port)
    body = http_get(f"http://127.0.0.1:{port}/metrics")[1].decode()
    assert 'node="gpu-node-7"' in body


def test_reporter_target_writes_the_html_report(podman: Podman, image: str) -> None:
    _build(podman, REPORTER_TAG, "--target", "reporter")
    size = int(str(_inspect(podman, REPORTER_TAG)["Size"]))
    print(f"reporter image: {size / 1e6:.1f} MB")
    out = podman.run(
        "run",
        "--rm",
        "--network",
        "host",
        "--read-only",
        "--cap-drop",
        "all",
        "--tmpfs",
        "/tmp",
        *ulimits(),
        REPORTER_TAG,
        "demo",
        "--no-serve",
        "--history",
        "0",
        "--month",
        "2026-10",
        "--out",
        "/tmp/demo",
        timeout=600,
    )
    assert "chargeback-2026-10.html" in out.stdout + out.stderr
    # the agent image says what to install instead
    out = podman.run(
        "run",
        "--rm",
        "--network",
        "host",
        "--read-only",
        "--tmpfs",
        "/tmp",
        *ulimits(),
        image,
        "demo",
        "--no-serve",
        "--out",
        "/tmp/demo",
        check=False,
    )
    text = " ".join((out.stdout + out.stderr).split())
    assert out.returncode == 2, text
    assert "gpuledger[report]" in text
    assert "--target reporter" in text
