"""Divide a shared service's GPU-seconds and energy among its tenants, hour by hour.

The ledger keeps facts (tokens per tenant, the engine's prefill/decode seconds, the
service's allocated and busy GPU-seconds per hour); this module divides them, so a new
policy or weight never needs the data ingested again. Per service-hour (see
``docs/tenants.md``):

1. **Weights.** A prompt token weighs 1. Where the engine measured the hour (prefill and
   decode seconds, uncached prompt tokens and generated tokens all above zero), a
   generated token weighs ``(decode seconds / generated tokens) / (prefill seconds /
   uncached prompt tokens)``; elsewhere the configured fixed ratio. A cached prompt token
   skipped the prefill the engine timed and weighs the configured fraction of a prompt
   token either way.
2. **Lines.** Each tenant the gateway counted; the engine's tokens no gateway counted
   (the engine's count − the probes' − Σ tenants', per kind, never below 0) to
   ``__untenanted__``; the agent's own probe tokens to ``__probes__``.
3. **Shares.** Line weight / Σ line weights of the hour. Under headroom policy
   ``spread`` each line gets its share of the allocated GPU-seconds (busy and headroom
   alike); under ``separate`` its share of the busy seconds, and the rest (allocated −
   busy) is the ``__headroom__`` line. Energy follows the allocated seconds.
4. **Hours without tokens.** Their GPU-seconds are pooled (``spread``) and divided over
   the month's lines in proportion to what each got from the hours with tokens, or
   (``separate``, or when the month had no tokens at all) go to ``__headroom__`` —
   busy seconds in such an hour go to ``__untenanted__`` under ``separate``.

Every GPU-second of the service lands on exactly one line, so the lines add up to the
service per hour (tested to 1e-9 in a property test).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from gpuledger.chargeback.ledger.model import EngineTimeGroup, SplitCoefficient, TokenGroup
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.chargeback.report.model import HeadroomPolicy, TenantKind

UNTENANTED = "__untenanted__"
GATEWAY = "\x00gateway"  # the gateway's tenants of an hour summed (never a tenant name)
PROBES = "__probes__"
OTHER = "__other__"
HEADROOM = "__headroom__"

DEFAULT_CACHED_PROMPT_WEIGHT = 0.1
DEFAULT_FIXED_GENERATION_WEIGHT = 4.0
MIN_MEASURED_RATIO, MAX_MEASURED_RATIO = 1e-4, 1e4
"""A measured generation weight outside these is not a measurement (seconds or tokens
near zero, a counter gone wrong): the hour falls back to the fixed ratio."""

ServiceKey = tuple[str, str]  # namespace, service


def tenant_kind(tenant: str) -> TenantKind:
    return {
        UNTENANTED: "untenanted",
        PROBES: "probes",
        OTHER: "other",
        HEADROOM: "headroom",
    }.get(tenant, "tenant")  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class TokenWeights:
    """What a token weighs relative to an uncached prompt token."""

    cached_prompt: float = DEFAULT_CACHED_PROMPT_WEIGHT
    generation: float = DEFAULT_FIXED_GENERATION_WEIGHT  # the fallback; measured hours differ
    from_engine: bool = True  # False: the fixed ratio in every hour


@dataclass(frozen=True, slots=True)
class HourWeights:
    cached_prompt: float
    generation: float
    measured: bool


def hour_weights(
    engine: EngineTimeGroup | None, tokens: TokenGroup | None, fixed: TokenWeights
) -> HourWeights:
    """The hour's weights from the engine's own seconds, or the fixed ratio where the
    engine did not measure enough of it to say."""
    if fixed.from_engine and engine is not None and tokens is not None:
        uncached = tokens.prompt_tokens - engine.prefix_cache_hits
        if (
            engine.prefill_seconds > 0
            and engine.decode_seconds > 0
            and uncached > 0
            and tokens.generation_tokens > 0
        ):
            below = engine.prefill_seconds * tokens.generation_tokens
            ratio = engine.decode_seconds * uncached / below if below > 0 else math.inf
            if MIN_MEASURED_RATIO <= ratio <= MAX_MEASURED_RATIO:
                return HourWeights(fixed.cached_prompt, ratio, True)
    return HourWeights(fixed.cached_prompt, fixed.generation, False)


@dataclass(slots=True)
class TenantShare:
    """What one line of a shared service collected over the month (seconds, joules)."""

    tenant: str
    requests: float = 0.0
    prompt_tokens: float = 0.0
    cached_prompt_tokens: float = 0.0
    generation_tokens: float = 0.0
    weighted_tokens: float = 0.0
    allocated_seconds: dict[str, float] = field(default_factory=dict)  # per GPU model
    busy_seconds: dict[str, float] = field(default_factory=dict)
    energy_joules: dict[str, float] = field(default_factory=dict)
    input_seconds: float = 0.0  # the part of the allocated seconds due to prompt tokens
    fixed_ratio_weight: float = 0.0  # of weighted_tokens, in hours with the fixed ratio

    @property
    def allocated(self) -> float:
        return sum(self.allocated_seconds.values())

    def absorb(self, other: TenantShare) -> None:
        """Add ``other``'s figures to this line: the gateway's ``__untenanted__`` and the
        engine's untenanted rest are one line."""
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.cached_prompt_tokens += other.cached_prompt_tokens
        self.generation_tokens += other.generation_tokens
        self.weighted_tokens += other.weighted_tokens
        self.input_seconds += other.input_seconds
        self.fixed_ratio_weight += other.fixed_ratio_weight
        for model, seconds in other.allocated_seconds.items():
            self.add(model, seconds, other.busy_seconds[model], other.energy_joules[model])

    def add(self, model: str, alloc: float, busy: float, energy: float) -> None:
        self.allocated_seconds[model] = self.allocated_seconds.get(model, 0.0) + alloc
        self.busy_seconds[model] = self.busy_seconds.get(model, 0.0) + busy
        self.energy_joules[model] = self.energy_joules.get(model, 0.0) + energy


@dataclass(slots=True)
class _HourLine:
    tenant: str
    requests: float
    prompt: float
    cached: float
    generation: float


@dataclass(slots=True)
class ServiceHour:
    """One service-hour's facts, as read from the ledger (summed over nodes)."""

    usage: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    # GPU model → (allocated seconds, busy seconds, energy joules)
    tenants: list[_HourLine] = field(default_factory=list)  # each tenant on its own, or …
    gateway: _HourLine | None = None  # … all of them summed (their split is done in SQL)
    tokens: TokenGroup | None = None
    engine: EngineTimeGroup | None = None
    hour_start: int = 0


def _hour_lines(hour: ServiceHour) -> list[_HourLine]:
    """The gateway's tenants plus what only the engine saw (untenanted) and the probes."""
    lines = list(hour.tenants)
    if hour.gateway is not None:
        lines.append(hour.gateway)
    if hour.tokens is None:
        return lines
    t = hour.tokens
    counted_prompt = sum(x.prompt for x in lines)
    counted_generation = sum(x.generation for x in lines)
    rest_prompt = max(0.0, t.prompt_tokens - t.probe_prompt_tokens - counted_prompt)
    rest_generation = max(0.0, t.generation_tokens - t.probe_generation_tokens - counted_generation)
    if rest_prompt > 0 or rest_generation > 0:
        lines.append(_HourLine(UNTENANTED, 0.0, rest_prompt, 0.0, rest_generation))
    if t.probe_prompt_tokens > 0 or t.probe_generation_tokens > 0:
        lines.append(_HourLine(PROBES, 0.0, t.probe_prompt_tokens, 0.0, t.probe_generation_tokens))
    return lines


class ServiceSplit:
    """Accumulates one shared service's hours into per-line shares."""

    def __init__(
        self, policy: HeadroomPolicy, fixed: TokenWeights, key: ServiceKey = ("", "")
    ) -> None:
        self.policy = policy
        self.fixed = fixed
        self.key = key
        self.lines: dict[str, TenantShare] = {}
        self.coefficients: list[SplitCoefficient] = []  # for the gateway's tenants (SQL)
        self._pool: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])

    def _line(self, tenant: str) -> TenantShare:
        line = self.lines.get(tenant)
        if line is None:
            line = self.lines[tenant] = TenantShare(tenant)
        return line

    def add_hour(self, hour: ServiceHour) -> None:
        weights = hour_weights(hour.engine, hour.tokens, self.fixed)
        lines = _hour_lines(hour)
        wc, wg = weights.cached_prompt, weights.generation
        weighted: list[tuple[_HourLine, float, float]] = []  # line, input weight, total
        for x in lines:
            cached = min(x.cached, x.prompt)
            w_in = (x.prompt - cached) + wc * cached
            weighted.append((x, w_in, w_in + wg * x.generation))
        total = sum(w for _, _, w in weighted)
        for x, _, w in weighted:
            if x.tenant == GATEWAY:
                continue  # its tenants' tokens and hours come from SQL
            share = self._line(x.tenant)
            share.requests += x.requests
            share.prompt_tokens += x.prompt
            share.cached_prompt_tokens += x.cached
            share.generation_tokens += x.generation
            share.weighted_tokens += w
            if not weights.measured:
                share.fixed_ratio_weight += w
        if total <= 0:
            self._no_tokens(hour)
            return
        parts: dict[str | None, tuple[float, float, float]] = {}
        for model, (alloc, busy, energy) in hour.usage.items():
            if self.policy == "spread":
                part = (alloc, busy, energy)
            else:
                tenants_energy = energy * busy / alloc if alloc > 0 else 0.0
                part = (busy, busy, tenants_energy)
                if alloc - busy != 0 or energy - tenants_energy != 0:
                    self._line(HEADROOM).add(model, alloc - busy, 0.0, energy - tenants_energy)
            parts[model] = part
            for x, w_in, w in weighted:
                if w <= 0 or x.tenant == GATEWAY:
                    continue
                s = w / total
                line = self.lines[x.tenant]
                line.add(model, s * part[0], s * part[1], s * part[2])
                line.input_seconds += part[0] * w_in / total
        if hour.gateway is not None:
            self._coefficients(hour, weights, total, parts or {None: (0.0, 0.0, 0.0)})

    def _coefficients(
        self,
        hour: ServiceHour,
        weights: HourWeights,
        total: float,
        parts: Mapping[str | None, tuple[float, float, float]],
    ) -> None:
        """What one unit of weight earns this hour, per GPU model, for the SQL side."""
        for i, (model, part) in enumerate(parts.items()):
            self.coefficients.append(
                SplitCoefficient(
                    namespace=self.key[0],
                    service=self.key[1],
                    hour_start=hour.hour_start,
                    gpu_model=model,
                    generation_weight=weights.generation,
                    measured=weights.measured,
                    first=i == 0,
                    allocated_per_weight=part[0] / total,
                    busy_per_weight=part[1] / total,
                    energy_per_weight=part[2] / total,
                )
            )

    def _no_tokens(self, hour: ServiceHour) -> None:
        for model, (alloc, busy, energy) in hour.usage.items():
            if self.policy == "spread":
                pool = self._pool[model]
                pool[0] += alloc
                pool[1] += busy
                pool[2] += energy
            else:
                busy_energy = energy * busy / alloc if alloc > 0 else 0.0
                if busy != 0:
                    self._line(UNTENANTED).add(model, busy, busy, busy_energy)
                self._line(HEADROOM).add(model, alloc - busy, 0.0, energy - busy_energy)

    def finish(self, gateway: Iterable[TenantShare] = ()) -> dict[str, TenantShare]:
        """The lines (with the gateway's tenants as the SQL side summed them), with the
        pooled no-token hours divided over them."""
        for g in gateway:
            mine = self.lines.get(g.tenant)
            if mine is None:
                self.lines[g.tenant] = g
            else:
                mine.absorb(g)
        takers = [(x, x.allocated) for x in self.lines.values() if x.tenant != HEADROOM]
        takers = [(x, a) for x, a in takers if a > 0]
        total = sum(a for _, a in takers)
        input_fraction = {x.tenant: x.input_seconds / a for x, a in takers}
        for model, (alloc, busy, energy) in self._pool.items():
            if alloc == 0 and busy == 0 and energy == 0:
                continue
            if total <= 0:
                self._line(HEADROOM).add(model, alloc, busy, energy)
                continue
            for x, a in takers:
                s = a / total
                x.input_seconds += s * alloc * input_fraction[x.tenant]
                x.add(model, s * alloc, s * busy, s * energy)
        self._pool.clear()
        return self.lines


def split_services(
    store: AuditableLedgerStore,
    start: datetime,
    end: datetime,
    *,
    policy: HeadroomPolicy,
    weights: TokenWeights,
) -> dict[ServiceKey, dict[str, TenantShare]]:
    """Per shared service (one with any tenant row in ``[start, end)``), its lines.

    Python walks the service-hours (a few thousand a month) with the gateway's tenants
    summed into one line per hour; that gives each hour's coefficients, and one SQL read
    (``tenant_weighted_sums``) spreads them over the tenants, however many there are."""
    hours: dict[ServiceKey, dict[int, ServiceHour]] = defaultdict(dict)
    for t in store.tenant_hour_sums(start, end):
        hours[(t.namespace, t.service)][t.hour_start] = ServiceHour(
            gateway=_HourLine(GATEWAY, t.requests, t.prompt_tokens, t.cached_prompt_tokens,
                              t.generation_tokens),
            hour_start=t.hour_start,
        )  # fmt: skip
    if not hours:
        return {}

    def slot(namespace: str | None, service: str | None, iso: str | None) -> ServiceHour | None:
        per_hour = hours.get((namespace or "", service or ""))
        if per_hour is None or iso is None:
            return None  # not a shared service
        h = int(datetime.fromisoformat(iso).timestamp())
        hour = per_hour.get(h)
        if hour is None:
            hour = per_hour[h] = ServiceHour(hour_start=h)
        return hour

    by_hour = ["namespace", "service", "hour"]
    for u in store.usage(start, end, ["namespace", "service", "gpu_model", "hour"]):
        hour = slot(u.namespace, u.service, u.hour)
        if hour is not None:
            hour.usage[u.gpu_model or ""] = _plus(
                hour.usage.get(u.gpu_model or ""),
                (u.allocated_gpu_seconds, u.busy_gpu_seconds, u.energy_joules),
            )
    for tok in store.tokens(start, end, by_hour):
        hour = slot(tok.namespace, tok.service, tok.hour)
        if hour is not None:
            hour.tokens = tok
    for e in store.engine_time(start, end, by_hour):
        hour = slot(e.namespace, e.service, e.hour)
        if hour is not None:
            hour.engine = e

    splits: dict[ServiceKey, ServiceSplit] = {}
    coefficients: list[SplitCoefficient] = []
    for key, per_hour in hours.items():
        split = splits[key] = ServiceSplit(policy, weights, key)
        for h in sorted(per_hour):
            split.add_hour(per_hour[h])
        coefficients += split.coefficients
    gateway: dict[ServiceKey, dict[str, TenantShare]] = defaultdict(dict)
    for g in store.tenant_weighted_sums(start, end, coefficients, weights.cached_prompt):
        line = gateway[(g.namespace, g.service)].get(g.tenant)
        if line is None:
            line = gateway[(g.namespace, g.service)][g.tenant] = TenantShare(g.tenant)
        # per-hour figures sit on one GPU model's row of each hour ("first"): add them all
        line.weighted_tokens += g.weighted_tokens
        line.fixed_ratio_weight += g.fixed_ratio_weight
        line.requests += g.requests
        line.prompt_tokens += g.prompt_tokens
        line.cached_prompt_tokens += g.cached_prompt_tokens
        line.generation_tokens += g.generation_tokens
        if g.gpu_model is not None:
            line.add(g.gpu_model, g.allocated_seconds, g.busy_seconds, g.energy_joules)
            line.input_seconds += g.input_seconds
    return {key: split.finish(gateway[key].values()) for key, split in splits.items()}


def _plus(
    a: tuple[float, float, float] | None, b: tuple[float, float, float]
) -> tuple[float, float, float]:
    if a is None:
        return b
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2])
