"""The ``report.cost_centers:`` section: where a service's cost center comes from.

Finance groups a bill by the team that pays it, not by Kubernetes namespace. Teams
already say who they are with a label (``team``, ``cost-center``) on their workloads
or namespaces; where they do not, a static map fills in. The keys are configurable
because every organization spells them differently.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gpuledger.brief import brief

UNASSIGNED = "__unassigned__"
"""The cost center of a line nothing assigned: listed in the report, never dropped."""

MAX_NAME = 128
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clean_cost_center(value: str) -> str | None:
    """A label value usable as a cost-center name, or None when it is not one.

    Label values come from whoever can edit a workload: a name that is empty, too
    long, or carries control characters (a forged line in a CSV, a log, an e-mail
    header) is refused rather than repaired, so the line falls to the next source.
    """
    value = value.strip()
    if not value or len(value) > MAX_NAME or _CONTROL.search(value):
        return None
    if value.startswith("__") and value.endswith("__"):
        return None  # reserved for gpuledger's own names (__unassigned__, __idle__)
    return value


class CostCenterRule(BaseModel):
    """One static assignment: a whole namespace, or one service of it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str
    service: str | None = None  # None: every service of the namespace
    cost_center: str

    @field_validator("cost_center")
    @classmethod
    def _name(cls, v: str) -> str:
        cleaned = clean_cost_center(v)
        if cleaned is None:
            raise ValueError(
                f"{brief(v)} is not a cost-center name (1-{MAX_NAME} characters, no control "
                "characters, not __reserved__)"
            )
        return cleaned


class CostCentersConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # pod labels, then pod annotations, then the namespace's labels: the first key
    # present wins (the agent records what it saw in the ledger, hour by hour)
    label_keys: tuple[str, ...] = ("cost-center", "team")
    static: tuple[CostCenterRule, ...] = ()
    tenants: dict[str, str] = Field(default_factory=dict)  # tenant -> cost center

    @field_validator("static")
    @classmethod
    def _no_duplicates(cls, v: tuple[CostCenterRule, ...]) -> tuple[CostCenterRule, ...]:
        seen: dict[tuple[str, str | None], int] = {}
        for i, rule in enumerate(v):
            key = (rule.namespace, rule.service)
            if key in seen:
                what = rule.namespace + (f"/{rule.service}" if rule.service else "")
                raise ValueError(f"rows {seen[key]} and {i}: {what} is assigned twice")
            seen[key] = i
        return v

    @field_validator("tenants")
    @classmethod
    def _tenant_names(cls, v: dict[str, str]) -> dict[str, str]:
        for tenant, name in v.items():
            if clean_cost_center(name) is None:
                raise ValueError(f"tenant {brief(tenant)}: {brief(name)} is not a cost-center name")
        return {t: str(clean_cost_center(n)) for t, n in v.items()}
