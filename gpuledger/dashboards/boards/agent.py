"""Agent health: the agent itself -- collectors, their durations and last success, the
ledger spool.
"""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard

from gpuledger import schema
from gpuledger.dashboards import queries as q
from gpuledger.dashboards.layout import Cell, make_dashboard
from gpuledger.dashboards.panels import SECONDS, SHORT, Target, bar_panel, ts

UID = "gpuledger-agent"


def build() -> dashboard.Dashboard:
    cells = [
        Cell(
            ts(
                "Collector up",
                SHORT,
                Target(q.collector_up(), legend="{{node}} {{collector}}"),
                min_value=0,
                max_value=1,
            )
        ),
        Cell(
            ts(
                "Collector duration",
                SECONDS,
                Target(q.collector_duration(), legend="{{node}} {{collector}}"),
            )
        ),
        Cell(
            ts(
                "Time since last success",
                SECONDS,
                Target(q.collector_seconds_since_success(), legend="{{node}} {{collector}}"),
            )
        ),
        Cell(
            ts(
                "Ledger pending rows",
                SHORT,
                Target(q.ledger_pending_rows(), legend="{{node}}"),
            )
        ),
        Cell(
            ts(
                "Ledger flush failures",
                SHORT,
                Target(q.ledger_flush_failures(), legend="{{node}}"),
                bars=True,
            )
        ),
        Cell(
            bar_panel(
                "Agents by version",
                SHORT,
                Target(q.agent_versions(), legend="{{version}}", instant=True),
            )
        ),
    ]
    return make_dashboard(
        UID,
        "gpuledger / Agent health",
        "The agent itself: collectors, their durations and last success, the ledger spool.",
        schema.SERVICE_GPU_SECONDS,
        cells,
    )
