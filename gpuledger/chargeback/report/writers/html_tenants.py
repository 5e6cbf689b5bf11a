"""The HTML report's "Tenants" section: per shared service, its callers' share of the
service (a table) and of its cost (a chart).

Only the page model and the chart live here; the markup is ``templates/tenants.html.j2``,
included by the report's template (autoescaped: tenant names come from callers and are
untrusted). The chart is drawn like the page's other charts (:mod:`.html`'s palette, rc
settings, SVG id prefixing), one per shared service, its ids prefixed with its own id.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib
from markupsafe import Markup
from matplotlib.patches import Patch

from gpuledger.chargeback.report.model import Report, ServiceLine, TenantLine
from gpuledger.chargeback.report.writers.html import (
    _RC,
    _RC_LOCK,
    C_INTERNAL,
    C_TEXT,
    UNPRICED,
    _category_axis,
    _clip,
    _figure,
    _headroom,
    _hours_axis,
    _legend_above,
    _money_axis,
    _svg,
    hours,
    money,
    pct,
)

TOP_TENANTS = 15
"""The chart shows the costliest tenants up to this many, then one "others" bar."""
FIXED = "†"
"""Marks a tenant line whose token weights came (partly) from the configured fixed ratio."""
C_SPECIAL = "#9aa3ad"  # __untenanted__, __probes__, __other__, __headroom__


@dataclass(frozen=True, slots=True)
class TenantTable:
    """One shared service: its line, its tenant lines (costliest first) and its chart."""

    index: int
    line: ServiceLine
    tenants: tuple[TenantLine, ...]
    priced: bool  # every tenant line has a total cost
    chart_id: str
    chart: Markup
    fixed_ratio: bool  # some line carries the FIXED mark

    @property
    def table_id(self) -> str:
        return f"tenants-{self.index}"


def _order(tenants: tuple[TenantLine, ...]) -> tuple[TenantLine, ...]:
    """Named tenants by cost (GPU-hours where unpriced), then the special lines."""
    special = ("untenanted", "other", "probes", "headroom")
    return tuple(
        sorted(
            tenants,
            key=lambda t: (
                t.kind != "tenant",
                special.index(t.kind) if t.kind in special else 0,
                -(t.total_cost_usd if t.total_cost_usd is not None else t.allocated_gpu_hours),
                t.tenant,
            ),
        )
    )


def weights_label(t: TenantLine) -> str:
    if t.weights in ("fixed-ratio", "mixed"):
        return f"{t.weights} {FIXED}"
    return t.weights


def weights_title(t: TenantLine) -> str:
    if t.weights == "none":
        return "no tokens: nothing to weigh"
    if t.weights == "measured":
        return "token weights from the engine's own prefill/decode seconds, every hour"
    return (
        f"{pct(t.fixed_ratio_share)} of its weighted tokens are from hours weighted with the "
        "configured fixed ratio (the engine did not measure its own prefill/decode seconds)"
    )


def tenant_label(t: TenantLine) -> str:
    return t.tenant if t.kind == "tenant" else f"{t.tenant} ({t.kind})"


def chart_tenants(line: ServiceLine, tenants: tuple[TenantLine, ...], chart_id: str) -> Markup:
    """Each tenant's part of the service's cost (its GPU-hours where unpriced)."""
    priced = all(t.total_cost_usd is not None for t in tenants)

    def value(t: TenantLine) -> float:
        return (t.total_cost_usd or 0.0) if priced else t.allocated_gpu_hours

    shown = list(tenants[:TOP_TENANTS])
    rest = tenants[TOP_TENANTS:]
    bars: list[tuple[str, float, str]] = [
        (_clip(tenant_label(t)), value(t), "service" if t.kind == "tenant" else "others")
        for t in shown
    ]
    if rest:
        bars.append((f"others ({len(rest)} tenants)", sum(value(t) for t in rest), "others"))
    whole = sum(v for _, v, _ in bars)
    fig = _figure(0.9 + 0.3 * len(bars))
    ax = fig.add_subplot()
    _category_axis(ax, [b[0] for b in bars], [b[2] for b in bars])
    top = max((v for _, v, _ in bars), default=0.0)
    for i, (_label, v, kind) in enumerate(bars):
        color = C_INTERNAL if kind == "service" else C_SPECIAL
        ax.barh(i, v, color=color, height=0.62)
        shown_v = money(v, cents=abs(v) < 100) if priced else f"{hours(v)} GPU-h"
        share = pct(v / whole if whole else None)
        ax.text(v, i, f"  {shown_v} · {share}", va="center", fontsize=8.5, color=C_TEXT)
    _headroom(ax, top, 0.3)
    if priced:
        _money_axis(ax)
        ax.set_xlabel("charged this month, per tenant")
    else:
        _hours_axis(ax)
        ax.set_xlabel(f"GPU-hours per tenant ({UNPRICED}: the service has no cost to split)")
    _legend_above(
        ax,
        [
            Patch(color=C_INTERNAL, label="tenant"),
            Patch(color=C_SPECIAL, label="untenanted, probes, other, headroom"),
        ],
    )
    return _svg(fig, chart_id, f"Cost by tenant: {line.label}")


def tenant_tables(report: Report) -> list[TenantTable]:
    """A table (and chart) per service with tenant lines, in the report's line order."""
    out: list[TenantTable] = []
    shared = [line for line in report.lines if line.tenants]
    if not shared:
        return out
    with _RC_LOCK, matplotlib.rc_context(_RC):
        for i, line in enumerate(shared, start=1):
            tenants = _order(line.tenants)
            chart_id = f"chart-tenants-{i}"
            out.append(
                TenantTable(
                    index=i,
                    line=line,
                    tenants=tenants,
                    priced=all(t.total_cost_usd is not None for t in tenants),
                    chart_id=chart_id,
                    chart=chart_tenants(line, tenants, chart_id),
                    fixed_ratio=any(t.weights in ("fixed-ratio", "mixed") for t in tenants),
                )
            )
    return out
