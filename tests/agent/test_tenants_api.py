"""GET /api/v1/tenants answers per-tenant token facts from the durable store, grouped,
over [from, to); figures stated by hand from the rows written."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gpuledger.agent.runtime import AgentRuntime
from gpuledger.agent.server import create_app
from gpuledger.agent.snapshot import SnapshotStore
from gpuledger.chargeback.ledger.store import open_store
from gpuledger.chargeback.ledger.tables import TenantTokenRow

H = 1_767_225_600  # 2026-01-01T00:00:00Z


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    store = open_store(f"sqlite:///{tmp_path / 'ledger.db'}")
    store.migrate()
    store.upsert_tenant_tokens([
        TenantTokenRow(H, "n1", "llm", "chat", "llama", "search", 10, 1000, 200, 300),
        TenantTokenRow(H + 3600, "n1", "llm", "chat", "llama", "search", 2, 100, 0, 30),
        TenantTokenRow(H, "n1", "llm", "chat", "llama", 'a"b<script>', 1, 5, 0, 1),
        TenantTokenRow(H + 7200, "n1", "llm", "chat", "llama", "search", 9, 9, 9, 9),  # outside
    ])  # fmt: skip
    runtime = AgentRuntime(SnapshotStore(lambda snap: b""))
    return TestClient(create_app(runtime, ledger_store=store))


def test_grouped_tenant_sums(client: TestClient) -> None:
    r = client.get("/api/v1/tenants", params={"from": "2026-01-01T00:00:00Z",
                                              "to": "2026-01-01T02:00:00Z"})  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["group_by"] == ["service", "namespace", "tenant"]
    assert body["rows"] == [
        {"service": "chat", "namespace": "llm", "tenant": 'a"b<script>', "requests": 1.0,
         "prompt_tokens": 5.0, "cached_prompt_tokens": 0.0, "generation_tokens": 1.0},
        {"service": "chat", "namespace": "llm", "tenant": "search", "requests": 12.0,
         "prompt_tokens": 1100.0, "cached_prompt_tokens": 200.0, "generation_tokens": 330.0},
    ]  # fmt: skip
    assert r.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize(
    ("params", "status", "fragment"),
    [
        ({"from": "yesterday", "to": "2026-01-02"}, 400, "from"),
        ({"from": "2026-01-02", "to": "2026-01-01"}, 400, "after"),
        (
            {"from": "2026-01-01", "to": "2026-01-02", "group_by": "tenant,gpu_uuid"},
            400,
            "gpu_uuid",
        ),
    ],
)
def test_bad_requests_are_refused(
    client: TestClient, params: dict[str, str], status: int, fragment: str
) -> None:
    r = client.get("/api/v1/tenants", params=params)
    assert r.status_code == status
    assert fragment in r.text


def test_without_a_ledger_it_is_not_found() -> None:
    runtime = AgentRuntime(SnapshotStore(lambda snap: b""))
    params = {"from": "2026-01-01", "to": "2026-01-02"}
    r = TestClient(create_app(runtime)).get("/api/v1/tenants", params=params)
    assert r.status_code == 404
