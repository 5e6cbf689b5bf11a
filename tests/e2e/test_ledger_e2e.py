"""The ledger through the whole agent: SIGKILL and restart, and a PostgreSQL outage.

Ground truth comes from the simulated node's model, independently of the agent's code:
with the ``equal`` split policy each service's share of each GPU is fixed by the layout
(a MIG instance holds slices/total of its GPU, split equally among the services running
on it; everything else is idle), so a service's GPU-seconds must equal
Σ_gpu share × the seconds that GPU was observed, and every GPU's observed seconds must
match the time the agent was up and collecting.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gpuledger.chargeback.ledger.store import open_store
from gpuledger.sim.node import SimulatedNode
from tests.support.expected_shares import expected_shares
from tests.support.harness import AgentProcess, http_get
from tests.support.standins import wait_until

pytestmark = pytest.mark.e2e

SEED = 7
INTERVAL = 0.5
FAR_PAST = datetime(2000, 1, 1, tzinfo=UTC)
FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)


def agent_config(**ledger: Any) -> dict[str, Any]:
    return {
        "node_name": "ledger-node",
        "simulate": {"enabled": True, "seed": SEED},
        "collection": {"interval_seconds": INTERVAL},
        "ledger": {"flush_interval_seconds": 0.5, "split_policy": "equal", **ledger},
    }


def first_collection(agent: AgentProcess) -> float:
    def seen() -> float | None:
        _, body = http_get(agent.url + "/api/v1/collectors")
        last = json.loads(body)["collectors"].get("nvml", {}).get("last_success_unix")
        return float(last) if last else None

    return float(wait_until(seen, timeout=30))


def check_against_ground_truth(url: str, windows: list[tuple[float, float]]) -> None:
    store = open_store(url)
    try:
        assert store.invariant_violations(FAR_PAST, FAR_FUTURE, rel_tol=1e-9) == []
        observed = {r.gpu_uuid: r.observed_seconds
                    for r in store.coverage(FAR_PAST, FAR_FUTURE)}  # fmt: skip
        up = sum(end - start for start, end in windows)
        sim_gpus = [g.uuid for g in SimulatedNode(SEED).gpus]
        assert sorted(observed) == sorted(sim_gpus)
        for uuid, seconds in observed.items():
            # never more than the agent was up (no double counting after a restart) ...
            assert seconds <= up + 0.3 * len(windows), (uuid, seconds, up)
            # ... and at most the cycle in flight plus one interval lost per run
            assert seconds >= up - len(windows) * (2 * INTERVAL + 0.5), (uuid, seconds, up)
        rows = store.usage(FAR_PAST, FAR_FUTURE, ["namespace", "service"])
        got = {(str(r.namespace), str(r.service)): r.allocated_gpu_seconds
               for r in rows}  # fmt: skip
        expected = {
            owner: sum(share * observed[g] for g, share in per_gpu.items())
            for owner, per_gpu in expected_shares(SEED).items()
        }
        assert got.keys() == expected.keys()
        for owner, seconds in expected.items():
            assert got[owner] == pytest.approx(seconds, rel=1e-9), owner
    finally:
        store.close()


def test_sigkill_twice_mid_hour_loses_at_most_an_interval_per_restart(tmp_path: Path) -> None:
    windows: list[tuple[float, float]] = []
    for run, sig in enumerate((signal.SIGKILL, signal.SIGKILL, signal.SIGTERM)):
        agent = AgentProcess(tmp_path, agent_config()).start()
        start = first_collection(agent)
        time.sleep(3.0 + run)
        end = time.time()
        agent.stop(sig)
        windows.append((start, end))
    url = f"sqlite:///{tmp_path / 'state' / 'ledger.db'}"
    # a SIGKILLed agent cannot flush: its last rows reached the store through the next
    # start (spool resume), which is what this checks
    check_against_ground_truth(url, windows)
    log = (tmp_path / "agent.log").read_text()
    assert log.count("ledger resumed from the spool") == 2
    assert "Traceback" not in log


def metric(agent: AgentProcess, name: str) -> float:
    for line in agent.metrics().splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exported")


SECRET = "Zx9-ledger-s3cret"


def test_postgres_outage_spool_grows_then_drains(
    tmp_path: Path, postgres_server: Any, postgres_db_url: str
) -> None:
    # trust auth ignores it, but the agent must still never write it anywhere
    assert "://postgres:@" in postgres_db_url
    url_with_secret = postgres_db_url.replace("://postgres:@", f"://postgres:{SECRET}@")
    with AgentProcess(tmp_path, agent_config(url=url_with_secret)) as agent:
        start = first_collection(agent)
        wait_until(lambda: metric(agent, "gpuledger_ledger_pending_rows") == 0.0, timeout=30)
        postgres_server.stop()
        try:
            wait_until(
                lambda: metric(agent, "gpuledger_ledger_flush_failures_total") >= 2, timeout=30
            )
            time.sleep(2.0)
            assert metric(agent, "gpuledger_ledger_pending_rows") > 0
            assert http_get(agent.url + "/metrics")[0] == 200  # collection goes on
        finally:
            postgres_server.start()
        wait_until(lambda: metric(agent, "gpuledger_ledger_pending_rows") == 0.0, timeout=90)
        end = time.time()
        assert SECRET not in agent.metrics()
        _, api = http_get(agent.url + "/api/v1/collectors")
        assert SECRET not in api.decode()
        agent.stop(signal.SIGTERM)
    check_against_ground_truth(postgres_db_url, [(start, end)])
    # the store holds exactly the spool's running totals: nothing lost, nothing doubled
    spool = sqlite3.connect(tmp_path / "state" / "spool.db")
    spool_totals = dict(
        spool.execute(
            "SELECT service, TOTAL(allocated_gpu_seconds) FROM spool_usage GROUP BY service"
        )
    )
    spool.close()
    store = open_store(postgres_db_url)
    store_totals = {
        str(r.service): r.allocated_gpu_seconds
        for r in store.usage(FAR_PAST, FAR_FUTURE, ["service"])
    }
    store.close()
    assert store_totals.keys() == spool_totals.keys()
    for service, seconds in spool_totals.items():
        assert store_totals[service] == pytest.approx(seconds, rel=1e-12)
    log = agent.log()
    assert "ledger flush failed" in log
    assert "ledger flush recovered" in log
    assert SECRET not in log
    assert log.count("ledger flush failed") == 1  # one line per state change, not per retry
