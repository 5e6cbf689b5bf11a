"""The generated Grafana dashboards: they load back through the foundation SDK, their
layout is sound, and every query names only metrics the schema (or a recording rule)
defines."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from grafana_foundation_sdk.models import dashboard as models
from grafana_foundation_sdk.models import prometheus as prometheus_models
from typer.testing import CliRunner

from gpuledger import schema
from gpuledger.alerts.promql import metric_names
from gpuledger.cli import app
from gpuledger.dashboards import queries
from gpuledger.dashboards.output import (
    all_dashboards,
    configmap,
    panel_exprs,
    to_json,
)
from gpuledger.dashboards.queries import all_queries, concrete

UIDS = {
    "gpuledger-gpu-fleet",
    "gpuledger-services",
    "gpuledger-vllm",
    "gpuledger-tenants",
    "gpuledger-pgvector",
    "gpuledger-agent",
}


def known_names() -> frozenset[str]:
    return schema.all_series_names() | queries.recording_rule_names()


def unknown_names(d: models.Dashboard) -> dict[str, set[str]]:
    """Metric names a dashboard's queries use that neither the schema nor a recording
    rule defines, by expression."""
    known = known_names()
    out = {}
    for expr in panel_exprs(d):
        bad = metric_names(expr) - known
        if bad:
            out[expr] = bad
    return out


def _panels(d: models.Dashboard) -> list[models.Panel]:
    out: list[models.Panel] = []
    for p in d.panels or []:
        if isinstance(p, models.RowPanel):
            out.extend(p.panels)
        else:
            out.append(p)
    return out


def _rectangles(d: models.Dashboard) -> list[tuple[str, int, int, int, int]]:
    """(title, x, y, w, h) of everything on the grid: rows, and the panels of open rows
    (a collapsed row's panels are positioned only when it is opened)."""
    out = []
    for p in d.panels or []:
        assert p.grid_pos is not None, p.title
        g = p.grid_pos
        out.append((str(p.title), g.x, g.y, g.w, g.h))
    return out


@pytest.fixture(scope="module")
def dashboards() -> dict[str, models.Dashboard]:
    return all_dashboards()


def test_the_six_dashboards(dashboards: dict[str, models.Dashboard]) -> None:
    assert set(dashboards) == UIDS
    titles = [d.title for d in dashboards.values()]
    assert len(set(titles)) == len(titles)
    for uid, d in dashboards.items():
        assert d.uid == uid
        assert d.tags == ["gpuledger"]
        assert d.schema_version == models.Dashboard().schema_version  # the SDK's
        assert d.refresh
        assert d.time is not None
        assert d.time.from_val.startswith("now-")


@pytest.mark.parametrize("uid", sorted(UIDS))
def test_round_trips_through_the_sdk(dashboards: dict[str, models.Dashboard], uid: str) -> None:
    d = dashboards[uid]
    text = to_json(d)
    back = models.Dashboard.from_json(json.loads(text))
    assert back.uid == d.uid
    assert back.title == d.title
    assert len(back.panels or []) == len(d.panels or [])
    assert [p.type_val for p in _panels(back)] == [p.type_val for p in _panels(d)]
    assert panel_exprs(back) == panel_exprs(d)
    assert to_json(back) == text  # nothing lost on the way


@pytest.mark.parametrize("uid", sorted(UIDS))
def test_panel_ids_unique(dashboards: dict[str, models.Dashboard], uid: str) -> None:
    ids = [p.id_val for p in dashboards[uid].panels or []]
    ids += [
        c.id_val
        for p in dashboards[uid].panels or []
        if isinstance(p, models.RowPanel)
        for c in p.panels
    ]
    assert None not in ids
    assert len(ids) == len(set(ids))


def _overlap(a: tuple[str, int, int, int, int], b: tuple[str, int, int, int, int]) -> bool:
    _, ax, ay, aw, ah = a
    _, bx, by, bw, bh = b
    return ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah


@pytest.mark.parametrize("uid", sorted(UIDS))
def test_no_overlapping_panels(dashboards: dict[str, models.Dashboard], uid: str) -> None:
    rects = _rectangles(dashboards[uid])
    for _, x, _, w, h in rects:
        assert x >= 0
        assert x + w <= 24
        assert h > 0
    clashes = [(a[0], b[0]) for i, a in enumerate(rects) for b in rects[i + 1 :] if _overlap(a, b)]
    assert clashes == []


def test_overlap_check_detects_overlap() -> None:
    assert _overlap(("a", 0, 0, 12, 8), ("b", 6, 4, 12, 8))
    assert not _overlap(("a", 0, 0, 12, 8), ("b", 12, 0, 12, 8))
    assert not _overlap(("a", 0, 0, 12, 8), ("b", 0, 8, 12, 8))


@pytest.mark.parametrize("uid", sorted(UIDS))
def test_every_query_names_only_defined_metrics(
    dashboards: dict[str, models.Dashboard], uid: str
) -> None:
    d = dashboards[uid]
    assert panel_exprs(d)
    assert unknown_names(d) == {}
    # and each query names at least one metric, so the check is not vacuous
    assert all(metric_names(expr) for expr in panel_exprs(d))


def test_the_check_catches_an_unknown_metric(dashboards: dict[str, models.Dashboard]) -> None:
    d = copy.deepcopy(dashboards["gpuledger-gpu-fleet"])
    panel = _panels(d)[0]
    assert panel.targets is not None
    panel.targets.append(
        prometheus_models.Dataquery(
            expr='sum by (node) (rate(gpuledger_gpu_utilisation_ratio{node=~"$node"}[5m]))',
            ref_id="Z",
        )
    )
    assert unknown_names(d) == {
        'sum by (node) (rate(gpuledger_gpu_utilisation_ratio{node=~"$node"}[5m]))': {
            "gpuledger_gpu_utilisation_ratio"
        }
    }


# A board's own variables, after the five every board has.
EXTRA_VARIABLES = {"gpuledger-tenants": ["tenant"]}


@pytest.mark.parametrize("uid", sorted(UIDS))
def test_the_five_variables(dashboards: dict[str, models.Dashboard], uid: str) -> None:
    variables = {v.name: v for v in dashboards[uid].templating.list_val or []}
    extra = EXTRA_VARIABLES.get(uid, [])
    assert list(variables) == ["datasource", "cluster", "node", "namespace", "service", *extra]
    ds = variables["datasource"]
    assert ds.type_val == models.VariableType.DATASOURCE
    assert ds.query == "prometheus"
    for name in ("cluster", "node", "namespace", "service", *extra):
        v = variables[name]
        assert v.type_val == models.VariableType.QUERY
        assert v.multi
        assert v.include_all
        assert v.all_value == ".*"
        assert v.datasource is not None
        assert v.datasource.uid == "${datasource}"
        query = v.query["query"] if isinstance(v.query, dict) else v.query
        assert isinstance(query, str)
        assert query.startswith("label_values(")
        assert query.endswith(f", {name})")
        assert metric_names(query.removeprefix("label_values").rsplit(",", 1)[0] + ")") <= (
            schema.all_series_names()
        )


@pytest.mark.parametrize("uid", sorted(UIDS))
def test_queries_use_the_variables_where_the_metric_has_the_label(
    dashboards: dict[str, models.Dashboard], uid: str
) -> None:
    for expr in panel_exprs(dashboards[uid]):
        for name in metric_names(expr):
            spec = next((s for s in schema.SPECS if name in schema.series_names(s)), None)
            if spec is None:  # a recording rule
                continue
            for label in ("cluster", "node", "namespace", "service"):
                selector = f'{label}=~"${label}"'
                assert (selector in expr) == (label in spec.all_labels), (expr, label)


@pytest.mark.parametrize("uid", sorted(UIDS))
def test_panels_have_datasource_units_and_targets(
    dashboards: dict[str, models.Dashboard], uid: str
) -> None:
    for p in _panels(dashboards[uid]):
        assert p.datasource is not None
        assert p.datasource.uid == "${datasource}"
        assert p.targets, p.title
        payload: Any = json.loads(json.dumps(p.to_json(), default=lambda o: o.to_json()))
        if p.type_val != "heatmap":
            assert payload["fieldConfig"]["defaults"].get("unit"), p.title
        for t in payload["targets"]:
            assert t["datasource"]["uid"] == "${datasource}"
            assert t["refId"]


def test_the_panels_the_issue_names(dashboards: dict[str, models.Dashboard]) -> None:
    fleet = {p.title: p for p in _panels(dashboards["gpuledger-gpu-fleet"])}
    assert fleet["Utilization per GPU"].type_val == "heatmap"
    under = fleet["GPUs under 40 % utilization (last hour)"]
    assert under.type_val == "table"
    assert under.targets is not None
    target = under.targets[0]
    assert isinstance(target, prometheus_models.Dataquery)
    assert target.instant
    assert target.expr.startswith("avg_over_time(")
    assert target.expr.endswith("[1h]) < 0.4")
    services = {p.title: p for p in _panels(dashboards["gpuledger-services"])}
    assert services["Top over-provisioned services"].type_val == "bargauge"
    cost_exprs = " ".join(panel_exprs(dashboards["gpuledger-services"]))
    assert queries.recording_rule("service_cost_usd_per_hour") in cost_exprs
    vllm_exprs = panel_exprs(dashboards["gpuledger-vllm"])
    for spec in (schema.VLLM_TTFT, schema.VLLM_ITL, schema.VLLM_E2E):
        for quant in ("0.5", "0.95", "0.99"):
            assert any(
                e.startswith(f"histogram_quantile({quant},") and f"{spec.name}_bucket" in e
                for e in vllm_exprs
            ), (spec.name, quant)


def test_all_queries_and_concrete() -> None:
    everything = all_queries()
    assert set(everything) == UIDS
    assert sum(len(v) for v in everything.values()) >= 30
    for exprs in everything.values():
        for expr in exprs:
            c = concrete(expr)
            assert "$" not in c, c
            assert "[[" not in c, c
    assert concrete('rate(x{node=~"$node",service=~"${service}"}[$__rate_interval])') == (
        'rate(x{node=~".*",service=~".*"}[5m])'
    )
    assert concrete("increase(x[$__range])") == "increase(x[5m])"
    with pytest.raises(KeyError, match="nope"):
        concrete('x{a=~"$nope"}')


def test_query_helpers_refuse_the_wrong_kind() -> None:
    with pytest.raises(ValueError, match="rate"):
        queries.rate(schema.GPU_UTILIZATION)
    with pytest.raises(ValueError, match="histogram"):
        queries.bucket(schema.GPU_UTILIZATION)
    with pytest.raises(ValueError, match="not a series"):
        queries.sel(schema.VLLM_TTFT, series="something_else")


def test_configmap(dashboards: dict[str, models.Dashboard]) -> None:
    for uid, d in dashboards.items():
        cm = configmap(d, "monitoring")
        assert cm["kind"] == "ConfigMap"
        assert cm["apiVersion"] == "v1"
        assert cm["metadata"]["name"] == uid
        assert cm["metadata"]["namespace"] == "monitoring"
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        (key, text), *_ = cm["data"].items()
        assert key == f"{uid}.json"
        back = models.Dashboard.from_json(json.loads(text))
        assert back.uid == uid
        # survives YAML, as the sidecar reads it
        assert yaml.safe_load(yaml.safe_dump(cm)) == cm


def test_cli_writes_json(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["dashboards", "--out", str(tmp_path / "dash")])
    assert result.exit_code == 0, result.output
    files = sorted((tmp_path / "dash").iterdir())
    assert [f.name for f in files] == sorted(f"{uid}.json" for uid in UIDS)
    for f in files:
        d = models.Dashboard.from_json(json.loads(f.read_text(encoding="utf-8")))
        assert f.name == f"{d.uid}.json"


def test_cli_writes_configmaps(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["dashboards", "--out", str(tmp_path), "--configmap", "--namespace", "grafana"]
    )
    assert result.exit_code == 0, result.output
    files = sorted(tmp_path.glob("*.configmap.yaml"))
    assert [f.name for f in files] == sorted(f"{uid}.configmap.yaml" for uid in UIDS)
    for f in files:
        cm = yaml.safe_load(f.read_text(encoding="utf-8"))
        assert cm["metadata"]["labels"] == {
            "grafana_dashboard": "1",
            "app.kubernetes.io/name": "gpuledger",
            "app.kubernetes.io/component": "dashboards",
        }
        assert cm["metadata"]["namespace"] == "grafana"
        (text,) = cm["data"].values()
        assert models.Dashboard.from_json(json.loads(text)).uid == f.name.split(".")[0]
