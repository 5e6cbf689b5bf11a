"""A running agent records each owner's cost center (issue 18): the simulated node's
pods and namespaces say them the ways a cluster does (``gpuledger/sim/costcenters.py``:
labels on namespaces, an annotation on one namespace's pods, nothing on the rest), read
through the real lookup, spooled and flushed into the ledger."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gpuledger.agent.config import load_config
from gpuledger.agent.main import Agent


def wait_for(check: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def test_the_simulated_node_records_what_its_labels_say(tmp_path: Path) -> None:
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
        ledger = agent.ledger
        assert ledger is not None
        wait_for(lambda: len({r.namespace for r in ledger.spool.load_cost_centers(0)}) >= 4)
        rows = ledger.spool.load_cost_centers(0)
        by_namespace = {r.namespace: (r.cost_center, r.source) for r in rows}
        assert by_namespace == {
            "llm-prod": ("ml-platform", "namespace_label"),
            "search": ("search-relevance", "namespace_label"),
            "safety": ("trust-and-safety", "pod_annotation"),
            # the idle-holding notebook, decided by the simulated kubelet
            "research": ("research", "namespace_label"),
        }
        # every owner recorded is one the ledger attributes GPU-seconds to
        owners = {(r.namespace, r.service) for r in rows}
        wait_for(lambda: owners <= {(u.namespace, u.service) for u in ledger.spool.load(0)[0]})
        assert {r.node for r in rows} == {cfg.node_name}
        wait_for(ledger.flush_once)
        assert ledger.store is not None
        now = datetime.now(UTC)
        recorded = ledger.store.cost_centers(now - timedelta(hours=2), now + timedelta(hours=1))
        assert set(recorded.values()) == {
            "ml-platform",
            "search-relevance",
            "trust-and-safety",
            "research",
        }
        assert {k for k, v in recorded.items() if v == "trust-and-safety"} == {
            (r.namespace, r.service) for r in rows if r.namespace == "safety"
        }
    finally:
        agent.stop()
