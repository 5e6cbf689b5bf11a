"""``GET /api/v1/attribution`` and the pod-resources source inside a running agent: a
simulated node's idle-holding pod decided by its kubelet; a kubelet that is absent, then
appears, then goes away (collector_up, one log line per change, the agent goes on)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gpuledger.agent.config import load_config
from gpuledger.agent.main import Agent
from tests.support.kubelet_podresources import Kubelet, KubeletServer, PluginDevices


def wait_for(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def test_simulated_idle_holding_pod_is_decided_by_pod_resources(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        environ={
            "GPULEDGER_SIMULATE__ENABLED": "true",
            "GPULEDGER_STATE_DIR": str(tmp_path),
            "GPULEDGER_COLLECTION__INTERVAL_SECONDS": "0.2",
        },
    )
    agent = Agent(cfg)
    agent.start()
    try:
        client = TestClient(agent.app)

        def devices() -> list[dict[str, object]]:
            return client.get("/api/v1/attribution").json()["devices"]  # type: ignore[no-any-return]

        def notebook_decided() -> bool:
            return any(d["decided_by"] == "podresources" for d in devices())

        wait_for(notebook_decided)
        by_device = {(d["index"], d["mig_instance"]): d for d in devices()}
        # 8 simulated H100s: GPUs 6 and 7 are in MIG mode; layout A (GPU 6) leaves its
        # 1g.10gb instance of GPU-instance id 9 without a process: the notebook holds it.
        notebook = by_device[(6, 9)]
        assert notebook["decided_by"] == "podresources"
        assert notebook["owners"] == [
            {
                "namespace": "research",
                "service": "notebook",
                "pod": notebook["owners"][0]["pod"],  # type: ignore[index]
                "container": "jupyter",
            }
        ]
        assert by_device[(6, 2)]["decided_by"] == "process"  # a process wins
        assert by_device[(5, None)]["decided_by"] == "process"  # the time-sliced GPU
        assert {d["decided_by"] for d in devices()} == {"process", "podresources"}
        state = client.get("/api/v1/collectors").json()["collectors"]["podresources"]
        assert state["up"] is True
    finally:
        agent.stop()


def test_a_kubelet_that_comes_and_goes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    socket = tmp_path / "kubelet.sock"
    cfg = load_config(
        None,
        environ={
            "GPULEDGER_STATE_DIR": str(tmp_path / "state"),
            "GPULEDGER_NVML__ENABLED": "false",
            "GPULEDGER_LEDGER__ENABLED": "false",
            "GPULEDGER_PODRESOURCES__ENABLED": "true",
            "GPULEDGER_PODRESOURCES__SOCKET": str(socket),
            "GPULEDGER_PODRESOURCES__INTERVAL_SECONDS": "0.1",
            "GPULEDGER_PODRESOURCES__TIMEOUT_SECONDS": "0.5",
        },
    )
    caplog.set_level(logging.INFO, logger="gpuledger")
    agent = Agent(cfg)
    agent.start()
    client = TestClient(agent.app)

    def state() -> dict[str, object]:
        return client.get("/api/v1/collectors").json()["collectors"]["podresources"]  # type: ignore[no-any-return]

    def up_series() -> str:
        body = client.get("/metrics").text
        return next(
            line
            for line in body.splitlines()
            if line.startswith("gpuledger_collector_up{") and 'collector="podresources"' in line
        )

    try:
        wait_for(lambda: int(state()["failures"]) >= 3)  # type: ignore[call-overload]
        assert state()["up"] is False
        assert "no kubelet pod-resources socket" in str(state()["last_error"])
        assert up_series().endswith(" 0.0")
        # an optional input: a node without the socket is still ready
        assert client.get("/readyz").status_code == 200
        downs = [r for r in caplog.records if "collector podresources down" in r.getMessage()]
        assert len(downs) == 1  # one line for the state change, not one per cycle

        kubelet = Kubelet(plugin=[PluginDevices("ns", "p", "c", "nvidia.com/gpu", ["0"])])
        server = KubeletServer(socket, kubelet).start()
        wait_for(lambda: state()["up"] is True)
        assert up_series().endswith(" 1.0")
        assert any("collector podresources recovered" in r.getMessage() for r in caplog.records)

        server.stop()
        wait_for(lambda: state()["up"] is False)
        assert up_series().endswith(" 0.0")
    finally:
        agent.stop()
