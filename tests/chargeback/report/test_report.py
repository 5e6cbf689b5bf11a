"""The monthly chargeback against a ledger built from hand-computed numbers.

Every expectation below is computed here from the fixture's stated seconds and joules
(tests/support/report_fixtures.py) and the default rate card's YAML figures, not by the code under
test. The same assertions run on SQLite and on a real PostgreSQL 18.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from gpuledger.chargeback.attribution.claims import IDLE, UNATTRIBUTED
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.chargeback.ledger.tables import CoverageRow, UsageRow
from gpuledger.chargeback.report.build import NoLedgerData, ReportOptions, build_report
from gpuledger.chargeback.report.model import Month, Report, ServiceLine
from gpuledger.chargeback.report.ratecard import load_rate_card
from tests.support import report_fixtures as fx
from tests.support.report_expected import (
    CHAT_API,
    CHAT_BUSY,
    CHAT_COST,
    CHAT_GEN,
    CHAT_H,
    CHAT_KWH,
    CHAT_PROMPT,
    EH,
    EMBED_A100_H,
    EMBED_COST,
    EMBED_H100_H,
    EMBED_H100_KWH,
    IDLE_COST,
    IDLE_H,
    RA,
    RH,
    UNATTR_COST,
    H,
    rental,
)

OCTOBER = Month.parse("2026-10")


@pytest.fixture
def filled(ledger_store: AuditableLedgerStore) -> AuditableLedgerStore:
    fx.fill(ledger_store)
    return ledger_store


def _report(store: AuditableLedgerStore, policy: str = "separate") -> Report:
    opts = ReportOptions(idle_policy=policy)  # type: ignore[arg-type]
    return build_report(store, load_rate_card(), OCTOBER, options=opts, now=fx.NOW)


def _line(report: Report, service: str) -> ServiceLine:
    return next(line for line in report.lines if line.service == service)


def test_service_figures_equal_hand_computed(filled: AuditableLedgerStore) -> None:
    r = _report(filled)
    chat = _line(r, "chat")
    assert chat.namespace == "prod"
    assert chat.kind == "service"
    assert chat.gpu_models == (fx.H100,)
    assert chat.allocated_gpu_hours == pytest.approx(CHAT_H) == pytest.approx(930.0)
    assert chat.busy_gpu_hours == pytest.approx(CHAT_BUSY)
    assert chat.utilization_ratio == pytest.approx(CHAT_BUSY / CHAT_H)
    assert chat.energy_kwh == pytest.approx(CHAT_KWH)
    assert chat.capacity_cost_usd == pytest.approx(CHAT_H * RH)
    assert chat.energy_cost_usd == pytest.approx(CHAT_KWH * EH)
    assert chat.total_cost_usd == pytest.approx(CHAT_COST)
    assert chat.rental_hyperscaler_usd == pytest.approx(CHAT_H * rental("H100-80GB", "hyperscaler"))
    assert chat.rental_hyperscaler_usd == pytest.approx(930.0 * 6.88)  # AWS p5.48xlarge
    assert "AWS p5.48xlarge" in chat.rental_hyperscaler_basis
    assert chat.rental_specialist_usd == pytest.approx(930.0 * 2.69)  # RunPod
    assert chat.savings_vs_hyperscaler_usd == pytest.approx(930.0 * 6.88 - CHAT_COST)
    assert chat.prompt_tokens == pytest.approx(CHAT_PROMPT)
    assert chat.generation_tokens == pytest.approx(CHAT_GEN)
    assert chat.probe_prompt_tokens == pytest.approx(1.2e5)
    assert chat.token_api_usd == pytest.approx(CHAT_API)
    assert "Groq" in chat.token_api_basis
    assert chat.savings_vs_token_api_usd == pytest.approx(CHAT_API - CHAT_COST)
    assert chat.cost_per_1m_tokens_usd == pytest.approx(CHAT_COST / (CHAT_PROMPT + CHAT_GEN) * 1e6)
    # p99 nearest rank over the 990 successful probes: ceil(0.99 * 990) = 981st
    ttfts = sorted(0.040 + i * 1e-5 for i in range(990))
    assert chat.p99_ttft_s == pytest.approx(ttfts[math.ceil(0.99 * 990) - 1])
    assert chat.p99_tpot_s == pytest.approx(0.012)
    assert chat.probes == 1000
    assert chat.probe_success_ratio == pytest.approx(0.99)
    assert chat.verdicts_agree == 990
    assert chat.verdicts_disagree == 0
    assert chat.validation == "validated"
    assert not chat.counterfactual_flagged

    embed = _line(r, "embed")
    assert embed.gpu_models == (fx.A100, fx.H100)
    assert embed.allocated_gpu_hours == pytest.approx(EMBED_H100_H + EMBED_A100_H)
    assert embed.total_cost_usd == pytest.approx(EMBED_COST)
    assert embed.rental_hyperscaler_usd == pytest.approx(EMBED_H100_H * 6.88 + 100 * 3.43)
    assert embed.rental_specialist_usd == pytest.approx(EMBED_H100_H * 2.69 + 100 * 2.79)
    assert embed.token_api_usd is None
    assert "BAAI/bge-m3" in embed.token_api_basis  # no API class: said, not priced at 0
    assert embed.cost_per_1m_tokens_usd == pytest.approx(EMBED_COST / 5.0e8 * 1e6)
    assert embed.validation == "probe-failures"
    # its only counterfactuals are rentals, resting on fully observed hours: not flagged
    # (issue 16; the probe failures flag its latency, tests/chargeback/report/test_flags.py)
    assert not embed.counterfactual_flagged


def test_unpriced_gpu_model_is_listed_not_zero(filled: AuditableLedgerStore) -> None:
    r = _report(filled)
    train = _line(r, "train")
    assert train.unpriced_gpu_models == (fx.B200,)
    assert train.allocated_gpu_hours == pytest.approx(744.0)
    for value in (train.internal_cost_usd, train.total_cost_usd, train.rental_hyperscaler_usd,
                  train.savings_vs_hyperscaler_usd, train.cost_per_1m_tokens_usd):  # fmt: skip
        assert value is None
    assert "NVIDIA B200" in train.rental_hyperscaler_basis
    assert "no billable tokens" in train.token_api_basis
    assert r.unpriced_gpu_models == {fx.B200: pytest.approx(744.0)}
    assert r.totals.unpriced_gpu_hours == pytest.approx(744.0)
    assert any(n.startswith("UNPRICED") and fx.B200 in n for n in r.notes)
    assert train.validation == "no-probes"
    # no rental rate, no tokens: it has no counterfactual to flag (issue 16)
    assert not train.counterfactual_flagged


def test_conservation_services_plus_idle_equal_capacity(filled: AuditableLedgerStore) -> None:
    r = _report(filled)
    # capacity actually owned and observed: 3 H100 x 744 h and the A100's 100 h
    observed_capacity = 3 * H * RH + 100 * RA
    assert r.totals.capacity_cost_usd == pytest.approx(observed_capacity, rel=1e-12)
    assert sum(line.capacity_cost_usd or 0.0 for line in r.lines) == pytest.approx(
        observed_capacity, rel=1e-12
    )
    expected_total = CHAT_COST + EMBED_COST + UNATTR_COST + IDLE_COST
    assert r.totals.total_cost_usd == pytest.approx(expected_total, rel=1e-12)
    assert sum(line.total_cost_usd or 0.0 for line in r.lines) == pytest.approx(expected_total)
    idle = _line(r, IDLE)
    assert idle.kind == "idle"
    assert idle.total_cost_usd == pytest.approx(IDLE_COST)
    assert idle.rental_hyperscaler_usd is None
    assert not idle.counterfactual_flagged
    assert _line(r, UNATTRIBUTED).total_cost_usd == pytest.approx(UNATTR_COST)
    assert r.totals.idle_gpu_hours == pytest.approx(IDLE_H)
    assert r.totals.allocated_gpu_hours == pytest.approx(3 * H + 100 + 744)
    assert [line.kind for line in r.lines][-2:] == ["unattributed", "idle"]


@pytest.mark.parametrize("policy", ["share-weighted", "share-even"])
def test_idle_policies_move_cost_never_make_any(filled: AuditableLedgerStore, policy: str) -> None:
    r = _report(filled, policy)
    # H100 idle goes to the three H100 holders: chat, embed's H100 part, unattributed
    embed_h100 = EMBED_H100_H * RH + EMBED_H100_KWH * EH
    takers = {"chat": CHAT_COST, "embed": embed_h100, UNATTRIBUTED: UNATTR_COST}
    weights = takers if policy == "share-weighted" else dict.fromkeys(takers, 1.0)
    for service, weight in weights.items():
        expected = IDLE_COST * weight / sum(weights.values())
        assert _line(r, service).idle_share_usd == pytest.approx(expected), service
    assert _line(r, "chat").total_cost_usd == pytest.approx(
        CHAT_COST + IDLE_COST * weights["chat"] / sum(weights.values())
    )
    idle = _line(r, IDLE)
    assert idle.internal_cost_usd == pytest.approx(IDLE_COST)
    assert idle.idle_share_usd == pytest.approx(-IDLE_COST)
    assert idle.total_cost_usd == pytest.approx(0.0, abs=1e-9)
    total = CHAT_COST + EMBED_COST + UNATTR_COST + IDLE_COST
    assert r.totals.total_cost_usd == pytest.approx(total, rel=1e-12)
    assert sum(line.total_cost_usd or 0.0 for line in r.lines) == pytest.approx(total, rel=1e-12)
    assert r.idle_policy == policy
    assert any(policy in n for n in r.notes)


def test_coverage_shows_the_node_outage(filled: AuditableLedgerStore) -> None:
    r = _report(filled)
    cov = {c.node: c for c in r.coverage}
    assert cov["n1"].gpus == 2
    assert cov["n1"].coverage_ratio == pytest.approx(1.0)
    assert cov["n2"].gpus == 3
    assert cov["n2"].observed_gpu_hours == pytest.approx(100 + 744 + 744)
    assert cov["n2"].expected_gpu_hours == pytest.approx(3 * 744)
    assert cov["n2"].first_hour == "2026-10-01T00:00:00Z"
    assert cov["n2"].last_hour == "2026-10-31T23:00:00Z"
    assert r.fleet_coverage_ratio == pytest.approx((1488 + 1588) / (5 * 744))
    assert any(n.startswith("Coverage is") for n in r.notes)


def test_trend_has_the_earlier_month(filled: AuditableLedgerStore) -> None:
    r = _report(filled)
    assert [p.month for p in r.trend] == ["2026-09", "2026-10"]
    sep = r.trend[0]
    assert sep.allocated_gpu_hours == pytest.approx(1.0)
    assert sep.internal_cost_usd == pytest.approx(RH + 2.0e6 / 3.6e6 * EH)
    assert sep.rental_hyperscaler_usd == pytest.approx(6.88)
    assert r.trend[1].internal_cost_usd == pytest.approx(r.totals.internal_cost_usd)


def test_report_header_names_card_policy_and_period(filled: AuditableLedgerStore) -> None:
    r = _report(filled)
    card = load_rate_card()
    assert (r.rate_card.version, r.rate_card.digest) == (card.version, card.digest)
    assert r.period_start == "2026-10-01T00:00:00+00:00"
    assert r.period_end == "2026-11-01T00:00:00+00:00"
    assert r.period_hours == 744
    assert r.complete


def test_month_under_way_covers_complete_hours_only(
    ledger_store: AuditableLedgerStore,
) -> None:
    store = ledger_store
    start = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp())
    rows = [
        UsageRow(start + 3600 * h, "n1", "g", "ns", "svc", fx.H100, "", 3600.0, 0.0, 0.0)
        for h in range(3)
    ]
    store.upsert(rows, [CoverageRow(r.hour_start, "n1", "g", fx.H100, 3600.0) for r in rows])
    now = datetime(2026, 12, 1, 2, 30, tzinfo=UTC)  # hour 2 is still open
    r = build_report(store, load_rate_card(), Month.parse("2026-12"), now=now)
    assert not r.complete
    assert r.period_hours == 2
    assert r.totals.allocated_gpu_hours == pytest.approx(2.0)
    assert r.coverage[0].coverage_ratio == pytest.approx(1.0)


def test_month_without_data_is_a_clear_error(filled: AuditableLedgerStore) -> None:
    with pytest.raises(NoLedgerData, match="2026-08"):
        build_report(filled, load_rate_card(), Month.parse("2026-08"), now=fx.NOW)
    with pytest.raises(NoLedgerData, match="not started"):
        build_report(filled, load_rate_card(), Month.parse("2027-03"), now=fx.NOW)


@pytest.mark.parametrize("text", ["2026-13", "2026-1", "october", "2026-10-01"])
def test_month_parsing_refuses_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="YYYY-MM"):
        Month.parse(text)


def test_month_arithmetic() -> None:
    assert Month.parse("2026-01").previous() == Month(2025, 12)
    assert Month.parse("2026-12").next() == Month(2027, 1)
    assert Month.parse("2024-02").hours == 29 * 24
    assert Month.parse("2026-10").end == datetime(2026, 11, 1, tzinfo=UTC)
