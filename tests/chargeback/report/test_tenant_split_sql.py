"""The store-side split (one SQL read spreading each hour's coefficients over the tenants)
gives what dividing hour by hour in Python gives, on SQLite and PostgreSQL.

The Python reference (``ServiceSplit`` fed every tenant of every hour) is the rule as
docs/tenants.md states it and as the conservation property test checks it; the report
uses the SQL path so that a month of a thousand tenants never crosses into Python row by
row. Random ledgers (seeded): services on one or two GPU models, hours with and without
engine seconds, gateway gaps, hours without tokens, tenants that come and go.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from gpuledger.chargeback.ledger.model import EngineTimeGroup, TokenGroup
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.chargeback.ledger.tables import (
    CoverageRow,
    EngineTimeRow,
    TenantTokenRow,
    TokenRow,
    UsageRow,
)
from gpuledger.chargeback.report.tenant_split import (
    ServiceHour,
    ServiceSplit,
    TenantShare,
    TokenWeights,
    _HourLine,
    split_services,
)

START = datetime(2026, 10, 1, tzinfo=UTC)
END = datetime(2026, 10, 2, tzinfo=UTC)
T0 = int(START.timestamp())
MODELS = ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB")
TENANTS = ("team-a", "team-b", "team-c", "__other__", "__untenanted__", "x'; DROP TABLE t;--")


def _random_ledger(
    store: AuditableLedgerStore, seed: int
) -> dict[tuple[str, str], list[ServiceHour]]:
    """Write a random day into ``store``; return the same facts as reference hours."""
    rng = random.Random(seed)
    reference: dict[tuple[str, str], list[ServiceHour]] = {}
    usage: list[UsageRow] = []
    coverage: list[CoverageRow] = []
    tokens: list[TokenRow] = []
    engine: list[EngineTimeRow] = []
    tenant_rows: list[TenantTokenRow] = []
    for s, (ns, svc) in enumerate((("llm", "chat"), ("llm", "code"))):
        hours: list[ServiceHour] = []
        models = MODELS[: 1 + s]
        for h in range(24):
            hs = T0 + 3600 * h
            hour = ServiceHour(hour_start=hs)
            for m, model in enumerate(models):
                alloc = rng.choice((3600.0, 1800.0, rng.uniform(0, 3600)))
                busy = alloc * rng.random()
                energy = rng.uniform(0, 2e6)
                gpu = f"{svc}-g{m}"
                usage.append(UsageRow(hs, "n1", gpu, ns, svc, model, "", alloc, busy, energy))
                coverage.append(CoverageRow(hs, "n1", gpu, model, alloc))
                hour.usage[model] = (alloc, busy, energy)
            gateway_up = rng.random() > 0.15
            quiet = rng.random() < 0.1  # nobody called this hour
            counted_p = counted_g = 0.0
            if gateway_up and not quiet:
                for tenant in rng.sample(TENANTS, rng.randint(1, len(TENANTS))):
                    p = float(rng.randint(0, 50_000))
                    c = float(rng.randint(0, int(p)))
                    g = float(rng.randint(0, 20_000))
                    r = float(rng.randint(1, 100))
                    tenant_rows.append(TenantTokenRow(hs, "gw", ns, svc, "m", tenant, r, p, c, g))
                    hour.tenants.append(_HourLine(tenant, r, p, c, g))
                    counted_p += p
                    counted_g += g
            if not quiet and rng.random() > 0.1:  # the engine was scraped
                probe_p, probe_g = float(rng.randint(0, 50)), float(rng.randint(0, 50))
                prompt = counted_p * rng.uniform(0.95, 1.1) + probe_p
                generation = counted_g * rng.uniform(0.95, 1.1) + probe_g
                tokens.append(
                    TokenRow(hs, "n1", ns, svc, "m", prompt, generation, probe_p, probe_g)
                )
                hour.tokens = TokenGroup(prompt, generation, probe_p, probe_g)
                if rng.random() > 0.2:  # … and reported prefill/decode seconds
                    hits = prompt * rng.random() * 0.5
                    pre, dec = rng.uniform(1, 100), rng.uniform(1, 5000)
                    engine.append(EngineTimeRow(hs, "n1", ns, svc, "m", pre, dec, 10, 10,
                                                prompt, hits))  # fmt: skip
                    hour.engine = EngineTimeGroup(pre, dec, 10, 10, prompt, hits)
            hours.append(hour)
        reference[(ns, svc)] = hours
    store.upsert(usage, coverage)
    store.upsert_tokens(tokens)
    store.upsert_engine_time(engine)
    store.upsert_tenant_tokens(tenant_rows)
    return reference


def _same(got: TenantShare, want: TenantShare) -> None:
    for name in ("requests", "prompt_tokens", "cached_prompt_tokens", "generation_tokens",
                 "weighted_tokens", "fixed_ratio_weight", "input_seconds"):  # fmt: skip
        assert getattr(got, name) == pytest.approx(getattr(want, name), rel=1e-9, abs=1e-6), name
    for field in ("allocated_seconds", "busy_seconds", "energy_joules"):
        g, w = getattr(got, field), getattr(want, field)
        for model in set(g) | set(w):
            assert g.get(model, 0.0) == pytest.approx(w.get(model, 0.0), rel=1e-9, abs=1e-6), (
                field,
                model,
            )


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("policy", ["spread", "separate"])
def test_sql_split_equals_the_hour_by_hour_reference(
    ledger_store: AuditableLedgerStore, seed: int, policy: str
) -> None:
    reference = _random_ledger(ledger_store, seed)
    weights = TokenWeights(cached_prompt=0.2, generation=3.0)
    got = split_services(ledger_store, START, END, policy=policy, weights=weights)  # type: ignore[arg-type]
    assert set(got) == set(reference)
    for key, hours in reference.items():
        split = ServiceSplit(policy, weights)  # type: ignore[arg-type]
        for hour in hours:
            split.add_hour(hour)
        want = split.finish()
        assert set(got[key]) == set(want), key
        for tenant, line in want.items():
            _same(got[key][tenant], line)
