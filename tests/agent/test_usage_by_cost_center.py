"""GET /api/v1/usage?group_by=cost_center (issue 18): the ledger's GPU-seconds by who
pays, with the report's rule (static service rule, then the recorded label -- the latest
hour in the window --, then the static namespace rule, then ``__unassigned__``), on SQLite
and PostgreSQL. Expected sums are added up by hand from the rows written."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from gpuledger.agent.runtime import AgentRuntime
from gpuledger.agent.server import create_app
from gpuledger.agent.snapshot import SnapshotStore
from gpuledger.chargeback.costcenters.config import CostCentersConfig
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.chargeback.ledger.tables import CostCenterRow, UsageRow

H = 1_767_225_600  # 2026-01-01T00:00:00Z
WINDOW = {"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T03:00:00Z"}
CONFIG = CostCentersConfig.model_validate(
    {
        "static": [
            {"namespace": "lab", "cost_center": "research"},
            {"namespace": "llm", "service": "embed", "cost_center": "search"},
        ]
    }
)


def _u(hour: int, node: str, ns: str, svc: str, model: str, alloc: float) -> UsageRow:
    return UsageRow(hour, node, "GPU-0", ns, svc, model, "", alloc, alloc / 2, alloc * 100)


@pytest.fixture
def client(ledger_store: AuditableLedgerStore) -> TestClient:
    ledger_store.upsert(
        [
            _u(H, "n1", "llm", "chat", "H100", 3600.0),
            _u(H + 3600, "n2", "llm", "chat", "L40S", 1800.0),
            _u(H + 3600, "n1", "llm", "embed", "H100", 900.0),
            _u(H, "n2", "lab", "train", "L40S", 600.0),
            _u(H, "n2", "", "__idle__", "L40S", 300.0),
            _u(H + 3 * 3600, "n1", "llm", "chat", "H100", 7.0),  # outside the window
        ],
        [],
    )
    ledger_store.upsert_cost_centers(
        [
            CostCenterRow(H, "n1", "llm", "chat", "old-team", "pod_label"),
            CostCenterRow(H + 3600, "n1", "llm", "chat", "ml-platform", "namespace_label"),
            CostCenterRow(H, "n1", "llm", "embed", "labelled", "pod_label"),  # rule wins
        ]
    )
    runtime = AgentRuntime(SnapshotStore(lambda snap: b""))
    return TestClient(create_app(runtime, ledger_store=ledger_store, cost_centers=CONFIG))


def test_grouped_by_cost_center(client: TestClient) -> None:
    r = client.get("/api/v1/usage", params={**WINDOW, "group_by": "cost_center"})
    assert r.status_code == 200, r.text
    assert r.json()["group_by"] == ["cost_center"]
    got = {x["cost_center"]: (x["allocated_gpu_seconds"], x["allocated_gpu_hours"])
           for x in r.json()["rows"]}  # fmt: skip
    assert got == {
        "__unassigned__": (300.0, 300.0 / 3600),
        "ml-platform": (5400.0, 1.5),
        "research": (600.0, 600.0 / 3600),
        "search": (900.0, 0.25),
    }
    assert [x["cost_center"] for x in r.json()["rows"]] == sorted(got)


def test_with_other_keys_and_a_node(client: TestClient) -> None:
    r = client.get(
        "/api/v1/usage", params={**WINDOW, "group_by": "gpu_model,cost_center", "node": "n2"}
    )
    assert r.status_code == 200, r.text
    rows = r.json()["rows"]
    assert [list(x)[:2] for x in rows] == [["gpu_model", "cost_center"]] * len(rows)
    assert {(x["gpu_model"], x["cost_center"]): x["busy_gpu_seconds"] for x in rows} == {
        ("L40S", "ml-platform"): 900.0,
        ("L40S", "research"): 300.0,
        ("L40S", "__unassigned__"): 150.0,
    }
    assert {x["energy_joules"] for x in rows} == {180000.0, 60000.0, 30000.0}


def test_an_unknown_key_is_a_400(client: TestClient) -> None:
    r = client.get("/api/v1/usage", params={**WINDOW, "group_by": "cost_center,team"})
    assert r.status_code == 400
    assert "team" in r.json()["detail"]
