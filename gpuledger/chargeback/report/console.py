"""What a person running a monthly report sees in the terminal: how many steps the progress
bar counts and the summary printed once the files are written. ``gpuledger report`` and
``gpuledger demo`` both use it, so a month reads the same whichever command made it.
``gpuledger report --by tenant`` prints the tenants of every shared service instead of
the fleet's totals, ``--by cost-center`` the subtotal of each cost center (who pays)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from gpuledger.chargeback.report.build import BUILD_STEPS
from gpuledger.chargeback.report.config import ReportConfig
from gpuledger.chargeback.report.model import Report, TenantKind, TenantLine

SummaryBy = Literal["service", "tenant", "cost-center", "cluster"]
SUMMARY_BY: tuple[SummaryBy, ...] = ("service", "tenant", "cost-center", "cluster")


def progress_steps(cfg: ReportConfig) -> int:
    """The progress calls one :func:`~gpuledger.chargeback.report.monthly.run_report`
    makes: the build's steps, one per earlier month of the trend, one for the spend
    anomalies when they are on, one per format written, and one to spare, so a full bar
    means done."""
    anomalies = 1 if cfg.anomalies.enabled else 0
    return BUILD_STEPS + cfg.trend_months - 1 + anomalies + len(cfg.formats) + 1


@dataclass(frozen=True, slots=True)
class TenantTotal:
    """One tenant over every shared service it called this month. Money sums only the
    known figures; ``unpriced`` says that some service of the tenant had none."""

    tenant: str
    kind: TenantKind
    services: tuple[str, ...]
    allocated_gpu_hours: float
    total_cost_usd: float | None
    unpriced: bool
    cost_per_1m_input_usd: float | None
    cost_per_1m_output_usd: float | None
    prompt_tokens: float
    cached_prompt_tokens: float
    generation_tokens: float


def _per_1m(pairs: Iterable[tuple[float | None, float]]) -> float | None:
    """Σ cost ÷ Σ tokens × 10⁶ over the lines whose cost is known and have tokens."""
    known = [(c, n) for c, n in pairs if c is not None and n > 0]
    tokens = sum(n for _, n in known)
    return sum(c for c, _ in known) / tokens * 1e6 if tokens > 0 else None


def tenant_totals(report: Report) -> list[TenantTotal]:
    """Every (tenant, kind) over the shared services, costliest first (the unpriced
    ones, whose cost is unknown, after the priced ones by GPU-hours)."""
    groups: dict[tuple[str, str], list[tuple[str, TenantLine]]] = {}
    for line in report.lines:
        for t in line.tenants:
            groups.setdefault((t.tenant, t.kind), []).append((line.label, t))
    out: list[TenantTotal] = []
    for (name, _kind), items in groups.items():
        lines = [t for _, t in items]
        known = [t.total_cost_usd for t in lines if t.total_cost_usd is not None]
        out.append(
            TenantTotal(
                tenant=name,
                kind=lines[0].kind,
                services=tuple(label for label, _ in items),
                allocated_gpu_hours=sum(t.allocated_gpu_hours for t in lines),
                total_cost_usd=sum(known) if known else None,
                unpriced=len(known) < len(lines),
                cost_per_1m_input_usd=_per_1m((t.input_cost_usd, t.prompt_tokens) for t in lines),
                cost_per_1m_output_usd=_per_1m(
                    (t.output_cost_usd, t.generation_tokens) for t in lines
                ),
                prompt_tokens=sum(t.prompt_tokens for t in lines),
                cached_prompt_tokens=sum(t.cached_prompt_tokens for t in lines),
                generation_tokens=sum(t.generation_tokens for t in lines),
            )
        )
    return sorted(
        out,
        key=lambda t: (
            t.total_cost_usd is None,
            -(t.total_cost_usd or 0.0),
            -t.allocated_gpu_hours,
            t.tenant,
        ),
    )


def per_million(v: float) -> str:
    """A price per 1M tokens with three significant digits (at least cents): a self-hosted
    prompt token can cost $0.00186 per million, which cents would show as $0.00."""
    digits = 2 if v == 0 else max(2, 2 - math.floor(math.log10(abs(v))))
    sign = "−" if v < 0 else ""
    return f"{sign}${abs(v):,.{digits}f}"


def _money(v: float | None) -> str:
    return "unpriced" if v is None else f"${v:,.2f}"


def _tokens(v: float) -> str:
    for size, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= size:
            return f"{v / size:,.2f} {suffix}"
    return f"{v:,.0f}"


def _tenant_table(result: Report) -> Table | None:
    totals = tenant_totals(result)
    if not totals:
        return None
    table = Table(show_header=True, title="tenants of shared services, costliest first")
    table.add_column("tenant")
    table.add_column("services")
    for col in ("GPU-hours", "cost", "$/1M in", "$/1M out", "prompt", "cached", "generated"):
        table.add_column(col, justify="right")
    for t in totals:
        name = t.tenant if t.kind == "tenant" else f"{t.tenant} ({t.kind})"
        cost = _money(t.total_cost_usd)
        if t.unpriced and t.total_cost_usd is not None:
            cost += " + unpriced"
        table.add_row(
            Text(name),  # names come from callers: never read as markup
            Text(", ".join(t.services)),
            f"{t.allocated_gpu_hours:,.1f}",
            cost,
            "n/a" if t.cost_per_1m_input_usd is None else per_million(t.cost_per_1m_input_usd),
            "n/a" if t.cost_per_1m_output_usd is None else per_million(t.cost_per_1m_output_usd),
            _tokens(t.prompt_tokens),
            _tokens(t.cached_prompt_tokens),
            _tokens(t.generation_tokens),
        )
    return table


def _cost_center_table(result: Report) -> Table | None:
    """A row per cost center (costliest first, ``__unassigned__`` last) and the total they
    add up to; an unpriced part's GPU-hours are said beside its cost."""
    if not result.cost_centers:
        return None
    table = Table(show_header=True, title="by cost center, costliest first")
    table.add_column("cost center", no_wrap=True)
    table.add_column("lines", justify="right")
    for col in ("GPU-hours", "busy", "energy kWh", "cost", "share"):
        table.add_column(col, justify="right")
    for c in result.cost_centers:
        cost = _money(c.total_cost_usd)
        if c.unpriced_gpu_hours:
            cost += f" + {c.unpriced_gpu_hours:,.1f} GPU-h unpriced"
        share = "n/a" if c.share_ratio is None else f"{c.share_ratio:.1%}"
        table.add_row(
            Text(c.cost_center),  # names come from labels: never read as markup
            str(len(c.lines)),
            f"{c.allocated_gpu_hours:,.1f}",
            f"{c.busy_gpu_hours:,.1f}",
            f"{c.energy_kwh:,.1f}",
            cost,
            share,
        )
    t = result.totals
    table.add_row(
        "TOTAL", str(sum(len(c.lines) for c in result.cost_centers)),
        f"{t.allocated_gpu_hours:,.1f}", f"{t.busy_gpu_hours:,.1f}", f"{t.energy_kwh:,.1f}",
        _money(t.total_cost_usd), "100.0%" if t.total_cost_usd else "n/a",
    )  # fmt: skip
    return table


def flag_summary(report: Report) -> str:
    """How many service lines say what about each figure (``docs/chargeback.md``, flags),
    e.g. ``flags: token API 3 validated, 2 unvalidated, 9 not applicable; ...``."""
    parts = []
    for which, name in (("token_api", "token API"), ("latency", "latency"),
                        ("rental", "GPU rental")):  # fmt: skip
        counts: dict[str, int] = {}
        for line in report.lines:
            if line.kind != "idle":
                flag = str(getattr(line, f"{which}_flag"))
                counts[flag] = counts.get(flag, 0) + 1
        said = ", ".join(
            f"{counts[f]} {f}"
            for f in ("validated", "unvalidated", "not applicable")
            if f in counts
        )
        parts.append(f"{name} {said or 'no lines'}")
    return "  flags: " + "; ".join(parts)


def print_summary(result: Report, by: SummaryBy = "service") -> None:
    """The month's headline figures on stderr (stdout carries only the paths written):
    the fleet's totals, with ``by="tenant"`` the tenants of its shared services, with
    ``by="cost-center"`` the subtotal of each cost center."""
    if by not in SUMMARY_BY:
        raise ValueError(f"summary by {by!r}: use one of {', '.join(SUMMARY_BY)}")
    t = result.totals
    out = Console(stderr=True, soft_wrap=True)  # notes and paths stay whole lines
    out.print(
        f"[bold]{result.fleet} {result.month}[/]: {len(result.lines)} lines, "
        f"rate card {result.rate_card.version} ({result.rate_card.digest}), "
        f"idle policy {result.idle_policy}"
    )
    if by == "cluster":
        out.print(_cluster_table(result))
        for note in result.notes:
            out.print(f"  - {note}")
        return
    if by == "tenant":
        tenants = _tenant_table(result)
        if tenants is None:
            out.print("no tenant lines: no shared service had its callers counted this month")
        else:
            out.print(tenants)
        for note in result.notes:
            out.print(f"  - {note}")
        return
    if by == "cost-center":
        centers = _cost_center_table(result)
        out.print(centers if centers is not None else "no cost centers assigned to this report")
        return
    table = Table(show_header=True)
    for col in ("GPU-hours", "busy", "internal cost", "hyperscaler", "specialist", "token API"):
        table.add_column(col, justify="right")
    table.add_row(
        f"{t.allocated_gpu_hours:,.1f}",
        f"{t.busy_gpu_hours:,.1f}",
        f"${t.total_cost_usd:,.2f}",
        f"${t.rental_hyperscaler_usd:,.2f}",
        f"${t.rental_specialist_usd:,.2f}",
        f"${t.token_api_usd:,.2f}",
    )
    out.print(table)
    out.print(Text(flag_summary(result)))
    out.print(Text(findings_summary(result)))
    out.print(Text(anomalies_summary(result)))
    for note in result.notes:
        out.print(f"  - {note}")


def _cluster_table(result: Report) -> Table:
    """Each cluster's subtotal (the lines of its GPUs, idle shared within it) and the
    total they add up to."""
    table = Table(show_header=True)
    for col in ("cluster", "services", "GPU-hours", "busy", "cost"):
        table.add_column(col, justify="left" if col == "cluster" else "right")

    def usd(value: float | None) -> str:
        return "unpriced" if value is None else f"${value:,.2f}"

    for c in result.clusters:
        table.add_row(
            escape(c.cluster), str(c.services), f"{c.allocated_gpu_hours:,.1f}",
            f"{c.busy_gpu_hours:,.1f}", usd(c.total_cost_usd),
        )  # fmt: skip
    t = result.totals
    table.add_row(
        "TOTAL", "", f"{t.allocated_gpu_hours:,.1f}", f"{t.busy_gpu_hours:,.1f}",
        usd(t.total_cost_usd),
    )  # fmt: skip
    return table


def findings_summary(result: Report) -> str:
    """One line on the report's findings, pointing at ``gpuledger findings`` (indented
    like the flags' line above it)."""
    if not result.findings_computed:
        return "  findings: not computed (no findings engine is wired into this run)"
    n = len(result.findings)
    if not n:
        return "  findings: none above the thresholds"
    return (
        f"  findings: {n}, savings identified ${result.findings_savings_usd:,.2f}/month "
        f"(gpuledger findings --month {result.month})"
    )


def anomalies_summary(result: Report) -> str:
    """One line on the month's spend anomalies ("What changed"), the largest first."""
    if not result.anomalies_computed:
        return "  spend anomalies: not computed (report.anomalies.enabled is false)"
    if not result.anomalies:
        return "  spend anomalies: none (no day left its service's baseline)"
    top = max(result.anomalies, key=lambda a: abs(a.change_usd))
    sign = "+" if top.change_usd >= 0 else "-"
    return (
        f"  spend anomalies: {len(result.anomalies)}, the largest {top.label} on {top.day} "
        f"({sign}${abs(top.change_usd):,.2f}: {top.drivers_text}); see What changed"
    )
