"""The FOCUS export of a report whose shared services have tenant lines: one row per
(GPU model, tenant), the same money in total, hostile tenant names kept inert, and the
official validator as clean as without tenants.

Expected figures: the tenants' stated shares (tests/support/tenant_report.py)
times the fixture's hand-computed model lines (tests/support/report_expected.py).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import pytest

from gpuledger.chargeback.report.model import Report
from gpuledger.chargeback.report.writers import focus
from gpuledger.chargeback.report.writers.focus import (
    APPLICABILITY_CRITERIA,
    focus_csv,
    focus_rows,
    tenant_model_lines,
)
from tests.support import rates
from tests.support import report_fixtures as fx
from tests.support.focus_validator import (
    NUMERIC,
    NUMERIC_COLUMNS,
    VALIDATE_VERSION,
    Verdict,
    find_validator,
    or_alternatives,
    run_validator,
    unexcused,
)
from tests.support.report_expected import (
    CHAT_COST,
    EA,
    EH,
    EMBED_A100_H,
    EMBED_A100_KWH,
    EMBED_H100_H,
    EMBED_H100_KWH,
    RA,
    RH,
)
from tests.support.tenant_report import EVIL_FORMULA, EVIL_SCRIPT, tenant_report

LA = rates.rental("A100-80GB", "hyperscaler")
SUMMED = ("BilledCost", "EffectiveCost", "ContractedCost", "ListCost", "PricingQuantity",
          "ConsumedQuantity", "x_BusyGpuHours", "x_EnergyKWh", "x_CapacityCost",
          "x_EnergyCost", "x_InternalCost", "x_IdleShareCost", "x_SpecialistCost")  # fmt: skip


@pytest.fixture(scope="module")
def report() -> Report:
    return tenant_report()


@pytest.fixture(scope="module")
def rows(report: Report) -> list[dict[str, str]]:
    return focus_rows(report)


def _bare(report: Report) -> Report:
    return replace(report, lines=tuple(replace(ln, tenants=()) for ln in report.lines))


def _key(r: dict[str, str]) -> tuple[str, str, str]:
    return (r["ResourceId"], r["x_GpuModel"], r["x_Tenant"])


def test_a_row_per_gpu_model_and_tenant(rows: list[dict[str, str]]) -> None:
    keys = [_key(r) for r in rows]
    assert len(keys) == len(set(keys))
    assert keys == [
        ("prod/chat", fx.H100, "team-a"),
        ("prod/chat", fx.H100, EVIL_SCRIPT),
        ("prod/chat", fx.H100, "'" + EVIL_FORMULA),
        ("prod/chat", fx.H100, "__probes__"),
        ("prod/chat", fx.H100, "__untenanted__"),
        ("search/embed", fx.A100, "search-ui"),
        ("search/embed", fx.A100, "__headroom__"),
        ("search/embed", fx.H100, "search-ui"),
        ("search/embed", fx.H100, "__headroom__"),
        ("lab/train", fx.B200, "research"),
        ("__unattributed__", fx.H100, ""),
        ("__idle__", fx.H100, ""),
    ]


@pytest.mark.parametrize("policy", ["separate", "share-weighted"])
def test_sums_per_gpu_model_are_unchanged(policy: str) -> None:
    report = tenant_report(policy)  # type: ignore[arg-type]
    plain: dict[tuple[str, str], dict[str, float]] = {}
    for r in focus_rows(_bare(report)):
        plain[(r["ResourceId"], r["x_GpuModel"])] = {c: float(r[c] or 0) for c in SUMMED}
    split: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for r in focus_rows(report):
        for c in SUMMED:
            split[(r["ResourceId"], r["x_GpuModel"])][c] += float(r[c] or 0)
    assert set(split) == set(plain)
    for key, want in plain.items():
        for c, v in want.items():
            assert split[key][c] == pytest.approx(v, rel=1e-12, abs=1e-9), (key, c)
    total = sum(float(r["BilledCost"]) for r in focus_rows(report))
    assert total == pytest.approx(report.totals.total_cost_usd, rel=1e-12)


def test_tenant_rows_carry_the_hand_computed_figures(rows: list[dict[str, str]]) -> None:
    by = {_key(r): r for r in rows}
    a = by[("prod/chat", fx.H100, "team-a")]
    assert float(a["PricingQuantity"]) == 465.0  # (2700 + 1800) s × 744 h ÷ 3600 ÷ 2
    assert float(a["BilledCost"]) == pytest.approx(CHAT_COST / 2)
    assert float(a["ContractedUnitPrice"]) == pytest.approx(CHAT_COST / 930.0)
    assert float(a["ListCost"]) == pytest.approx(465.0 * 6.88)
    # one tenant of embed on each of its two GPU models: ¾ of each model line
    ui_a = by[("search/embed", fx.A100, "search-ui")]
    assert float(ui_a["PricingQuantity"]) == pytest.approx(EMBED_A100_H * 0.75) == 75.0
    assert float(ui_a["BilledCost"]) == pytest.approx(
        (EMBED_A100_H * RA + EMBED_A100_KWH * EA) * 0.75
    )
    assert float(ui_a["x_CapacityCost"]) == pytest.approx(75.0 * RA)
    assert float(ui_a["ListCost"]) == pytest.approx(75.0 * LA)
    ui_h = by[("search/embed", fx.H100, "search-ui")]
    assert float(ui_h["PricingQuantity"]) == pytest.approx(EMBED_H100_H * 0.75)
    assert float(ui_h["BilledCost"]) == pytest.approx(
        (EMBED_H100_H * RH + EMBED_H100_KWH * EH) * 0.75
    )
    head = by[("search/embed", fx.H100, "__headroom__")]
    assert head["x_TenantKind"] == "headroom"
    assert float(head["PricingQuantity"]) == pytest.approx(EMBED_H100_H / 4)
    for r in (a, ui_a, ui_h, head):
        assert r["SubAccountId"] == r["x_Namespace"]  # the namespace, as without tenants
        assert r["SubAccountType"] == "Kubernetes Namespace"
        assert r["ResourceName"] == r["x_Service"]
    assert json.loads(a["Tags"]) == {
        "gpuledger/allocation": "allocated",
        "gpuledger/cluster": "default",
        "gpuledger/cost-center": "__unassigned__",  # built without a cost-center map
        "gpuledger/gpu_class": "H100-80GB",
        "gpuledger/gpu_model": fx.H100,
        "gpuledger/kind": "service",
        "gpuledger/namespace": "prod",
        "gpuledger/service": "chat",
        "gpuledger/tenant": "team-a",
        "gpuledger/tenant_kind": "tenant",
    }
    assert a["ChargeDescription"].endswith("; tenant team-a (tenant), its share of the service")
    # rows without tenants have no tenant tag and empty tenant columns
    idle = by[("__idle__", fx.H100, "")]
    assert "gpuledger/tenant" not in json.loads(idle["Tags"])
    assert idle["x_TenantKind"] == ""


def test_one_tenants_rows_add_up_to_its_tenant_line(
    report: Report, rows: list[dict[str, str]]
) -> None:
    embed = next(ln for ln in report.lines if ln.service == "embed")
    for t in embed.tenants:
        mine = [r for r in rows if r["ResourceId"] == "search/embed" and r["x_Tenant"] == t.tenant]
        assert len(mine) == 2
        assert sum(float(r["PricingQuantity"]) for r in mine) == pytest.approx(
            t.allocated_gpu_hours
        )
        assert sum(float(r["BilledCost"]) for r in mine) == pytest.approx(t.total_cost_usd)
        assert sum(float(r["x_EnergyKWh"]) for r in mine) == pytest.approx(t.energy_kwh)


def test_unpriced_tenant_row_is_flagged_not_charged(rows: list[dict[str, str]]) -> None:
    r = {_key(r): r for r in rows}[("lab/train", fx.B200, "research")]
    assert r["x_PricingStatus"] == "unpriced"
    assert r["ChargeDescription"].startswith("UNPRICED: NVIDIA B200")
    assert float(r["BilledCost"]) == 0.0
    assert r["x_InternalCost"] == r["x_CapacityCost"] == r["x_IdleShareCost"] == ""
    assert float(r["PricingQuantity"]) == 744.0


def test_hostile_tenant_names_stay_inert(report: Report, rows: list[dict[str, str]]) -> None:
    evil = [r for r in rows if r["x_Tenant"] in (EVIL_SCRIPT, "'" + EVIL_FORMULA)]
    assert len(evil) == 2
    for r in evil:
        tags = json.loads(r["Tags"])
        assert tags["gpuledger/tenant"] in (EVIL_SCRIPT, EVIL_FORMULA)  # exact, once decoded
        assert r["Tags"].isascii()
        assert r["ChargeDescription"].isascii()
        assert r["ChargeDescription"].startswith("prod/chat on ")
    for row in csv.reader(io.StringIO(focus_csv(report))):
        for value in row:
            assert not (value[:1] in ("=", "+", "@") and not re.fullmatch(r"[+-]?[\d.]+", value))


def test_unit_price_times_quantity_is_cost_on_every_row(rows: list[dict[str, str]]) -> None:
    for r in rows:
        q = float(r["PricingQuantity"])
        pairs = (("ContractedUnitPrice", "ContractedCost"), ("ListUnitPrice", "ListCost"))
        for unit, cost in pairs:
            if r[unit]:
                assert math.isclose(float(r[unit]) * q, float(r[cost]), rel_tol=1e-9,
                                    abs_tol=1e-9), (_key(r), unit)  # fmt: skip
        for col, value in r.items():
            if value and col in NUMERIC_COLUMNS:
                assert NUMERIC.fullmatch(value), (col, value)
            if col in focus.FOCUS_COLUMNS:
                assert value.isascii(), (col, value)


def test_unknown_tenant_costs_split_by_gpu_hours(report: Report) -> None:
    """A service with an unpriced GPU model has no tenant costs: its priced model's cost
    is split by the tenants' GPU-hours, and the unpriced model's stays None."""
    embed = next(ln for ln in report.lines if ln.service == "embed")
    a100 = next(ml for ml in embed.models if ml.gpu_model == fx.A100)
    line = replace(
        embed,
        models=(a100, replace(embed.models[1], internal_cost_usd=None, total_cost_usd=None,
                              capacity_cost_usd=None, energy_cost_usd=None)),
        tenants=tuple(replace(t, total_cost_usd=None, internal_cost_usd=None,
                              capacity_cost_usd=None, energy_cost_usd=None)
                      for t in embed.tenants),
    )  # fmt: skip
    parts = tenant_model_lines(line)
    assert [(t.tenant, ml.gpu_model) for t, ml in parts] == [
        ("search-ui", fx.A100), ("__headroom__", fx.A100),
        ("search-ui", fx.H100), ("__headroom__", fx.H100),
    ]  # fmt: skip
    assert parts[0][1].total_cost_usd == pytest.approx(a100.total_cost_usd * 0.75)
    assert parts[1][1].total_cost_usd == pytest.approx(a100.total_cost_usd * 0.25)
    assert parts[2][1].total_cost_usd is None


# -- the official validator ----------------------------------------------------------------


@pytest.fixture(scope="module")
def verdicts(
    report: Report, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Verdict], dict[str, set[str]]]:
    """Both runs on the tenant file, and the validator's OR composites (its own model)."""
    binary = find_validator()
    if binary is None:
        pytest.skip("focus-validator not found: set FOCUS_VALIDATOR_BIN (make focus-validator)")
    sites = [p for p in binary.parent.parent.glob("lib/python3.*/site-packages")
             if (p / "focus_validator").is_dir()]  # fmt: skip
    assert sites
    work: Path = tmp_path_factory.mktemp("focus-tenants")
    (work / "focus_validator").symlink_to(sites[0] / "focus_validator")
    data = work / "chargeback-2026-10-focus.csv"
    data.write_text(focus_csv(report), encoding="utf-8")
    model = json.loads(
        (sites[0] / f"focus_validator/rules/model-{VALIDATE_VERSION}.json").read_text()
    )
    runs = {
        "default": run_validator(binary, work, data),
        "criteria": run_validator(binary, work, data, APPLICABILITY_CRITERIA),
    }
    return runs, or_alternatives(model)


@pytest.mark.parametrize("run", ["default", "criteria"])
def test_official_validator_passes_the_tenant_export(
    verdicts: tuple[dict[str, Verdict], dict[str, set[str]]], run: str
) -> None:
    runs, parents = verdicts
    v = runs[run]
    print(f"tenants {run}: {v.summary}")
    assert not unexcused(v, parents), f"{v.summary}\n{v.failure_lines()}"
    assert set(v.failing) <= {"InvoiceId-C-005-C"}, v.failure_lines()
    assert v.failed == len(v.failing)
    assert v.passed > 100
