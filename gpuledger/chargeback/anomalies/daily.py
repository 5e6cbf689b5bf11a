"""The ledger's days, priced exactly as the monthly bill prices them.

One grouped ``usage()`` read per UTC day, a few at a time (by namespace, service, GPU
model and cluster: a few hundred groups a day, answered from PostgreSQL's hourly rollup),
priced by ``report/daily.py`` -- the bill's own model line and its ``share_idle`` -- the
one reading and pricing the forecast's daily series uses too, so a day here, a day of
the forecast and the month's bill add up the same way. A shared service's day is also split
among its tenants by the report's tenant split (``tenant_split.split_services`` over
that day's hours), each tenant's GPU-seconds priced at the service's rate on each GPU
model, as ``tenant_lines`` prices them.

Each service-day is kept as three partitions of its cost -- by GPU model, by tenant (a
shared service only) and by busy/idle -- which ``drivers.py`` compares with the
baseline's. A GPU model the rate card does not price is left out of the day (its
GPU-hours are counted in ``unpriced_gpu_hours``), never priced at zero.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from gpuledger.chargeback.attribution.claims import IDLE
from gpuledger.chargeback.ledger.model import UsageGroup
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.chargeback.report.daily import ServiceKey as ServiceKey
from gpuledger.chargeback.report.daily import priced_lines
from gpuledger.chargeback.report.daily import read_days as read_groups
from gpuledger.chargeback.report.model import HeadroomPolicy, IdlePolicy, ModelLine
from gpuledger.chargeback.report.ratecard import RateCard
from gpuledger.chargeback.report.tenant_split import TokenWeights, split_services
from gpuledger.chargeback.report.units import SECONDS_PER_HOUR

IDLE_PART = "idle"
BUSY_PART = "busy"


@dataclass(slots=True)
class ServiceDay:
    """One service's priced day and its three partitions (each sums to ``total_usd``)."""

    total_usd: float = 0.0
    by_model: dict[str, float] = field(default_factory=dict)
    by_tenant: dict[str, float] = field(default_factory=dict)  # empty: not shared that day
    by_use: dict[str, float] = field(default_factory=dict)  # busy / idle
    unpriced_gpu_hours: float = 0.0

    def add_model(self, ml: ModelLine, kind_is_idle: bool) -> None:
        if ml.total_cost_usd is None or ml.internal_cost_usd is None:
            self.unpriced_gpu_hours += ml.allocated_gpu_hours
            return
        self.total_usd += ml.total_cost_usd
        self.by_model[ml.gpu_model] = self.by_model.get(ml.gpu_model, 0.0) + ml.total_cost_usd
        alloc = ml.allocated_gpu_hours
        idle_ratio = (
            1.0 if kind_is_idle or alloc <= 0 else max(0.0, alloc - ml.busy_gpu_hours) / alloc
        )
        idle = ml.internal_cost_usd * idle_ratio + ml.idle_share_usd
        self.by_use[IDLE_PART] = self.by_use.get(IDLE_PART, 0.0) + idle
        self.by_use[BUSY_PART] = self.by_use.get(BUSY_PART, 0.0) + ml.total_cost_usd - idle


DayCosts = dict[date, dict[ServiceKey, ServiceDay]]
"""Day → its services. A day the ledger holds nothing for is absent (not observed), which
is not the same as a day every service cost $0."""


def days(first: date, end: date) -> Iterator[date]:
    """``first`` up to, not including, ``end``."""
    d = first
    while d < end:
        yield d
        d += timedelta(days=1)


def day_start(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Pricing:
    """How the bill prices a day: the card and the report's policies."""

    card: RateCard
    idle_policy: IdlePolicy = "separate"
    headroom_policy: HeadroomPolicy = "spread"
    weights: TokenWeights = field(default_factory=TokenWeights)


def _service_days(
    store: AuditableLedgerStore,
    pricing: Pricing,
    start: datetime,
    rows: Sequence[UsageGroup],
) -> dict[ServiceKey, ServiceDay]:
    """The services of the day starting at ``start``, from its groups (``report/daily``)."""
    end = start + timedelta(days=1)
    lines = priced_lines(
        pricing.card, [r for r in rows if r.allocated_gpu_seconds > 0], pricing.idle_policy
    )
    if not lines:
        return {}
    out: dict[ServiceKey, ServiceDay] = {}
    for key, models in lines.items():
        day = out[key] = ServiceDay()
        for ml in models:
            day.add_model(ml, key[1] == IDLE)
    shares = split_services(
        store, start, end, policy=pricing.headroom_policy, weights=pricing.weights
    )
    for key, tenants in shares.items():
        shared = out.get(key)
        if shared is None:
            continue
        # the service's rate on each GPU model, over its clusters' lines of that model
        usd: dict[str, float] = defaultdict(float)
        hours: dict[str, float] = defaultdict(float)
        for ml in lines[key]:
            if ml.total_cost_usd is not None and ml.allocated_gpu_hours > 0:
                usd[ml.gpu_model] += ml.total_cost_usd
                hours[ml.gpu_model] += ml.allocated_gpu_hours
        rate = {model: usd[model] / hours[model] for model in usd}
        for tenant, share in tenants.items():
            tenant_usd = sum(
                seconds / SECONDS_PER_HOUR * rate[model]
                for model, seconds in share.allocated_seconds.items()
                if model in rate
            )
            shared.by_tenant[tenant] = shared.by_tenant.get(tenant, 0.0) + tenant_usd
    return out


def read_days(store: AuditableLedgerStore, pricing: Pricing, first: date, end: date) -> DayCosts:
    """Every day from ``first`` up to ``end`` (exclusive) the ledger holds anything for:
    the days' groups read a few at a time (``report/daily.read_days``), each day priced."""
    starts = [day_start(d) for d in days(first, end)]
    groups = read_groups(store, [(s, s + timedelta(days=1)) for s in starts])
    out: DayCosts = {}
    for start, rows in zip(starts, groups, strict=True):
        services = _service_days(store, pricing, start, rows)
        if services:
            out[start.date()] = services
    return out
