"""Tenants: the callers of shared model endpoints -- their tokens and requests per second,
their share of each service's tokens and an estimate of the cost per hour that share
carries, the traffic no tenant was named for, and the gateways the figures come from.
"""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard

from gpuledger import schema
from gpuledger.dashboards import queries as q
from gpuledger.dashboards.layout import Cell, label_variable, make_dashboard
from gpuledger.dashboards.panels import CURRENCY, RATIO, SHORT, Target, ts

UID = "gpuledger-tenants"

TENANT_LEGEND = "{{service}} / {{tenant}}"


def _per_second(title: str, spec: schema.MetricSpec, description: str) -> Cell:
    return Cell(
        ts(
            title,
            SHORT,
            Target(q.tenant_rate(spec), legend=TENANT_LEGEND),
            description=description,
            stacked=True,
        )
    )


def build() -> dashboard.Dashboard:
    cells = [
        _per_second(
            "Prompt tokens/s by tenant",
            schema.TENANT_PROMPT_TOKENS,
            "Prompt (input) tokens per second the gateways counted, cached ones included.",
        ),
        _per_second(
            "Generation tokens/s by tenant",
            schema.TENANT_GENERATION_TOKENS,
            "Generation (output) tokens per second the gateways counted.",
        ),
        _per_second(
            "Cached prompt tokens/s by tenant",
            schema.TENANT_CACHED_PROMPT_TOKENS,
            "Prompt tokens per second served from the engine's prefix cache (0 where the "
            "gateway does not report them).",
        ),
        _per_second(
            "Requests/s by tenant",
            schema.TENANT_REQUESTS,
            "Requests per second the gateways counted.",
        ),
        Cell(
            ts(
                "Share of the service's tokens by tenant",
                RATIO,
                Target(q.tenant_token_share(), legend=TENANT_LEGEND),
                description="Each tenant's share of its service's prompt + generation tokens "
                "(unweighted; every tenant of the service counts in the whole, whichever "
                "tenants are picked). __untenanted__: traffic without a tenant; __other__: "
                "tenants over the per-service cap.",
                max_value=1,
            )
        ),
        Cell(
            ts(
                "Estimated cost per hour by tenant",
                CURRENCY,
                Target(q.tenant_cost_per_hour(), legend=TENANT_LEGEND),
                description="An estimate: the service's cost per hour (allocated GPU-hours "
                "priced with the rate card, the same recording rule as the Services "
                "dashboard) split by the tenant's share of its tokens over the last hour. "
                "The monthly report splits by engine-weighted tokens and is the exact figure.",
                stacked=True,
            )
        ),
        Cell(
            ts(
                "Untenanted share by service",
                RATIO,
                Target(q.untenanted_share(), legend="{{service}} ({{namespace}})"),
                description="Share of each service's tokens the gateway counted without a "
                "tenant (__untenanted__); see the GpuledgerUntenantedTrafficHigh alert.",
                max_value=1,
            ),
            w=8,
        ),
        Cell(
            ts(
                "Gateway up",
                SHORT,
                Target(q.tenant_gateway_up(), legend="{{node}} {{endpoint}}"),
                description="1 if the gateway's page was read and parsed in the last cycle.",
                max_value=1,
            ),
            w=8,
        ),
        Cell(
            ts(
                "Tenants over the cap, unmapped series",
                SHORT,
                Target(q.tenant_overflow(), legend="{{service}} overflow tenants"),
                Target(q.tenant_unmapped_series(), legend="{{endpoint}} unmapped series"),
                description="Distinct tenants folded into __other__ by "
                "gateways.max_tenants_per_service, and gateway series no mapping placed in "
                "a service (not counted).",
            ),
            w=8,
        ),
    ]
    return make_dashboard(
        UID,
        "gpuledger / Tenants",
        "Tenants of shared model endpoints: tokens, requests, share of each service and "
        "an estimated cost per hour.",
        schema.TENANT_REQUESTS,
        cells,
        extra_variables=[
            label_variable(
                "tenant",
                "Tenant",
                schema.TENANT_REQUESTS,
                "cluster",
                "node",
                "namespace",
                "service",
            )
        ],
    )
