"""End to end: the agent as a subprocess, a dcgm-exporter stand-in, a real Prometheus.

The stand-in serves the dcgm-exporter 3.3 fixture rewritten so that its UUIDs are the
simulated node's: both sources then describe the same eight GPUs, and the test can check
that the merge exports one series per device, with DCGM's engine activity as utilization.
Expected values come from the fixture text and the simulated node's layout, by hand.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gpuledger.sim.node import SimulatedNode
from tests.support.harness import AgentProcess, PrometheusServer, http_get, prometheus_binary
from tests.support.paths import FIXTURES
from tests.support.standins import Behaviour, StandIn, wait_until

pytestmark = pytest.mark.e2e

FIXTURE = FIXTURES / "dcgm" / "exporter-3.3-h100x8.prom"
SEED = 42
# DCGM_FI_PROF_GR_ENGINE_ACTIVE per GPU index in the fixture (read off the file by hand).
ENGINE_ACTIVE = {0: 0.812345, 1: 0.798765, 2: 0.934512, 3: 0.776655, 4: 0.312456, 5: 0.991234}
FIXTURE_POWER_GPU0 = 512.347


def dcgm_page_for_simulated_node() -> bytes:
    text = FIXTURE.read_text(encoding="utf-8")
    fixture_uuids = list(dict.fromkeys(re.findall(r'UUID="(GPU-[0-9a-f-]+)"', text)))
    sim_uuids = [g.uuid for g in SimulatedNode(SEED).gpus]
    assert len(fixture_uuids) == len(sim_uuids) == 8
    for old, new in zip(fixture_uuids, sim_uuids, strict=True):
        text = text.replace(old, new)
    return text.encode()


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def value(
    got: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **want: str
) -> float:
    matches = [v for (n, labels), v in got.items() if n == name and set(want.items()) <= labels]
    assert len(matches) == 1, (name, want, matches)
    return matches[0]


def collector_up(agent: AgentProcess, name: str) -> float:
    return value(samples(agent.metrics()), "gpuledger_collector_up", collector=name)


@pytest.fixture
def dcgm() -> object:
    with StandIn(Behaviour(body=dcgm_page_for_simulated_node())) as s:
        yield s


def agent_config(dcgm_url: str, timeout: float = 1.0) -> dict[str, object]:
    return {
        "node_name": "e2e-node",
        "simulate": {"enabled": True, "seed": SEED},
        "collection": {"interval_seconds": 0.5},
        "dcgm": {"enabled": True, "url": dcgm_url, "timeout_seconds": timeout},
    }


@pytest.mark.skipif(prometheus_binary() is None, reason="make test installs Debian's prometheus")
def test_agent_scraped_by_real_prometheus(tmp_path: Path, dcgm: StandIn) -> None:
    with AgentProcess(tmp_path, agent_config(dcgm.url)) as agent:
        wait_until(lambda: http_get(agent.url + "/readyz")[0] == 200, timeout=20)
        got = samples(agent.metrics())
        boards = [
            labels for (n, labels), _ in got.items()
            if n == "gpuledger_gpu_info" and ("mig_instance", "") in labels
        ]  # fmt: skip
        assert len(boards) == 8  # one per GPU although both sources report all eight
        for gpu, expected in ENGINE_ACTIVE.items():
            util = value(got, "gpuledger_gpu_utilization_ratio", gpu=str(gpu), mig_instance="")
            assert util == pytest.approx(expected, abs=1e-9)
        # power: NVML wins, so the simulated value, not the fixture's 512.347 W
        assert value(got, "gpuledger_gpu_power_watts", gpu="0", mig_instance="") != pytest.approx(
            FIXTURE_POWER_GPU0
        )
        assert ("node", "e2e-node") in next(iter(got))[1]

        with PrometheusServer(tmp_path, [f"127.0.0.1:{agent.port}"], "1s") as prom:
            wait_until(prom.targets_up, timeout=30)
            wait_until(lambda: prom.query("gpuledger_gpu_utilization_ratio"), timeout=30)
            (r,) = prom.query('gpuledger_gpu_utilization_ratio{gpu="2",mig_instance=""}')
            assert float(r["value"][1]) == pytest.approx(ENGINE_ACTIVE[2])
            assert r["metric"]["node"] == "e2e-node"
            (count,) = prom.query('count(gpuledger_gpu_info{mig_instance=""})')
            assert float(count["value"][1]) == 8
            # the simulated node has MIG on GPUs 6 and 7 (4 + 3 instances)
            (mig,) = prom.query('count(gpuledger_gpu_info{mig_instance!=""})')
            assert float(mig["value"][1]) == 7
            up = {
                s["metric"]["collector"]: float(s["value"][1])
                for s in prom.query("gpuledger_collector_up")
            }
            # podresources: the simulated node's kubelet, which a simulated agent always reads
            assert up == {"nvml": 1.0, "dcgm": 1.0, "podresources": 1.0}
            # board energy is counted once: no MIG instance series carries it
            assert prom.query('gpuledger_gpu_energy_joules_total{mig_instance!=""}') == []
            (rate,) = prom.query("sum(gpuledger_gpu_energy_joules_total) > 0")
            assert float(rate["value"][1]) > 0


def test_dcgm_faults_cost_only_its_own_up(tmp_path: Path, dcgm: StandIn) -> None:
    healthy = dcgm.behaviour
    page = healthy.body
    faults = [
        ("HTTP 500", Behaviour(body=b"oops", status=500), "HTTP 500"),
        ("hang past the timeout", Behaviour(body=page, delay_s=30), "timed out"),
        ("truncated text", Behaviour(body=page[: len(page) // 2 + 17]), "line"),
        ("100 MiB body", Behaviour(body=page, repeat_body_bytes=100 * 1024 * 1024), "byte"),
        ("HTML with 200", Behaviour(body=b"<html><body>Bad gateway</body></html>"), ""),
    ]
    with AgentProcess(tmp_path, agent_config(dcgm.url)) as agent:
        wait_until(lambda: collector_up(agent, "dcgm") == 1.0, timeout=20)
        for label, behaviour, reason_part in faults:
            dcgm.behaviour = behaviour
            wait_until(lambda: collector_up(agent, "dcgm") == 0.0, timeout=20)
            got = samples(agent.metrics())  # /metrics still answers
            assert value(got, "gpuledger_collector_up", collector="nvml") == 1.0, label
            # NVML's values stand alone while DCGM is down
            nvml_util = value(got, "gpuledger_gpu_utilization_ratio", gpu="2", mig_instance="")
            assert nvml_util != pytest.approx(ENGINE_ACTIVE[2]), label
            status, body = http_get(agent.url + "/api/v1/collectors")
            assert status == 200
            assert reason_part in body.decode(), (label, body)
            dcgm.behaviour = healthy
            wait_until(lambda: collector_up(agent, "dcgm") == 1.0, timeout=20)
        rss_kib = int(
            next(
                line.split()[1]
                for line in Path(f"/proc/{agent.proc.pid}/status").read_text().splitlines()  # type: ignore[union-attr]
                if line.startswith("VmRSS:")
            )
        )
        assert rss_kib < 200 * 1024, "the 100 MiB body must never be buffered"
    log = agent.log()
    assert "Traceback" not in log
    downs = [line for line in log.splitlines() if "collector dcgm down" in line]
    assert len(downs) == len(faults), downs  # one line per fault, not one per cycle
    assert "collector dcgm recovered" in log


def test_sigterm_stops_within_five_seconds(tmp_path: Path) -> None:
    with StandIn(Behaviour(delay_s=60)) as stuck:
        agent = AgentProcess(tmp_path, agent_config(stuck.url, timeout=30)).start()
        time.sleep(1.5)  # the dcgm collector is now stuck inside its 30 s timeout
        elapsed = agent.stop(signal.SIGTERM)
        assert agent.proc is not None
        assert agent.proc.returncode == 0
        assert elapsed < 5.0


def test_without_a_driver_nvml_is_disabled_with_one_message(tmp_path: Path) -> None:
    """This machine has no NVIDIA driver: the real pynvml raises LibraryNotFound."""
    with AgentProcess(tmp_path, {"collection": {"interval_seconds": 0.5}}) as agent:
        wait_until(lambda: "collector nvml disabled" in agent.log(), timeout=20)
        time.sleep(1.5)
        assert collector_up(agent, "nvml") == 0.0
        assert http_get(agent.url + "/readyz")[0] == 503
        assert http_get(agent.url + "/healthz")[0] == 200
    disabled = [line for line in agent.log().splitlines() if "nvml" in line and "disabled" in line]
    assert len(disabled) == 1, disabled
    assert "Traceback" not in agent.log()


def test_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("dcgm:\n  enabled: true\n  timeout_seconds: soon\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "gpuledger", "agent", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "dcgm.timeout_seconds" in proc.stderr
