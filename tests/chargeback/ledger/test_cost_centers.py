"""Issue 18: the cost centers the agent saw, recorded per (hour, node, owner) in the ledger
(migration 10), and the store read the report uses: per (namespace, service) the value of
its latest hour in the period. Every expected answer is stated by hand from the rows
written, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gpuledger.chargeback.attribution.claims import IDLE_OWNER, UNATTRIBUTED_OWNER, Claim, Owner
from gpuledger.chargeback.attribution.shares import GpuAllocation, OwnerShare
from gpuledger.chargeback.ledger.cost_centers import CostCenterRecorder
from gpuledger.chargeback.ledger.flusher import Ledger
from gpuledger.chargeback.ledger.spool import Spool
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.chargeback.ledger.tables import CostCenterRow
from gpuledger.collectors.gpu.readings import GpuReading

H = 1_764_547_200  # 2025-12-01T00:00:00Z
HOUR = 3600
TRAIN = Owner("ml", "train", pod="train-0")
SERVE = Owner("ml", "serve", pod="serve-0")


def _dt(t: int) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _cc(hour: int, node: str, service: str, cost_center: str, ns: str = "ml") -> CostCenterRow:
    return CostCenterRow(hour, node, ns, service, cost_center, "pod_label")


def test_the_latest_hour_of_the_period_wins(ledger_store: AuditableLedgerStore) -> None:
    ledger_store.upsert_cost_centers(
        [
            _cc(H - HOUR, "n1", "train", "research"),  # November: outside December
            _cc(H, "n1", "train", "team-a"),
            _cc(H + 2 * HOUR, "n1", "train", "team-b"),  # relabelled: wins December
            _cc(H + HOUR, "n1", "serve", "zeta"),  # two nodes, the same hour:
            _cc(H + HOUR, "n2", "serve", "alpha"),  # alphabetically first
            _cc(H - HOUR, "n1", "old", "legacy"),  # only in November
        ]
    )
    december = (_dt(H), _dt(H + 31 * 24 * HOUR))
    assert ledger_store.cost_centers(*december) == {
        ("ml", "train"): "team-b",
        ("ml", "serve"): "alpha",
    }
    assert ledger_store.cost_centers(*december, node="n1") == {
        ("ml", "train"): "team-b",
        ("ml", "serve"): "zeta",
    }
    assert ledger_store.cost_centers(_dt(H - HOUR), _dt(H)) == {
        ("ml", "train"): "research",
        ("ml", "old"): "legacy",
    }
    # a later write of the same hour replaces the value (a label, not a total); a replay
    # of the same rows changes nothing
    ledger_store.upsert_cost_centers([_cc(H + 2 * HOUR, "n1", "train", "team-c")])
    ledger_store.upsert_cost_centers([_cc(H + 2 * HOUR, "n1", "train", "team-c")])
    assert ledger_store.cost_centers(*december)[("ml", "train")] == "team-c"
    # an empty period, and a batch whose key repeats (merged: the last row wins)
    assert ledger_store.cost_centers(_dt(H + 40 * 24 * HOUR), _dt(H + 41 * 24 * HOUR)) == {}
    ledger_store.upsert_cost_centers(
        [_cc(H + 3 * HOUR, "n1", "serve", "one"), _cc(H + 3 * HOUR, "n1", "serve", "two")]
    )
    assert ledger_store.cost_centers(*december)[("ml", "serve")] == "two"


def _alloc(*shares: OwnerShare) -> GpuAllocation:
    return GpuAllocation("GPU-0", 0, "H100", None, None, shares)


def test_the_recorder_writes_a_change_only() -> None:
    seen = {TRAIN: ("team-a", "pod_label")}
    recorder = CostCenterRecorder("n1", lambda o: seen.get(o))
    shares = (
        OwnerShare(TRAIN, 0.5, 1.0),
        OwnerShare(SERVE, 0.25, 1.0),  # nothing found: not recorded
        OwnerShare(UNATTRIBUTED_OWNER, 0.1, 1.0),
        OwnerShare(IDLE_OWNER, 0.15, 0.0),
    )
    assert recorder.observe(H + 10, [_alloc(*shares)]) == [_cc(H, "n1", "train", "team-a")]
    assert recorder.observe(H + 20, [_alloc(*shares)]) == []  # unchanged within the hour
    seen[TRAIN] = ("team-b", "namespace_label")
    assert recorder.observe(H + 30, [_alloc(*shares)]) == [
        CostCenterRow(H, "n1", "ml", "train", "team-b", "namespace_label")
    ]
    assert recorder.observe(H + HOUR, [_alloc(*shares)]) == [
        CostCenterRow(H + HOUR, "n1", "ml", "train", "team-b", "namespace_label")
    ]
    # a restarted recorder that resumed from the spool writes nothing again
    again = CostCenterRecorder("n1", lambda o: seen.get(o))
    again.restore([CostCenterRow(H + HOUR, "n1", "ml", "train", "team-b", "namespace_label")])
    assert again.observe(H + HOUR + 5, [_alloc(*shares)]) == []


def test_a_failing_lookup_records_nothing_and_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gpuledger.chargeback.ledger.cost_centers")
    calls = {"n": 0}

    def lookup(owner: Owner) -> tuple[str, str] | None:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise RuntimeError("bug")
        return ("team-a", "pod_label")

    recorder = CostCenterRecorder("n1", lookup)
    shares = (OwnerShare(TRAIN, 1.0, 1.0),)
    assert recorder.observe(H + 1, [_alloc(*shares)]) == []
    assert recorder.observe(H + 2, [_alloc(*shares)]) == []
    assert recorder.observe(H + 3, [_alloc(*shares)]) == [_cc(H, "n1", "train", "team-a")]
    failed = [r for r in caplog.records if "lookup failed" in r.getMessage()]
    assert len(failed) == 1  # once per change of state
    assert any("recovered" in r.getMessage() for r in caplog.records)


def test_the_agent_path_records_through_spool_and_flush(
    ledger_store: AuditableLedgerStore, tmp_path: Path
) -> None:
    """Readings → claims → shares → recorder → spool → flush → store → the report's read;
    a restart resumes from the spool and writes no row twice."""
    clock = {"wall": float(H + 10), "mono": 100.0}
    labels = {("ml", "train-0"): ("team-a", "pod_label")}
    looked_up: list[Owner] = []

    def lookup(owner: Owner) -> tuple[str, str] | None:
        looked_up.append(owner)
        return labels.get((owner.namespace, owner.pod))

    def claims(reading: GpuReading) -> list[Claim]:
        return [Claim(TRAIN, 0.5), Claim(SERVE, 0.5)]

    def ledger() -> Ledger:
        return Ledger(
            "n1", spool=Spool(tmp_path / "spool.db"), store=ledger_store, claims_for=claims,
            wall=lambda: clock["wall"], mono=lambda: clock["mono"], cost_center_of=lookup,
        )  # fmt: skip

    gpu = GpuReading(uuid="GPU-0", index=0, model="H100")
    first = ledger()
    first.start()
    first.observe([gpu])
    clock["wall"], clock["mono"] = H + 20, 110.0
    first.observe([gpu])
    assert first.spool.pending_cost_centers() == [_cc(H, "n1", "train", "team-a")]
    assert first.flush_once()
    assert first.spool.pending_cost_centers() == []
    first.spool.close()
    assert ledger_store.cost_centers(_dt(H), _dt(H + HOUR)) == {("ml", "train"): "team-a"}
    second = ledger()
    second.start()
    clock["wall"], clock["mono"] = H + 30, 120.0
    second.observe([gpu])
    assert second.spool.pending_cost_centers() == []  # resumed: nothing to write again
    labels[("ml", "train-0")] = ("team-b", "pod_annotation")
    second.observe([gpu])
    assert second.flush_once()
    assert ledger_store.cost_centers(_dt(H), _dt(H + HOUR)) == {("ml", "train"): "team-b"}
    assert {o.service for o in looked_up} == {"train", "serve"}  # never idle
    second.spool.close()


def test_two_clusters_labels_are_kept_apart_and_read_fleet_wide(
    ledger_store: AuditableLedgerStore,
) -> None:
    # Node names repeat across clusters; each cluster's row of the same (hour, node,
    # namespace, service) is its own row, in one batch or two.
    def row(hour: int, service: str, cost_center: str, cluster: str) -> CostCenterRow:
        return CostCenterRow(hour, "gpu-1", "ml", service, cost_center, "pod_label", cluster)

    ledger_store.upsert_cost_centers(
        [
            row(H, "train", "team-east", "east"),
            row(H, "train", "team-west", "west"),  # same key but the cluster
            row(H, "serve", "serve-east", "east"),
            row(H + HOUR, "serve", "serve-west", "west"),  # later hour: wins fleet-wide
            row(H, "only-west", "solo", "west"),
        ]
    )
    december = (_dt(H), _dt(H + 31 * 24 * HOUR))
    # Fleet-wide (namespace sameness: ml/train is one payer in every cluster): the
    # latest hour in any cluster, a tie between clusters settled alphabetically.
    assert ledger_store.cost_centers(*december) == {
        ("ml", "train"): "team-east",
        ("ml", "serve"): "serve-west",
        ("ml", "only-west"): "solo",
    }
    # Nothing was merged across clusters: relabelling east's row leaves west's alone.
    ledger_store.upsert_cost_centers([row(H, "train", "zz-east", "east")])
    assert ledger_store.cost_centers(*december)[("ml", "train")] == "team-west"
    ledger_store.upsert_cost_centers([row(H, "train", "aa-west", "west")])
    assert ledger_store.cost_centers(*december)[("ml", "train")] == "aa-west"
