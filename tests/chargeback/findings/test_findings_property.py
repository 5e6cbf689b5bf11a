"""Over random months, no finding recommends below what the ledger observed: never fewer
GPUs than the high-percentile busy time needs (in the target class's throughput), never
a GPU class or MIG profile smaller than the observed peak memory, never keeping fewer
GPUs of a model than the high percentile of concurrent use. The percentile is recomputed
here (nearest rank: the ceil(q x n)-th smallest), not taken from the engine.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from gpuledger.chargeback.findings import FindingsConfig, find_in
from gpuledger.chargeback.findings.catalog import profiles_for
from gpuledger.chargeback.findings.inputs import ServiceHour, ServiceUsage
from gpuledger.chargeback.report.ratecard import load_rate_card
from tests.support import findings_fixtures as fx

MODELS = ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB", "NVIDIA L40S", "NVIDIA H200")
CARD = load_rate_card()  # the shipped card: its gpu_classes and tco rows


def p(values: list[float], q: float) -> float:
    return sorted(values)[math.ceil(q * len(values)) - 1]


@st.composite
def month(draw: st.DrawFn) -> tuple[list[ServiceUsage], list[fx.ModelUsage]]:
    services = []
    for k in range(draw(st.integers(1, 4))):
        n = draw(st.integers(72, 120))
        gpus = draw(st.integers(1, 6))
        model = draw(st.sampled_from(MODELS))
        hours = []
        for i in range(n):
            alloc = draw(st.sampled_from([gpus, gpus, max(1, gpus - 1)]))
            busy = draw(st.floats(0, 1)) * alloc * draw(st.sampled_from([0.02, 0.2, 1.0]))
            peak = draw(st.floats(0.5, 140))
            hours.append(ServiceHour(fx.hour(i), alloc * 3600.0, busy * 3600.0, peak * fx.GIB))
        services.append(ServiceUsage("ns", f"s{k}", model, tuple(hours), ()))
    used = draw(st.lists(st.floats(0, 8), min_size=72, max_size=100))
    fleet = fx.ModelUsage(
        MODELS[0],
        tuple(fx.ModelHour(fx.hour(i), 8 * 3600.0, (8 - u) * 3600.0) for i, u in enumerate(used)),
    )
    return services, [fleet]


@settings(max_examples=150, deadline=None)
@given(
    month(),
    st.sampled_from([0.5, 0.6, 0.8, 1.0]),
    st.sampled_from([0.9, 0.95, 0.99]),
)
def test_findings_never_recommend_below_observed_need(
    data: tuple[list[ServiceUsage], list[fx.ModelUsage]], target: float, q: float
) -> None:
    services, models = data
    cfg = FindingsConfig(target_utilization=target, percentile=q, min_savings_usd=0,
                         min_evidence_hours=72)  # fmt: skip
    found = find_in(fx.inputs(services, models), CARD, cfg)
    by_name = {(s.namespace, s.service): s for s in services}
    for f in found:
        assert f.monthly_savings_usd > 0
        assert f.recommended_gpus < f.current_gpus + 1e-9 or f.kind == "smaller_gpu_class"
        if f.kind == "idle_capacity":
            used = [h.used_gpus for h in models[0].hours]
            assert f.recommended_gpus >= p(used, q) - 1e-9
            continue
        svc = by_name[(f.namespace, f.service)]
        hours = svc.hours
        busy = p([h.busy_gpus for h in hours], q)
        peak = max(h.peak_memory_bytes or 0.0 for h in hours) / fx.GIB
        if f.kind == "over_provisioned":
            assert f.recommended_gpus >= math.ceil(busy - 1e-9)
            assert f.recommended_gpus >= busy / target - 1e-9
        elif f.kind == "smaller_gpu_class":
            now = CARD.class_spec(CARD.gpu_class(svc.gpu_model))
            there = CARD.class_spec(str(f.evidence["target_class"]))
            assert now is not None
            assert there is not None
            assert there.memory_gib >= peak
            # the new GPUs, at the target's throughput, carry the p-busy at the target
            assert f.recommended_gpus * there.relative_throughput * target >= (
                busy * now.relative_throughput - 1e-9
            )
        elif f.kind == "mig_fit":
            prof = next(
                x for x in profiles_for(CARD.gpu_class(svc.gpu_model))
                if x.name == f.evidence["mig_profile"]
            )  # fmt: skip
            share = p([h.busy_gpu_seconds / h.allocated_gpu_seconds for h in hours], q)
            assert prof.memory_gib >= peak
            assert prof.compute_fraction * target >= share - 1e-9
