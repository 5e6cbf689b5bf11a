"""Running totals per hourly bucket, and which buckets changed since the last drain.

What the token, tenant-token and engine-time accumulators share: each adds deltas into a
bucket keyed hour first, hands the spool the buckets that changed (their whole running
totals, never increments), and drops past hours that have been handed over. Not
thread-safe on its own: its owner calls it under the lock that also guards its baselines.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

R = TypeVar("R")
Key = tuple[Any, ...]  # (hour_start, node, ...) -- hour first


class HourlyBuckets(Generic[R]):
    def __init__(self, width: int, row: Callable[..., R]) -> None:
        self._width = width
        self._row = row  # builds a table row from (*key, *totals)
        self._totals: dict[Key, list[float]] = {}
        self._dirty: set[Key] = set()

    def restore(self, key: Key, totals: Sequence[float]) -> None:
        """A bucket as the spool holds it (after a restart): not dirty."""
        self._totals[key] = list(totals)

    def add(self, key: Key, column: int, delta: float) -> None:
        if delta <= 0:
            return
        totals = self._totals.get(key)
        if totals is None:
            totals = self._totals[key] = [0.0] * self._width
        totals[column] += delta
        self._dirty.add(key)

    def drain(self) -> list[R]:
        """The changed buckets' rows, in key order; they are clean afterwards."""
        rows = [self._row(*k, *self._totals[k]) for k in sorted(self._dirty)]
        self._dirty.clear()
        return rows

    def forget_before(self, hour: int) -> None:
        """Buckets of hours before ``hour`` that were handed over (no later delta can reach
        them: deltas go to the hour they are seen in)."""
        for key in [k for k in self._totals if k[0] < hour and k not in self._dirty]:
            del self._totals[key]
