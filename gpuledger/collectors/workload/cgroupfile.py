"""The lines of a ``/proc/PID/cgroup`` file, tallied: what the pod and the Slurm readers
share.

A v1 or hybrid host writes one line per controller (``ID:controllers:/path``), and not
every controller is moved into the workload's cgroup, so a reader parses every path and
lets the answer most lines agree on win; v2 writes one ``0::/path`` line.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable
from typing import TypeVar

T = TypeVar("T", bound=Hashable)


def tally_paths(text: str, parse: Callable[[str], T | None]) -> Counter[T]:
    """How many of the file's cgroup paths ``parse`` reads as each answer (lines that are
    not ``ID:controllers:/path`` are skipped)."""
    found: Counter[T] = Counter()
    for line in text.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3 or not parts[2].startswith("/"):
            continue
        ref = parse(parts[2])
        if ref is not None:
            found[ref] += 1
    return found
