"""The robust statistics of a baseline: median, MAD, and the robust z of one day.

Why not mean and standard deviation: one spike inside the window moves the mean and
inflates σ, so the next spike looks normal (and a single outage day pulls the baseline
down for a month). The median ignores up to half the window being odd, and the median
absolute deviation (MAD) scaled by 1.4826 estimates σ for normal data while ignoring the
same outliers (Rousseeuw and Croux, 1993). z = (x − median) / (1.4826 · MAD) is then
Iglewicz and Hoaglin's modified z-score.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

MAD_SCALE = 1.4826
"""1 / Φ⁻¹(3/4): makes the MAD a consistent estimator of σ for normal data."""


@dataclass(frozen=True, slots=True)
class Baseline:
    median: float
    mad: float  # the raw median absolute deviation
    scale: float  # MAD_SCALE × max(mad, the floor): the denominator of z
    days: int  # values it was taken from


def baseline(values: Sequence[float], *, floor_ratio: float, floor_usd: float) -> Baseline:
    """Median and MAD of ``values``; the MAD used for z is never below
    ``max(floor_ratio × |median|, floor_usd)`` (a flat series has MAD 0). ValueError on
    no values."""
    if not values:
        raise ValueError("a baseline needs at least one value")
    med = statistics.median(values)
    mad = statistics.median(abs(v - med) for v in values)
    floor = max(floor_ratio * abs(med), floor_usd)
    return Baseline(med, mad, MAD_SCALE * max(mad, floor), len(values))


def robust_z(x: float, base: Baseline) -> float:
    """How many robust standard deviations ``x`` lies from the baseline's median."""
    return (x - base.median) / base.scale
