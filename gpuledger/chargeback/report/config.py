"""The ``report:`` section of the agent config: how the monthly chargeback is priced,
written and scheduled.

The ``reporter`` role (``roles: [reporter]``, or ``[node, reporter]`` on a single server)
runs the schedule; ``gpuledger report`` reads the same section for a one-off run, so a
report written by hand and one written by the schedule are priced the same way.
"""

from __future__ import annotations

from datetime import UTC
from pathlib import Path
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

from gpuledger.chargeback.anomalies.config import AnomaliesConfig
from gpuledger.chargeback.budgets.config import (
    Budget,
    BudgetError,
    duplicates,
    load_file,
    parse_rows,
)
from gpuledger.chargeback.costcenters.config import CostCentersConfig
from gpuledger.chargeback.delivery.config import DeliveryConfig
from gpuledger.chargeback.findings.config import FindingsConfig
from gpuledger.chargeback.report.model import HeadroomPolicy, IdlePolicy
from gpuledger.chargeback.report.tenant_split import (
    DEFAULT_CACHED_PROMPT_WEIGHT,
    DEFAULT_FIXED_GENERATION_WEIGHT,
    TokenWeights,
)
from gpuledger.chargeback.report.writers.files import FORMATS, Format

BudgetRows = Annotated[tuple[Budget, ...], PlainSerializer(lambda rows: [b.as_row() for b in rows])]
"""Budgets, dumped as written (so a dumped config validates again)."""

DEFAULT_SCHEDULE = "0 2 1 * *"
"""The 1st of the month at 02:00 UTC: last month's buckets are final by then."""


class TokenWeightsConfig(BaseModel):
    """What a token weighs relative to an uncached prompt token when a shared service's
    GPU-seconds are divided among its tenants (``docs/tenants.md``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cached_prompt: float = Field(DEFAULT_CACHED_PROMPT_WEIGHT, ge=0, le=1)
    # only for hours the engine did not measure (no prefill/decode seconds)
    generation: float = Field(DEFAULT_FIXED_GENERATION_WEIGHT, gt=0, le=1000)
    # False: the fixed ratio in every hour, the engine's prefill/decode seconds unused
    from_engine: bool = True

    def weights(self) -> TokenWeights:
        return TokenWeights(self.cached_prompt, self.generation, self.from_engine)


class ReportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rate_card: Path | None = None  # default: the card shipped with gpuledger
    idle_policy: IdlePolicy = "separate"
    out_dir: Path | None = None  # default: <state_dir>/reports
    schedule: str = DEFAULT_SCHEDULE  # crontab, UTC
    formats: tuple[Format, ...] = FORMATS
    fleet: str = Field("default", min_length=1)  # names the fleet in every format
    # A service's counterfactuals are flagged unless its probes succeed this often and
    # the engine's own metrics disagree with them at most this often.
    min_probe_success_ratio: float = Field(0.95, ge=0, le=1)
    max_disagree_ratio: float = Field(0.05, ge=0, le=1)
    # A GPU-rental counterfactual is flagged when the ledger observed less than this share
    # of the hours of the GPUs the service ran on (docs/chargeback.md, flags).
    min_rental_coverage_ratio: float = Field(0.99, ge=0, le=1)
    trend_months: int = Field(6, ge=1, le=36)
    keep_months: int = Field(0, ge=0)  # 0: keep every report written
    # shared services (tenants): where headroom goes and the fixed token weights
    headroom_policy: HeadroomPolicy = "spread"
    token_weights: TokenWeightsConfig = TokenWeightsConfig()
    findings: FindingsConfig = FindingsConfig()  # thresholds of the findings (docs/findings.md)
    cost_centers: CostCentersConfig = CostCentersConfig()  # who pays (docs/cost-centers.md)
    delivery: DeliveryConfig | None = None  # e-mail and webhook after each run (docs/delivery.md)
    anomalies: AnomaliesConfig = AnomaliesConfig()  # spend anomalies (docs/anomalies.md)
    # monthly budgets (docs/budgets.md): inline rows and/or a file read at every refresh
    budgets: BudgetRows = ()
    budgets_file: Path | None = None
    forecast_history_days: int = Field(56, ge=14, le=366)  # the forecast's daily series
    # every service's and cost center's forecast in the report (one ledger read per day
    # of the history window more per report; docs/budgets.md)
    forecasts: bool = False

    @field_validator("budgets", mode="before")
    @classmethod
    def _budget_rows(cls, v: object) -> tuple[Budget, ...]:
        if isinstance(v, tuple) and all(isinstance(b, Budget) for b in v):
            return v
        try:
            return parse_rows(v, "report.budgets")
        except BudgetError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("budgets_file")
    @classmethod
    def _budgets_file(cls, v: Path | None) -> Path | None:
        """A file that does not load is refused with the config, naming its bad rows."""
        if v is not None:
            try:
                load_file(v)
            except BudgetError as exc:
                raise ValueError(f"budgets file {v}: {exc}") from None
        return v

    @model_validator(mode="after")
    def _one_budget_per_scope(self) -> ReportConfig:
        if self.budgets_file is not None:
            twice = duplicates([*self.budgets, *load_file(self.budgets_file)])
            if twice:
                raise ValueError("; ".join(f"{row}: {msg}" for row, msg in twice))
        return self

    def budget_rows(self) -> tuple[Budget, ...]:
        """Every budget: the inline rows, then the file's as it is now (read again at
        each call, so an edited file applies at the next refresh). BudgetError when the
        file went bad since the config was loaded."""
        rows = self.budgets
        if self.budgets_file is not None:
            rows = (*rows, *load_file(self.budgets_file))
            twice = duplicates(rows)
            if twice:
                raise BudgetError(twice)
        return rows

    @field_validator("schedule")
    @classmethod
    def _crontab(cls, v: str) -> str:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(v, timezone=UTC)
        except ValueError as exc:
            raise ValueError(f"not a crontab expression (m h dom mon dow): {exc}") from None
        return v

    @field_validator("rate_card")
    @classmethod
    def _card(cls, v: Path | None) -> Path | None:
        """A card that does not load is refused with the config, naming its bad rows."""
        if v is not None:
            from gpuledger.chargeback.report.ratecard import RateCardError, load_rate_card

            try:
                load_rate_card(v)
            except RateCardError as exc:
                rows = "; ".join(f"{row}: {msg}" for row, msg in exc.problems[:5])
                raise ValueError(f"rate card {v}: {rows}") from None
        return v

    @field_validator("formats")
    @classmethod
    def _formats(cls, v: tuple[Format, ...]) -> tuple[Format, ...]:
        if not v:
            raise ValueError(f"name at least one of {', '.join(FORMATS)}")
        return tuple(dict.fromkeys(v))

    @model_validator(mode="after")
    def _delivery_files(self) -> ReportConfig:
        """Delivery reads the written JSON (names, figures) and attaches the CSV."""
        if self.delivery is not None and not {"csv", "json"} <= set(self.formats):
            raise ValueError("delivery: needs csv and json in report.formats (it sends them)")
        return self

    def out_path(self, state_dir: Path) -> Path:
        return self.out_dir or state_dir / "reports"
