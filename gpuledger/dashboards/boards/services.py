"""Services: GPU-hours allocated and busy, idle capacity, energy and cost per service (the
ops view of what the monthly chargeback bills), the latest report's findings: what to
change and what it would save, and each service's spend-anomaly score.
"""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard

from gpuledger import schema
from gpuledger.dashboards import queries as q
from gpuledger.dashboards.layout import Cell, make_dashboard
from gpuledger.dashboards.panels import (
    CURRENCY,
    KWH,
    SHORT,
    WATTS,
    Target,
    bar_panel,
    stat_panel,
    table_panel,
    ts,
)

UID = "gpuledger-services"


def build() -> dashboard.Dashboard:
    cells = [
        Cell(
            ts(
                "GPUs allocated vs busy by service",
                SHORT,
                Target(q.service_gpus("allocated"), legend="{{service}} allocated"),
                Target(q.service_gpus("busy"), legend="{{service}} busy"),
                description="GPU-hours per hour: GPUs a service holds, and how many of them "
                "it keeps busy.",
            )
        ),
        Cell(
            ts(
                "Idle capacity",
                SHORT,
                Target(q.idle_gpus(), legend="{{node}} {{gpu_model}}"),
                description="GPUs no workload holds (GPU-hours per hour).",
                stacked=True,
            )
        ),
        Cell(
            table_panel(
                "GPU-hours by service (range)",
                SHORT,
                Target(q.service_gpu_hours_in_range(), instant=True, table=True),
                value_name="GPU-hours",
            ),
            w=8,
        ),
        Cell(
            bar_panel(
                "Top over-provisioned services",
                SHORT,
                Target(q.over_provisioned_gpu_hours(), legend="{{service}}", instant=True),
                description="Allocated minus busy GPU-hours over the dashboard's range.",
            ),
            w=8,
        ),
        Cell(
            stat_panel(
                "Idle GPU-hours (range)",
                SHORT,
                Target(q.idle_gpu_hours_in_range(), instant=True),
            ),
            w=8,
        ),
        Cell(
            ts(
                "Power by service",
                WATTS,
                Target(q.service_power(), legend="{{service}}"),
                stacked=True,
            )
        ),
        Cell(
            bar_panel(
                "Energy by service (range)",
                KWH,
                Target(q.service_energy_kwh_in_range(), legend="{{service}}", instant=True),
            )
        ),
        Cell(
            ts(
                "Cost per hour by service",
                CURRENCY,
                Target(q.service_cost_per_hour(), legend="{{service}}"),
                description="GPU-hours priced with the rate card (recording rule).",
                stacked=True,
            )
        ),
        Cell(
            ts(
                "Cost per 1M tokens by service",
                CURRENCY,
                Target(q.service_cost_per_million_tokens(), legend="{{service}}"),
                description="Internal cost per million tokens served (recording rule).",
            )
        ),
        # Findings: the reporter's, from the latest monthly report (no data until a report
        # with findings is written)
        Cell(
            table_panel(
                "Findings: top savings (latest report)",
                CURRENCY,
                Target(q.finding_savings_top(), instant=True, table=True),
                value_name="saves / month",
                description="The ten largest findings of the latest monthly report: what "
                "each change would save a month. Details and evidence: the report's Findings "
                "section or `gpuledger findings`.",
            ),
            w=12,
        ),
        Cell(
            bar_panel(
                "Findings: savings by kind",
                CURRENCY,
                Target(q.finding_savings_by_kind(), legend="{{kind}}", instant=True),
                description="Monthly savings identified by the latest report, per kind.",
            ),
            w=6,
        ),
        Cell(
            bar_panel(
                "Findings by kind",
                SHORT,
                Target(q.findings_by_kind(), legend="{{kind}}", instant=True),
                description="How many findings of each kind the latest report holds.",
            ),
            w=6,
        ),
        # Spend anomalies: the reporter's hourly score of the last complete day
        Cell(
            ts(
                "Spend anomaly score (last complete day)",
                SHORT,
                Target(q.spend_anomaly_score(), legend="{{namespace}}/{{service}}"),
                description="Robust z of each service's cost on the last complete UTC day "
                "against the median of its trailing days (1.4826 x MAD as the spread): "
                "beyond ±3.5 is an anomaly (alert GpuledgerSpendAnomaly). What drove it: "
                "the monthly report's What changed section.",
            ),
            w=24,
        ),
    ]
    return make_dashboard(
        UID,
        "gpuledger / Services",
        "GPU-hours allocated and busy, idle capacity, energy and cost by service.",
        schema.SERVICE_GPU_SECONDS,
        cells,
    )
