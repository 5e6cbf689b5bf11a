"""Expected rates, computed from the shipped rate card's YAML figures with the formulas of
docs/chargeback.md, independently of gpuledger's own rate card code."""

from __future__ import annotations

from typing import Any

import yaml

from gpuledger.chargeback.report.ratecard import default_card_text

CARD = yaml.safe_load(default_card_text())


def _tco(cls: str) -> dict[str, Any]:
    return next(r for r in CARD["tco"] if r["gpu"] == cls)


def capacity_rate(cls: str) -> float:
    t = _tco(cls)
    capex = t["capex_usd_per_gpu"] * (1 - t["residual_value_ratio"])
    capex /= t["amortization_years"] * 8760
    colo = t["colocation_usd_per_kw_month"] * t["power_kw_per_gpu"] * 12 / 8760
    return float((capex + colo) * (1 + t["operations_overhead_ratio"]))


def energy_rate(cls: str) -> float:
    t = _tco(cls)
    return float(t["electricity_usd_per_kwh"] * t["pue"])


def rental(cls: str, kind: str) -> float:
    return float(
        min(
            r["usd_per_gpu_hour"]
            for r in CARD["gpu_rental"]
            if r["gpu"] == cls and r["provider_kind"] == kind
        )
    )
