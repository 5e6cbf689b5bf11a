"""The ``report.anomalies:`` section: how a day's spend is judged against its baseline.

The defaults and why each is what it is are in ``docs/anomalies.md`` ("Defaults"). They
live in the report's config so that the monthly report's "What changed" section and the
reporter's hourly ``gpuledger_spend_anomaly_score`` judge a day the same way.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class AnomaliesConfig(BaseModel):
    """Window, thresholds and floors of the spend-anomaly detector."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    enabled: bool = True  # False: the report says anomalies were not computed
    # trailing days the baseline is taken from: four whole weeks, so every weekday
    # appears equally often and a weekly rhythm does not tilt the median
    window_days: int = Field(28, ge=7, le=90)
    # a day is only judged with at least this many days of the window in the ledger
    min_baseline_days: int = Field(7, ge=3, le=90)
    # |robust z| at or above this is an anomaly: 3.5 is Iglewicz and Hoaglin's cut-off
    # for the modified z-score (the same statistic)
    z_threshold: float = Field(3.5, gt=0)
    # ... and the day must differ from the baseline by at least this many dollars
    min_delta_usd: float = Field(50.0, ge=0)
    # the MAD is never taken below this share of the median, nor below mad_floor_usd:
    # a flat series has MAD 0 and would make every cent an anomaly
    mad_floor_ratio: float = Field(0.05, ge=0, le=1)
    mad_floor_usd: float = Field(1.0, gt=0)
    # a component is named as a driver when its change exceeds its baseline share of
    # the day's change by at least this share of the change
    min_driver_share: float = Field(0.2, gt=0, le=1)
    max_drivers: int = Field(3, ge=1, le=10)

    @model_validator(mode="after")
    def _window_holds_minimum(self) -> AnomaliesConfig:
        if self.min_baseline_days > self.window_days:
            raise ValueError(
                f"min_baseline_days ({self.min_baseline_days}) exceeds window_days "
                f"({self.window_days})"
            )
        return self
