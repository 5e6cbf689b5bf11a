"""The fixture month (tests/support/report_fixtures.py) with tenant lines attached by hand.

The report's split is not computed here: each tenant gets a stated share of its service's
every figure. The shares are powers of two, so share × figure is exact in floating point
and a service's tenant lines add up to its line bit for bit, as the model promises.

- ``prod/chat`` (one GPU model, H100): ``team-a`` ½ (measured weights), a hostile
  ``<script>`` tenant ¼ (fixed-ratio), a formula-like tenant ⅛ (mixed), ``__probes__``
  1/16 and ``__untenanted__`` 1/16;
- ``search/embed`` (two GPU models, A100 and H100): ``search-ui`` ¾ and ``__headroom__``
  ¼ (no tokens, no cost per token);
- ``lab/train`` (B200, unpriced): ``research`` 1: every cost None.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from gpuledger.chargeback.ledger.store.sqlite import SqliteLedgerStore
from gpuledger.chargeback.report.build import ReportOptions, build_report
from gpuledger.chargeback.report.model import (
    IdlePolicy,
    Month,
    Report,
    ServiceLine,
    TenantKind,
    TenantLine,
    WeightBasis,
)
from gpuledger.chargeback.report.ratecard import load_rate_card
from tests.support import report_fixtures as fx

EVIL_SCRIPT = "<script>alert(1)</script>"
EVIL_FORMULA = "=cmd|' /C calc'!A0"
API_IN, API_OUT = 0.59, 0.79  # $/1M tokens, stated for the chat tenants
INPUT_PART = 0.75  # of a chat tenant's total cost, due to its prompt tokens


@dataclass(frozen=True)
class Spec:
    """One tenant as the tests state it."""

    tenant: str
    kind: TenantKind
    share: float
    prompt: float = 0.0
    cached: float = 0.0
    generation: float = 0.0
    requests: float = 0.0
    weights: WeightBasis = "measured"
    fixed_share: float = 0.0


CHAT = (
    Spec("team-a", "tenant", 0.5, 6.0e8, 1.0e8, 1.5e8, 2.0e6),
    Spec(EVIL_SCRIPT, "tenant", 0.25, 3.0e8, 0.0, 7.5e7, 1.0e6, "fixed-ratio", 1.0),
    Spec(EVIL_FORMULA, "tenant", 0.125, 1.5e8, 5.0e7, 3.75e7, 5.0e5, "mixed", 0.25),
    Spec("__probes__", "probes", 0.0625, 1.2e5, 0.0, 2.0e5, 1000.0),
    Spec("__untenanted__", "untenanted", 0.0625, 1.5e8, 0.0, 3.75e7, 4.0e5),
)
EMBED = (
    Spec("search-ui", "tenant", 0.75, 5.0e8, 0.0, 0.0, 3.0e6),
    Spec("__headroom__", "headroom", 0.25, weights="none"),
)
TRAIN = (Spec("research", "tenant", 1.0, 1.0e6, 0.0, 1.0e6, 10.0),)
SPECS = {"chat": CHAT, "embed": EMBED, "train": TRAIN}


def _times(share: float, v: float | None) -> float | None:
    return None if v is None else share * v


def tenant_line(line: ServiceLine, s: Spec) -> TenantLine:
    total = _times(s.share, line.total_cost_usd)
    tokens = s.prompt + s.generation > 0
    in_cost = total * INPUT_PART if total is not None and tokens else None
    out_cost = total - in_cost if total is not None and in_cost is not None else None
    api = line.service == "chat" and s.kind != "headroom"
    token_api = (s.prompt * API_IN + s.generation * API_OUT) / 1e6 if api else None
    return TenantLine(
        tenant=s.tenant,
        kind=s.kind,
        requests=s.requests,
        prompt_tokens=s.prompt,
        cached_prompt_tokens=s.cached,
        generation_tokens=s.generation,
        weighted_tokens=s.prompt + 4 * s.generation,
        allocated_gpu_hours=s.share * line.allocated_gpu_hours,
        busy_gpu_hours=s.share * line.busy_gpu_hours,
        share_ratio=s.share,
        energy_kwh=s.share * line.energy_kwh,
        capacity_cost_usd=_times(s.share, line.capacity_cost_usd),
        energy_cost_usd=_times(s.share, line.energy_cost_usd),
        internal_cost_usd=_times(s.share, line.internal_cost_usd),
        idle_share_usd=s.share * line.idle_share_usd,
        total_cost_usd=total,
        input_cost_usd=in_cost,
        output_cost_usd=out_cost,
        cost_per_1m_input_usd=in_cost / s.prompt * 1e6 if in_cost is not None else None,
        cost_per_1m_output_usd=(
            out_cost / s.generation * 1e6 if out_cost is not None and s.generation else None
        ),
        api_provider="Groq" if api else None,
        api_usd_per_1m_input=API_IN if api else None,
        api_usd_per_1m_output=API_OUT if api else None,
        token_api_usd=token_api,
        token_api_basis="Groq at the stated prices" if api else "no API class",
        savings_vs_token_api_usd=(
            token_api - total if token_api is not None and total is not None else None
        ),
        weights=s.weights,
        fixed_ratio_share=s.fixed_share,
    )


def with_tenants(report: Report) -> Report:
    lines = tuple(
        replace(line, tenants=tuple(tenant_line(line, s) for s in SPECS[line.service]))
        if line.service in SPECS
        else line
        for line in report.lines
    )
    return replace(report, lines=lines)


def tenant_report(policy: IdlePolicy = "separate") -> Report:
    store = SqliteLedgerStore(":memory:")
    store.migrate()
    fx.fill(store)
    opts = ReportOptions(idle_policy=policy)
    report = build_report(store, load_rate_card(), Month.parse("2026-10"), options=opts, now=fx.NOW)
    store.close()
    return with_tenants(report)
