"""The price of a GPU-hour a finding saves: the one the bill charges.

``report/build.py`` charges a service's allocated GPU-hours at its GPU class's capacity
rate (the card's ``tco`` row: amortized capex + colocation, × overhead); energy is
charged apart, on what was measured, so a released GPU's saving is its capacity rate.
A class without a ``tco`` row is unpriced on the bill; for findings it falls back to the
cheapest on-demand rental of the class (either kind), and the finding names that basis.
A class with neither is not priced, and no finding is reported for it (never a $0 one).
"""

from __future__ import annotations

from dataclasses import dataclass

from gpuledger.chargeback.report.ratecard import RateCard


@dataclass(frozen=True, slots=True)
class GpuHourPrice:
    usd_per_gpu_hour: float
    basis: str  # "tco H100-80GB (as of 2026-11-01)" or "rental RunPod H100 SXM (...)"


def price_of_class(card: RateCard, gpu_class: str | None) -> GpuHourPrice | None:
    """What a GPU-hour of ``gpu_class`` costs on this card, or None."""
    if gpu_class is None:
        return None
    tco = next((t for t in card.tco if t.gpu == gpu_class), None)
    if tco is not None:
        return GpuHourPrice(
            tco.capacity_usd_per_gpu_hour,
            f"tco {gpu_class} capacity rate (as of {tco.as_of.isoformat()})",
        )
    rentals = [r for r in card.gpu_rental if r.gpu == gpu_class]
    if not rentals:
        return None
    r = min(rentals, key=lambda r: (r.usd_per_gpu_hour, r.provider, r.offering))
    return GpuHourPrice(
        r.usd_per_gpu_hour,
        f"rental {r.provider} {r.offering} (no tco row; as of {r.as_of.isoformat()})",
    )


def price_of_model(card: RateCard, gpu_model: str) -> GpuHourPrice | None:
    """What a GPU-hour of a reported GPU model name costs (via its rate-card class)."""
    return price_of_class(card, card.gpu_class(gpu_model))
