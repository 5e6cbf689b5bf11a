"""Panel builders over grafana-foundation-sdk: a query target, the five panel kinds the
dashboards use, and the Grafana unit ids they show values in.

Kept apart from the dashboards so that every board shares one look (legends, fills,
thresholds, the Prometheus datasource variable) and a new panel is one call here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import (
    bargauge,
    heatmap,
    prometheus,
    stat,
    table,
    timeseries,
)
from grafana_foundation_sdk.builders import (
    common as common_builders,
)
from grafana_foundation_sdk.builders.dashboard import ThresholdsConfig
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import common, dashboard
from grafana_foundation_sdk.models import heatmap as heatmap_models
from grafana_foundation_sdk.models import prometheus as prometheus_models

DATASOURCE = common.DataSourceRef(type_val="prometheus", uid="${datasource}")

# Grafana unit ids.
RATIO = "percentunit"
BYTES = "bytes"
WATTS = "watt"
CELSIUS = "celsius"
SECONDS = "s"
DAYS = "d"
SHORT = "short"
KWH = "kwatth"
CURRENCY = "currencyUSD"

PanelBuilder = cogbuilder.Builder[dashboard.Panel]


@dataclass(frozen=True, slots=True)
class Target:
    expr: str
    legend: str = ""
    instant: bool = False
    table: bool = False


def _dataquery(t: Target, ref_id: str) -> prometheus.Dataquery:
    d = prometheus.Dataquery().expr(t.expr).ref_id(ref_id).datasource(DATASOURCE)
    if t.legend:
        d = d.legend_format(t.legend)
    d = d.instant() if t.instant else d.range()
    if t.table:
        d = d.format(prometheus_models.PromQueryFormat.TABLE)
    return d


def _targets(targets: Sequence[Target]) -> list[cogbuilder.Builder[Any]]:
    return [_dataquery(t, chr(ord("A") + i)) for i, t in enumerate(targets)]


def _legend(calcs: list[str] | None = None) -> common_builders.VizLegendOptions:
    legend = (
        common_builders.VizLegendOptions()
        .show_legend(True)
        .placement(common.LegendPlacement.BOTTOM)
        .display_mode(common.LegendDisplayMode.TABLE if calcs else common.LegendDisplayMode.LIST)
    )
    if calcs:
        legend = legend.calcs(calcs)
    return legend


def thresholds(*steps: tuple[float | None, str]) -> ThresholdsConfig:
    return (
        ThresholdsConfig()
        .mode(dashboard.ThresholdsMode.ABSOLUTE)
        .steps([dashboard.Threshold(value=v, color=c) for v, c in steps])
    )


def ts(
    title: str,
    unit: str,
    *targets: Target,
    description: str = "",
    stacked: bool = False,
    bars: bool = False,
    min_value: float | None = 0,
    max_value: float | None = None,
) -> timeseries.Panel:
    p = (
        timeseries.Panel()
        .title(title)
        .unit(unit)
        .targets(_targets(targets))
        .legend(_legend(["mean", "max", "lastNotNull"]))
        .fill_opacity(20 if stacked else 10)
        .line_width(1)
    )
    if description:
        p = p.description(description)
    if min_value is not None:
        p = p.min(min_value)
    if max_value is not None:
        p = p.max(max_value)
    if stacked:
        p = p.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    if bars:
        p = p.draw_style(common.GraphDrawStyle.BARS)
    return p


def stat_panel(
    title: str,
    unit: str,
    target: Target,
    *,
    description: str = "",
    thresholds: ThresholdsConfig | None = None,
    calc: str = "lastNotNull",
) -> stat.Panel:
    p = (
        stat.Panel()
        .title(title)
        .unit(unit)
        .targets(_targets([target]))
        .reduce_options(common_builders.ReduceDataOptions().calcs([calc]).values(False))
        .graph_mode(common.BigValueGraphMode.AREA)
        .color_mode(common.BigValueColorMode.VALUE)
    )
    if description:
        p = p.description(description)
    if thresholds is not None:
        p = p.thresholds(thresholds)
    return p


def table_panel(
    title: str, unit: str, target: Target, *, value_name: str, description: str = ""
) -> table.Panel:
    """An instant query shown as a table: one row per series, its labels as columns."""
    organize = dashboard.DataTransformerConfig(
        id_val="organize",
        options={
            "excludeByName": {"Time": True, "__name__": True},
            "renameByName": {"Value": value_name},
        },
    )
    p = (
        table.Panel()
        .title(title)
        .unit(unit)
        .targets(_targets([target]))
        .with_transformation(organize)
        .sort_by([common_builders.TableSortByFieldState().display_name(value_name)])
    )
    if description:
        p = p.description(description)
    return p


class Described(cogbuilder.Builder[dashboard.Panel]):
    """Adds a description to a panel whose SDK builder has no ``description()``."""

    def __init__(self, inner: PanelBuilder, description: str) -> None:
        self._inner = inner
        self._description = description

    def build(self) -> dashboard.Panel:
        panel = self._inner.build()
        panel.description = self._description
        return panel


def bar_panel(title: str, unit: str, target: Target, *, description: str = "") -> PanelBuilder:
    p = (
        bargauge.Panel()
        .title(title)
        .unit(unit)
        .targets(_targets([target]))
        .display_mode(common.BarGaugeDisplayMode.GRADIENT)
        .orientation(common.VizOrientation.HORIZONTAL)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .min(0)
    )
    return Described(p, description) if description else p


def utilization_heatmap(title: str, target: Target) -> heatmap.Panel:
    """One heatmap row per GPU (series as rows, not a calculated histogram)."""
    return (
        heatmap.Panel()
        .title(title)
        .description("Each row is one GPU (or MIG instance); colour is its utilization.")
        .targets(_targets([target]))
        .calculate(False)
        .color(
            heatmap.HeatmapColorOptions()
            .mode(heatmap_models.HeatmapColorMode.SCHEME)
            .scheme("RdYlGn")
            .reverse(True)
            .scale(heatmap_models.HeatmapColorScale.LINEAR)
            .min(0)
            .max(1)
            .steps(64)
        )
        .y_axis(heatmap.YAxisConfig().axis_placement(common.AxisPlacement.LEFT))
        .cell_values(heatmap.CellValues().unit(RATIO))
        .show_legend()
    )
