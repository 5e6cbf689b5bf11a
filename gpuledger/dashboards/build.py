"""The five gpuledger dashboards, built with grafana-foundation-sdk.

Every query comes from :mod:`gpuledger.dashboards.queries` (which reads the metric
schema); this module only decides panels, units, legends and layout. Each dashboard has
the variables ``datasource`` (Prometheus), ``node``, ``namespace`` and ``service``.
Panels are laid out left to right in rows, 24 columns wide, never overlapping.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
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
from grafana_foundation_sdk.builders.dashboard import (
    Dashboard as DashboardBuilder,
)
from grafana_foundation_sdk.builders.dashboard import (
    DatasourceVariable,
    QueryVariable,
    ThresholdsConfig,
)
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common, dashboard
from grafana_foundation_sdk.models import heatmap as heatmap_models
from grafana_foundation_sdk.models import prometheus as prometheus_models

from gpuledger import schema
from gpuledger.dashboards import queries as q
from gpuledger.schema import MetricSpec

TAGS = ["gpuledger"]
GRID_WIDTH = 24
DATASOURCE = common.DataSourceRef(type_val="prometheus", uid="${datasource}")
REFRESH = "1m"
TIME_FROM = "now-6h"

UID_GPU_FLEET = "gpuledger-gpu-fleet"
UID_SERVICES = "gpuledger-services"
UID_VLLM = "gpuledger-vllm"
UID_PGVECTOR = "gpuledger-pgvector"
UID_AGENT = "gpuledger-agent"

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


# --- targets and panels ----------------------------------------------------------------


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


def _thresholds(*steps: tuple[float | None, str]) -> ThresholdsConfig:
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


# --- layout ----------------------------------------------------------------------------


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


def _label_variable(name: str, label: str, spec: MetricSpec, *parents: str) -> QueryVariable:
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
    """datasource, node (from the build-info series every agent exports), then namespace
    and service from ``workload``, each narrowed by the variables before it."""
    for label in ("namespace", "service"):
        if label not in workload.all_labels:
            raise ValueError(f"{workload.name} has no {label} label")
    return [
        DatasourceVariable("datasource").label("Data source").type("prometheus"),
        _label_variable("node", "Node", schema.BUILD_INFO),
        _label_variable("namespace", "Namespace", workload, "node"),
        _label_variable("service", "Service", workload, "node", "namespace"),
    ]


def _dashboard(
    uid: str, title: str, description: str, workload: MetricSpec, cells: Sequence[Cell]
) -> dashboard.Dashboard:
    d = (
        DashboardBuilder(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .refresh(REFRESH)
        .time(TIME_FROM, "now")
        .timezone("browser")
        .tooltip(dashboard.DashboardCursorSync.CROSSHAIR)
        .variables(variables(workload))
        .build()
    )
    d.panels = list(layout(cells))
    return d


# --- the dashboards --------------------------------------------------------------------

GPU_LEGEND = q.GPU_SERIES_LEGEND


def gpu_fleet() -> dashboard.Dashboard:
    cells = [
        Cell(stat_panel("GPUs", SHORT, Target(q.gpu_count())), w=6, h=4),
        Cell(
            stat_panel(
                "Fleet utilization",
                RATIO,
                Target(q.gpu_fleet_utilization()),
                thresholds=_thresholds((None, "red"), (0.4, "yellow"), (0.7, "green")),
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
                thresholds=_thresholds((None, "green"), (1, "red")),
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
    return _dashboard(
        UID_GPU_FLEET,
        "gpuledger / GPU fleet",
        "Per-GPU utilization, memory, power, temperature, throttling and XID errors.",
        schema.SERVICE_GPU_SECONDS,
        cells,
    )


def services() -> dashboard.Dashboard:
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
    ]
    return _dashboard(
        UID_SERVICES,
        "gpuledger / Services",
        "GPU-hours allocated and busy, idle capacity, energy and cost by service.",
        schema.SERVICE_GPU_SECONDS,
        cells,
    )


def vllm() -> dashboard.Dashboard:
    def latency(title: str, spec: MetricSpec) -> Cell:
        targets = [
            Target(q.vllm_latency(spec, quant), legend=f"{{{{service}}}} p{round(quant * 100)}")
            for quant in q.VLLM_LATENCY_QUANTILES
        ]
        return Cell(ts(title, SECONDS, *targets), w=8)

    cells = [
        latency("Time to first token", schema.VLLM_TTFT),
        latency("Inter-token latency", schema.VLLM_ITL),
        latency("End-to-end latency", schema.VLLM_E2E),
        Cell(
            ts(
                "Tokens per second",
                SHORT,
                Target(
                    q.vllm_tokens_per_second(schema.VLLM_GENERATION_TOKENS),
                    legend="{{service}} generated",
                ),
                Target(
                    q.vllm_tokens_per_second(schema.VLLM_PROMPT_TOKENS),
                    legend="{{service}} prompt",
                ),
            ),
            w=8,
        ),
        Cell(
            ts(
                "Requests running / waiting",
                SHORT,
                Target(q.vllm_requests(schema.VLLM_REQUESTS_RUNNING), legend="{{service}} running"),
                Target(q.vllm_requests(schema.VLLM_REQUESTS_WAITING), legend="{{service}} waiting"),
            ),
            w=8,
        ),
        Cell(
            ts(
                "KV cache usage",
                RATIO,
                Target(q.vllm_kv_cache(), legend="{{service}} {{pod}}"),
                max_value=1,
            ),
            w=8,
        ),
        Cell(
            ts(
                "Finished requests per second",
                "reqps",
                Target(q.vllm_request_rate(), legend="{{service}} {{finished_reason}}"),
                stacked=True,
            ),
            w=8,
        ),
        Cell(
            ts(
                "Preemptions",
                SHORT,
                Target(q.vllm_preemptions(), legend="{{service}}"),
                description="Requests preempted by the scheduler (KV cache exhausted).",
                bars=True,
            ),
            w=8,
        ),
        Cell(
            ts(
                "Probe failures",
                SHORT,
                Target(q.probe_failures(), legend="{{service}} {{reason}}"),
                Target(q.probe_successes(), legend="{{service}} succeeded"),
                bars=True,
            ),
            w=8,
        ),
        Cell(
            ts(
                "TTFT: probe vs engine p50",
                SECONDS,
                Target(q.probe_latency(schema.PROBE_TTFT), legend="{{service}} probe"),
                Target(q.vllm_latency(schema.VLLM_TTFT, 0.5), legend="{{service}} engine p50"),
                description="The synthetic probe's measured TTFT beside the engine's own.",
            )
        ),
        Cell(
            ts(
                "Per-token latency: probe vs engine p50",
                SECONDS,
                Target(q.probe_latency(schema.PROBE_TPOT), legend="{{service}} probe TPOT"),
                Target(q.vllm_latency(schema.VLLM_ITL, 0.5), legend="{{service}} engine p50"),
            )
        ),
        Cell(
            ts(
                "End-to-end: probe vs engine p50",
                SECONDS,
                Target(q.probe_latency(schema.PROBE_E2E), legend="{{service}} probe"),
                Target(q.vllm_latency(schema.VLLM_E2E, 0.5), legend="{{service}} engine p50"),
            )
        ),
        Cell(
            ts(
                "Probe output tokens per second",
                SHORT,
                Target(q.probe_latency(schema.PROBE_TOKENS_PER_SECOND), legend="{{service}}"),
            )
        ),
    ]
    return _dashboard(
        UID_VLLM,
        "gpuledger / vLLM serving",
        "Latency percentiles, throughput, queueing, KV cache and synthetic probes per service.",
        schema.VLLM_REQUESTS_RUNNING,
        cells,
    )


def pgvector() -> dashboard.Dashboard:
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
                thresholds=_thresholds((None, "red"), (14, "yellow"), (60, "green")),
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
    return _dashboard(
        UID_PGVECTOR,
        "gpuledger / pgvector storage",
        "Table and pgvector index sizes, growth, days until full, dead tuples.",
        schema.SERVICE_GPU_SECONDS,
        cells,
    )


def agent() -> dashboard.Dashboard:
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
    return _dashboard(
        UID_AGENT,
        "gpuledger / Agent health",
        "The agent itself: collectors, their durations and last success, the ledger spool.",
        schema.SERVICE_GPU_SECONDS,
        cells,
    )


# --- output ----------------------------------------------------------------------------


def all_dashboards() -> dict[str, dashboard.Dashboard]:
    """Every dashboard, by uid."""
    built = [gpu_fleet(), services(), vllm(), pgvector(), agent()]
    return {str(d.uid): d for d in built}


def panel_exprs(d: dashboard.Dashboard) -> list[str]:
    """Every target expression of every panel (rows included), in panel order."""
    out: list[str] = []
    for panel in _all_panels(d):
        for target in panel.targets or []:
            # a reloaded dashboard may hold the SDK's UnknownDataquery: read its JSON
            expr = _target_json(target).get("expr")
            if isinstance(expr, str) and expr:
                out.append(expr)
    return out


def _target_json(target: object) -> dict[str, object]:
    to_json_method = getattr(target, "to_json", None)
    data = to_json_method() if callable(to_json_method) else None
    return data if isinstance(data, dict) else {}


def _all_panels(d: dashboard.Dashboard) -> list[dashboard.Panel]:
    out: list[dashboard.Panel] = []
    for p in d.panels or []:
        if isinstance(p, dashboard.RowPanel):
            out.extend(p.panels)
        else:
            out.append(p)
    return out


def to_json(d: dashboard.Dashboard) -> str:
    return json.dumps(d, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def configmap(d: dashboard.Dashboard, namespace: str) -> dict[str, Any]:
    """A ConfigMap the Grafana sidecar picks up (label ``grafana_dashboard: "1"``)."""
    uid = str(d.uid)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": uid,
            "namespace": namespace,
            "labels": {
                "grafana_dashboard": "1",
                "app.kubernetes.io/name": "gpuledger",
                "app.kubernetes.io/component": "dashboards",
            },
            "annotations": {"grafana_folder": "gpuledger"},
        },
        "data": {f"{uid}.json": to_json(d)},
    }


def write_dashboards(out: Path, *, as_configmap: bool, namespace: str) -> list[Path]:
    """Write ``<uid>.json`` (or ``<uid>.configmap.yaml``) per dashboard into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for uid, d in all_dashboards().items():
        if as_configmap:
            path = out / f"{uid}.configmap.yaml"
            path.write_text(
                yaml.safe_dump(configmap(d, namespace), sort_keys=False), encoding="utf-8"
            )
        else:
            path = out / f"{uid}.json"
            path.write_text(to_json(d), encoding="utf-8")
        written.append(path)
    return written
