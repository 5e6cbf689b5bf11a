"""Units and the one summing rule the report's pricing modules share.

A money figure is a number or ``None`` (unpriced, with the reason beside it), and a sum
over parts is unpriced as soon as one part is: never a silent zero.
"""

from __future__ import annotations

from collections.abc import Iterable

SECONDS_PER_HOUR = 3600.0
JOULES_PER_KWH = 3.6e6
TOKENS_PER_UNIT = 1e6  # prices are per 1M tokens


def sum_or_none(values: Iterable[float | None]) -> float | None:
    total = 0.0
    for v in values:
        if v is None:
            return None
        total += v
    return total
