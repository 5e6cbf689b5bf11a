"""GET /api/v1/usage answers from the durable store, grouped, over [from, to)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gpuledger.agent.runtime import AgentRuntime
from gpuledger.agent.server import create_app
from gpuledger.agent.snapshot import SnapshotStore
from gpuledger.chargeback.ledger.store import open_store
from gpuledger.chargeback.ledger.tables import CoverageRow, UsageRow

H = 1_767_225_600  # 2026-01-01T00:00:00Z


def row(hour: int, ns: str, svc: str, model: str, alloc: float, gpu: str = "GPU-0") -> UsageRow:
    return UsageRow(hour, "n1", gpu, ns, svc, model, "", alloc, alloc / 2, alloc * 100)


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    store = open_store(f"sqlite:///{tmp_path / 'ledger.db'}")
    store.migrate()
    store.upsert(
        [
            row(H, "llm", "chat", "H100", 3600.0),
            row(H + 3600, "llm", "chat", "H100", 1800.0),
            row(H + 3600, "llm", "embed", "L40S", 900.0, gpu="GPU-1"),
            row(H + 7200, "llm", "chat", "H100", 7.0),  # outside [from, to)
        ],
        [CoverageRow(H, "n1", "GPU-0", "H100", 3600.0)],
    )
    runtime = AgentRuntime(SnapshotStore(lambda snap: b""))
    return TestClient(create_app(runtime, ledger_store=store))


def test_grouped_sums_over_the_window(client: TestClient) -> None:
    r = client.get(
        "/api/v1/usage",
        params={
            "from": "2026-01-01T00:00:00Z",
            "to": "2026-01-01T02:00:00Z",
            "group_by": "service,gpu_model",
        },
    )
    assert r.status_code == 200, r.text
    rows = {(x["service"], x["gpu_model"]): x for x in r.json()["rows"]}
    assert rows[("chat", "H100")]["allocated_gpu_seconds"] == 5400.0
    assert rows[("chat", "H100")]["allocated_gpu_hours"] == 1.5
    assert rows[("chat", "H100")]["busy_gpu_seconds"] == 2700.0
    assert rows[("embed", "L40S")]["energy_joules"] == 90000.0
    assert len(rows) == 2


def test_default_grouping_and_hour_grouping(client: TestClient) -> None:
    r = client.get("/api/v1/usage", params={"from": "2026-01-01T00:00:00", "to": "2026-01-02"})
    assert r.json()["group_by"] == ["service", "namespace", "gpu_model"]
    hourly = client.get(
        "/api/v1/usage",
        params={"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T03:00:00Z", "group_by": "hour"},
    ).json()["rows"]
    assert [(x["hour"], x["allocated_gpu_seconds"]) for x in hourly] == [
        ("2026-01-01T00:00:00Z", 3600.0),
        ("2026-01-01T01:00:00Z", 2700.0),
        ("2026-01-01T02:00:00Z", 7.0),
    ]


@pytest.mark.parametrize(
    ("params", "status", "fragment"),
    [
        ({"from": "yesterday", "to": "2026-01-02"}, 400, "from"),
        ({"from": "2026-01-02", "to": "2026-01-01"}, 400, "after"),
        ({"from": "2026-01-01", "to": "2026-01-02", "group_by": "service,colour"}, 400, "colour"),
        ({"to": "2026-01-02"}, 422, ""),
    ],
)
def test_bad_requests_name_the_problem(
    client: TestClient, params: dict[str, str], status: int, fragment: str
) -> None:
    r = client.get("/api/v1/usage", params=params)
    assert r.status_code == status
    assert fragment in r.text


def test_disabled_ledger_is_404() -> None:
    runtime = AgentRuntime(SnapshotStore(lambda snap: b""))
    r = TestClient(create_app(runtime)).get(
        "/api/v1/usage", params={"from": "2026-01-01", "to": "2026-01-02"}
    )
    assert r.status_code == 404


def test_group_by_cluster(tmp_path: Path) -> None:
    """Issue 18: two clusters' nodes of one name, summed apart by ``group_by=cluster``."""
    store = open_store(f"sqlite:///{tmp_path / 'fleet.db'}")
    store.migrate()
    store.upsert(
        [
            UsageRow(H, "n1", "GPU-0", "llm", "chat", "H100", "", 3600.0, 1800.0, 0.0,
                     cluster="east"),
            UsageRow(H, "n1", "GPU-0", "llm", "chat", "H100", "", 1200.0, 600.0, 0.0,
                     cluster="west"),
        ],
        [],
    )  # fmt: skip
    runtime = AgentRuntime(SnapshotStore(lambda snap: b""))
    client = TestClient(create_app(runtime, ledger_store=store))
    r = client.get(
        "/api/v1/usage",
        params={"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T01:00:00Z",
                "group_by": "cluster,node"},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    assert [(x["cluster"], x["node"], x["allocated_gpu_seconds"]) for x in r.json()["rows"]] == [
        ("east", "n1", 3600.0),
        ("west", "n1", 1200.0),
    ]
