"""The cost center of each owner the ledger attributes time to, recorded hour by hour.

The report groups a month's lines by the team that pays (issue 18). What says so is a
label on the workload or its namespace, and labels change: the ledger records what the
agent saw, per hour, beside the GPU-seconds it attributed in that hour, so a report
of last month reads last month's labels, not today's. Only a change is written (a new
hour, or a new value within the hour): one spool row per owner and hour at most.

The lookup (``chargeback/costcenters/labels.py``: pod labels, then pod annotations,
then namespace labels) is handed in by the agent; it reads memory only. Owners it finds
nothing for are not recorded: the report's static map or ``__unassigned__`` covers
them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from gpuledger.chargeback.attribution.claims import IDLE, UNATTRIBUTED, Owner
from gpuledger.chargeback.attribution.shares import GpuAllocation
from gpuledger.chargeback.ledger.model import hour_start
from gpuledger.chargeback.ledger.tables import CostCenterRow
from gpuledger.cluster import DEFAULT_CLUSTER

CostCenterLookup = Callable[[Owner], tuple[str, str] | None]
"""An owner → (cost center, source) or None: what the agent saw for its pod."""

_RESERVED = (IDLE, UNATTRIBUTED)
log = logging.getLogger(__name__)


class CostCenterRecorder:
    """Which cost center each (hour, namespace, service) was last seen with; hands back
    only the rows that changed, for the spool."""

    def __init__(self, node: str, lookup: CostCenterLookup, cluster: str = DEFAULT_CLUSTER) -> None:
        self.node = node
        self.cluster = cluster  # every row it records is this agent's cluster's (migration 12)
        self._lookup = lookup
        self._seen: dict[tuple[int, str, str], tuple[str, str]] = {}
        self._failing = False  # one log line per change of state, not per cycle

    def observe(self, wall: float, allocations: Iterable[GpuAllocation]) -> list[CostCenterRow]:
        hour = hour_start(wall)
        changed: dict[tuple[str, str], CostCenterRow] = {}
        for gpu in allocations:
            for share in gpu.shares:
                owner = share.owner
                if owner.service in _RESERVED or share.share <= 0:
                    continue
                found = self._found(owner)
                if found is None:
                    continue
                key = (hour, owner.namespace, owner.service)
                if self._seen.get(key) == found:
                    continue
                self._seen[key] = found
                changed[key[1:]] = CostCenterRow(
                    hour,
                    self.node,
                    owner.namespace,
                    owner.service,
                    found[0],
                    found[1],
                    cluster=self.cluster,
                )
        return list(changed.values())

    def _found(self, owner: Owner) -> tuple[str, str] | None:
        """The lookup's answer; a lookup that raises (a bug) records nothing for the owner
        and never stops the ledger: its GPU-seconds are already in the spool."""
        try:
            found = self._lookup(owner)
        except Exception as exc:
            if not self._failing:
                log.warning("cost-center lookup failed, not recorded: %s", exc)
            self._failing = True
            return None
        if self._failing:
            log.info("cost-center lookup recovered")
        self._failing = False
        return found

    def restore(self, rows: Iterable[CostCenterRow]) -> None:
        """What the spool holds (after a restart): nothing is written again for it."""
        for r in rows:
            self._seen[(r.hour_start, r.namespace, r.service)] = (r.cost_center, r.source)

    def forget_before(self, hour: int) -> None:
        for key in [k for k in self._seen if k[0] < hour]:
            del self._seen[key]
