"""GPU fleet: per-GPU utilization (a heatmap row per GPU), memory, power, temperature,
throttling, XID errors and the GPUs under 40 % (candidates for consolidation).
"""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard

from gpuledger import schema
from gpuledger.dashboards import queries as q
from gpuledger.dashboards.layout import Cell, make_dashboard
from gpuledger.dashboards.panels import (
    BYTES,
    CELSIUS,
    RATIO,
    SHORT,
    WATTS,
    Target,
    stat_panel,
    table_panel,
    thresholds,
    ts,
    utilization_heatmap,
)

UID = "gpuledger-gpu-fleet"
GPU_LEGEND = q.GPU_SERIES_LEGEND


def build() -> dashboard.Dashboard:
    cells = [
        Cell(stat_panel("GPUs", SHORT, Target(q.gpu_count())), w=6, h=4),
        Cell(
            stat_panel(
                "Fleet utilization",
                RATIO,
                Target(q.gpu_fleet_utilization()),
                thresholds=thresholds((None, "red"), (0.4, "yellow"), (0.7, "green")),
            ),
            w=6,
            h=4,
        ),
        Cell(stat_panel("Fleet power", WATTS, Target(q.gpu_fleet_power())), w=6, h=4),
        Cell(
            stat_panel(
                "XID errors (range)",
                SHORT,
                Target(q.gpu_xid_errors_in_range(), instant=True),
                thresholds=thresholds((None, "green"), (1, "red")),
            ),
            w=6,
            h=4,
        ),
        Cell(
            utilization_heatmap(
                "Utilization per GPU", Target(q.gpu_utilization(), legend=GPU_LEGEND)
            ),
            w=24,
            h=10,
        ),
        Cell(
            ts(
                "Memory used",
                BYTES,
                Target(q.gpu_memory_used(), legend=GPU_LEGEND),
            )
        ),
        Cell(
            ts(
                "Memory used (share of total)",
                RATIO,
                Target(q.gpu_memory_used_ratio(), legend=GPU_LEGEND),
                max_value=1,
            )
        ),
        Cell(ts("Power", WATTS, Target(q.gpu_power(), legend=GPU_LEGEND))),
        Cell(
            ts(
                "Temperature",
                CELSIUS,
                Target(q.gpu_temperature(), legend=GPU_LEGEND),
                min_value=None,
            )
        ),
        Cell(
            ts(
                "Throttled GPUs by reason",
                SHORT,
                Target(q.gpu_throttled(), legend="{{node}} {{reason}}"),
                description="Number of GPUs whose clocks are held down, per throttle reason.",
                stacked=True,
            )
        ),
        Cell(
            ts(
                "XID errors",
                SHORT,
                Target(q.gpu_xid_errors(), legend="{{node}} GPU {{gpu}}"),
                description="XID error events counted by NVML, per GPU.",
                bars=True,
            )
        ),
        Cell(
            table_panel(
                "GPUs under 40 % utilization (last hour)",
                RATIO,
                Target(q.gpu_underused_last_hour(), instant=True, table=True),
                value_name="Avg utilization (1h)",
                description="Average utilization over the last hour below 40 %: candidates "
                "for consolidation.",
            ),
            w=24,
            h=8,
        ),
    ]
    return make_dashboard(
        UID,
        "gpuledger / GPU fleet",
        "Per-GPU utilization, memory, power, temperature, throttling and XID errors.",
        schema.SERVICE_GPU_SECONDS,
        cells,
    )
