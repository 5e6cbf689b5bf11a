"""Deltas of upstream cumulative counters: one rule for every source that bills from them.

An upstream counter (vLLM's token counters, a gateway's per-tenant token counters) counts
since its process started. Between two readings of the same series the delta is the
difference; a value lower than the last one means the process restarted and the counter
began again at 0, so the whole new value is the delta (what the old process counted after
the last reading is lost with it -- nothing can recover it). The first value ever seen
only sets the baseline: what was counted before anyone looked cannot be placed in time.
A reading that was missed (the upstream was down, a scrape timed out) needs nothing: the
next delta covers the gap, as long as the upstream did not restart in between.

Kept under ``collectors/`` so that both a collector (for its own exported totals) and the
ledger (``chargeback/ledger/tokens.py``, ``tenant_tokens.py``, ``engine_time.py``) use the
same rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def counter_delta(previous: float | None, current: float) -> float:
    """Counted since ``previous`` for a counter that may have been reset to 0."""
    if previous is None:
        return 0.0
    return current - previous if current >= previous else current


class CounterTracker:
    """Baselines of many counter series (by a stable series key) and their deltas."""

    def __init__(self, baselines: Mapping[str, float] | None = None) -> None:
        self._last: dict[str, float] = dict(baselines or {})
        self.resets = 0

    def advance(self, series: str, value: float) -> float:
        """The delta of ``series`` since its last value (0 on first sight or for a value
        that is not a finite number, which never becomes a baseline either)."""
        if not math.isfinite(value) or value < 0:
            return 0.0
        previous = self._last.get(series)
        if previous is not None and value < previous:
            self.resets += 1
        self._last[series] = value
        return counter_delta(previous, value)

    def baseline(self, series: str) -> float | None:
        return self._last.get(series)

    def __len__(self) -> int:
        return len(self._last)


def joint_deltas(previous: Sequence[float] | None, current: Sequence[float]) -> tuple[float, ...]:
    """Deltas of counters one process keeps together and resets together: a histogram's
    ``_sum`` and ``_count``, or prefix-cache queries and hits. If any of them went down,
    the process restarted and every one began again at 0, so each delta is its whole new
    value -- even one that happens to be above its old baseline (differenced on its own,
    it would be counted short). First sight (``previous`` None) is a baseline only."""
    if previous is None:
        return tuple(0.0 for _ in current)
    if any(c < p for p, c in zip(previous, current, strict=True)):
        return tuple(current)
    return tuple(counter_delta(p, c) for p, c in zip(previous, current, strict=True))
