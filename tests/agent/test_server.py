"""HTTP surface: pre-rendered /metrics (plain and gzip), readiness, bearer token."""

from __future__ import annotations

import gzip
import threading
from pathlib import Path

from fastapi.testclient import TestClient

from gpuledger.agent.config import load_config
from gpuledger.agent.main import Agent
from gpuledger.agent.runtime import AgentRuntime, CollectorRunner
from gpuledger.agent.server import create_app
from gpuledger.agent.snapshot import SnapshotStore
from gpuledger.collectors.base import CollectorError, Schedule
from gpuledger.collectors.gpu.readings import GpuTelemetry


class Flaky:
    name = "dcgm"

    def __init__(self) -> None:
        self.fail = True

    def collect(self) -> object:
        if self.fail:
            raise CollectorError("connection refused")
        return GpuTelemetry(source="dcgm")

    def close(self) -> None:
        pass


def test_metrics_readyz_and_collectors_endpoint() -> None:
    store = SnapshotStore(lambda snap: f"# snapshot {snap.version}\n".encode())
    rt = AgentRuntime(store)
    flaky = Flaky()
    runner: CollectorRunner = rt.add(flaky, Schedule(15, 1, GpuTelemetry))
    client = TestClient(create_app(rt))
    assert client.get("/healthz").json() == {"status": "ok"}
    runner.run_once()
    r = client.get("/readyz")
    assert r.status_code == 503
    assert r.json() == {"ready": False, "waiting_for": {"dcgm": "connection refused"}}
    flaky.fail = False
    runner.run_once()
    assert client.get("/readyz").status_code == 200
    plain = client.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert plain.content == f"# snapshot {store.snapshot.version}\n".encode()
    raw = client.get("/metrics", headers={"Accept-Encoding": "gzip"})
    assert raw.headers["content-encoding"] == "gzip"
    assert raw.content == plain.content  # the client decompressed the gzip body
    assert gzip.decompress(store.rendered.gzipped) == plain.content
    col = client.get("/api/v1/collectors").json()["collectors"]["dcgm"]
    assert col["up"] is True
    assert col["runs"] == 2
    assert col["failures"] == 1


def test_bearer_token_guards_api(tmp_path: Path) -> None:
    state = {"GPULEDGER_STATE_DIR": str(tmp_path / "state")}
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n", encoding="utf-8")
    cfg = load_config(None, environ={"GPULEDGER_HTTP__API_TOKEN_FILE": str(token_file),
                                     "GPULEDGER_NVML__ENABLED": "false", **state})  # fmt: skip
    agent = Agent(cfg)
    client = TestClient(agent.app)
    assert client.get("/api/v1/collectors").status_code == 401
    bad = client.get("/api/v1/collectors", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401
    assert "s3cret" not in bad.text
    ok = client.get("/api/v1/collectors", headers={"Authorization": "Bearer s3cret-token"})
    assert ok.status_code == 200
    assert client.get("/metrics").status_code == 200  # not required on /metrics by default
    assert "s3cret" not in client.get("/metrics").text
    agent.stop()


def test_metrics_token_optional(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("t0k", encoding="utf-8")
    cfg = load_config(None, environ={"GPULEDGER_HTTP__API_TOKEN_FILE": str(token_file),
                                     "GPULEDGER_HTTP__METRICS_REQUIRE_TOKEN": "true",
                                     "GPULEDGER_NVML__ENABLED": "false",
                                     "GPULEDGER_STATE_DIR": str(tmp_path / "state")})  # fmt: skip
    agent = Agent(cfg)
    client = TestClient(agent.app)
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer t0k"}).status_code == 200
    assert client.get("/healthz").status_code == 200
    agent.stop()


def test_scrape_never_waits_for_a_collection() -> None:
    gate = threading.Event()

    class Stuck:
        name = "dcgm"

        def collect(self) -> object:
            gate.wait(10)
            return GpuTelemetry(source="dcgm")

        def close(self) -> None:
            gate.set()

    store = SnapshotStore(lambda snap: b"x 1\n")
    rt = AgentRuntime(store)
    rt.add(Stuck(), Schedule(0.1, 5, GpuTelemetry))
    rt.start()
    try:
        client = TestClient(create_app(rt))
        for _ in range(20):
            assert client.get("/metrics").status_code == 200
    finally:
        rt.stop()
