"""The Tenants dashboard: its panels and variable, and its PromQL evaluated by promtool
over series whose answers are computed here by hand.

One shared service ``llm-prod/chat`` with 2 allocated GPUs priced at 4 $/GPU-hour
(8 $/h), and per second: tenant ``search`` 8 prompt + 2 generation tokens, ``ads`` 3 + 3,
``__untenanted__`` 2 + 2 -- 20 tokens/s in all, so shares 0.5, 0.3 and 0.2 and estimated
costs 4, 2.4 and 1.6 $/h. A second service ``llm-prod/solo`` has one tenant (share 1)
and no untenanted traffic (no untenanted share: nothing to divide).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from grafana_foundation_sdk.models import dashboard as models

from gpuledger import schema
from gpuledger.alerts import rules
from gpuledger.alerts.config import AlertsConfig
from gpuledger.dashboards import queries as q
from gpuledger.dashboards.boards import tenants
from gpuledger.dashboards.output import panel_exprs
from tests.support.promtool_rules import needs_promtool, promtool, sel

CFG = AlertsConfig(gpu_hourly_rates_usd={"H100": 4.0})
CHAT = {"namespace": "llm-prod", "service": "chat"}
SOLO = {"namespace": "llm-prod", "service": "solo"}
# per second: prompt, generation, cached prompt, requests
TRAFFIC = {
    ("chat", "search"): (8, 2, 4, 0.5),
    ("chat", "ads"): (3, 3, 0, 0.25),
    ("chat", schema.TENANT_UNTENANTED): (2, 2, 0, 0.1),
    ("solo", "ads"): (5, 5, 1, 1),
}


@pytest.fixture(scope="module")
def board() -> models.Dashboard:
    return tenants.build()


def _titles(d: models.Dashboard) -> dict[str, models.Panel]:
    return {str(p.title): p for p in d.panels or []}


def test_the_panels_the_issue_names(board: models.Dashboard) -> None:
    titles = _titles(board)
    for title in (
        "Prompt tokens/s by tenant",
        "Generation tokens/s by tenant",
        "Cached prompt tokens/s by tenant",
        "Requests/s by tenant",
        "Share of the service's tokens by tenant",
        "Estimated cost per hour by tenant",
        "Untenanted share by service",
        "Gateway up",
        "Tenants over the cap, unmapped series",
    ):
        assert title in titles, title
    cost = titles["Estimated cost per hour by tenant"]
    assert "estimate" in str(cost.description).lower()
    assert "report" in str(cost.description)
    exprs = " ".join(panel_exprs(board))
    assert rules.SERVICE_COST_USD_PER_HOUR in exprs
    for spec in (
        schema.TENANT_REQUESTS,
        schema.TENANT_PROMPT_TOKENS,
        schema.TENANT_CACHED_PROMPT_TOKENS,
        schema.TENANT_GENERATION_TOKENS,
        schema.TENANT_GATEWAY_UP,
        schema.TENANT_OVERFLOW,
        schema.TENANT_UNMAPPED_SERIES,
    ):
        assert spec.name in exprs, spec.name


def test_the_tenant_variable(board: models.Dashboard) -> None:
    variables = {v.name: v for v in board.templating.list_val or []}
    tenant = variables["tenant"]
    query = tenant.query["query"] if isinstance(tenant.query, dict) else tenant.query
    assert query == (
        f'label_values({schema.TENANT_REQUESTS.name}{{cluster=~"$cluster",node=~"$node",'
        'namespace=~"$namespace",service=~"$service"}, tenant)'
    )
    assert tenant.multi
    assert tenant.include_all
    assert tenant.all_value == ".*"


def test_the_tenant_variable_narrows_only_the_tenants_side_of_a_share() -> None:
    share = q.tenant_token_share()
    mine, _, whole = share.partition(" / on (namespace, service) group_left () ")
    assert mine.count(q.TENANT_FILTER) == 2  # prompt and generation
    assert q.TENANT_FILTER not in whole
    assert q.TENANT_FILTER not in q.untenanted_share()


def _series() -> list[dict[str, str]]:
    out = []
    specs = (
        schema.TENANT_PROMPT_TOKENS,
        schema.TENANT_GENERATION_TOKENS,
        schema.TENANT_CACHED_PROMPT_TOKENS,
        schema.TENANT_REQUESTS,
    )
    for (service, tenant), per_second in TRAFFIC.items():
        labels = {"node": "n1", "namespace": "llm-prod", "service": service}
        labels |= {"model_name": "llama", "tenant": tenant}
        for spec, rate in zip(specs, per_second, strict=True):
            out.append({"series": sel(spec.name, **labels), "values": f"0+{rate * 60:g}x120"})
    gpu_s = {"node": "n1", **CHAT, "gpu_model": "H100", "kind": "allocated"}
    out.append({"series": sel(schema.SERVICE_GPU_SECONDS.name, **gpu_s), "values": "0+120x120"})
    gw = {"node": "n1", "endpoint": "http://gw:4000/metrics"}
    out.append({"series": sel(schema.TENANT_GATEWAY_UP.name, **gw), "values": "1x120"})
    out.append({"series": sel(schema.TENANT_UNMAPPED_SERIES.name, **gw), "values": "3x120"})
    return out


def _sample(labels: dict[str, str], value: float) -> dict[str, object]:
    return {"labels": sel("", **labels) if labels else "{}", "value": value}


def _expected() -> list[tuple[str, list[dict[str, object]]]]:
    def tenant(svc: dict[str, str], name: str) -> dict[str, str]:
        return {**svc, "tenant": name}

    untenanted = schema.TENANT_UNTENANTED
    share = [
        _sample(tenant(CHAT, "search"), 0.5),
        _sample(tenant(CHAT, "ads"), 0.3),
        _sample(tenant(CHAT, untenanted), 0.2),
        _sample(tenant(SOLO, "ads"), 1.0),
    ]
    return [
        (
            q.tenant_rate(schema.TENANT_PROMPT_TOKENS),
            [
                _sample(tenant(CHAT, "search"), 8),
                _sample(tenant(CHAT, "ads"), 3),
                _sample(tenant(CHAT, untenanted), 2),
                _sample(tenant(SOLO, "ads"), 5),
            ],
        ),
        (
            q.tenant_rate(schema.TENANT_CACHED_PROMPT_TOKENS),
            [
                _sample(tenant(CHAT, "search"), 4),
                _sample(tenant(CHAT, "ads"), 0),
                _sample(tenant(CHAT, untenanted), 0),
                _sample(tenant(SOLO, "ads"), 1),
            ],
        ),
        (
            q.tenant_rate(schema.TENANT_REQUESTS),
            [
                _sample(tenant(CHAT, "search"), 0.5),
                _sample(tenant(CHAT, "ads"), 0.25),
                _sample(tenant(CHAT, untenanted), 0.1),
                _sample(tenant(SOLO, "ads"), 1),
            ],
        ),
        (q.tenant_token_share(), share),
        (q.tenant_token_share(window="1h"), share),
        # solo has no allocated GPU-seconds in this input, so no cost and no estimate
        (
            q.tenant_cost_per_hour(),
            [
                _sample(tenant(CHAT, "search"), 4.0),
                _sample(tenant(CHAT, "ads"), 2.4),
                _sample(tenant(CHAT, untenanted), 1.6),
            ],
        ),
        (q.untenanted_share(), [_sample(CHAT, 0.2)]),
        (q.tenant_gateway_up(), [_sample({"node": "n1", "endpoint": "http://gw:4000/metrics"}, 1)]),
        (
            q.tenant_unmapped_series(),
            [_sample({"node": "n1", "endpoint": "http://gw:4000/metrics"}, 3)],
        ),
        (q.tenant_overflow(), [_sample({}, 0)]),  # none folded: 0, not "no data"
    ]


@needs_promtool
def test_the_queries_compute_what_the_panels_say(tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(rules.to_yaml(rules.rules_document(CFG)))
    tests = [
        {
            "expr": q.concrete(expr),
            "eval_time": "90m",
            "exp_samples": samples,
        }
        for expr, samples in _expected()
    ]
    doc = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": _series(), "promql_expr_test": tests}],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(doc, sort_keys=False, width=10000))
    result = promtool("test", "rules", str(tmp_path / "test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_overflow_shows_the_folded_tenants(tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text("groups: []\n")
    overflow = sel(schema.TENANT_OVERFLOW.name, node="n1", **CHAT)
    doc = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": overflow, "values": "7x10"}],
                "promql_expr_test": [
                    {
                        "expr": q.concrete(q.tenant_overflow()),
                        "eval_time": "5m",
                        "exp_samples": [_sample(CHAT, 7)],
                    }
                ],
            }
        ],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(doc, sort_keys=False, width=10000))
    result = promtool("test", "rules", str(tmp_path / "test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_untenanted_value_is_the_collectors() -> None:
    from gpuledger.collectors.gateway.types import OTHER, UNTENANTED
    from gpuledger.meter.tenants import UNTENANTED as METER_UNTENANTED

    assert schema.TENANT_UNTENANTED == UNTENANTED == METER_UNTENANTED
    assert schema.TENANT_OTHER == OTHER
