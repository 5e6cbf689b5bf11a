"""The monthly chargeback: ledger sums (in SQL) × a dated rate card → a :class:`Report`.

The store does the heavy lifting: one grouped query per kind of row (usage by namespace,
service and GPU model; tokens by served model; probe verdicts; probe latency quantiles;
coverage per GPU), whatever the fleet size. What is left here runs over a few hundred
groups, not over the ledger's millions of buckets.

Money, in the order the report shows it (see ``docs/chargeback.md``):

- internal cost of a (service, GPU model) = allocated GPU-hours × the model's capacity
  rate + measured kWh × PUE × $/kWh (:class:`~gpuledger.chargeback.report.ratecard.Tco`);
- idle capacity (``__idle__``) is its own line (policy ``separate``), or its cost is
  spread over the services holding the same GPU model, in proportion to their internal
  cost (``share-weighted``) or evenly (``share-even``); sharing moves cost, never adds any;
- counterfactuals: the same allocated GPU-hours at the cheapest hyperscaler's and the
  cheapest specialist's on-demand rate for that model; billable tokens (the engine's count
  minus the agent's own probes) at the cheapest API price of the model's class;
- savings = counterfactual − what the service is charged."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from gpuledger.chargeback.attribution.claims import IDLE, UNATTRIBUTED
from gpuledger.chargeback.ledger.model import (
    CoverageGroup,
    ProbeLatencyGroup,
    TokenGroup,
    UsageGroup,
)
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.chargeback.report.clusters import cluster_totals
from gpuledger.chargeback.report.flags import (
    UNVALIDATED,
    Thresholds,
    flag_line,
    rental_coverage,
    validation_state,
)
from gpuledger.chargeback.report.model import (
    REPORT_SCHEMA_VERSION,
    HeadroomPolicy,
    IdlePolicy,
    LineKind,
    ModelLine,
    Month,
    NodeCoverage,
    RateCardInfo,
    RentalQuote,
    Report,
    ServiceLine,
    TokenQuote,
    Totals,
    TrendPoint,
    Validation,
)
from gpuledger.chargeback.report.ratecard import ProviderKind, RateCard
from gpuledger.chargeback.report.tenant_lines import TenantModelTokens, price_tenants
from gpuledger.chargeback.report.tenant_split import TenantShare, TokenWeights, split_services
from gpuledger.chargeback.report.units import (
    JOULES_PER_KWH,
    SECONDS_PER_HOUR,
    TOKENS_PER_UNIT,
    sum_or_none,
)
from gpuledger.cluster import DEFAULT_CLUSTER


class NoLedgerData(Exception):
    """The ledger holds no GPU-seconds for the month asked for."""


@dataclass(frozen=True, slots=True)
class ReportOptions:
    idle_policy: IdlePolicy = "separate"
    fleet: str = "default"
    min_probe_success_ratio: float = 0.95
    max_disagree_ratio: float = 0.05
    latency_quantile: float = 0.99
    trend_months: int = 6  # the month and the five before it
    headroom_policy: HeadroomPolicy = "spread"
    token_weights: TokenWeights = field(default_factory=TokenWeights)
    min_rental_coverage_ratio: float = 0.99  # below: the rental counterfactual is flagged

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(
            self.min_probe_success_ratio, self.max_disagree_ratio, self.min_rental_coverage_ratio
        )


def _kind(service: str) -> LineKind:
    if service == IDLE:
        return "idle"
    if service == UNATTRIBUTED:
        return "unattributed"
    return "service"


def _money(v: float) -> str:
    return f"${v:,.2f}"


# -- pricing one (service, GPU model) ---------------------------------------------------------


def _quote(card: RateCard, model: str, hours: float, kind: ProviderKind) -> RentalQuote | None:
    rate = card.cheapest_rental(model, kind)
    if rate is None:
        return None
    return RentalQuote(
        provider=rate.provider,
        offering=rate.offering,
        usd_per_gpu_hour=rate.usd_per_gpu_hour,
        usd=hours * rate.usd_per_gpu_hour,
        source=rate.source,
        as_of=rate.as_of.isoformat(),
    )


def _model_line(card: RateCard, row: UsageGroup, kind: LineKind) -> ModelLine:
    model = row.gpu_model or ""
    hours = row.allocated_gpu_seconds / SECONDS_PER_HOUR
    kwh = row.energy_joules / JOULES_PER_KWH
    tco = card.tco_for(model)
    cap_rate = tco.capacity_usd_per_gpu_hour if tco else None
    kwh_rate = tco.energy_usd_per_kwh if tco else None
    capacity = hours * cap_rate if cap_rate is not None else None
    energy = kwh * kwh_rate if kwh_rate is not None else None
    internal = capacity + energy if capacity is not None and energy is not None else None
    priced_against_cloud = kind != "idle"  # idle capacity has no cloud counterpart
    return ModelLine(
        gpu_model=model,
        gpu_class=card.gpu_class(model),
        allocated_gpu_hours=hours,
        busy_gpu_hours=row.busy_gpu_seconds / SECONDS_PER_HOUR,
        energy_kwh=kwh,
        capacity_usd_per_gpu_hour=cap_rate,
        energy_usd_per_kwh=kwh_rate,
        capacity_cost_usd=capacity,
        energy_cost_usd=energy,
        internal_cost_usd=internal,
        idle_share_usd=0.0,
        total_cost_usd=internal,
        hyperscaler=_quote(card, model, hours, "hyperscaler") if priced_against_cloud else None,
        specialist=_quote(card, model, hours, "specialist") if priced_against_cloud else None,
        cluster=row.cluster or DEFAULT_CLUSTER,
    )


price_model_line = _model_line
"""One (service, GPU model) priced as the bill prices it (the forecast's daily series
reuses it: ``chargeback/forecast/series.py``)."""


def _with_share(line: ModelLine, share: float) -> ModelLine:
    total = line.internal_cost_usd + share if line.internal_cost_usd is not None else None
    return replace(line, idle_share_usd=share, total_cost_usd=total)


def share_idle(
    lines: dict[tuple[str, str], list[ModelLine]], policy: IdlePolicy
) -> dict[tuple[str, str], list[ModelLine]]:
    """Spread each (GPU model, cluster)'s idle cost over the lines holding it (``policy``
    ``share-weighted``: by internal cost, ``share-even``: equally); one nobody held keeps
    its idle cost on the idle line. Returns new lines; the input is not changed."""
    if policy == "separate":
        return lines
    idle_cost: dict[tuple[str, str], float] = defaultdict(float)
    takers: dict[tuple[str, str], list[tuple[tuple[str, str], int, float]]] = defaultdict(list)
    for key, models in lines.items():
        for i, ml in enumerate(models):
            if ml.internal_cost_usd is None:
                continue
            if key[1] == IDLE:
                idle_cost[(ml.gpu_model, ml.cluster)] += ml.internal_cost_usd
            elif ml.allocated_gpu_hours > 0:
                weight = ml.internal_cost_usd if policy == "share-weighted" else 1.0
                takers[(ml.gpu_model, ml.cluster)].append((key, i, weight))
    out = {key: list(models) for key, models in lines.items()}
    for model, cost in idle_cost.items():
        group = takers.get(model, [])
        total_weight = sum(w for _, _, w in group)
        if not group or total_weight <= 0 or cost == 0:
            continue
        for key, i, weight in group:
            out[key][i] = _with_share(out[key][i], cost * weight / total_weight)
        for key, models in out.items():
            if key[1] != IDLE:
                continue
            for i, ml in enumerate(models):
                if (ml.gpu_model, ml.cluster) == model and ml.internal_cost_usd is not None:
                    out[key][i] = _with_share(ml, -ml.internal_cost_usd)
    return out


# -- tokens -------------------------------------------------------------------------------


def _token_quote(card: RateCard, row: TokenGroup) -> TokenQuote:
    name = row.model_name or ""
    prompt = max(0.0, row.prompt_tokens - row.probe_prompt_tokens)
    generation = max(0.0, row.generation_tokens - row.probe_generation_tokens)
    cls = card.model_class(name)
    if cls is None:
        return TokenQuote(name, None, prompt, generation, None, None,
                          f"no API class on the rate card matches model {name!r}")  # fmt: skip
    prices = card.token_prices(cls)
    if not prices:
        return TokenQuote(name, cls, prompt, generation, None, None,
                          f"no API price for class {cls!r}")  # fmt: skip
    best = min(
        prices,
        key=lambda p: (
            prompt * p.usd_per_1m_input + generation * p.usd_per_1m_output,
            p.provider,
        ),
    )
    usd = (prompt * best.usd_per_1m_input + generation * best.usd_per_1m_output) / TOKENS_PER_UNIT
    return TokenQuote(name, cls, prompt, generation, best.provider, usd, None)


def _token_counterfactual(quotes: Sequence[TokenQuote]) -> tuple[float | None, str]:
    billed = [q for q in quotes if q.prompt_tokens + q.generation_tokens > 0]
    if not billed:
        return None, "no billable tokens recorded (no vLLM engine scraped for this service)"
    unpriced = [q.reason for q in billed if q.usd is None and q.reason]
    if unpriced:
        return None, "; ".join(unpriced)
    basis = "; ".join(f"{q.model_name}: {q.provider} ({q.model_class})" for q in billed)
    return sum(q.usd or 0.0 for q in billed), basis


def _rental_counterfactual(
    models: Sequence[ModelLine], kind: ProviderKind
) -> tuple[float | None, str]:
    parts: list[str] = []
    total = 0.0
    for ml in models:
        if ml.allocated_gpu_hours <= 0:
            continue
        quote = ml.hyperscaler if kind == "hyperscaler" else ml.specialist
        if quote is None:
            what = f"class {ml.gpu_class}" if ml.gpu_class else "not on the rate card"
            return None, f"no {kind} rate for {ml.gpu_model} ({what})"
        total += quote.usd
        parts.append(f"{quote.provider} {quote.offering} ${quote.usd_per_gpu_hour:.2f}/GPU-h")
    if not parts:
        return None, "no allocated GPU-hours"
    return total, "; ".join(dict.fromkeys(parts))  # one per offering, not per cluster


# -- the report ---------------------------------------------------------------------------


def _period(month: Month, now: datetime) -> tuple[datetime, datetime, bool]:
    start, end = month.start, month.end
    if end <= now:
        return start, end, True
    last_complete = now.replace(minute=0, second=0, microsecond=0)
    return start, max(start, last_complete), False


def _service_line(
    key: tuple[str, str],
    models: list[ModelLine],
    quotes: Sequence[TokenQuote],
    probe: dict[str, float],
    latency: ProbeLatencyGroup | None,
    opts: ReportOptions,
) -> ServiceLine:
    namespace, service = key
    kind = _kind(service)
    alloc = sum(m.allocated_gpu_hours for m in models)
    busy = sum(m.busy_gpu_hours for m in models)
    total = sum_or_none(m.total_cost_usd for m in models)
    prompt = sum(q.prompt_tokens for q in quotes)
    generation = sum(q.generation_tokens for q in quotes)
    tokens = prompt + generation
    if kind == "idle":
        hyper: tuple[float | None, str] = (None, "idle capacity")
        spec: tuple[float | None, str] = (None, "idle capacity")
        api: tuple[float | None, str] = (None, "idle capacity")
    else:
        hyper = _rental_counterfactual(models, "hyperscaler")
        spec = _rental_counterfactual(models, "specialist")
        api = _token_counterfactual(quotes)
    n_probes = int(probe.get("probes", 0))
    successes = probe.get("successes", 0.0)
    agree, disagree = probe.get("agree", 0.0), probe.get("disagree", 0.0)
    validation: Validation = (
        "n/a"
        if kind == "idle"
        else validation_state(n_probes, successes, agree, disagree, opts.thresholds)
    )

    def saving(counterfactual: float | None) -> float | None:
        return counterfactual - total if counterfactual is not None and total is not None else None

    return ServiceLine(
        namespace=namespace,
        service=service,
        kind=kind,
        gpu_models=tuple(sorted({m.gpu_model for m in models})),
        models=tuple(sorted(models, key=lambda m: (m.gpu_model, m.cluster))),
        allocated_gpu_hours=alloc,
        busy_gpu_hours=busy,
        utilization_ratio=busy / alloc if alloc > 0 else None,
        energy_kwh=sum(m.energy_kwh for m in models),
        unpriced_gpu_models=tuple(
            sorted({m.gpu_model for m in models if m.internal_cost_usd is None})
        ),
        capacity_cost_usd=sum_or_none(m.capacity_cost_usd for m in models),
        energy_cost_usd=sum_or_none(m.energy_cost_usd for m in models),
        internal_cost_usd=sum_or_none(m.internal_cost_usd for m in models),
        idle_share_usd=sum(m.idle_share_usd for m in models),
        total_cost_usd=total,
        prompt_tokens=prompt,
        generation_tokens=generation,
        probe_prompt_tokens=0.0,
        probe_generation_tokens=0.0,
        served_models=tuple(quotes),
        cost_per_1m_tokens_usd=(
            total / tokens * TOKENS_PER_UNIT if total is not None and tokens > 0 else None
        ),
        rental_hyperscaler_usd=hyper[0],
        rental_hyperscaler_basis=hyper[1],
        rental_specialist_usd=spec[0],
        rental_specialist_basis=spec[1],
        token_api_usd=api[0],
        token_api_basis=api[1],
        savings_vs_hyperscaler_usd=saving(hyper[0]),
        savings_vs_specialist_usd=saving(spec[0]),
        savings_vs_token_api_usd=saving(api[0]),
        p99_ttft_s=latency.ttft_s if latency else None,
        p99_tpot_s=latency.tpot_s if latency else None,
        p99_e2e_s=latency.e2e_s if latency else None,
        probes=n_probes,
        probe_success_ratio=successes / n_probes if n_probes else None,
        verdicts_agree=int(agree),
        verdicts_disagree=int(disagree),
        validation=validation,
        counterfactual_flagged=kind != "idle" and validation != "validated",
    )


def _order(line: ServiceLine) -> tuple[int, float, str]:
    rank = {"service": 0, "unattributed": 1, "idle": 2}[line.kind]
    cost = line.total_cost_usd if line.total_cost_usd is not None else float("-inf")
    return (rank, -cost, line.label)


def _totals(lines: Sequence[ServiceLine]) -> Totals:
    models = [m for line in lines for m in line.models]
    alloc = sum(m.allocated_gpu_hours for m in models)
    busy = sum(m.busy_gpu_hours for m in models)
    idle = sum(line.allocated_gpu_hours for line in lines if line.kind == "idle")
    held = alloc - idle
    return Totals(
        allocated_gpu_hours=alloc,
        busy_gpu_hours=busy,
        utilization_ratio=busy / held if held > 0 else None,
        idle_gpu_hours=idle,
        energy_kwh=sum(m.energy_kwh for m in models),
        capacity_cost_usd=sum(m.capacity_cost_usd or 0.0 for m in models),
        energy_cost_usd=sum(m.energy_cost_usd or 0.0 for m in models),
        internal_cost_usd=sum(m.internal_cost_usd or 0.0 for m in models),
        total_cost_usd=sum(m.total_cost_usd or 0.0 for m in models),
        unpriced_gpu_hours=sum(
            m.allocated_gpu_hours for m in models if m.internal_cost_usd is None
        ),
        prompt_tokens=sum(line.prompt_tokens for line in lines),
        generation_tokens=sum(line.generation_tokens for line in lines),
        rental_hyperscaler_usd=sum(line.rental_hyperscaler_usd or 0.0 for line in lines),
        rental_specialist_usd=sum(line.rental_specialist_usd or 0.0 for line in lines),
        token_api_usd=sum(line.token_api_usd or 0.0 for line in lines),
    )


def _coverage(
    rows: Sequence[CoverageGroup], period_hours: float
) -> tuple[tuple[NodeCoverage, ...], float | None]:
    per_node: dict[str, list[CoverageGroup]] = defaultdict(list)
    for r in rows:
        per_node[r.node].append(r)
    out: list[NodeCoverage] = []
    for node in sorted(per_node):
        gpus = per_node[node]
        observed = sum(g.observed_seconds for g in gpus) / SECONDS_PER_HOUR
        expected = len(gpus) * period_hours
        out.append(
            NodeCoverage(
                node=node,
                gpus=len(gpus),
                observed_gpu_hours=observed,
                expected_gpu_hours=expected,
                coverage_ratio=observed / expected if expected > 0 else None,
                first_hour=min(g.first_hour for g in gpus),
                last_hour=max(g.last_hour for g in gpus),
            )
        )
    expected_all = sum(n.expected_gpu_hours for n in out)
    fleet = sum(n.observed_gpu_hours for n in out) / expected_all if expected_all > 0 else None
    return tuple(out), fleet


def _trend_point(card: RateCard, month: Month, rows: Sequence[UsageGroup]) -> TrendPoint:
    alloc = idle = internal = hyper = unpriced = 0.0
    for row in rows:
        service = row.service or ""
        ml = _model_line(card, row, _kind(service))
        alloc += ml.allocated_gpu_hours
        if service == IDLE:
            idle += ml.allocated_gpu_hours
        if ml.internal_cost_usd is None:
            unpriced += ml.allocated_gpu_hours
        else:
            internal += ml.internal_cost_usd
        if ml.hyperscaler is not None:
            hyper += ml.hyperscaler.usd
    return TrendPoint(month.label, alloc, idle, internal, hyper, unpriced)


BUILD_STEPS = 7


def _tenant_split(
    store: AuditableLedgerStore, start: datetime, end: datetime, opts: ReportOptions
) -> tuple[
    dict[tuple[str, str], dict[str, TenantShare]], Mapping[tuple[str, str], TenantModelTokens]
]:
    """Each shared service's tenant shares, and each tenant's tokens per served model
    (for its API counterfactual). Nothing is read beyond one query when no gateway or
    meter counted tenants this month."""
    shares = split_services(
        store, start, end, policy=opts.headroom_policy, weights=opts.token_weights
    )
    if not shares:
        return {}, {}
    by_model: dict[tuple[str, str], dict[str, dict[str, tuple[float, float]]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    for r in store.tenant_tokens(start, end, ["namespace", "service", "tenant", "model_name"]):
        key = (r.namespace or "", r.service or "")
        by_model[key][r.tenant or ""][r.model_name or ""] = (r.prompt_tokens, r.generation_tokens)
    return shares, by_model


def build_report(
    store: AuditableLedgerStore,
    card: RateCard,
    month: Month,
    *,
    options: ReportOptions | None = None,
    now: datetime | None = None,
    store_label: str = "",
    progress: Callable[[str], None] | None = None,
) -> Report:
    """The chargeback for ``month`` from ``store``, priced with ``card``.

    ``progress`` is told each step before it runs (:data:`BUILD_STEPS` of them, plus
    one per earlier month of the trend). Raises :class:`NoLedgerData` when the ledger has
    nothing for the month, and StoreError when the store fails; nothing is written."""
    opts = options or ReportOptions()
    step = progress or (lambda _what: None)
    now = (now or datetime.now(UTC)).astimezone(UTC)
    start, end, complete = _period(month, now)
    where = store_label or "the ledger"
    if end <= start:
        raise NoLedgerData(f"{month.label} has not started yet (now {now:%Y-%m-%d %H:%M} UTC)")
    step("GPU-seconds by service and GPU model")
    usage = store.usage(start, end, ["namespace", "service", "gpu_model", "cluster"])
    if not any(r.allocated_gpu_seconds > 0 for r in usage):
        raise NoLedgerData(f"no GPU-seconds in {where} for {month.label}")
    step("tokens by served model")
    token_rows = store.tokens(start, end, ["namespace", "service", "model_name"])
    step("probe verdicts")
    probe_rows = store.probes(start, end)
    step("probe latency quantiles")
    latency_rows = store.probe_latency(start, end, opts.latency_quantile)
    step("coverage per GPU")
    coverage_rows = store.coverage(start, end)
    step("coverage of each service's hours")
    hours_covered = rental_coverage(
        store.usage(start, end, ["namespace", "service", "node", "gpu_uuid"]), coverage_rows
    )
    step("tenants of shared services")
    tenant_shares, tenant_models = _tenant_split(store, start, end, opts)

    models: dict[tuple[str, str], list[ModelLine]] = defaultdict(list)
    for row in usage:
        key = (row.namespace or "", row.service or "")
        models[key].append(_model_line(card, row, _kind(key[1])))
    models = share_idle(models, opts.idle_policy)

    quotes: dict[tuple[str, str], list[TokenQuote]] = defaultdict(list)
    probe_tokens: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for tokens in token_rows:
        key = (tokens.namespace or "", tokens.service or "")
        quotes[key].append(_token_quote(card, tokens))
        probe_tokens[key][0] += tokens.probe_prompt_tokens
        probe_tokens[key][1] += tokens.probe_generation_tokens
    probes: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for verdicts in probe_rows:
        key = (verdicts.namespace, verdicts.service)
        probes[key]["probes"] += float(verdicts.probes)
        probes[key]["successes"] += float(verdicts.successes)
        probes[key]["agree"] += float(verdicts.agree)
        probes[key]["disagree"] += float(verdicts.disagree)
    latency = {(r.namespace, r.service): r for r in latency_rows}

    lines = []
    for key in models:
        line = _service_line(
            key, models[key], quotes.get(key, ()), probes.get(key, {}), latency.get(key), opts
        )
        pk = probes.get(key, {})
        line = flag_line(
            line,
            successes=pk.get("successes", 0.0),
            agree=pk.get("agree", 0.0),
            disagree=pk.get("disagree", 0.0),
            coverage=hours_covered.get(key),
            limits=opts.thresholds,
        )
        pt = probe_tokens.get(key)
        if pt is not None:
            line = replace(line, probe_prompt_tokens=pt[0], probe_generation_tokens=pt[1])
        shares = tenant_shares.get(key)
        if shares:
            tenants = price_tenants(card, line, shares, tenant_models.get(key, {}))
            line = replace(line, tenants=tenants)
        lines.append(line)
    lines.sort(key=_order)

    period_hours = (end - start).total_seconds() / SECONDS_PER_HOUR
    coverage, fleet_coverage = _coverage(coverage_rows, period_hours)
    trend: list[TrendPoint] = []
    m = month
    previous: list[Month] = []
    for _ in range(max(0, opts.trend_months - 1)):
        m = m.previous()
        previous.append(m)
    for pm in reversed(previous):
        step(f"trend: {pm.label}")
        rows = store.usage(pm.start, pm.end, ["service", "gpu_model"])
        if rows:
            trend.append(_trend_point(card, pm, rows))
    trend.append(_trend_point(card, month, usage))

    unpriced: dict[str, float] = defaultdict(float)
    for line in lines:
        for ml in line.models:
            if ml.internal_cost_usd is None:
                unpriced[ml.gpu_model] += ml.allocated_gpu_hours
    totals = _totals(lines)
    return Report(
        schema_version=REPORT_SCHEMA_VERSION,
        month=month.label,
        fleet=opts.fleet,
        generated_at=now.isoformat(timespec="seconds"),
        period_start=start.isoformat(),
        period_end=end.isoformat(),
        period_hours=period_hours,
        complete=complete,
        currency=card.currency,
        idle_policy=opts.idle_policy,
        rate_card=RateCardInfo(card.version, card.digest, card.source),
        store=store_label,
        lines=tuple(lines),
        totals=totals,
        coverage=coverage,
        fleet_coverage_ratio=fleet_coverage,
        trend=tuple(trend),
        unpriced_gpu_models=dict(sorted(unpriced.items())),
        notes=tuple(_notes(lines, totals, unpriced, fleet_coverage, complete, opts)),
        headroom_policy=opts.headroom_policy,
        clusters=cluster_totals(lines),
    )


def _notes(
    lines: Sequence[ServiceLine],
    totals: Totals,
    unpriced: dict[str, float],
    coverage: float | None,
    complete: bool,
    opts: ReportOptions,
) -> Iterable[str]:
    if not complete:
        yield "The month is under way: figures cover the complete hours so far."
    if opts.idle_policy == "separate":
        yield (
            f"Idle capacity ({totals.idle_gpu_hours:,.1f} GPU-hours) is its own line "
            "(idle policy: separate)."
        )
    else:
        how = (
            "in proportion to their internal cost"
            if opts.idle_policy == "share-weighted"
            else "evenly"
        )
        yield (
            "Idle capacity cost is spread over the services holding the same GPU model, "
            f"{how} (idle policy: {opts.idle_policy})."
        )
    for model, hours in sorted(unpriced.items()):
        yield (
            f"UNPRICED: {hours:,.1f} GPU-hours on {model!r}, which has no cost-of-ownership "
            "row on the rate card; their costs are shown as unpriced, not zero."
        )
    if coverage is not None and coverage < 0.99:
        yield (
            f"Coverage is {coverage:.1%}: the agent did not observe every GPU for the whole "
            "period (see coverage by node); unobserved time is billed to nobody."
        )
    shared = [line for line in lines if line.tenants]
    if shared:
        how = (
            "spread over its tenants with the busy time"
            if opts.headroom_policy == "spread"
            else "kept as the service's own __headroom__ line"
        )
        fixed = sum(1 for line in shared for t in line.tenants if t.fixed_ratio_share > 0)
        yield (
            f"{len(shared)} shared service(s) are split among their tenants by weighted "
            f"tokens; headroom (allocated − busy) is {how} (headroom policy: "
            f"{opts.headroom_policy})."
            + (
                f" {fixed} tenant line(s) include hours the engine did not measure, "
                "weighted with the fixed ratio (marked)."
                if fixed
                else ""
            )
        )
    api = [line.label for line in lines if line.token_api_flag == UNVALIDATED]
    if api:
        yield (
            f"Token-API counterfactuals of {len(api)} service(s) rest on engine token "
            f"counts the probes did not confirm (marked ⚑): {', '.join(api)}."
        )
    rental = [line.label for line in lines if line.rental_flag == UNVALIDATED]
    if rental:
        yield (
            f"GPU-rental counterfactuals of {len(rental)} service(s) rest on hours the ledger "
            f"did not fully observe (marked ⚑): {', '.join(rental)}."
        )
