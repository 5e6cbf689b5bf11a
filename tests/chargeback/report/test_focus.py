"""The FOCUS 1.2 export of the monthly chargeback, checked two ways.

The values are computed here, by hand, from the fixture's stated seconds and joules
(tests/support/report_fixtures.py) and the default rate card's YAML figures, not by the code under
test. The written files then go through the official validator (focus-validator 2.2.1,
rule model 1.2.0.1) for both idle policies, once with its default rule set and once with
the applicability criteria the dataset claims. A deliberately broken file shows that the
check can fail.

The validator leaves many rules as "dynamic" (custom-column naming, tag prefixes, ASCII
strings in our own text). The checks in ``test_columns_and_cells_keep_the_focus_rules``
cover those here.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gpuledger.chargeback.ledger.store.sqlite import SqliteLedgerStore
from gpuledger.chargeback.report.build import ReportOptions, build_report
from gpuledger.chargeback.report.model import IdlePolicy, Month, Report
from gpuledger.chargeback.report.ratecard import load_rate_card
from gpuledger.chargeback.report.writers import focus
from gpuledger.chargeback.report.writers.focus import APPLICABILITY_CRITERIA, focus_csv, focus_rows
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

CARD = rates.CARD
OCTOBER = Month.parse("2026-10")
H = fx.HOURS


capacity_rate, energy_rate = rates.capacity_rate, rates.energy_rate


def hyperscaler(cls: str) -> float:
    return rates.rental(cls, "hyperscaler")


RH, EH, LH = capacity_rate("H100-80GB"), energy_rate("H100-80GB"), hyperscaler("H100-80GB")
RA, EA, LA = capacity_rate("A100-80GB"), energy_rate("A100-80GB"), hyperscaler("A100-80GB")


@dataclass(frozen=True)
class Expected:
    """One FOCUS row, from the fixture docstring's numbers."""

    resource: str
    gpu_model: str
    hours: float
    kwh: float
    capacity_rate: float | None  # None: not on the rate card
    energy_rate: float | None
    list_rate: float | None  # None: no hyperscaler counterpart

    @property
    def internal(self) -> float:
        assert self.capacity_rate is not None
        assert self.energy_rate is not None
        return self.hours * self.capacity_rate + self.kwh * self.energy_rate


CHAT = Expected("prod/chat", fx.H100, (2700 + 1800) * H / 3600, (1.8e6 + 0.9e6) * H / 3.6e6,
                RH, EH, LH)  # fmt: skip
EMBED_H = Expected("search/embed", fx.H100, 1200 * H / 3600, 0.6e6 * H / 3.6e6, RH, EH, LH)
EMBED_A = Expected("search/embed", fx.A100, 3600 * fx.A1_HOURS / 3600,
                   1.08e6 * fx.A1_HOURS / 3.6e6, RA, EA, LA)  # fmt: skip
TRAIN = Expected("lab/train", fx.B200, 3600 * H / 3600, 3.6e6 * H / 3.6e6, None, None, None)
UNATTR = Expected("__unattributed__", fx.H100, 3600 * H / 3600, 0.36e6 * H / 3.6e6,
                  RH, EH, LH)  # fmt: skip
IDLE = Expected("__idle__", fx.H100, (900 + 600) * H / 3600, (0.09e6 + 0.06e6) * H / 3.6e6,
                RH, EH, None)  # fmt: skip
ALL = (CHAT, EMBED_H, EMBED_A, TRAIN, UNATTR, IDLE)
H100_TAKERS = (CHAT, EMBED_H, UNATTR)  # the priced lines holding H100 time besides idle


def expected_billed(e: Expected, policy: IdlePolicy) -> float:
    if e.capacity_rate is None:
        return 0.0
    if policy == "separate":
        return e.internal
    if e is IDLE:
        return 0.0
    if e.gpu_model != fx.H100:
        return e.internal  # nobody idles on the A100
    weights = {t.resource: t.internal if policy == "share-weighted" else 1.0 for t in H100_TAKERS}
    return e.internal + IDLE.internal * weights[e.resource] / sum(weights.values())


# -- building the report -----------------------------------------------------------------


@pytest.fixture(scope="module")
def store() -> Iterator[SqliteLedgerStore]:
    s = SqliteLedgerStore(":memory:")
    s.migrate()
    fx.fill(s)
    yield s
    s.close()


def report_for(store: SqliteLedgerStore, policy: IdlePolicy, now: datetime = fx.NOW) -> Report:
    options = ReportOptions(idle_policy=policy)
    return build_report(store, load_rate_card(), OCTOBER, options=options, now=now)


def by_key(rows: list[dict[str, str]]) -> dict[tuple[str, str], dict[str, str]]:
    keyed = {(r["ResourceId"], r["x_GpuModel"]): r for r in rows}
    assert len(keyed) == len(rows), "two rows for one (resource, GPU model)"
    return keyed


def num(cell: str) -> float:
    return float(cell)


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


# -- values ------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["separate", "share-weighted", "share-even"])
def test_rows_carry_the_hand_computed_figures(store: SqliteLedgerStore, policy: IdlePolicy) -> None:
    report = report_for(store, policy)
    rows = by_key(focus_rows(report))
    assert set(rows) == {(e.resource, e.gpu_model) for e in ALL}
    for e in ALL:
        r = rows[(e.resource, e.gpu_model)]
        where = f"{e.resource} on {e.gpu_model} ({policy})"
        assert num(r["PricingQuantity"]) == pytest.approx(e.hours), where
        assert num(r["ConsumedQuantity"]) == pytest.approx(e.hours), where
        assert r["PricingUnit"] == r["ConsumedUnit"] == "GPU-Hours"
        assert num(r["x_EnergyKWh"]) == pytest.approx(e.kwh), where
        assert num(r["BilledCost"]) == pytest.approx(expected_billed(e, policy)), where
        assert r["EffectiveCost"] == r["BilledCost"], where
        assert r["ChargeCategory"] == "Usage"
        assert r["ChargeClass"] == ""
        assert r["ChargeFrequency"] == "Usage-Based"
        assert r["ServiceCategory"] == "AI and Machine Learning"
        assert r["ServiceSubcategory"] == "AI Platforms"
        assert r["BillingCurrency"] == report.currency == "USD"
        assert r["ChargePeriodStart"] == r["BillingPeriodStart"] == "2026-10-01T00:00:00Z"
        assert r["ChargePeriodEnd"] == r["BillingPeriodEnd"] == "2026-11-01T00:00:00Z"
        assert r["x_IdlePolicy"] == policy
        assert r["x_RateCardVersion"] == CARD["version"]
        if e.capacity_rate is None:
            continue
        assert num(r["ContractedCost"]) == pytest.approx(e.internal), where
        assert num(r["ContractedUnitPrice"]) == pytest.approx(e.internal / e.hours), where
        assert num(r["x_CapacityCost"]) == pytest.approx(e.hours * e.capacity_rate), where
        assert num(r["x_EnergyCost"]) == pytest.approx(e.kwh * (e.energy_rate or 0.0)), where
        assert num(r["x_IdleShareCost"]) == pytest.approx(
            expected_billed(e, policy) - e.internal, abs=1e-9
        ), where
        if e.list_rate is not None:
            assert num(r["ListUnitPrice"]) == e.list_rate, where
            assert num(r["ListCost"]) == pytest.approx(e.hours * e.list_rate), where
            assert r["x_ListCostBasis"].startswith("cloud counterfactual: AWS ")


def test_prod_chat_on_h100(store: SqliteLedgerStore) -> None:
    """The brief's worked example, spelled out."""
    r = by_key(focus_rows(report_for(store, "separate")))[("prod/chat", fx.H100)]
    hours = (2700 + 1800) * 744 / 3600
    assert num(r["PricingQuantity"]) == hours == 930.0
    assert num(r["ListUnitPrice"]) == 6.88
    assert num(r["ListCost"]) == pytest.approx(930.0 * 6.88)
    assert num(r["BilledCost"]) == pytest.approx(hours * RH + 558.0 * EH)
    assert r["SubAccountId"] == r["SubAccountName"] == "prod"
    assert r["SubAccountType"] == "Kubernetes Namespace"
    assert r["ResourceName"] == "chat"
    assert r["SkuId"] == "H100-80GB"
    assert r["SkuPriceId"] == f"H100-80GB@{CARD['version']}"
    assert r["x_Validation"] == "validated"
    assert r["x_CounterfactualFlagged"] == "false"
    assert r["x_Allocation"] == "allocated"
    assert r["x_PricingStatus"] == "priced"
    assert json.loads(r["Tags"]) == {
        "gpuledger/allocation": "allocated",
        "gpuledger/cluster": "default",
        "gpuledger/cost-center": "__unassigned__",  # built without a cost-center map
        "gpuledger/gpu_class": "H100-80GB",
        "gpuledger/gpu_model": fx.H100,
        "gpuledger/kind": "service",
        "gpuledger/namespace": "prod",
        "gpuledger/service": "chat",
    }
    assert json.loads(r["SkuPriceDetails"]) == {"x_CapacityUnitPrice": pytest.approx(RH)}


@pytest.mark.parametrize("policy", ["separate", "share-weighted", "share-even"])
def test_billed_cost_adds_up_to_the_report_total(
    store: SqliteLedgerStore, policy: IdlePolicy
) -> None:
    report = report_for(store, policy)
    rows = focus_rows(report)
    total = sum(num(r["BilledCost"]) for r in rows)
    assert total == pytest.approx(report.totals.total_cost_usd)
    assert total == pytest.approx(sum(e.internal for e in ALL if e.capacity_rate is not None))
    # ContractedCost does not move with the idle policy: it is each line's own use.
    contracted = sum(num(r["ContractedCost"]) for r in rows)
    assert contracted == pytest.approx(report.totals.internal_cost_usd)


def test_sharing_idle_moves_cost_and_bills_the_idle_row_zero(store: SqliteLedgerStore) -> None:
    separate = by_key(focus_rows(report_for(store, "separate")))
    shared = by_key(focus_rows(report_for(store, "share-weighted")))
    idle_key = ("__idle__", fx.H100)
    assert num(separate[idle_key]["BilledCost"]) == pytest.approx(IDLE.internal)
    assert num(shared[idle_key]["BilledCost"]) == 0.0
    assert num(shared[idle_key]["ContractedCost"]) == pytest.approx(IDLE.internal)
    assert num(shared[idle_key]["x_IdleShareCost"]) == pytest.approx(-IDLE.internal)
    assert "spread over the services" in shared[idle_key]["ChargeDescription"]
    moved = sum(
        num(shared[k]["BilledCost"]) - num(separate[k]["BilledCost"])
        for k in separate
        if k != idle_key
    )
    assert moved == pytest.approx(IDLE.internal)
    assert num(shared[("search/embed", fx.A100)]["x_IdleShareCost"]) == 0.0


@pytest.mark.parametrize("policy", ["separate", "share-weighted"])
def test_idle_and_unattributed_rows_are_marked(
    store: SqliteLedgerStore, policy: IdlePolicy
) -> None:
    rows = by_key(focus_rows(report_for(store, policy)))
    idle = rows[("__idle__", fx.H100)]
    assert idle["x_LineKind"] == "idle"
    assert idle["x_Allocation"] == "unallocated"
    assert json.loads(idle["Tags"])["gpuledger/allocation"] == "unallocated"
    assert idle["SubAccountId"] == idle["SubAccountName"] == idle["SubAccountType"] == ""
    assert idle["x_Namespace"] == ""
    assert idle["ResourceName"] == ""
    assert idle["ResourceType"] == "Idle GPU capacity"
    assert idle["ChargeDescription"].startswith("Unallocated (idle) capacity")
    # No cloud counterpart: listed at the internal rate, and it says so.
    assert idle["ListCost"] == idle["ContractedCost"]
    assert idle["ListUnitPrice"] == idle["ContractedUnitPrice"]
    assert idle["x_ListCostBasis"].startswith("no cloud rate: idle capacity")
    assert idle["x_SpecialistCost"] == ""
    unattributed = rows[("__unattributed__", fx.H100)]
    assert unattributed["x_Allocation"] == "unattributed"
    assert unattributed["SubAccountId"] == ""
    assert unattributed["ResourceType"] == "Unattributed GPU time"
    assert num(unattributed["ListCost"]) == pytest.approx(UNATTR.hours * LH)


def test_unpriced_gpu_model_is_zero_but_never_silently(store: SqliteLedgerStore) -> None:
    r = by_key(focus_rows(report_for(store, "separate")))[("lab/train", fx.B200)]
    assert r["x_PricingStatus"] == "unpriced"
    assert r["ChargeDescription"].startswith("UNPRICED: NVIDIA B200 is not on the rate card")
    for col in ("BilledCost", "EffectiveCost", "ContractedCost", "ListCost",
                "ContractedUnitPrice", "ListUnitPrice"):  # fmt: skip
        assert num(r[col]) == 0.0, col
    for col in ("x_InternalCost", "x_CapacityCost", "x_EnergyCost", "x_CapacityUnitPrice",
                "x_IdleShareCost", "x_GpuClass", "SkuPriceDetails"):  # fmt: skip
        assert r[col] == "", col
    assert r["SkuId"] == fx.B200  # no rate-card class: the model is its own SKU
    assert r["x_ListCostBasis"] == (
        "no cloud rate: no hyperscaler rate for NVIDIA B200 (not on the rate card); "
        "unpriced, listed at 0"
    )
    assert num(r["PricingQuantity"]) == 744.0
    # no rental rate and no tokens: no counterfactual rests on anything (issue 16)
    assert r["x_CounterfactualFlagged"] == "false"
    assert r["x_Validation"] == "no-probes"
    others = [row for row in focus_rows(report_for(store, "separate")) if row["SkuId"] != fx.B200]
    assert {row["x_PricingStatus"] for row in others} == {"priced"}


def test_month_under_way_charges_the_covered_hours(store: SqliteLedgerStore) -> None:
    report = report_for(store, "separate", now=datetime(2026, 10, 15, 12, 30, tzinfo=UTC))
    rows = focus_rows(report)
    assert rows
    for r in rows:
        assert r["ChargePeriodStart"] == r["BillingPeriodStart"] == "2026-10-01T00:00:00Z"
        assert r["ChargePeriodEnd"] == "2026-10-15T12:00:00Z"
        assert r["BillingPeriodEnd"] == "2026-11-01T00:00:00Z"
        assert r["x_PeriodComplete"] == "false"
    chat = by_key(rows)[("prod/chat", fx.H100)]
    assert num(chat["PricingQuantity"]) == pytest.approx(4500 * (14 * 24 + 12) / 3600)


def test_a_line_without_gpu_hours_has_no_unit_price(store: SqliteLedgerStore) -> None:
    """Energy but no allocated time: a price per GPU-hour does not exist, and a made-up
    one would break unit price × quantity = cost."""
    report = report_for(store, "separate")
    line = next(ln for ln in report.lines if ln.label == "prod/chat")
    ml = replace(line.models[0], allocated_gpu_hours=0.0, capacity_cost_usd=0.0,
                 internal_cost_usd=5.0, total_cost_usd=5.0, energy_cost_usd=5.0,
                 hyperscaler=None)  # fmt: skip
    odd = replace(report, lines=(replace(line, models=(ml,)),))
    (r,) = focus_rows(odd)
    assert r["ContractedUnitPrice"] == r["ListUnitPrice"] == ""
    assert num(r["ContractedCost"]) == num(r["BilledCost"]) == num(r["ListCost"]) == 5.0
    assert num(r["PricingQuantity"]) == 0.0


# -- format ------------------------------------------------------------------------------

DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


@pytest.mark.parametrize("policy", ["separate", "share-weighted"])
def test_columns_and_cells_keep_the_focus_rules(
    store: SqliteLedgerStore, policy: IdlePolicy
) -> None:
    """What the validator leaves as 'dynamic' (and so skips) is checked here."""
    text = focus_csv(report_for(store, policy))
    reader = csv.DictReader(io.StringIO(text))
    header = list(reader.fieldnames or [])
    rows = list(reader)
    assert header == list(focus.COLUMNS)
    assert len(rows) == len(ALL)
    custom = [c for c in header if not c.startswith("x_")]
    assert header[: len(custom)] == custom, "FOCUS columns first, custom ones after"
    for col in header:
        if col in focus.FOCUS_COLUMNS:
            assert re.fullmatch(r"[A-Z][A-Za-z]*", col), col
        else:
            assert re.fullmatch(r"x_[A-Z][A-Za-z0-9]*", col), f"custom column {col}"
    nullable = {"ChargeClass", "CommitmentDiscountStatus", "InvoiceId", "ResourceName",
                "SkuPriceDetails", "SubAccountId", "SubAccountName", "SubAccountType"}  # fmt: skip
    for r in rows:
        # The validator's "... when ChargeClass is not Correction" conditions are false on
        # a null ChargeClass (SQL three-valued logic), so it never checks these on our rows.
        for col in sorted(set(focus.FOCUS_COLUMNS) - nullable):
            assert r[col], f"{r['ResourceId']}: {col} is null"
        assert r["ResourceName"] != r["ResourceId"]
        for col, cell in r.items():
            if col in focus.FOCUS_COLUMNS:
                assert cell.isascii(), (col, cell)
            if cell and col in NUMERIC_COLUMNS:
                assert NUMERIC.fullmatch(cell), (col, cell)
            if col.endswith(("PeriodStart", "PeriodEnd")):
                assert DATETIME.fullmatch(cell), (col, cell)
        tags = json.loads(r["Tags"])
        assert all(k.startswith("gpuledger/") for k in tags)
        assert all(isinstance(v, str) and v for v in tags.values())
        details = r["SkuPriceDetails"]
        if details:
            assert all(k.startswith("x_") for k in json.loads(details))
        # unit price × quantity = cost, to the validator's own relative 1e-9
        q = num(r["PricingQuantity"])
        for unit, cost in (
            ("ContractedUnitPrice", "ContractedCost"),
            ("ListUnitPrice", "ListCost"),
        ):
            assert close(num(r[unit]) * q, num(r[cost])), (r["ResourceId"], unit)
        assert r["CommitmentDiscountStatus"] == r["InvoiceId"] == ""
        assert r["PricingCurrency"] == r["BillingCurrency"]
        assert r["PricingCurrencyEffectiveCost"] == r["EffectiveCost"]
        assert r["PricingCurrencyListUnitPrice"] == r["ListUnitPrice"]
        assert r["PricingCurrencyContractedUnitPrice"] == r["ContractedUnitPrice"]


def test_numbers_keep_every_digit_and_no_exponent() -> None:
    assert focus._num(0.0) == focus._num(-0.0) == "0.0"
    assert focus._num(930.0) == "930.0"
    assert focus._num(1e-05) == "0.00001"
    assert focus._num(1e20) == "100000000000000000000.0"
    assert focus._num(-478.5600051369863) == "-478.5600051369863"
    x = 1490.085015410959 / 930.0
    assert float(focus._num(x)) == x
    with pytest.raises(ValueError, match="finite"):
        focus._num(float("nan"))


def test_report_writer_writes_the_focus_file(store: SqliteLedgerStore, tmp_path: Path) -> None:
    from gpuledger.chargeback.report.writers.files import write_report

    report = report_for(store, "separate")
    (path,) = write_report(report, tmp_path, formats=("focus",))
    assert path == tmp_path / "2026-10" / "chargeback-2026-10-focus.csv"
    assert path.read_text(encoding="utf-8") == focus_csv(report)


# -- the official validator --------------------------------------------------------------

OR_PARENTS: dict[str, set[str]] = {}


@pytest.fixture(scope="module")
def verdicts(
    store: SqliteLedgerStore, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Verdict]:
    """Every validator run of this module, side by side (each takes a few seconds). The
    claimed applicability criteria only add rules to the default set, so one policy runs
    with them: the rows' shape does not depend on the policy, only their values do."""
    binary = find_validator()
    if binary is None:
        pytest.skip(
            "focus-validator not found: set FOCUS_VALIDATOR_BIN or run "
            "`make focus-validator` (it builds .venv-focus)"
        )
    sites = [p for p in binary.parent.parent.glob("lib/python3.*/site-packages")
             if (p / "focus_validator").is_dir()]  # fmt: skip
    assert sites, f"no site-packages with focus_validator next to {binary}"
    global OR_PARENTS
    model = json.loads(
        (sites[0] / f"focus_validator/rules/model-{VALIDATE_VERSION}.json").read_text()
    )
    OR_PARENTS = or_alternatives(model)
    work = tmp_path_factory.mktemp("focus")
    # The validator reads focus_validator/rules/currency_codes.csv relative to its working
    # directory and writes its log there: a scratch directory keeps the venv clean.
    (work / "focus_validator").symlink_to(sites[0] / "focus_validator")
    files: dict[str, Path] = {}
    for policy in ("separate", "share-weighted"):
        path = work / f"chargeback-2026-10-focus-{policy}.csv"
        path.write_text(focus_csv(report_for(store, policy)), encoding="utf-8")
        files[policy] = path
    files["broken"] = work / "broken.csv"
    files["broken"].write_text(_broken(files["separate"].read_text()), encoding="utf-8")
    jobs = {
        "separate": (files["separate"], ()),
        "share-weighted": (files["share-weighted"], ()),
        "share-weighted+criteria": (files["share-weighted"], APPLICABILITY_CRITERIA),
        "broken": (files["broken"], ()),
    }
    with ThreadPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1)) as pool:
        futures = {
            name: pool.submit(run_validator, binary, work, data, crit)
            for name, (data, crit) in jobs.items()
        }
        return {name: f.result() for name, f in futures.items()}


def _broken(text: str) -> str:
    """The good file with BilledCost dropped and a made-up ChargeCategory. Every row gets
    it: the validator's allowed-value checks pass a column when any one row holds an
    allowed value (the per-row values are asserted above, not left to it)."""
    rows = list(csv.DictReader(io.StringIO(text)))
    for row in rows:
        row["ChargeCategory"] = "Bogus"
    columns = [c for c in focus.COLUMNS if c != "BilledCost"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


@pytest.mark.parametrize("run", ["separate", "share-weighted", "share-weighted+criteria"])
def test_official_validator_passes_the_export(verdicts: dict[str, Verdict], run: str) -> None:
    v = verdicts[run]
    print(f"{run}: {v.summary}")
    unexpected = unexcused(v, OR_PARENTS)
    assert not unexpected, f"{run}: {v.summary}; failing rules:\n{v.failure_lines()}"
    # what is excused is exactly InvoiceId's unused alternative, under its passing OR
    assert set(v.failing) <= {"InvoiceId-C-005-C"}, v.failure_lines()
    assert {"InvoiceId-C-003-C", "InvoiceId-C-000-O", "InvoiceId-C-004-C"} <= set(v.passing)
    # Every counted failure is one the validator names (none hide behind the summary).
    assert v.failed == len(v.failing), f"{run}: {v.summary}\n{v.failure_lines()}"
    assert v.passed > 100  # the rules ran rather than being skipped wholesale


def test_criteria_turn_on_more_rules(verdicts: dict[str, Verdict]) -> None:
    assert verdicts["share-weighted+criteria"].passed > verdicts["share-weighted"].passed + 50


def test_official_validator_fails_a_broken_file(verdicts: dict[str, Verdict]) -> None:
    v = verdicts["broken"]
    print(f"broken: {v.summary}")
    assert v.failed > 0, v.summary
    assert unexcused(v, OR_PARENTS), v.failure_lines()
    assert "ChargeCategory-C-003-M" in v.failing, v.failure_lines()
    assert "CostAndUsage-D-006-M" in v.failing, v.failure_lines()  # BilledCost present
