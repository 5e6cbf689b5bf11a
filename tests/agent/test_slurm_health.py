"""The agent wires ``attribution.slurm``: a failing ``scontrol`` shows as
``gpuledger_collector_up{collector="slurm"} 0`` and in ``/api/v1/collectors``, and the
other collectors go on."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from gpuledger.agent.config import load_config
from gpuledger.agent.main import Agent
from gpuledger.collectors.workload.slurm_jobs import ScontrolJobDirectory
from tests.support.slurm import write_fake_scontrol


def _up(metrics: str, collector: str) -> float:
    m = re.search(rf'^gpuledger_collector_up\{{[^}}]*collector="{collector}"[^}}]*\}} (\S+)$',
                  metrics, re.M)  # fmt: skip
    assert m is not None, f"no collector_up for {collector}"
    return float(m.group(1))


def test_failing_scontrol_sets_the_slurm_collector_down(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = write_fake_scontrol(bin_dir, mode="down")
    cfg = load_config(None, environ={
        "GPULEDGER_STATE_DIR": str(tmp_path / "state"),
        "GPULEDGER_NVML__ENABLED": "false",
        "GPULEDGER_ATTRIBUTION__SLURM__ENABLED": "true",
        "GPULEDGER_ATTRIBUTION__SLURM__SCONTROL": str(fake),
    })  # fmt: skip
    agent = Agent(cfg)
    try:
        assert agent.resolver is not None
        assert agent.resolver.slurm is not None
        jobs = agent.resolver.slurm.jobs
        assert isinstance(jobs, ScontrolJobDirectory)
        (runner,) = [r for r in agent.runtime.runners if r.name == "slurm"]
        assert runner.run_once().up  # no lookup yet: healthy
        jobs.fetch("5")  # what the worker does when a GPU process sits in job 5
        state = runner.run_once()
        assert not state.up
        client = TestClient(agent.app)
        assert _up(client.get("/metrics").text, "slurm") == 0.0
        col = client.get("/api/v1/collectors").json()["collectors"]["slurm"]
        assert col["up"] is False
        assert "Unable to contact slurm controller" in col["last_error"]
    finally:
        agent.stop()
