"""Attribution's vocabulary: who holds (part of) a GPU, and the claim a workload makes.

The resolver turns every source's evidence into claims; the shares turn claims into a
split of each physical GPU. The ledger keys its buckets by an owner's
``(namespace, service)``; the two reserved service names below are the owners of
capacity nobody held and of capacity held by a process no source could name.
"""

from __future__ import annotations

from dataclasses import dataclass

IDLE = "__idle__"
"""Service name of capacity no workload held."""

UNATTRIBUTED = "__unattributed__"
"""Service name of capacity held by a process whose workload could not be resolved."""


@dataclass(frozen=True, slots=True, order=True)
class Owner:
    """Who holds (part of) a GPU. Buckets are keyed by ``(namespace, service)``."""

    namespace: str
    service: str
    pod: str = ""
    container: str = ""

    @property
    def ledger_key(self) -> tuple[str, str]:
        return (self.namespace, self.service)


IDLE_OWNER = Owner(namespace="", service=IDLE)
UNATTRIBUTED_OWNER = Owner(namespace="", service=UNATTRIBUTED)


@dataclass(frozen=True, slots=True)
class Claim:
    """One workload's hold on a device, with what the split policy may weigh it by."""

    owner: Owner
    sm_utilization_ratio: float | None = None
    memory_bytes: int | None = None
    # the fraction of the device the workload declared (HAMi's nvidia.com/gpucores / 100);
    # None: declared none. Weighed only by the ``declared`` split policy.
    declared_share: float | None = None
