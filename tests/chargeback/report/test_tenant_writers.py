"""Tenant lines of shared services in the written formats: the tenants CSV and the JSON.

The report's tenant lines are attached by hand (tests/support/tenant_report.py:
each tenant a stated power-of-two share of its service); the expected cells below are
those shares times the fixture's hand-computed service figures
(tests/support/report_expected.py), not read back from the code under test.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from gpuledger.chargeback.report.model import Report
from gpuledger.chargeback.report.writers.csv_json import (
    TENANT_COLUMNS,
    lines_csv,
    report_json,
    tenants_csv,
)
from gpuledger.chargeback.report.writers.files import write_report
from tests.support import report_fixtures as fx
from tests.support.report_expected import (
    CHAT_BUSY,
    CHAT_COST,
    CHAT_H,
    CHAT_KWH,
    EMBED_A100_H,
    EMBED_COST,
    EMBED_H100_H,
)
from tests.support.tenant_report import (
    API_IN,
    API_OUT,
    EVIL_FORMULA,
    EVIL_SCRIPT,
    INPUT_PART,
    tenant_report,
)


@pytest.fixture(scope="module")
def report() -> Report:
    return tenant_report()


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_tenants_csv_has_a_row_per_service_and_tenant(report: Report) -> None:
    text = tenants_csv(report)
    header = text.splitlines()[0].split(",")
    assert header == list(TENANT_COLUMNS)
    rows = _rows(text)
    keys = [(r["namespace"], r["service"], r["tenant"]) for r in rows]
    assert keys == [
        ("prod", "chat", "team-a"),
        ("prod", "chat", EVIL_SCRIPT),
        ("prod", "chat", "'" + EVIL_FORMULA),  # neutralized: a spreadsheet shows it as text
        ("prod", "chat", "__probes__"),
        ("prod", "chat", "__untenanted__"),
        ("search", "embed", "search-ui"),
        ("search", "embed", "__headroom__"),
        ("lab", "train", "research"),
    ]
    for r in rows:
        assert r["month"] == "2026-10"
        assert r["fleet"] == report.fleet
        assert r["rate_card_version"] == report.rate_card.version
        assert r["idle_policy"] == "separate"
        assert r["headroom_policy"] == "spread"


def test_tenant_cells_are_the_stated_shares(report: Report) -> None:
    rows = {r["tenant"]: r for r in _rows(tenants_csv(report))}
    a = rows["team-a"]
    assert a["tenant_kind"] == "tenant"
    assert float(a["allocated_gpu_hours"]) == pytest.approx(CHAT_H / 2) == 465.0
    assert float(a["busy_gpu_hours"]) == pytest.approx(CHAT_BUSY / 2)
    assert float(a["energy_kwh"]) == pytest.approx(CHAT_KWH / 2)
    assert float(a["share_ratio"]) == 0.5
    assert float(a["total_cost_usd"]) == pytest.approx(CHAT_COST / 2, abs=1e-6)
    assert float(a["input_cost_usd"]) == pytest.approx(CHAT_COST / 2 * INPUT_PART, abs=1e-6)
    assert float(a["cost_per_1m_input_usd"]) == pytest.approx(
        CHAT_COST / 2 * INPUT_PART / 600.0, abs=1e-6
    )
    assert float(a["cost_per_1m_output_usd"]) == pytest.approx(
        CHAT_COST / 2 * (1 - INPUT_PART) / 150.0, abs=1e-6
    )
    assert (a["prompt_tokens"], a["cached_prompt_tokens"], a["generation_tokens"]) == (
        "600000000.000000",
        "100000000.000000",
        "150000000.000000",
    )
    assert float(a["api_usd_per_1m_input"]) == API_IN
    assert float(a["api_usd_per_1m_output"]) == API_OUT
    api = 600 * API_IN + 150 * API_OUT
    assert float(a["token_api_usd"]) == pytest.approx(api)
    assert float(a["savings_vs_token_api_usd"]) == pytest.approx(api - CHAT_COST / 2, abs=1e-6)
    assert a["weights"] == "measured"
    assert a["fixed_ratio_share"] == "0.000000"
    assert rows[EVIL_SCRIPT]["weights"] == "fixed-ratio"
    assert rows[EVIL_SCRIPT]["fixed_ratio_share"] == "1.000000"
    assert rows["'" + EVIL_FORMULA]["weights"] == "mixed"  # the key as the cell holds it
    assert rows["'" + EVIL_FORMULA]["fixed_ratio_share"] == "0.250000"
    assert rows["__probes__"]["tenant_kind"] == "probes"
    head = rows["__headroom__"]
    assert head["tenant_kind"] == "headroom"
    assert float(head["total_cost_usd"]) == pytest.approx(EMBED_COST / 4, abs=1e-6)
    assert float(head["allocated_gpu_hours"]) == pytest.approx((EMBED_H100_H + EMBED_A100_H) / 4)
    # no tokens: no cost per token, no API counterfactual -- empty, never 0
    for col in ("cost_per_1m_input_usd", "cost_per_1m_output_usd", "token_api_usd",
                "input_cost_usd", "savings_vs_token_api_usd", "api_provider"):  # fmt: skip
        assert head[col] == "", col


def test_unpriced_tenant_costs_are_empty_with_the_reason(report: Report) -> None:
    r = {r["tenant"]: r for r in _rows(tenants_csv(report))}["research"]
    assert float(r["allocated_gpu_hours"]) == 744.0
    for col in ("capacity_cost_usd", "energy_cost_usd", "internal_cost_usd", "total_cost_usd",
                "input_cost_usd", "output_cost_usd", "cost_per_1m_input_usd",
                "cost_per_1m_output_usd"):  # fmt: skip
        assert r[col] == "", col
    assert r["unpriced_gpu_models"] == fx.B200


def test_tenant_rows_add_up_to_their_service_row(report: Report) -> None:
    services = {(r["namespace"], r["service"]): r for r in _rows(lines_csv(report))}
    tenants = _rows(tenants_csv(report))
    for key in (("prod", "chat"), ("search", "embed")):
        mine = [t for t in tenants if (t["namespace"], t["service"]) == key]
        for col in ("allocated_gpu_hours", "busy_gpu_hours", "energy_kwh", "capacity_cost_usd",
                    "energy_cost_usd", "internal_cost_usd", "total_cost_usd"):  # fmt: skip
            got = sum(float(t[col]) for t in mine)
            # each cell carries six decimals: the rounding of n cells, at most
            assert got == pytest.approx(float(services[key][col]), abs=len(mine) * 1e-6), col
        assert sum(float(t["share_ratio"]) for t in mine) == 1.0


def test_main_csv_columns_are_unchanged(report: Report) -> None:
    """Tenant lines go to their own file: the main CSV keeps its columns and rows."""
    rows = _rows(lines_csv(report))
    assert [(r["namespace"], r["service"]) for r in rows] == [
        ("prod", "chat"), ("search", "embed"), ("lab", "train"), ("", "__unattributed__"),
        ("", "__idle__"), ("", "TOTAL"),
    ]  # fmt: skip
    assert "tenant" not in rows[0]


def test_no_tenant_lines_is_a_header_only_file(report: Report) -> None:
    from dataclasses import replace

    bare = replace(report, lines=tuple(replace(ln, tenants=()) for ln in report.lines))
    assert tenants_csv(bare) == ",".join(TENANT_COLUMNS) + "\n"


def test_write_report_writes_the_tenants_file_with_the_csv(report: Report, tmp_path: Path) -> None:
    paths = write_report(report, tmp_path, formats=("csv",))
    month = tmp_path / "2026-10"
    assert paths == [
        month / "chargeback-2026-10.csv",
        month / "chargeback-2026-10-coverage.csv",
        month / "chargeback-2026-10-tenants.csv",
        month / "chargeback-2026-10-findings.csv",
        month / "chargeback-2026-10-cost-centers.csv",
        month / "chargeback-2026-10-anomalies.csv",
        month / "chargeback-2026-10-clusters.csv",
    ]
    assert (month / "chargeback-2026-10-tenants.csv").read_text() == tenants_csv(report)
    assert write_report(report, tmp_path / "j", formats=("json",)) == [
        tmp_path / "j" / "2026-10" / "chargeback-2026-10.json"
    ]


def test_json_carries_tenant_lines_with_nulls(report: Report) -> None:
    doc = json.loads(report_json(report))
    assert doc["headroom_policy"] == "spread"
    chat = next(ln for ln in doc["lines"] if ln["service"] == "chat")
    tenants = {t["tenant"]: t for t in chat["tenants"]}
    assert list(tenants) == ["team-a", EVIL_SCRIPT, EVIL_FORMULA, "__probes__", "__untenanted__"]
    assert tenants["team-a"]["allocated_gpu_hours"] == 465.0
    assert tenants["team-a"]["total_cost_usd"] == pytest.approx(CHAT_COST / 2)
    assert tenants["team-a"]["weights"] == "measured"
    assert tenants[EVIL_FORMULA]["fixed_ratio_share"] == 0.25
    train = next(ln for ln in doc["lines"] if ln["service"] == "train")
    (research,) = train["tenants"]
    assert research["total_cost_usd"] is None  # null, never 0
    assert research["cost_per_1m_input_usd"] is None
    idle = next(ln for ln in doc["lines"] if ln["kind"] == "idle")
    assert idle["tenants"] == []
    assert set(tenants["team-a"]) == {
        "tenant", "kind", "requests", "prompt_tokens", "cached_prompt_tokens",
        "generation_tokens", "weighted_tokens", "allocated_gpu_hours", "busy_gpu_hours",
        "share_ratio", "energy_kwh", "capacity_cost_usd", "energy_cost_usd",
        "internal_cost_usd", "idle_share_usd", "total_cost_usd", "input_cost_usd",
        "output_cost_usd", "cost_per_1m_input_usd", "cost_per_1m_output_usd", "api_provider",
        "api_usd_per_1m_input", "api_usd_per_1m_output", "token_api_usd", "token_api_basis",
        "savings_vs_token_api_usd", "weights", "fixed_ratio_share", "models",
        "cost_center",  # report schema 5 (issue 18)
    }  # fmt: skip
