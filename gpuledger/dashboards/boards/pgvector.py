"""pgvector storage: table and index sizes, growth, days until full, dead tuples and the
relations skipped because of a lock.
"""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard

from gpuledger import schema
from gpuledger.dashboards import queries as q
from gpuledger.dashboards.layout import Cell, make_dashboard
from gpuledger.dashboards.panels import (
    BYTES,
    DAYS,
    SHORT,
    Target,
    bar_panel,
    stat_panel,
    thresholds,
    ts,
)

UID = "gpuledger-pgvector"


def build() -> dashboard.Dashboard:
    cells = [
        Cell(
            ts(
                "Table size by kind",
                BYTES,
                Target(q.pg_table_bytes(), legend="{{database}}.{{schema}}.{{table}} {{kind}}"),
                stacked=True,
            )
        ),
        Cell(
            bar_panel(
                "Largest tables",
                BYTES,
                Target(
                    q.pg_largest_tables(),
                    legend="{{database}}.{{schema}}.{{table}}",
                    instant=True,
                ),
            )
        ),
        Cell(
            ts(
                "pgvector index size by method",
                BYTES,
                Target(q.pgvector_index_bytes(), legend="{{database}} {{method}}"),
                stacked=True,
            )
        ),
        Cell(ts("Database size", BYTES, Target(q.pg_database_bytes(), legend="{{database}}"))),
        Cell(
            ts(
                "Growth per day",
                BYTES,
                Target(q.pg_growth_per_day(), legend="{{database}}.{{schema}}.{{table}}"),
                description="Least-squares growth; an empty table label is the whole database.",
                min_value=None,
            )
        ),
        Cell(
            stat_panel(
                "Days until full",
                DAYS,
                Target(q.pg_days_until_full(), legend="{{database}}"),
                thresholds=thresholds((None, "red"), (14, "yellow"), (60, "green")),
            )
        ),
        Cell(
            ts(
                "Dead tuples",
                SHORT,
                Target(q.pg_dead_tuples(), legend="{{database}}.{{schema}}.{{table}}"),
            )
        ),
        Cell(
            ts(
                "Skipped relations",
                SHORT,
                Target(q.pg_skipped_relations(), legend="{{database}}"),
                description="Relations not sized because an ACCESS EXCLUSIVE lock was held "
                "or queued on them.",
            )
        ),
    ]
    return make_dashboard(
        UID,
        "gpuledger / pgvector storage",
        "Table and pgvector index sizes, growth, days until full, dead tuples.",
        schema.SERVICE_GPU_SECONDS,
        cells,
    )
