"""``report.findings:``: defaults as documented, bad values and unknown keys refused with
their key named, and the section reachable from the report's config."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gpuledger.chargeback.findings import FindingsConfig
from gpuledger.chargeback.report.config import ReportConfig


def test_defaults_are_the_documented_ones() -> None:
    c = ReportConfig().findings
    assert (c.target_utilization, c.percentile, c.min_savings_usd, c.min_evidence_hours) == (
        0.6, 0.95, 100.0, 72,
    )  # fmt: skip
    assert (c.memory_headroom, c.zombie_busy_epsilon, c.zombie_min_hours) == (0.1, 0.01, 6)


def test_the_section_is_read_from_the_report_config() -> None:
    c = ReportConfig.model_validate({"findings": {"target_utilization": 0.8, "percentile": 0.99}})
    assert c.findings == FindingsConfig(target_utilization=0.8, percentile=0.99)


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"target_utilization": 0}, "target_utilization"),
        ({"target_utilization": 1.5}, "target_utilization"),
        ({"percentile": 0}, "percentile"),
        ({"min_evidence_hours": 0}, "min_evidence_hours"),
        ({"min_savings_usd": -1}, "min_savings_usd"),
        ({"zombie_min_hours": 0}, "zombie_min_hours"),
        ({"target_utilisation": 0.5}, "target_utilisation"),  # a typo is refused by name
    ],
)
def test_bad_values_are_refused_naming_the_key(values: dict[str, object], key: str) -> None:
    with pytest.raises(ValidationError, match=key):
        ReportConfig.model_validate({"findings": values})
