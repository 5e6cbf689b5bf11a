"""The one percentile every kind uses, so that "p95" means the same thing everywhere."""

from __future__ import annotations

import math
from collections.abc import Sequence

EPS = 1e-9
"""Float slack for ceilings: 1.2 / 0.6 is 2.0000000000000004 and must size 2 GPUs."""


def nearest_rank(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-quantile: the ``ceil(q * n)``-th smallest value (1-based).

    Nearest rank returns a value that was observed (no interpolation), so a
    recommendation sized on it is backed by an hour the ledger holds."""
    if not values:
        raise ValueError("a percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered) - EPS))
    return ordered[min(rank, len(ordered)) - 1]


def ceil_gpus(x: float) -> int:
    """Whole GPUs covering ``x`` GPU-equivalents (float slack removed first)."""
    return max(0, math.ceil(x - EPS))
