"""The catalog the findings rest on: the rate card's gpu_classes rows (validated with
row-named errors, inherited by ``extends: default``) and the MIG profiles (NVIDIA's MIG
user guide, "Supported MIG Profiles": stated here again from the guide's tables)."""

from __future__ import annotations

import pytest

from gpuledger.chargeback.findings.catalog import profiles_for
from gpuledger.chargeback.report.ratecard import RateCardError, load_rate_card, parse_rate_card

BASE = """
version: t
gpu_models:
  - {name: H100-80GB, match: ["NVIDIA H100*"]}
gpu_classes:
"""


def test_the_default_card_has_every_class_with_its_source() -> None:
    card = load_rate_card()
    names = {c.name for c in card.gpu_classes}
    assert names == {"H100-80GB", "H200", "A100-80GB", "A100-40GB", "L40S", "L4", "A10G"}
    ref = card.class_spec("H100-80GB")
    assert ref is not None
    assert ref.relative_throughput == 1.0
    # each factor is the ratio of datasheet memory bandwidths to the H100 SXM's 3.35 TB/s
    for name, tbps in (("H200", 4.8), ("A100-80GB", 2.039), ("A100-40GB", 1.555),
                       ("L40S", 0.864), ("L4", 0.300), ("A10G", 0.600)):  # fmt: skip
        spec = card.class_spec(name)
        assert spec is not None
        assert spec.relative_throughput == pytest.approx(tbps / 3.35, abs=0.005)
        assert len(spec.source) > 10
    l40s = card.class_spec("L40S")
    assert l40s is not None
    assert l40s.memory_gib == 48


def test_a_bad_gpu_classes_row_is_named() -> None:
    bad = BASE + "  - {name: H100-80GB, memory_gib: -1, relative_throughput: 1, basis: x y,"
    bad += " source: s s s, as_of: 2026-11-01}\n"
    with pytest.raises(RateCardError) as err:
        parse_rate_card(bad, "t.yaml")
    assert err.value.problems[0][0] == "gpu_classes[0] (H100-80GB)"
    assert "memory_gib" in err.value.problems[0][1]


def test_a_gpu_classes_row_must_name_a_gpu_models_class() -> None:
    bad = BASE + "  - {name: B300, memory_gib: 288, relative_throughput: 2, basis: x y,"
    bad += " source: s s s, as_of: 2026-11-01}\n"
    with pytest.raises(RateCardError, match=r"gpu_classes\[0\] \(B300\): name: no gpu_models"):
        parse_rate_card(bad, "t.yaml")


def test_a_card_extending_default_inherits_and_overrides_gpu_classes() -> None:
    text = """
version: mine
extends: default
gpu_classes:
  - {name: L4, memory_gib: 24, relative_throughput: 0.15, basis: our own vLLM benchmark,
     source: internal run 2026-11, as_of: 2026-11-20}
"""
    card = parse_rate_card(text, "mine.yaml")
    l4, h200 = card.class_spec("L4"), card.class_spec("H200")
    assert l4 is not None
    assert l4.relative_throughput == 0.15
    assert h200 is not None
    assert h200.memory_gib == 141


@pytest.mark.parametrize(
    ("gpu_class", "expected"),
    [
        # (name, memory GB, compute fraction, memory fraction), from the guide's tables
        ("H100-80GB", [("1g.10gb", 10, 1 / 7, 1 / 8), ("1g.20gb", 20, 1 / 7, 2 / 8),
                       ("2g.20gb", 20, 2 / 7, 2 / 8), ("3g.40gb", 40, 3 / 7, 4 / 8),
                       ("4g.40gb", 40, 4 / 7, 4 / 8), ("7g.80gb", 80, 1, 1)]),
        ("A100-40GB", [("1g.5gb", 5, 1 / 7, 1 / 8), ("1g.10gb", 10, 1 / 7, 2 / 8),
                       ("2g.10gb", 10, 2 / 7, 2 / 8), ("3g.20gb", 20, 3 / 7, 4 / 8),
                       ("4g.20gb", 20, 4 / 7, 4 / 8), ("7g.40gb", 40, 1, 1)]),
        ("A30", [("1g.6gb", 6, 1 / 4, 1 / 4), ("2g.12gb", 12, 2 / 4, 2 / 4),
                 ("4g.24gb", 24, 1, 1)]),
    ],
)  # fmt: skip
def test_mig_profiles_match_the_user_guide(
    gpu_class: str, expected: list[tuple[str, float, float, float]]
) -> None:
    got = {p.name: p for p in profiles_for(gpu_class)}
    assert set(got) == {e[0] for e in expected}
    for name, mem, compute, memory in expected:
        p = got[name]
        assert p.memory_gib == mem
        assert p.compute_fraction == pytest.approx(compute)
        assert p.memory_fraction == pytest.approx(memory)
        assert "Supported MIG Profiles" in p.source


def test_classes_without_mig_have_no_profiles() -> None:
    assert profiles_for("L40S") == ()
    assert profiles_for("L4") == ()
    assert profiles_for(None) == ()
    assert next(p.name for p in profiles_for("H200")) == "1g.18gb"
