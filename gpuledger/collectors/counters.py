"""Deltas of upstream cumulative counters: one rule for every source that bills from them.

An upstream counter (vLLM's token counters, a gateway's per-tenant token counters) counts
since its process started. Between two readings of the same series the delta is the
difference; a value lower than the last one means the process restarted and the counter
began again at 0, so the whole new value is the delta (what the old process counted after
the last reading is lost with it -- nothing can recover it). The first value ever seen
only sets the baseline: what was counted before anyone looked cannot be placed in time --
except for a series that appears on a page (an endpoint's /metrics) the tracker has read
before: it was not there at the last reading, so its whole value is new since then and is
the delta. Whether a page was read before is a marker in the same baseline map
(:meth:`CounterTracker.page`), so it survives an agent restart with the baselines.
A reading that was missed (the upstream was down, a scrape timed out) needs nothing: the
next delta covers the gap, as long as the upstream did not restart in between.

Kept under ``collectors/`` so that both a collector (for its own exported totals) and the
ledger (``chargeback/ledger/tokens.py``, ``tenant_tokens.py``, ``engine_time.py``) use the
same rule.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence


def counter_delta(previous: float | None, current: float) -> float:
    """Counted since ``previous`` for a counter that may have been reset to 0."""
    if previous is None:
        return 0.0
    return current - previous if current >= previous else current


PRUNE_AFTER_S = 24 * 3600.0
"""How long a baseline of a series no reading has shown is kept (a deleted key's)."""
PRUNE_EVERY_S = 600.0

PAGE_PREFIX = "page:"
"""Keys of page markers in a tracker's baselines (series keys are hex digests)."""


def page_key(page: str) -> str:
    return PAGE_PREFIX + hashlib.sha256(page.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class CounterTracker:
    """Baselines of many counter series (by a stable series key) and their deltas.

    Each baseline keeps the time it was last seen (``now`` of the reading, in whatever
    clock the caller uses); :meth:`prune` drops those not seen for a while."""

    def __init__(
        self,
        baselines: Mapping[str, float] | None = None,
        seen: Mapping[str, float] | None = None,
        *,
        now: float = 0.0,
    ) -> None:
        self._last: dict[str, float] = dict(baselines or {})
        seen = seen or {}
        # a baseline restored without a time (an older spool) counts as seen at restore
        self._seen: dict[str, float] = {k: seen.get(k, now) for k in self._last}
        self.resets = 0

    def page(self, page: str, now: float = 0.0) -> bool:
        """Record a good reading of ``page``; True when it had been read before, so a
        series on it that has no baseline appeared since that reading."""
        key = page_key(page)
        known = key in self._last
        self._last[key] = 0.0
        self._seen[key] = now
        return known

    def advance(
        self, series: str, value: float, *, now: float = 0.0, known_page: bool = False
    ) -> float:
        """The delta of ``series`` since its last value: on first sight 0 (a baseline
        only), or the whole value when ``known_page`` (the series is new on a page read
        before). A value that is not a finite non-negative number counts 0 and never
        becomes a baseline."""
        if not math.isfinite(value) or value < 0:
            return 0.0
        previous = self._last.get(series)
        if previous is not None and value < previous:
            self.resets += 1
        self._last[series] = value
        self._seen[series] = now
        if previous is None and known_page:
            return value
        return counter_delta(previous, value)

    def baseline(self, series: str) -> float | None:
        return self._last.get(series)

    def last_seen(self, series: str) -> float | None:
        return self._seen.get(series)

    def prune(self, now: float, max_age: float) -> list[str]:
        """Forget the baselines (and page markers) not seen for more than ``max_age``;
        the keys forgotten. A series that comes back later is new again: on a page still
        read, its whole value counts; on a page forgotten too, it is a baseline only."""
        old = [k for k, t in self._seen.items() if now - t > max_age]
        for k in old:
            del self._seen[k]
            self._last.pop(k, None)
        return old

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
