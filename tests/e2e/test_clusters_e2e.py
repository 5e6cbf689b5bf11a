"""Two agent processes of different clusters, the same node name and the same simulated
GPUs (so the same GPU UUIDs), writing one PostgreSQL ledger at the same time (issue 18).

Ground truth as in ``test_ledger_e2e.py``: with the ``equal`` split policy each service's
share of each GPU is fixed by the simulated layout (``tests/support/expected_shares``),
so per cluster a service's GPU-seconds must equal Σ_gpu share × the seconds that
cluster's agent observed that GPU. Had the two agents shared a key, the store would have
kept the larger of their running totals for every bucket and one cluster's seconds would
be gone (or both clusters would read the same figures).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gpuledger.chargeback.ledger.store import open_store
from gpuledger.sim.node import SimulatedNode
from tests.support.expected_shares import expected_shares
from tests.support.harness import AgentProcess, http_get

pytestmark = pytest.mark.e2e

SEED = 7
FAR_PAST = datetime(2000, 1, 1, tzinfo=UTC)
FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)
CLUSTERS = ("east", "west")
# east runs 2 s after it is ready, west at least 3 s longer after it is ready: the two
# clusters' figures differ. Timed from each agent's own readiness, not from the first
# start: under a loaded suite a start takes seconds, and east's could eat west's run.
EAST_S, WEST_EXTRA_S = 2.0, 3.0


def _config(cluster: str, url: str) -> dict[str, Any]:
    return {
        "cluster": cluster,
        "node_name": "gpu-node-01",
        "simulate": {"enabled": True, "seed": SEED},
        "collection": {"interval_seconds": 0.5},
        "ledger": {"url": url, "flush_interval_seconds": 0.5, "split_policy": "equal"},
    }


def test_two_clusters_share_one_postgres_ledger(tmp_path: Path, postgres_db_url: str) -> None:
    agents = {}
    for cluster in CLUSTERS:
        (tmp_path / cluster).mkdir()
        agents[cluster] = AgentProcess(tmp_path / cluster, _config(cluster, postgres_db_url))
    try:
        ready_at = {}
        for cluster, agent in agents.items():
            agent.start()
            ready_at[cluster] = time.time()
        stop_at = {"east": ready_at["east"] + EAST_S}
        stop_at["west"] = max(ready_at["west"] + EAST_S, stop_at["east"]) + WEST_EXTRA_S
        for cluster in CLUSTERS:
            agent = agents[cluster]
            time.sleep(max(0.0, stop_at[cluster] - time.time()))
            _, metrics = http_get(agent.url + "/metrics")
            assert f'gpuledger_build_info{{cluster="{cluster}",node="gpu-node-01"'.encode() in (
                metrics
            )
            agent.stop()
    finally:
        for agent in agents.values():
            if agent.proc is not None and agent.proc.poll() is None:
                agent.stop()

    store = open_store(postgres_db_url)
    try:
        assert store.invariant_violations(FAR_PAST, FAR_FUTURE, rel_tol=1e-9) == []
        by_gpu = store.usage(FAR_PAST, FAR_FUTURE, ["cluster", "node", "gpu_uuid"])
        observed: dict[str, dict[str, float]] = {c: {} for c in CLUSTERS}
        for g in by_gpu:  # Σ allocated over owners incl. __idle__ = the GPU's observed time
            assert g.node == "gpu-node-01"
            observed[str(g.cluster)][str(g.gpu_uuid)] = g.allocated_gpu_seconds
        sim_gpus = sorted(g.uuid for g in SimulatedNode(SEED).gpus)
        assert sorted(observed["east"]) == sorted(observed["west"]) == sim_gpus
        # west ran 3 s longer: its GPUs were observed longer than east's, apart
        for uuid in sim_gpus:
            assert observed["west"][uuid] > observed["east"][uuid] + 1.0, uuid
        rows = store.usage(FAR_PAST, FAR_FUTURE, ["cluster", "namespace", "service"])
        got = {(str(r.cluster), str(r.namespace), str(r.service)): r.allocated_gpu_seconds
               for r in rows}  # fmt: skip
        for cluster in CLUSTERS:
            for owner, per_gpu in expected_shares(SEED).items():
                want = sum(share * observed[cluster][g] for g, share in per_gpu.items())
                assert got[(cluster, *owner)] == pytest.approx(want, rel=1e-9), (cluster, owner)
        assert {c for c, _, _ in got} == set(CLUSTERS)
    finally:
        store.close()
