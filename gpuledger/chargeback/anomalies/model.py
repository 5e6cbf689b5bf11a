"""What a spend anomaly is, as the report, its writers and the reporter's metrics see it.

Plain frozen dataclasses with no imports from the rest of gpuledger, so the report's
model (``chargeback/report/model.py``) can hold them without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DriverKind = Literal["gpu_model", "tenant", "idle", "service"]
"""What a driver names: a GPU model of the service, a tenant of a shared service, its
idle cost (allocated but not busy, plus its share of the node's idle capacity), or the
service as a whole (the change spread over every part in proportion: no single part)."""

Direction = Literal["increase", "drop"]


@dataclass(frozen=True, slots=True)
class Driver:
    """One part of a service's day and how much of the change it carries."""

    kind: DriverKind
    name: str  # the GPU model, the tenant, "idle", or the service's label
    day_usd: float  # the part's cost on the day
    baseline_usd: float  # the part's cost on the baseline day
    change_usd: float  # day − baseline: this part's dollars of the change

    @property
    def text(self) -> str:
        label = {"gpu_model": "GPU model", "tenant": "tenant", "idle": "idle", "service": ""}
        sign = "+" if self.change_usd >= 0 else "−"
        what = f"{label[self.kind]} {self.name}".strip() if self.kind != "idle" else "idle"
        return f"{what} {sign}${abs(self.change_usd):,.2f}"


@dataclass(frozen=True, slots=True)
class DayScore:
    """One service's day judged against its trailing baseline."""

    day: str  # YYYY-MM-DD (UTC)
    namespace: str
    service: str
    cost_usd: float
    baseline_usd: float  # the median of the window's days
    mad_usd: float  # their median absolute deviation (before the floor)
    scale_usd: float  # 1.4826 × max(MAD, floor): the denominator of the score
    score: float  # robust z
    baseline_days: int


@dataclass(frozen=True, slots=True)
class SpendAnomaly:
    """A day whose cost left the service's baseline, and what drove it."""

    day: str  # YYYY-MM-DD (UTC)
    namespace: str
    service: str
    direction: Direction
    cost_usd: float
    baseline_usd: float
    change_usd: float  # cost − baseline
    score: float
    mad_usd: float
    baseline_days: int
    drivers: tuple[Driver, ...]

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.service}" if self.namespace else self.service

    @property
    def drivers_text(self) -> str:
        return "; ".join(d.text for d in self.drivers)
