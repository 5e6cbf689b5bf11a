"""What a monthly chargeback report holds, independent of how it is written.

Every money figure is either a number or ``None`` with a reason beside it: a GPU model the
rate card does not price, a service with no tokens, a model with no API class. Nothing is
priced at zero silently. The writers (CSV, JSON, FOCUS, HTML) only format these values.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from gpuledger.chargeback.anomalies.model import SpendAnomaly
from gpuledger.chargeback.costcenters.config import UNASSIGNED
from gpuledger.cluster import DEFAULT_CLUSTER

if TYPE_CHECKING:
    # at run time the findings engine imports this module (Month): importing the
    # findings package from here would close a cycle
    from gpuledger.chargeback.budgets.model import (  # the same: budgets read Month
        BudgetLine,
        ForecastLine,
    )
    from gpuledger.chargeback.findings.model import Finding

IdlePolicy = Literal["separate", "share-weighted", "share-even"]
IDLE_POLICIES: tuple[IdlePolicy, ...] = ("separate", "share-weighted", "share-even")
HeadroomPolicy = Literal["spread", "separate"]
"""Where a shared service's headroom (allocated − busy GPU-seconds) goes: spread over its
tenants with the busy time (``spread``), or kept as the service's own ``__headroom__``
line (``separate``)."""
HEADROOM_POLICIES: tuple[HeadroomPolicy, ...] = ("spread", "separate")
TenantKind = Literal["tenant", "untenanted", "probes", "other", "headroom"]
WeightBasis = Literal["measured", "fixed-ratio", "mixed", "none"]
"""How a tenant line's token weights were found over its hours: all from the engine's own
prefill/decode seconds (``measured``), all from the configured fixed ratio
(``fixed-ratio``), some of each (``mixed``, with ``fixed_ratio_share`` saying how much),
or no tokens at all (``none``)."""
LineKind = Literal["service", "unattributed", "idle"]
Validation = Literal["validated", "disagree", "probe-failures", "undecided", "no-probes", "n/a"]
"""validated: probes succeed and the engine's own counters agree with them; disagree: the
engine's metrics contradict the probes; probe-failures: too many probes failed;
undecided: probes ran but no verdict came back; no-probes: none ran; n/a: idle capacity."""
Flag = Literal["validated", "unvalidated", "not applicable"]
"""What one figure of a line rests on, checked or not (``chargeback/report/flags.py``):
validated: what it rests on was checked and held; unvalidated: it was not checked, or
the check failed; not applicable: the line has no such figure, so there is nothing to
vouch for."""

REPORT_SCHEMA_VERSION = 5
"""2: services carry ``tenants`` and the report its ``headroom_policy`` (issue 14).
3: services carry a flag per figure (``token_api_flag``, ``latency_flag``,
``rental_flag``, each with its ``*_reason``) and ``rental_coverage_ratio``;
``counterfactual_flagged`` is now true only when a counterfactual's own flag is
``unvalidated`` (issue 16). Only keys are added.
4: the report carries ``findings`` (what to change, ranked by monthly savings) and
``findings_computed`` (false: no findings engine ran, which is not "none found")
(issue 17). Only keys are added.
5: services and tenant lines carry their ``cost_center``, and the report its
``cost_centers`` (a subtotal per cost center, adding up to the totals), its
``anomalies`` (the month's spend anomalies, each with its drivers) and
``anomalies_computed`` (issue 18, "What changed"). Only keys are added."""
_MONTH_RE = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True, slots=True, order=True)
class Month:
    """A calendar month in UTC."""

    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Month:
        m = _MONTH_RE.match(text.strip())
        if not m or not 1 <= int(m.group(2)) <= 12:
            raise ValueError(f"not a month (YYYY-MM): {text!r}")
        return cls(int(m.group(1)), int(m.group(2)))

    @classmethod
    def of(cls, t: datetime) -> Month:
        t = t.astimezone(UTC)
        return cls(t.year, t.month)

    @property
    def label(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return self.next().start

    @property
    def hours(self) -> int:
        return calendar.monthrange(self.year, self.month)[1] * 24

    def next(self) -> Month:
        return Month(self.year + self.month // 12, self.month % 12 + 1)

    def previous(self) -> Month:
        return Month(self.year - 1, 12) if self.month == 1 else Month(self.year, self.month - 1)

    def __str__(self) -> str:
        return self.label


@dataclass(frozen=True, slots=True)
class RentalQuote:
    """A service's GPU-hours at one provider's on-demand rate."""

    provider: str
    offering: str
    usd_per_gpu_hour: float
    usd: float
    source: str
    as_of: str


@dataclass(frozen=True, slots=True)
class ModelLine:
    """One (namespace, service) on one GPU model: the unit the FOCUS export bills."""

    gpu_model: str
    gpu_class: str | None
    allocated_gpu_hours: float
    busy_gpu_hours: float
    energy_kwh: float
    capacity_usd_per_gpu_hour: float | None  # None: the model has no TCO row
    energy_usd_per_kwh: float | None
    capacity_cost_usd: float | None
    energy_cost_usd: float | None
    internal_cost_usd: float | None  # capacity + energy
    idle_share_usd: float  # idle capacity spread onto this line (negative on idle lines)
    total_cost_usd: float | None  # internal + idle share: what the line is charged
    hyperscaler: RentalQuote | None
    specialist: RentalQuote | None
    cluster: str = DEFAULT_CLUSTER
    """The cluster whose GPUs these are: a service that runs in two clusters has a line
    per (GPU model, cluster), each priced alone and each sharing its own cluster's idle
    capacity (issue 18)."""


@dataclass(frozen=True, slots=True)
class ClusterTotal:
    """One cluster's part of the report: the sum of its GPUs' lines (every service's, its
    idle and unattributed time), as charged after the idle policy. The clusters' totals
    add up to the report's (idle capacity is shared within its own cluster)."""

    cluster: str
    allocated_gpu_hours: float
    busy_gpu_hours: float
    energy_kwh: float
    internal_cost_usd: float | None  # None: a GPU model of the cluster has no TCO row
    idle_share_usd: float
    total_cost_usd: float | None
    services: int  # service lines (not idle, not unattributed) holding its GPUs


@dataclass(frozen=True, slots=True)
class TokenQuote:
    """A served model's billable tokens at the cheapest API price for its class."""

    model_name: str
    model_class: str | None
    prompt_tokens: float
    generation_tokens: float
    provider: str | None
    usd: float | None
    reason: str | None  # why unpriced


@dataclass(frozen=True, slots=True)
class TenantModelPart:
    """A tenant line's part on one GPU model: what the FOCUS rows (one per GPU model and
    tenant) are made of. A service's parts on one GPU model add up to its model line."""

    gpu_model: str
    allocated_gpu_hours: float
    busy_gpu_hours: float
    energy_kwh: float
    capacity_cost_usd: float | None
    energy_cost_usd: float | None
    internal_cost_usd: float | None
    idle_share_usd: float
    total_cost_usd: float | None


@dataclass(frozen=True, slots=True)
class TenantLine:
    """One caller's part of a shared service for the month: the tenant's share of every
    service-hour's GPU-seconds and energy (by weighted tokens), priced like the service.

    A service's tenant lines add up to its :class:`ServiceLine` (GPU-hours, energy and
    every cost), ``__untenanted__``, ``__probes__`` and ``__headroom__`` included."""

    tenant: str
    kind: TenantKind
    requests: float
    prompt_tokens: float  # input, cached ones included
    cached_prompt_tokens: float
    generation_tokens: float
    weighted_tokens: float  # Σ over hours of the tokens × that hour's weights
    allocated_gpu_hours: float
    busy_gpu_hours: float
    share_ratio: float  # of the service's allocated GPU-hours
    energy_kwh: float
    capacity_cost_usd: float | None
    energy_cost_usd: float | None
    internal_cost_usd: float | None
    idle_share_usd: float
    total_cost_usd: float | None
    input_cost_usd: float | None  # the total's part due to prompt tokens (by weight)
    output_cost_usd: float | None  # ... and to generated tokens
    cost_per_1m_input_usd: float | None
    cost_per_1m_output_usd: float | None
    api_provider: str | None
    api_usd_per_1m_input: float | None
    api_usd_per_1m_output: float | None
    token_api_usd: float | None
    token_api_basis: str
    savings_vs_token_api_usd: float | None
    weights: WeightBasis
    fixed_ratio_share: float  # of weighted_tokens, from hours weighted with the fixed ratio
    models: tuple[TenantModelPart, ...] = ()  # per GPU model (sums to the figures above)
    cost_center: str = UNASSIGNED  # who pays for it (docs/cost-centers.md)


@dataclass(frozen=True, slots=True)
class ServiceLine:
    namespace: str
    service: str
    kind: LineKind
    gpu_models: tuple[str, ...]
    models: tuple[ModelLine, ...]
    allocated_gpu_hours: float
    busy_gpu_hours: float
    utilization_ratio: float | None  # busy / allocated
    energy_kwh: float
    unpriced_gpu_models: tuple[str, ...]  # models without a TCO row: costs are None
    capacity_cost_usd: float | None
    energy_cost_usd: float | None
    internal_cost_usd: float | None
    idle_share_usd: float
    total_cost_usd: float | None
    # tokens: billable = what the engines counted − what the agent's probes caused
    prompt_tokens: float
    generation_tokens: float
    probe_prompt_tokens: float
    probe_generation_tokens: float
    served_models: tuple[TokenQuote, ...]
    cost_per_1m_tokens_usd: float | None
    # counterfactuals and savings (counterfactual − total cost)
    rental_hyperscaler_usd: float | None
    rental_hyperscaler_basis: str
    rental_specialist_usd: float | None
    rental_specialist_basis: str
    token_api_usd: float | None
    token_api_basis: str
    savings_vs_hyperscaler_usd: float | None
    savings_vs_specialist_usd: float | None
    savings_vs_token_api_usd: float | None
    # latency (the agent's own probes) and validation
    p99_ttft_s: float | None
    p99_tpot_s: float | None
    p99_e2e_s: float | None
    probes: int
    probe_success_ratio: float | None
    verdicts_agree: int
    verdicts_disagree: int
    validation: Validation
    counterfactual_flagged: bool  # token_api_flag or rental_flag is "unvalidated"
    # a shared service's callers (empty: no gateway or meter counted tenants for it)
    tenants: tuple[TenantLine, ...] = ()
    # each figure by what it rests on (report/flags.py, docs/chargeback.md)
    token_api_flag: Flag = "not applicable"  # noqa: S105 -- engine token counters, by probes
    token_api_flag_reason: str = ""
    latency_flag: Flag = "not applicable"  # the probes' own figures, by their verdicts
    latency_flag_reason: str = ""
    rental_flag: Flag = "not applicable"  # ledger GPU-hours, by coverage of the hours
    rental_flag_reason: str = ""
    rental_coverage_ratio: float | None = None  # observed share of the hours it ran
    # who pays for the line (its tenant lines each say their own): docs/cost-centers.md
    cost_center: str = UNASSIGNED

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.service}" if self.namespace else self.service


@dataclass(frozen=True, slots=True)
class Totals:
    allocated_gpu_hours: float
    busy_gpu_hours: float
    utilization_ratio: float | None
    idle_gpu_hours: float
    energy_kwh: float
    capacity_cost_usd: float
    energy_cost_usd: float
    internal_cost_usd: float
    total_cost_usd: float  # equals internal: idle sharing moves cost, never makes any
    unpriced_gpu_hours: float
    prompt_tokens: float
    generation_tokens: float
    rental_hyperscaler_usd: float  # over the lines that have one
    rental_specialist_usd: float
    token_api_usd: float


@dataclass(frozen=True, slots=True)
class CostCenterTotal:
    """One cost center's subtotal of the month: the lines it pays for (a shared service's
    tenant lines each count for their own cost center), summed like :class:`Totals` --
    per GPU model, an unpriced model's cost as 0 with its GPU-hours in
    ``unpriced_gpu_hours`` -- so the subtotals add up to the totals."""

    cost_center: str
    lines: tuple[str, ...]  # "namespace/service", or "namespace/service tenant <tenant>"
    allocated_gpu_hours: float
    busy_gpu_hours: float
    energy_kwh: float
    capacity_cost_usd: float
    energy_cost_usd: float
    internal_cost_usd: float
    idle_share_usd: float
    total_cost_usd: float
    unpriced_gpu_hours: float
    share_ratio: float | None  # of the month's total cost (None: the total is 0)


@dataclass(frozen=True, slots=True)
class NodeCoverage:
    """Seconds observed against seconds in the period, per node: gaps made visible."""

    node: str
    gpus: int
    observed_gpu_hours: float
    expected_gpu_hours: float  # GPUs seen × hours in the (elapsed part of the) month
    coverage_ratio: float | None
    first_hour: str
    last_hour: str


@dataclass(frozen=True, slots=True)
class TrendPoint:
    month: str
    allocated_gpu_hours: float
    idle_gpu_hours: float
    internal_cost_usd: float
    rental_hyperscaler_usd: float
    unpriced_gpu_hours: float


@dataclass(frozen=True, slots=True)
class RateCardInfo:
    version: str
    digest: str
    source: str


@dataclass(frozen=True, slots=True)
class Report:
    schema_version: int
    month: str
    fleet: str
    generated_at: str
    period_start: str
    period_end: str  # the month's end, or the last complete hour for a month under way
    period_hours: float
    complete: bool  # False while the month is under way
    currency: str
    idle_policy: IdlePolicy
    rate_card: RateCardInfo
    store: str  # the ledger it was read from, without a password
    lines: tuple[ServiceLine, ...]
    totals: Totals
    coverage: tuple[NodeCoverage, ...]
    fleet_coverage_ratio: float | None
    trend: tuple[TrendPoint, ...]
    unpriced_gpu_models: dict[str, float] = field(default_factory=dict)  # model → GPU-hours
    notes: tuple[str, ...] = ()
    headroom_policy: HeadroomPolicy = "spread"
    # what to change and what it would save (chargeback/findings), ranked by monthly
    # savings; findings_computed is False when no findings engine ran for this report,
    # so an empty tuple then means "not looked for", never "nothing found"
    findings: tuple[Finding, ...] = ()
    findings_computed: bool = False
    clusters: tuple[ClusterTotal, ...] = ()
    """The report grouped by cluster (issue 18), in name order."""
    # budget vs actual (chargeback/budgets): one line per configured budget, as of the
    # report's period end; budgets_configured False when no budget is configured
    budgets: tuple[BudgetLine, ...] = ()
    budgets_configured: bool = False
    # the forecast of every cost center and service (report.forecasts: true)
    forecasts: tuple[ForecastLine, ...] = ()
    # who pays: a subtotal per cost center, costliest first, __unassigned__ last
    # (chargeback/report/cost_centers.py); empty when none was assigned (built directly)
    cost_centers: tuple[CostCenterTotal, ...] = ()
    # "What changed": the month's days whose spend left a service's baseline
    # (chargeback/anomalies); anomalies_computed False: no detector ran for this report
    anomalies: tuple[SpendAnomaly, ...] = ()
    anomalies_computed: bool = False

    @property
    def empty(self) -> bool:
        return not self.lines

    @property
    def findings_savings_usd(self) -> float:
        """The monthly savings of every finding together ("savings identified")."""
        return sum(f.monthly_savings_usd for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        # asdict deep-copies what it does not know, and a finding's evidence is a
        # read-only mapping that cannot be copied: the findings are written here
        out = asdict(replace(self, findings=()))
        out["findings"] = [finding_dict(f) for f in self.findings]
        return out


def finding_dict(f: Finding) -> dict[str, Any]:
    """A finding as plain JSON values, in its fields' order: evidence an object, GPUs and
    peak hours lists, and beside the peak hours (unix seconds) the same as UTC text."""
    out: dict[str, Any] = {fld.name: getattr(f, fld.name) for fld in fields(f)}
    out["evidence"] = dict(f.evidence)
    out["gpus"] = list(f.gpus)
    out["peak_hours"] = list(f.peak_hours)
    out["peak_hours_utc"] = [hour_utc(h) for h in f.peak_hours]
    return out


def finding_from_dict(d: dict[str, Any]) -> Finding:
    """The inverse of :func:`finding_dict`, for a report read back from its JSON (the
    reporter's findings metrics after a restart). Raises ValueError, KeyError or TypeError
    on a document that is not one."""
    from gpuledger.chargeback.findings.model import FINDING_KINDS, Finding

    kind = d["kind"]
    if kind not in FINDING_KINDS:
        raise ValueError(f"unknown finding kind {kind!r}")
    evidence = d.get("evidence", {})
    if not isinstance(evidence, dict):
        raise TypeError("evidence is not an object")
    return Finding(
        kind=kind,
        namespace=str(d["namespace"]),
        service=str(d["service"]),
        gpu_model=str(d["gpu_model"]),
        title=str(d["title"]),
        recommendation=str(d["recommendation"]),
        current_gpus=float(d["current_gpus"]),
        recommended_gpus=float(d["recommended_gpus"]),
        monthly_savings_usd=float(d["monthly_savings_usd"]),
        hours_of_evidence=int(d["hours_of_evidence"]),
        assumption=str(d["assumption"]),
        evidence=MappingProxyType(
            {str(k): v if isinstance(v, str) else float(v) for k, v in evidence.items()}
        ),
        gpus=tuple(str(g) for g in d.get("gpus", ())),
        peak_hours=tuple(int(h) for h in d.get("peak_hours", ())),
    )


def hour_utc(unix: int) -> str:
    """An hour's start (unix seconds) as ``2026-10-04T13:00:00Z``."""
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
