"""The official FOCUS validator (focus-validator 2.2.1, rule model 1.2.0.1) as the FOCUS
tests run it, and the cell formats they check beside it (docs/focus.md)."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.paths import REPO_ROOT

NUMERIC = re.compile(r"^-?[0-9]+\.[0-9]+$")  # FOCUS numeric, never an exponent
NUMERIC_COLUMNS = {
    "BilledCost", "ConsumedQuantity", "ContractedCost", "ContractedUnitPrice", "EffectiveCost",
    "ListCost", "ListUnitPrice", "PricingCurrencyContractedUnitPrice",
    "PricingCurrencyEffectiveCost", "PricingCurrencyListUnitPrice", "PricingQuantity",
    "x_BusyGpuHours", "x_EnergyKWh", "x_CapacityUnitPrice", "x_CapacityCost",
    "x_EnergyUnitPrice", "x_EnergyCost", "x_InternalCost", "x_IdleShareCost",
    "x_SpecialistCost",
}  # fmt: skip

VALIDATE_VERSION = "1.2.0.1"
# focus-validator 2.2.1 counts every leaf of a composite rule on its own. InvoiceId's
# nullability is InvoiceId-C-003-C = OR(C-004 "MUST be null when not invoiced", C-005
# "MUST NOT be null when invoiced"): one alternative fails on any non-empty file, while the
# validator itself reports the OR (and the column's root rule) as PASS. A failure counts as
# passing only when it is such an alternative of an OR the validator passed; the parents
# are read from the validator's own rule model, not listed here.
SUMMARY = re.compile(r"^Total: (\d+) \| Pass: (\d+) \| Fail: (\d+) \| Skipped: (\d+)", re.M)
FAILED_RULE = re.compile(r"^- ([A-Za-z]+-[A-Z]-\d{3}-[A-Z]):", re.M)
PASSED_RULE = re.compile(r"^\S+ ([A-Za-z]+-[A-Z]-\d{3}-[A-Z]): PASS\b", re.M)


def or_alternatives(model: dict[str, Any]) -> dict[str, set[str]]:
    """rule id → the OR composites of the validator's model that list it as an item."""
    parents: dict[str, set[str]] = {}
    for rule_id, rule in model["ModelRules"].items():
        req = (rule.get("ValidationCriteria") or {}).get("Requirement") or {}
        if req.get("CheckFunction") != "OR":
            continue
        for item in req.get("Items", []):
            child = item.get("ModelRuleId")
            if child:
                parents.setdefault(child, set()).add(rule_id)
    return parents


def unexcused(v: Verdict, parents: dict[str, set[str]]) -> list[str]:
    """Failing rules that are not an alternative of an OR the validator passed."""
    return sorted(r for r in v.failing if not parents.get(r, set()) & set(v.passing))


def find_validator() -> Path | None:
    env = os.environ.get("FOCUS_VALIDATOR_BIN")
    for candidate in (Path(env) if env else None, REPO_ROOT / ".venv-focus/bin/focus-validator"):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


@dataclass(frozen=True)
class Verdict:
    total: int
    passed: int
    failed: int
    skipped: int
    failing: tuple[str, ...]
    passing: tuple[str, ...]
    output: str

    @property
    def summary(self) -> str:
        return (
            f"Total: {self.total} | Pass: {self.passed} | Fail: {self.failed} "
            f"| Skipped: {self.skipped}"
        )

    def failure_lines(self) -> str:
        return "\n".join(ln for ln in self.output.splitlines() if ln.startswith(("- ", "  M")))


def run_validator(
    binary: Path, workdir: Path, data: Path, criteria: tuple[str, ...] = ()
) -> Verdict:
    args = [str(binary), "--data-file", str(data), "--validate-version", VALIDATE_VERSION,
            "--block-download"]  # fmt: skip
    if criteria:
        args += ["--applicability-criteria", ",".join(criteria)]
    proc = subprocess.run(args, cwd=workdir, capture_output=True, text=True, timeout=180)
    out = proc.stdout + proc.stderr
    m = SUMMARY.search(out)
    assert proc.returncode == 0, f"validator failed (rc {proc.returncode}):\n{out[-4000:]}"
    assert m, f"no summary line in the validator's output:\n{out[-4000:]}"
    total, passed, failed, skipped = (int(g) for g in m.groups())
    return Verdict(
        total, passed, failed, skipped, tuple(FAILED_RULE.findall(out)),
        tuple(PASSED_RULE.findall(out)), out,
    )  # fmt: skip
