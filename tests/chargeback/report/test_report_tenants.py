"""A shared service's tenant lines against figures worked out by hand from stated rows.

The ledger (October 2026, three hours) holds ``prod/chat`` serving
``meta-llama/Llama-3.1-70B-Instruct`` on two nodes:

- hour 0: n1 H100 3600 s allocated (busy 1800 s, 1.0 MJ), n2 A100 1800 s (busy 900 s,
  0.5 MJ); the engines counted 1,000,000 prompt tokens (probes 1,000) and 100,000
  generated (probes 500) — 700k/70k on n1, 300k/30k on n2; they measured 90 s of prefill,
  100 s of decode and 100,000 prefix-cache hits. Uncached prompt tokens: 900,000 →
  1e-4 s each; generated: 1e-3 s each → a generated token weighs 10 prompt tokens.
  The gateway counted team-a (600k prompt, 100k of them cached, 20k generated, 100
  requests) and team-b (200k, 0 cached, 60k, 50 requests). The engine's billable rest
  (999,000 − 800,000 prompt; 99,500 − 80,000 generated) is ``__untenanted__``.
- hour 1: n1 H100 3600 s (busy 3600 s, 2.0 MJ); engines 100k prompt, 10k generated, no
  engine seconds (fixed ratio 4); the gateway counted it all for team-a.
- hour 2: n1 H100 3600 s (busy 0, 0.5 MJ), no tokens at all.
- ``search/embed``: 3600 s on H100 in hour 0, nobody counted tenants for it.
- ``__idle__``: 3600 s of H100 in hour 0 (0.2 MJ).

Weights with a cached prompt token at 0.1 (hour 0):
team-a 500,000 + 10,000 + 10 × 20,000 = 710,000; team-b 200,000 + 600,000 = 800,000;
untenanted 199,000 + 10 × 19,500 = 394,000; probes 1,000 + 5,000 = 6,000; Σ 1,910,000.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gpuledger.chargeback.attribution.claims import IDLE
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.chargeback.ledger.tables import (
    CoverageRow,
    EngineTimeRow,
    TenantTokenRow,
    TokenRow,
    UsageRow,
)
from gpuledger.chargeback.report.build import ReportOptions, build_report
from gpuledger.chargeback.report.model import Month, Report, ServiceLine, TenantLine
from gpuledger.chargeback.report.ratecard import load_rate_card
from tests.support.report_expected import EA, EH, GROQ_70B, RA, RH

OCT = int(datetime(2026, 10, 1, tzinfo=UTC).timestamp())
NOW = datetime(2026, 11, 2, tzinfo=UTC)
H100 = "NVIDIA H100 80GB HBM3"
A100 = "NVIDIA A100-SXM4-80GB"
MODEL = "meta-llama/Llama-3.1-70B-Instruct"
KWH = 3.6e6

# hour-0 weights and shares (see the module docstring)
WA, WB, WU, WP = 710_000.0, 800_000.0, 394_000.0, 6_000.0
W0 = WA + WB + WU + WP


def fill(store: AuditableLedgerStore) -> None:
    h0, h1, h2 = OCT, OCT + 3600, OCT + 7200
    store.upsert(
        [
            UsageRow(h0, "n1", "g1", "prod", "chat", H100, "", 3600.0, 1800.0, 1.0e6),
            UsageRow(h0, "n2", "a1", "prod", "chat", A100, "", 1800.0, 900.0, 0.5e6),
            UsageRow(h0, "n2", "a1", "", IDLE, A100, "", 1800.0, 0.0, 0.1e6),
            UsageRow(h0, "n1", "g2", "search", "embed", H100, "", 3600.0, 3600.0, 1.0e6),
            UsageRow(h0, "n1", "g3", "", IDLE, H100, "", 3600.0, 0.0, 0.2e6),
            UsageRow(h1, "n1", "g1", "prod", "chat", H100, "", 3600.0, 3600.0, 2.0e6),
            UsageRow(h2, "n1", "g1", "prod", "chat", H100, "", 3600.0, 0.0, 0.5e6),
        ],
        [
            CoverageRow(h0, "n1", "g1", H100, 3600.0),
            CoverageRow(h0, "n2", "a1", A100, 3600.0),
            CoverageRow(h0, "n1", "g2", H100, 3600.0),
            CoverageRow(h0, "n1", "g3", H100, 3600.0),
            CoverageRow(h1, "n1", "g1", H100, 3600.0),
            CoverageRow(h2, "n1", "g1", H100, 3600.0),
        ],
    )
    store.upsert_tokens(
        [
            TokenRow(h0, "n1", "prod", "chat", MODEL, 700_000.0, 70_000.0, 1_000.0, 500.0),
            TokenRow(h0, "n2", "prod", "chat", MODEL, 300_000.0, 30_000.0, 0.0, 0.0),
            TokenRow(h1, "n1", "prod", "chat", MODEL, 100_000.0, 10_000.0, 0.0, 0.0),
        ]
    )
    store.upsert_engine_time(
        [
            EngineTimeRow(h0, "n1", "prod", "chat", MODEL, 60.0, 70.0, 80.0, 80.0, 7e5, 70_000.0),
            EngineTimeRow(h0, "n2", "prod", "chat", MODEL, 30.0, 30.0, 70.0, 70.0, 3e5, 30_000.0),
        ]
    )
    store.upsert_tenant_tokens(
        [
            TenantTokenRow(h0, "gw", "prod", "chat", MODEL, "team-a", 100.0, 6e5, 1e5, 20_000.0),
            TenantTokenRow(h0, "gw", "prod", "chat", MODEL, "team-b", 50.0, 2e5, 0.0, 60_000.0),
            TenantTokenRow(h1, "gw", "prod", "chat", MODEL, "team-a", 10.0, 1e5, 0.0, 10_000.0),
        ]
    )


@pytest.fixture
def filled(ledger_store: AuditableLedgerStore) -> AuditableLedgerStore:
    fill(ledger_store)
    return ledger_store


def _report(store: AuditableLedgerStore, **opts: object) -> Report:
    options = ReportOptions(**opts)  # type: ignore[arg-type]
    return build_report(store, load_rate_card(), Month(2026, 10), options=options, now=NOW)


def _chat(r: Report) -> ServiceLine:
    return next(line for line in r.lines if line.service == "chat")


def _tenant(line: ServiceLine, name: str) -> TenantLine:
    return next(t for t in line.tenants if t.tenant == name)


def test_spread_split_equals_hand_computed(filled: AuditableLedgerStore) -> None:
    r = _report(filled)
    chat = _chat(r)
    assert r.headroom_policy == "spread"
    assert [t.tenant for t in chat.tenants][-2:] == ["__untenanted__", "__probes__"]
    assert {t.tenant for t in chat.tenants} == {"team-a", "team-b", "__untenanted__", "__probes__"}
    # GPU-seconds from the hours with tokens, per line and GPU model
    h100 = {
        "a": 3600 * WA / W0 + 3600,
        "b": 3600 * WB / W0,
        "u": 3600 * WU / W0,
        "p": 3600 * WP / W0,
    }
    a100 = {"a": 1800 * WA / W0, "b": 1800 * WB / W0, "u": 1800 * WU / W0, "p": 1800 * WP / W0}
    joules_h100 = {"a": 1.0e6 * WA / W0 + 2.0e6, "b": 1.0e6 * WB / W0, "u": 1.0e6 * WU / W0,
                   "p": 1.0e6 * WP / W0}  # fmt: skip
    joules_a100 = {k: 0.5e6 * v / 1800 for k, v in a100.items()}
    # hour 2 (no tokens): 3600 s and 0.5 MJ of H100 spread by what each got so far
    got = {k: h100[k] + a100[k] for k in h100}
    assert sum(got.values()) == pytest.approx(9000.0)
    for k in h100:
        h100[k] += 3600 * got[k] / 9000
        joules_h100[k] += 0.5e6 * got[k] / 9000
    names = {"a": "team-a", "b": "team-b", "u": "__untenanted__", "p": "__probes__"}
    for k, name in names.items():
        t = _tenant(chat, name)
        hours = (h100[k] + a100[k]) / 3600
        kwh = (joules_h100[k] + joules_a100[k]) / KWH
        assert t.allocated_gpu_hours == pytest.approx(hours, rel=1e-12)
        assert t.energy_kwh == pytest.approx(kwh, rel=1e-12)
        assert t.share_ratio == pytest.approx(hours / 3.5, rel=1e-12)  # chat: 12,600 s
        cost = h100[k] / 3600 * RH + a100[k] / 3600 * RA
        cost += joules_h100[k] / KWH * EH + joules_a100[k] / KWH * EA
        assert t.internal_cost_usd == pytest.approx(cost, rel=1e-12)
        assert t.total_cost_usd == pytest.approx(cost, rel=1e-12)  # idle policy: separate
    a = _tenant(chat, "team-a")
    assert (a.prompt_tokens, a.cached_prompt_tokens, a.generation_tokens) == (7e5, 1e5, 30_000)
    assert a.requests == 110
    assert a.weighted_tokens == pytest.approx(WA + 100_000 + 4 * 10_000)
    assert a.weights == "mixed"  # hour 1's 140,000 weighted tokens used the fixed ratio
    assert a.fixed_ratio_share == pytest.approx(140_000 / (WA + 140_000))
    assert _tenant(chat, "team-b").weights == "measured"
    # input/output: hour 0 by the weights' input part (510k of 710k), hour 1 by 100k of
    # 140k; the pooled hour keeps team-a's input fraction
    seconds_in = 5400 * 510_000 / W0 + 3600 * 100_000 / 140_000
    fraction_in = seconds_in / got["a"]
    assert a.input_cost_usd == pytest.approx(a.total_cost_usd * fraction_in, rel=1e-12)
    assert a.cost_per_1m_input_usd == pytest.approx(a.total_cost_usd * fraction_in / 0.7, rel=1e-12)
    assert a.cost_per_1m_output_usd == pytest.approx(
        a.total_cost_usd * (1 - fraction_in) / 0.03, rel=1e-12
    )
    # the API at the provider the service's own counterfactual chose (Groq), in and out
    p_in, p_out = GROQ_70B["usd_per_1m_input"], GROQ_70B["usd_per_1m_output"]
    assert a.api_provider == "Groq"
    assert a.token_api_usd == pytest.approx((7e5 * p_in + 3e4 * p_out) / 1e6)
    assert (a.api_usd_per_1m_input, a.api_usd_per_1m_output) == pytest.approx((p_in, p_out))
    u = _tenant(chat, "__untenanted__")
    assert (u.prompt_tokens, u.generation_tokens) == (199_000, 19_500)
    assert u.token_api_usd == pytest.approx((199_000 * p_in + 19_500 * p_out) / 1e6)
    probes = _tenant(chat, "__probes__")
    assert (probes.prompt_tokens, probes.generation_tokens) == (1_000, 500)
    assert probes.token_api_usd is None
    assert "probes" in probes.token_api_basis


def test_tenant_lines_add_up_to_the_service(filled: AuditableLedgerStore) -> None:
    for opts in ({}, {"headroom_policy": "separate"}, {"idle_policy": "share-weighted"}):
        chat = _chat(_report(filled, **opts))
        assert sum(t.allocated_gpu_hours for t in chat.tenants) == pytest.approx(
            chat.allocated_gpu_hours, rel=1e-12
        )
        assert chat.allocated_gpu_hours == pytest.approx(3.5)
        assert sum(t.busy_gpu_hours for t in chat.tenants) == pytest.approx(
            chat.busy_gpu_hours, rel=1e-12
        )
        assert sum(t.energy_kwh for t in chat.tenants) == pytest.approx(chat.energy_kwh, rel=1e-12)
        for money in ("capacity_cost_usd", "energy_cost_usd", "internal_cost_usd",
                      "idle_share_usd", "total_cost_usd"):  # fmt: skip
            assert sum(getattr(t, money) for t in chat.tenants) == pytest.approx(
                getattr(chat, money), rel=1e-12, abs=1e-12
            ), money
        assert sum(t.input_cost_usd + t.output_cost_usd for t in chat.tenants) == pytest.approx(
            chat.total_cost_usd, rel=1e-12
        )


def test_separate_headroom_is_the_services_own_line(filled: AuditableLedgerStore) -> None:
    chat = _chat(_report(filled, headroom_policy="separate"))
    head = _tenant(chat, "__headroom__")
    assert head.kind == "headroom"
    assert chat.tenants[-1] is head
    # hour 0: 1800 s H100 (0.5 MJ) + 900 s A100 (0.25 MJ); hour 2: 3600 s H100 (0.5 MJ)
    assert head.allocated_gpu_hours == pytest.approx((1800 + 900 + 3600) / 3600)
    assert head.busy_gpu_hours == 0
    assert head.energy_kwh == pytest.approx((0.5e6 + 0.25e6 + 0.5e6) / KWH)
    b = _tenant(chat, "team-b")
    assert b.allocated_gpu_hours == pytest.approx((1800 + 900) * WB / W0 / 3600)
    assert b.busy_gpu_hours == pytest.approx(b.allocated_gpu_hours)
    assert b.energy_kwh == pytest.approx((0.5e6 + 0.25e6) * WB / W0 / KWH)
    a = _tenant(chat, "team-a")
    assert a.allocated_gpu_hours == pytest.approx(((1800 + 900) * WA / W0 + 3600) / 3600)


def test_idle_share_follows_the_tenants_gpu_hours(filled: AuditableLedgerStore) -> None:
    r = _report(filled, idle_policy="share-weighted")
    chat = _chat(r)
    embed = next(line for line in r.lines if line.service == "embed")
    assert embed.tenants == ()  # nobody counted its callers: not a shared service
    # H100 idle (3600 s, 0.2 MJ) goes to chat and embed by internal cost on H100;
    # A100 idle (1800 s, 0.1 MJ) to chat alone
    idle_h100 = RH + 0.2e6 / KWH * EH
    chat_h100 = 3 * RH + 3.5e6 / KWH * EH  # chat's 10,800 s and 3.5 MJ on H100
    embed_h100 = RH + 1.0e6 / KWH * EH
    chat_share_h100 = idle_h100 * chat_h100 / (chat_h100 + embed_h100)
    chat_share_a100 = 0.5 * RA + 0.1e6 / KWH * EA
    assert chat.idle_share_usd == pytest.approx(chat_share_h100 + chat_share_a100)
    b = _tenant(chat, "team-b")
    b_h100 = 3600 * WB / W0 + 3600 * (5400 * WB / W0) / 9000
    b_a100 = 1800 * WB / W0
    assert b.idle_share_usd == pytest.approx(
        chat_share_h100 * b_h100 / 10_800 + chat_share_a100 * b_a100 / 1800, rel=1e-12
    )


def test_measured_weights_change_with_the_engine_fixed_ratio_from_config(
    filled: AuditableLedgerStore,
) -> None:
    from gpuledger.chargeback.report.tenant_split import TokenWeights

    chat = _chat(_report(filled, token_weights=TokenWeights(cached_prompt=0.5, generation=2.0)))
    a = _tenant(chat, "team-a")
    # hour 0 (measured: generation 10): 500k + 0.5·100k + 10·20k; hour 1 (fixed 2): 100k + 2·10k
    assert a.weighted_tokens == pytest.approx(750_000 + 120_000)


def test_fixed_ratio_everywhere_when_the_engine_is_not_used(filled: AuditableLedgerStore) -> None:
    from gpuledger.chargeback.report.tenant_split import TokenWeights

    chat = _chat(_report(filled, token_weights=TokenWeights(0.1, 4.0, from_engine=False)))
    a = _tenant(chat, "team-a")
    # hour 0 with generation 4: 510,000 + 4·20,000; hour 1: 100,000 + 4·10,000
    assert a.weighted_tokens == pytest.approx(590_000 + 140_000)
    assert a.weights == "fixed-ratio"
    assert a.fixed_ratio_share == 1.0


def test_config_keys_reach_the_report_and_bad_values_are_refused() -> None:
    from pydantic import ValidationError

    from gpuledger.chargeback.report.config import ReportConfig
    from gpuledger.chargeback.report.monthly import report_options

    cfg = ReportConfig.model_validate(
        {"headroom_policy": "separate", "token_weights": {"cached_prompt": 0.25, "generation": 3}}
    )
    opts = report_options(cfg)
    assert opts.headroom_policy == "separate"
    assert (opts.token_weights.cached_prompt, opts.token_weights.generation) == (0.25, 3.0)
    assert opts.token_weights.from_engine
    for bad in (
        {"headroom_policy": "share"},
        {"token_weights": {"cached_prompt": 1.5}},
        {"token_weights": {"generation": 0}},
        {"token_weights": {"prompt": 1}},
    ):
        with pytest.raises(ValidationError):
            ReportConfig.model_validate(bad)


def test_per_gpu_model_parts_are_exact_and_reach_focus(filled: AuditableLedgerStore) -> None:
    from gpuledger.chargeback.report.writers.focus import focus_rows

    r = _report(filled)
    chat = _chat(r)
    b = _tenant(chat, "team-b")
    parts = {p.gpu_model: p for p in b.models}
    # hour 0 only: 3600 s H100 (1.0 MJ) and 1800 s A100 (0.5 MJ) × WB / W0, plus the
    # pooled hour 2 (3600 s H100, 0.5 MJ) by what team-b got (5400·WB/W0 of 9000 s)
    got = 5400 * WB / W0
    assert parts[H100].allocated_gpu_hours == pytest.approx(
        (3600 * WB / W0 + 3600 * got / 9000) / 3600
    )
    assert parts[A100].allocated_gpu_hours == pytest.approx(1800 * WB / W0 / 3600)
    assert parts[A100].energy_kwh == pytest.approx(0.5e6 * WB / W0 / KWH)
    assert parts[A100].total_cost_usd == pytest.approx(
        1800 * WB / W0 / 3600 * RA + 0.5e6 * WB / W0 / KWH * EA
    )
    rows = [row for row in focus_rows(r) if row["x_Service"] == "chat"]
    b_a100 = next(x for x in rows if x["x_Tenant"] == "team-b" and x["x_GpuModel"] == A100)
    assert float(b_a100["PricingQuantity"]) == pytest.approx(parts[A100].allocated_gpu_hours)
    assert float(b_a100["BilledCost"]) == pytest.approx(parts[A100].total_cost_usd)
    assert sum(float(x["BilledCost"]) for x in rows) == pytest.approx(chat.total_cost_usd)
