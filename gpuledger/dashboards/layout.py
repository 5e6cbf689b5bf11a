"""Where panels go and what frames them: the grid layout, the template variables every
dashboard has (``datasource``, ``node``, ``namespace``, ``service``; a board may add its
own after them) and the dashboard shell (tags, refresh, time range).

Panels are laid out left to right in rows, 24 columns wide, never overlapping; ids are
given in order, so the JSON of a dashboard changes only where its cells do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from grafana_foundation_sdk.builders.dashboard import (
    Dashboard as DashboardBuilder,
)
from grafana_foundation_sdk.builders.dashboard import (
    DatasourceVariable,
    QueryVariable,
)
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import dashboard

from gpuledger import schema
from gpuledger.dashboards.panels import DATASOURCE, PanelBuilder
from gpuledger.schema import MetricSpec

TAGS = ["gpuledger"]
GRID_WIDTH = 24
REFRESH = "1m"
TIME_FROM = "now-6h"


@dataclass(frozen=True, slots=True)
class Cell:
    panel: PanelBuilder
    w: int = 12
    h: int = 8


def layout(cells: Sequence[Cell]) -> list[dashboard.Panel]:
    """Build the panels, give them ids 1..n and grid positions, left to right, wrapping
    to a new row (below the tallest panel of the row) when 24 columns are full."""
    x = y = row_h = 0
    panels: list[dashboard.Panel] = []
    for i, cell in enumerate(cells, start=1):
        if not 0 < cell.w <= GRID_WIDTH or cell.h <= 0:
            raise ValueError(f"bad panel size {cell.w}x{cell.h}")
        if x + cell.w > GRID_WIDTH:
            x, y, row_h = 0, y + row_h, 0
        panel = cell.panel.build()
        panel.id_val = i
        panel.grid_pos = dashboard.GridPos(h=cell.h, w=cell.w, x=x, y=y)
        panel.datasource = DATASOURCE
        panels.append(panel)
        x += cell.w
        row_h = max(row_h, cell.h)
    return panels


# --- variables -------------------------------------------------------------------------


def label_variable(name: str, label: str, spec: MetricSpec, *parents: str) -> QueryVariable:
    """``label_values(metric{<parents>}, name)``, multi-valued with "All" = ``.*``."""
    matchers = ",".join(f'{p}=~"${p}"' for p in parents if p in spec.all_labels)
    query = f"label_values({spec.name}{{{matchers}}}, {name})"
    return (
        QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query({"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"})
        .definition(query)
        .refresh(dashboard.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dashboard.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(dashboard.VariableOption(selected=True, text="All", value="$__all"))
    )


def variables(workload: MetricSpec) -> list[cogbuilder.Builder[dashboard.VariableModel]]:
    """datasource, cluster and node (from the build-info series every agent exports),
    then namespace and service from ``workload``, each narrowed by the variables before
    it (one Grafana may look at several clusters, whose node names can repeat)."""
    for label in ("namespace", "service"):
        if label not in workload.all_labels:
            raise ValueError(f"{workload.name} has no {label} label")
    return [
        DatasourceVariable("datasource").label("Data source").type("prometheus"),
        label_variable("cluster", "Cluster", schema.BUILD_INFO),
        label_variable("node", "Node", schema.BUILD_INFO, "cluster"),
        label_variable("namespace", "Namespace", workload, "cluster", "node"),
        label_variable("service", "Service", workload, "cluster", "node", "namespace"),
    ]


def make_dashboard(
    uid: str,
    title: str,
    description: str,
    workload: MetricSpec,
    cells: Sequence[Cell],
    extra_variables: Sequence[QueryVariable] = (),
) -> dashboard.Dashboard:
    """The shell every board shares, with ``cells`` laid out in it. ``workload`` is the
    series the namespace and service variables list their values from;
    ``extra_variables`` (a board's own, e.g. the tenant) follow the four shared ones."""
    d = (
        DashboardBuilder(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .refresh(REFRESH)
        .time(TIME_FROM, "now")
        .timezone("browser")
        .tooltip(dashboard.DashboardCursorSync.CROSSHAIR)
        .variables([*variables(workload), *extra_variables])
        .build()
    )
    d.panels = list(layout(cells))
    return d
