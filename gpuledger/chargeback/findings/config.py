"""The ``report.findings:`` section: the thresholds and targets the findings engine uses.

Every default is one a platform team would accept without argument, and each is
justified in ``docs/findings.md`` ("Defaults"). They live in the report's config so a
report written by hand and one written by the schedule recommend the same changes.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class FindingsConfig(BaseModel):
    """What a finding must clear to be reported, and what it sizes against."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    # busy time a GPU should carry after a change: 60 % leaves room for bursts and
    # latency targets (serving engines degrade past ~70-80 % busy)
    target_utilization: float = Field(0.6, gt=0, le=1)
    # hourly figures are sized on this nearest-rank percentile, never on the mean
    percentile: float = Field(0.95, gt=0, le=1)
    # findings saving less than this a month are not worth a change request
    min_savings_usd: float = Field(100.0, ge=0)
    # three days of hourly evidence: a weekend-only lull cannot decide a finding alone
    min_evidence_hours: int = Field(72, ge=1)
    # a class or MIG profile must hold the peak memory plus this share
    memory_headroom: float = Field(0.1, ge=0, le=2)
    # an hour is "~0 busy" when busy seconds are below this share of allocated seconds
    zombie_busy_epsilon: float = Field(0.01, ge=0, lt=1)
    # ... and a zombie is reported after this many consecutive such hours
    zombie_min_hours: int = Field(6, ge=1)
