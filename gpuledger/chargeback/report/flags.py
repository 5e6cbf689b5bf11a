"""What each figure of a service line rests on, and whether that was checked.

One "unvalidated" per service taught finance to ignore it: a GPU-rental counterfactual
rests on the ledger's GPU-hours, not on the engine's counters, so a service nobody can
probe (an OCR model, a notebook) said "unvalidated" about a figure nothing was wrong
with. Here each figure gets its own flag, by what it rests on
(``docs/chargeback.md``, "Validation flags"):

- the token-API counterfactual rests on the engine's token counters, checked by the
  probes' verdicts (``validation``);
- the latency figures are the probes themselves, trusted as far as their verdicts go;
- the GPU-rental counterfactual rests on the ledger's GPU-hours, checked by coverage of
  the hours of the GPUs the service ran on (:func:`rental_coverage`).

Each flag is ``validated``, ``unvalidated`` or ``not applicable`` (no such figure, so
nothing to vouch for), with a sentence saying why.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from gpuledger.chargeback.ledger.model import CoverageGroup, UsageGroup
from gpuledger.chargeback.report.model import Flag, ServiceLine, Validation
from gpuledger.chargeback.report.units import SECONDS_PER_HOUR

VALIDATED: Flag = "validated"
UNVALIDATED: Flag = "unvalidated"
NOT_APPLICABLE: Flag = "not applicable"


@dataclass(frozen=True, slots=True)
class FlagValue:
    flag: Flag
    reason: str


@dataclass(frozen=True, slots=True)
class ProbeEvidence:
    """A service's probes over the month, as the report's verdict query sums them."""

    validation: Validation
    probes: int
    successes: float
    agree: float
    disagree: float


def _probe_reason(ev: ProbeEvidence, min_success: float, max_disagree: float) -> str:
    decided = ev.agree + ev.disagree
    if ev.validation == "validated":
        return (
            f"{ev.successes / ev.probes:.1%} of {ev.probes:,} probes succeeded; the engine's "
            f"own metrics agreed with {ev.agree / decided:.1%} of {decided:,.0f} checked"
        )
    if ev.validation == "no-probes":
        return "no probe checked the engine's counters this month"
    if ev.validation == "probe-failures":
        return (
            f"only {ev.successes / ev.probes:.1%} of {ev.probes:,} probes succeeded "
            f"(at least {min_success:.0%} needed)"
        )
    if ev.validation == "undecided":
        return f"{ev.probes:,} probes ran but none got a verdict from the engine's metrics"
    return (
        f"the engine's own metrics disagreed with {ev.disagree / decided:.1%} of "
        f"{decided:,.0f} checked probes (at most {max_disagree:.0%} allowed)"
    )


def token_api_flag(
    token_api_usd: float | None, basis: str, ev: ProbeEvidence, *, min_success: float,
    max_disagree: float,
) -> FlagValue:  # fmt: skip
    """The token-API counterfactual: by the probes' verdicts on the engine's counters;
    not applicable when there is no such figure (no tokens, or no API price)."""
    if token_api_usd is None:
        return FlagValue(NOT_APPLICABLE, f"no token-API counterfactual: {basis}")
    reason = _probe_reason(ev, min_success, max_disagree)
    return FlagValue(VALIDATED if ev.validation == "validated" else UNVALIDATED, reason)


def latency_flag(ev: ProbeEvidence, *, min_success: float, max_disagree: float) -> FlagValue:
    """The latency figures: by the probes' verdicts; not applicable when no probe ran
    (the service serves nothing a probe can check, so there is no latency figure)."""
    if ev.probes == 0:
        return FlagValue(NOT_APPLICABLE, "no probes: the service has no latency figures")
    reason = _probe_reason(ev, min_success, max_disagree)
    return FlagValue(VALIDATED if ev.validation == "validated" else UNVALIDATED, reason)


def rental_flag(
    rental_usd: float | None, basis: str, coverage: float | None, *, min_coverage: float
) -> FlagValue:
    """The GPU-rental counterfactual: by the coverage of its GPUs' hours; not
    applicable when there is no such figure (idle capacity, a GPU with no rental rate)."""
    if rental_usd is None:
        return FlagValue(NOT_APPLICABLE, f"no rental counterfactual: {basis}")
    if coverage is None:
        return FlagValue(UNVALIDATED, "the ledger has no observed hours for this service")
    what = (
        f"the ledger observed {coverage:.2%} of the hours of the GPUs the service ran on "
        "(weighted by its GPU-hours on each)"
    )
    if coverage >= min_coverage:
        return FlagValue(VALIDATED, what)
    return FlagValue(UNVALIDATED, f"{what} (at least {min_coverage:.0%} needed)")


def _epoch(hour: str) -> int:
    """An ISO-8601 UTC hour (``2026-01-01T00:00:00Z`` or ``+00:00``) as Unix seconds."""
    return int(datetime.fromisoformat(hour.replace("Z", "+00:00")).timestamp())


def gpu_coverage(gpu: CoverageGroup) -> float:
    """The share of one GPU's hours, from its first to its last observed hour in the
    period, that the agent observed: observed seconds ÷ (span hours × 3600), at most 1."""
    span_h = (_epoch(gpu.last_hour) - _epoch(gpu.first_hour)) // int(SECONDS_PER_HOUR) + 1
    return min(1.0, gpu.observed_seconds / (span_h * SECONDS_PER_HOUR)) if span_h > 0 else 0.0


def rental_coverage(
    service_gpus: Iterable[UsageGroup], gpus: Iterable[CoverageGroup]
) -> dict[tuple[str, str], float]:
    """Coverage of the hours each (namespace, service) ran, from ledger rows.

    Each GPU's coverage (:func:`gpu_coverage`) is the share of the hours from its first to
    its last observed hour in the period that the agent observed it; a service's coverage
    is the mean of its GPUs' coverage weighted by the service's GPU-seconds on each. 1.0
    when every GPU the service ran on was observed for its whole span; an hour a node (or
    the agent) was down inside a GPU's span lowers that GPU's share, and so the coverage
    of every service that ran on it. ``service_gpus`` groups usage by (namespace, service,
    node, gpu_uuid); ``gpus`` are the coverage query's rows (one per GPU). Two grouped
    reads the report makes anyway or that are as small as its line count × GPUs per
    service: an hour-by-hour version read ~4 rows per GPU-hour (docs/chargeback.md)."""
    share = {(g.node, g.gpu_uuid): gpu_coverage(g) for g in gpus}
    weighted: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for r in service_gpus:
        if r.allocated_gpu_seconds <= 0:
            continue
        acc = weighted[(r.namespace or "", r.service or "")]
        acc[0] += r.allocated_gpu_seconds * share.get((r.node or "", r.gpu_uuid or ""), 0.0)
        acc[1] += r.allocated_gpu_seconds
    return {key: num / den for key, (num, den) in weighted.items() if den > 0}


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The report options the flags read (``report:`` config)."""

    min_probe_success_ratio: float = 0.95
    max_disagree_ratio: float = 0.05
    min_rental_coverage_ratio: float = 0.99


def validation_state(
    probes: int, successes: float, agree: float, disagree: float, limits: Thresholds
) -> Validation:
    """A service's probes in one word: none ran, too many failed, none got a verdict, the
    engine's own metrics disagreed too often, or validated."""
    if probes == 0:
        return "no-probes"
    if successes / probes < limits.min_probe_success_ratio:
        return "probe-failures"
    decided = agree + disagree
    if decided == 0:
        return "undecided"
    if disagree / decided > limits.max_disagree_ratio:
        return "disagree"
    return "validated"


def flag_line(
    line: ServiceLine,
    *,
    successes: float,
    agree: float,
    disagree: float,
    coverage: float | None,
    limits: Thresholds,
) -> ServiceLine:
    """``line`` with its three flags, its hours' coverage and ``counterfactual_flagged``
    (a counterfactual, token-API or rental, whose own flag is ``unvalidated``)."""
    ev = ProbeEvidence(line.validation, line.probes, successes, agree, disagree)
    lo, hi = limits.min_probe_success_ratio, limits.max_disagree_ratio
    token = token_api_flag(
        line.token_api_usd, line.token_api_basis, ev, min_success=lo, max_disagree=hi
    )
    latency = latency_flag(ev, min_success=lo, max_disagree=hi)
    rental_usd: float | None = line.rental_hyperscaler_usd
    basis = line.rental_hyperscaler_basis
    if rental_usd is None:
        rental_usd, basis = line.rental_specialist_usd, line.rental_specialist_basis
    rental = rental_flag(rental_usd, basis, coverage, min_coverage=limits.min_rental_coverage_ratio)
    return replace(
        line,
        token_api_flag=token.flag,
        token_api_flag_reason=token.reason,
        latency_flag=latency.flag,
        latency_flag_reason=latency.reason,
        rental_flag=rental.flag,
        rental_flag_reason=rental.reason,
        rental_coverage_ratio=coverage if line.kind != "idle" else None,
        counterfactual_flagged=UNVALIDATED in (token.flag, rental.flag),
    )
