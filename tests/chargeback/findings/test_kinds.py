"""Each kind on a hand-stated month: the expected recommendation and dollars are computed
here from docs/findings.md's formulas and the test card's round rates
(tests/support/findings_fixtures.py: H100 $2.00, L4 $0.25 per GPU-hour), never by the
engine's helpers. Percentiles are nearest-rank: the ceil(0.95 x n)-th smallest value.
"""

from __future__ import annotations

import math

import pytest

from gpuledger.chargeback.findings import FindingsConfig, find_in
from gpuledger.chargeback.findings.kinds import mig_fit, over_provisioned, zombie
from gpuledger.chargeback.findings.kinds.common import Context
from gpuledger.chargeback.findings.model import Finding
from tests.support import findings_fixtures as fx

CFG = FindingsConfig()  # target 0.6, p95, $100, 72 h, headroom 0.1, epsilon 0.01, 6 h


def only(findings: tuple[Finding, ...] | list[Finding], kind: str) -> list[Finding]:
    return [f for f in findings if f.kind == kind]


# -- over-provisioned ---------------------------------------------------------------------


def test_over_provisioned_sized_on_the_p95_not_the_mean() -> None:
    # 4 GPUs every hour; busy 0.5 GPUs in 9 hours of 10, 1.1 GPUs in the 10th:
    # sorted, 648 hours at 0.5 then 72 at 1.1; rank ceil(0.95 x 720) = 684 → p95 = 1.1.
    svc = fx.service("chat", fx.series(lambda i: 4, lambda i: 1.1 if i % 10 == 9 else 0.5))
    found = only(find_in(fx.inputs([svc]), fx.card(), CFG), "over_provisioned")
    recommended = math.ceil(1.1 / 0.6)  # 2
    mean_based = math.ceil((0.9 * 0.5 + 0.1 * 1.1) / 0.6)  # 1: what a mean would say
    assert recommended == 2
    assert mean_based == 1
    assert len(found) == 1
    f = found[0]
    assert f.recommended_gpus == recommended
    assert f.current_gpus == pytest.approx(4.0)
    assert f.monthly_savings_usd == pytest.approx((4 - 2) * 720 * fx.H100_RATE)  # $2,880
    assert f.hours_of_evidence == 720
    assert f.evidence["p95_busy_gpus"] == pytest.approx(1.1)
    assert "tco H100-80GB" in str(f.evidence["price_basis"])
    assert f.gpu_model == "H100-80GB"
    assert f.namespace == "team"
    assert f.service == "chat"
    assert f.assumption.endswith(".")
    assert f.assumption.count(".") >= 1


def test_a_bursty_service_is_not_flagged() -> None:
    # 2 GPUs; busy 0.05 GPUs most hours but 1.2 GPUs in 1 hour of 10: the mean (0.165)
    # would fit 1 GPU, the p95 (1.2) needs ceil(1.2 / 0.6) = 2, what it has.
    svc = fx.service("bursty", fx.series(lambda i: 2, lambda i: 1.2 if i % 10 == 0 else 0.05))
    assert math.ceil((0.9 * 0.05 + 0.1 * 1.2) / 0.6) == 1
    assert only(find_in(fx.inputs([svc]), fx.card(), CFG), "over_provisioned") == []


def test_a_service_already_at_target_is_not_flagged() -> None:
    svc = fx.service("steady", fx.series(lambda i: 2, lambda i: 1.2))  # 1.2 / 2 = 60 %
    assert find_in(fx.inputs([svc]), fx.card(), CFG) == ()


def test_savings_count_only_hours_above_the_recommendation() -> None:
    # 3 GPUs in the first 360 hours, 1 GPU after; p95 busy 0.3 → 1 GPU recommended:
    # Σ max(0, allocated − 1) = 360 x 2 GPU-hours.
    svc = fx.service("shrunk", fx.series(lambda i: 3 if i < 360 else 1, lambda i: 0.3))
    (f,) = only(find_in(fx.inputs([svc]), fx.card(), CFG), "over_provisioned")
    assert f.recommended_gpus == 1
    assert f.monthly_savings_usd == pytest.approx(360 * 2 * fx.H100_RATE)
    assert f.current_gpus == pytest.approx((360 * 3 + 360 * 1) / 720)


def test_too_few_hours_of_evidence_and_too_small_savings_are_filtered() -> None:
    short = fx.service("short", fx.series(lambda i: 4, lambda i: 0.1, hours=range(71)))
    assert find_in(fx.inputs([short]), fx.card(), CFG) == ()
    # 72 hours: (4 − 1) x 72 x $2 = $432 ≥ $100 → reported; at min $500 → not
    enough = fx.service("short", fx.series(lambda i: 4, lambda i: 0.1, hours=range(72)))
    (f,) = find_in(fx.inputs([enough]), fx.card(), CFG)
    assert f.monthly_savings_usd == pytest.approx(3 * 72 * fx.H100_RATE)
    assert find_in(fx.inputs([enough]), fx.card(), FindingsConfig(min_savings_usd=500)) == ()


def test_a_model_the_card_cannot_price_gives_no_finding() -> None:
    svc = fx.service("odd", fx.series(lambda i: 4, lambda i: 0.1), model="Some Other GPU")
    assert over_provisioned.find(Context(fx.inputs([svc]), CFG, fx.card())) == []


# -- smaller GPU class -------------------------------------------------------------------


def test_smaller_gpu_class_when_memory_and_scaled_busy_fit() -> None:
    # 1 H100, busy 0.02 GPUs, peak 10 GiB: 10 x 1.1 = 11 ≤ 24 GiB (L4);
    # needed L4 = ceil(0.02 x 1.0 / 0.25 / 0.6) = 1; now 720 x $2, there 1 x 720 x $0.25.
    svc = fx.service("embed", fx.series(lambda i: 1, lambda i: 0.02, lambda i: 10))
    found = find_in(fx.inputs([svc]), fx.card(), CFG)
    needed = math.ceil(0.02 * 1.0 / 0.25 / 0.6)
    assert needed == 1
    (f,) = found  # the MIG alternative saves less and is not reported beside it
    assert f.kind == "smaller_gpu_class"
    assert f.recommended_gpus == needed
    assert f.monthly_savings_usd == pytest.approx(720 * fx.H100_RATE - 720 * fx.L4_RATE)
    assert f.evidence["target_class"] == "L4"
    assert f.evidence["peak_memory_gib"] == pytest.approx(10.0)


def test_no_smaller_class_when_peak_memory_does_not_fit() -> None:
    # 22 GiB x 1.1 = 24.2 > 24 GiB: L4 refused
    svc = fx.service("big", fx.series(lambda i: 1, lambda i: 0.02, lambda i: 22))
    found = find_in(fx.inputs([svc]), fx.card(), CFG)
    assert only(found, "smaller_gpu_class") == []


def test_smaller_class_sized_on_scaled_busy_and_refused_when_it_saves_nothing() -> None:
    # busy 0.5 H100 = 2 L4 at full speed → ceil(0.5 / 0.25 / 0.6) = 4 L4 ($1.00/h) vs
    # 1 H100 ($2/h): still cheaper, saves 720 x (2 − 4 x 0.25)
    svc = fx.service("mid", fx.series(lambda i: 1, lambda i: 0.5, lambda i: 10))
    (f,) = only(find_in(fx.inputs([svc]), fx.card(), CFG), "smaller_gpu_class")
    assert f.recommended_gpus == math.ceil(0.5 / 0.25 / 0.6) == 4
    assert f.monthly_savings_usd == pytest.approx(720 * (2.0 - 4 * 0.25))
    busy = fx.service("busy", fx.series(lambda i: 1, lambda i: 1.0, lambda i: 10))
    # 1.0 / 0.25 / 0.6 = 6.67 → 7 L4 x $0.25 = $1.75 < $2.00 → saves 720 x 0.25
    (g,) = only(find_in(fx.inputs([busy]), fx.card(), CFG), "smaller_gpu_class")
    assert g.monthly_savings_usd == pytest.approx(720 * (2.0 - 7 * 0.25))
    # at target 0.5: ceil(1.0 / 0.25 / 0.5) = 8 L4 = $2.00: no saving, no finding
    at_half = FindingsConfig(target_utilization=0.5)
    assert only(find_in(fx.inputs([busy]), fx.card(), at_half), "smaller_gpu_class") == []


def test_no_smaller_class_without_peak_memory() -> None:
    svc = fx.service("blind", fx.series(lambda i: 1, lambda i: 0.02))
    found = find_in(fx.inputs([svc]), fx.card(), CFG)
    assert only(found, "smaller_gpu_class") == []
    assert only(found, "mig_fit") == []


# -- MIG fit ------------------------------------------------------------------------------


def test_mig_fit_picks_the_smallest_profile_that_holds_memory_and_compute() -> None:
    # H100 profiles (MIG user guide): 1g.10gb (1/7 SMs, 1/8 memory), 1g.20gb (1/7, 2/8) ...
    # peak 15 GiB x 1.1 = 16.5 > 10 → not 1g.10gb; ≤ 20 → 1g.20gb; busy 5 % of the GPU
    # ≤ 1/7 x 0.6 = 8.6 %. Share = max(1/7, 2/8) = 1/4: frees 3/4 of 720 GPU-hours.
    svc = fx.service("small", fx.series(lambda i: 1, lambda i: 0.05, lambda i: 15))
    ctx = Context(fx.inputs([svc]), CFG, fx.card())
    (f,) = mig_fit.find(ctx)
    assert f.evidence["mig_profile"] == "1g.20gb"
    assert f.recommended_gpus == pytest.approx(0.25)
    assert f.monthly_savings_usd == pytest.approx(720 * (1 - 0.25) * fx.H100_RATE)  # $1,080


def test_mig_profile_that_would_not_fit_memory_is_not_recommended() -> None:
    # peak 45 GiB x 1.1 = 49.5 > 40 (3g.40gb, 4g.40gb): only 7g.80gb, the whole GPU
    svc = fx.service("wide", fx.series(lambda i: 1, lambda i: 0.05, lambda i: 45))
    assert mig_fit.find(Context(fx.inputs([svc]), CFG, fx.card())) == []


def test_mig_profile_needs_the_compute_share_too() -> None:
    # busy 30 % of the GPU: 1g/2g (2/7 x 0.6 = 17 %) too small, 3g.40gb (3/7 x 0.6 = 25.7 %)
    # too small, 4g.40gb (4/7 x 0.6 = 34 %) fits: share max(4/7, 4/8) = 4/7
    svc = fx.service("mid", fx.series(lambda i: 1, lambda i: 0.3, lambda i: 15))
    (f,) = mig_fit.find(Context(fx.inputs([svc]), CFG, fx.card()))
    assert f.evidence["mig_profile"] == "4g.40gb"
    assert f.monthly_savings_usd == pytest.approx(720 * (1 - 4 / 7) * fx.H100_RATE)


def test_mig_fit_reported_when_no_cheaper_class_is_on_the_card() -> None:
    svc = fx.service("small", fx.series(lambda i: 1, lambda i: 0.05, lambda i: 15))
    (f,) = find_in(fx.inputs([svc]), fx.card(without_l4_class=True), CFG)
    assert f.kind == "mig_fit"


def test_a_service_already_on_a_slice_is_not_sent_to_mig() -> None:
    svc = fx.service("slice", fx.series(lambda i: 1 / 7, lambda i: 0.01, lambda i: 5))
    assert mig_fit.find(Context(fx.inputs([svc]), CFG, fx.card())) == []


# -- idle capacity -----------------------------------------------------------------------


def test_idle_capacity_sized_on_the_p95_of_concurrent_use() -> None:
    # 8 H100 observed every hour; 3 in use in 700 hours, 5 in the other 20:
    # rank 684 of the sorted hours is 3 → keep 3; released Σ (8 − 3) = 5 x 720 GPU-hours.
    model = fx.fleet(lambda i: 8, lambda i: 5 if i % 36 == 0 else 3)
    assert sum(1 for i in range(720) if i % 36 == 0) == 20
    (f,) = find_in(fx.inputs(models=[model]), fx.card(), CFG)
    assert f.kind == "idle_capacity"
    assert f.service == ""
    assert f.gpu_model == "H100-80GB"
    assert f.current_gpus == 8
    assert f.recommended_gpus == 3
    assert f.monthly_savings_usd == pytest.approx(5 * 720 * fx.H100_RATE)  # $7,200


def test_a_fully_used_fleet_has_no_idle_capacity_finding() -> None:
    model = fx.fleet(lambda i: 8, lambda i: 8 if i % 10 == 0 else 7.5)
    assert find_in(fx.inputs(models=[model]), fx.card(), CFG) == ()


# -- zombies ------------------------------------------------------------------------------


def test_zombie_memory_held_with_no_busy_for_hours() -> None:
    # 2 GPUs, 20 GiB held; busy 0 in hours 100–147 (48 h) and 300–304 (5 h, under the
    # 6-hour threshold), 1.2 GPUs otherwise: wasted 2 x 48 GPU-hours x $2.
    def busy(i: int) -> float:
        return 0.0 if 100 <= i < 148 or 300 <= i < 305 else 1.2

    svc = fx.service("stale", fx.series(lambda i: 2, busy, lambda i: 20))
    (f,) = only(find_in(fx.inputs([svc]), fx.card(), CFG), "zombie")
    assert f.hours_of_evidence == 48
    assert f.monthly_savings_usd == pytest.approx(2 * 48 * fx.H100_RATE)  # $192
    assert f.recommended_gpus == 0
    assert f.current_gpus == pytest.approx(2)
    assert f.peak_hours == (fx.hour(100),)
    assert f.evidence["longest_run_hours"] == 48


def test_a_zombie_below_the_hour_threshold_is_not_reported() -> None:
    svc = fx.service("blip", fx.series(lambda i: 2, lambda i: 0.0 if 300 <= i < 305 else 1.2,
                                       lambda i: 20))  # fmt: skip
    assert only(find_in(fx.inputs([svc]), fx.card(), CFG), "zombie") == []


def test_a_gpu_held_with_no_process_on_it_is_a_zombie_too() -> None:
    # the ledger keeps memory and says 0 bytes for 48 hours: a pod holding 2 GPUs it never
    # touches. Right-sizing keeps at least one GPU, so this is the kind that reports it:
    # 2 x 48 GPU-hours x $2 wasted, and the finding says no process held them.
    svc = fx.service("empty", fx.series(lambda i: 2, lambda i: 0.0 if i < 48 else 1.2,
                                        lambda i: 0.0 if i < 48 else 20))  # fmt: skip
    (f,) = only(find_in(fx.inputs([svc]), fx.card(), CFG), "zombie")
    assert f.monthly_savings_usd == pytest.approx(2 * 48 * fx.H100_RATE)
    assert f.evidence["peak_memory_gib"] == 0
    assert "no process on them" in f.recommendation
    held = fx.service("stale", fx.series(lambda i: 2, lambda i: 0.0 if i < 48 else 1.2,
                                         lambda i: 20))  # fmt: skip
    (g,) = only(find_in(fx.inputs([held]), fx.card(), CFG), "zombie")
    assert "20.0 GiB of memory held" in g.recommendation


def test_zombie_without_memory_in_the_ledger_rests_on_the_allocation() -> None:
    svc = fx.service("stale", fx.series(lambda i: 2, lambda i: 0.0 if i < 48 else 1.2))
    (f,) = only(find_in(fx.inputs([svc]), fx.card(), CFG), "zombie")
    assert f.monthly_savings_usd == pytest.approx(2 * 48 * fx.H100_RATE)
    assert f.evidence["peak_memory_gib"] == "not measured"
    assert "no peak memory" in f.assumption


def test_gpu_time_held_by_no_pod_is_a_zombie() -> None:
    # __unattributed__ held half a GPU for 10 hours: 5 GPU-hours x $2 = $10
    orphan = fx.ServiceUsage(
        "", "__unattributed__", fx.H100, fx.series(lambda i: 0.5, lambda i: 0.4, hours=range(10))
    )
    ctx = Context(fx.inputs([orphan]), CFG, fx.card())
    (f,) = zombie.find(ctx)
    assert f.service == "__unattributed__"
    assert f.monthly_savings_usd == pytest.approx(5 * fx.H100_RATE)
    assert only(find_in(fx.inputs([orphan]), fx.card(), CFG), "zombie") == []  # under $100
    low = FindingsConfig(min_savings_usd=0)
    assert len(only(find_in(fx.inputs([orphan]), fx.card(), low), "zombie")) == 1
    # under 6 hours: not reported
    brief = fx.ServiceUsage(
        "", "__unattributed__", fx.H100, fx.series(lambda i: 0.5, lambda i: 0.4, hours=range(5))
    )
    assert zombie.find(Context(fx.inputs([brief]), CFG, fx.card())) == []


# -- ranking ------------------------------------------------------------------------------


def test_findings_are_ranked_by_savings_then_kind_then_names() -> None:
    a = fx.service("a", fx.series(lambda i: 4, lambda i: 0.1))  # (4 − 1) x 720 x 2 = $4,320
    b = fx.service("b", fx.series(lambda i: 2, lambda i: 0.1))  # (2 − 1) x 720 x 2 = $1,440
    c = fx.service("c", fx.series(lambda i: 2, lambda i: 0.1))  # tie with b: by name
    model = fx.fleet(lambda i: 9, lambda i: 6)  # (9 − 6) x 720 x 2 = $4,320: tie with a
    found = find_in(fx.inputs([c, b, a], [model]), fx.card(), CFG)
    assert [(f.kind, f.service) for f in found] == [
        ("over_provisioned", "a"), ("idle_capacity", ""),
        ("over_provisioned", "b"), ("over_provisioned", "c"),
    ]  # fmt: skip
    assert [f.monthly_savings_usd for f in found] == pytest.approx([4320, 4320, 1440, 1440])
