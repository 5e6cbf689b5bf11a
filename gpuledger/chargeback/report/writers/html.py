"""The monthly chargeback as one self-contained HTML page: tables, notes and inline SVG charts.

Finance reads it on screen and prints it (A4 landscape), so it needs nothing from outside:
no scripts, no fonts, no images by URL. A Content-Security-Policy ``<meta>`` forbids all of
them, which also blocks script injection should a Kubernetes name slip through escaping
(the template autoescapes; matplotlib escapes the text it writes into the SVG).

Charts are drawn with matplotlib's object API (:class:`~matplotlib.figure.Figure`, never
pyplot), written as SVG with real ``<text>`` (searchable, crisp in print) and a fixed hash
salt, so the same report renders to the same bytes. Element ids inside each SVG are
prefixed with the chart's id: five inline SVGs share one document.

Per-service charts show at most :data:`TOP_SERVICES` services (the costliest, and always
the unpriced ones, which need attention), then an "others" bucket, then the
unattributed and idle lines. A value that is not known (unpriced, no counterfactual) is
drawn as the text "unpriced" / "n/a", never as a bar of height zero.
"""

from __future__ import annotations

import io
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import jinja2
import matplotlib
from markupsafe import Markup
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter
from matplotlib.typing import RcKeyType

from gpuledger.chargeback.report.model import ModelLine, Report, ServiceLine

TOP_SERVICES = 20
FLAG = "⚑"
UNPRICED = "unpriced"
NA = "n/a"
_LABEL_MAX = 38
_WIDTH_IN = 10.5

# Colors: a palette that survives grayscale printing and color-blindness (Okabe-Ito based).
C_CAPACITY = "#1f4e79"
C_ENERGY = "#56b4e9"
C_IDLE_SHARE = "#b0b0b0"
C_INTERNAL = "#1f4e79"
C_HYPERSCALER = "#e69f00"
C_SPECIALIST = "#009e73"
C_API = "#cc79a7"
C_ALLOCATED = "#c9d9ea"
C_BUSY = "#1f4e79"
C_IDLE = "#d55e00"
C_HELD = "#1f4e79"
C_MISSING = "#a33"
C_TEXT = "#222"
C_MUTED = "#666"

_RC: dict[RcKeyType, Any] = {
    "svg.fonttype": "none",
    "svg.hashsalt": "gpuledger-chargeback",
    "text.parse_math": False,  # "$1,490 … $2,501" is money, not TeX; names may hold "$"
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
    "font.size": 9.0,
    "axes.titlesize": 10.0,
    "axes.titleweight": "bold",
    "axes.edgecolor": "#888",
    "axes.labelcolor": C_TEXT,
    "xtick.color": C_TEXT,
    "ytick.color": C_TEXT,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "legend.fontsize": 8.5,
}
# rcParams are process-wide: the rc_context below is held under this lock so two reports
# rendered at once cannot see each other's settings half-applied.
_RC_LOCK = threading.Lock()


# -- formatting (shared by the template and the charts) ---------------------------------------


def money(v: float | None, *, cents: bool = True) -> str:
    if v is None:
        return NA
    sign = "−" if v < 0 else ""
    return f"{sign}${abs(v):,.2f}" if cents else f"{sign}${abs(v):,.0f}"


def hours(v: float | None) -> str:
    return NA if v is None else f"{v:,.1f}"


def pct(v: float | None, digits: int = 1) -> str:
    return NA if v is None else f"{v * 100:.{digits}f}%"


def kwh(v: float | None) -> str:
    return NA if v is None else f"{v:,.1f}"


def ms(v: float | None) -> str:
    return NA if v is None else f"{v * 1000:,.1f} ms"


def rate(v: float | None, unit: str) -> str:
    return NA if v is None else f"${v:,.4f}/{unit}"


def count(v: float | None) -> str:
    """Token counts: 1.20 B, 299.8 M, 12.0 k."""
    if v is None:
        return NA
    for size, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= size:
            return f"{v / size:,.2f} {suffix}"
    return f"{v:,.0f}"


def short_model(name: str) -> str:
    return name.removeprefix("NVIDIA ")


def _clip(label: str, limit: int = _LABEL_MAX) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


def unpriced_reason(line: ServiceLine) -> str:
    models = ", ".join(line.unpriced_gpu_models)
    return f"no cost-of-ownership row on the rate card for {models}"


def unpriced_short(line: ServiceLine) -> str:
    return "no rate for " + ", ".join(short_model(m) for m in line.unpriced_gpu_models)


def gpu_names(line: ServiceLine) -> list[tuple[str, str]]:
    """(what the table shows, the full model name): the rate card's class where it has one."""
    return [(ml.gpu_class or short_model(ml.gpu_model), ml.gpu_model) for ml in line.models]


def when(iso: str) -> str:
    """``2026-10-01T00:00:00+00:00`` → ``2026-10-01 00:00 UTC``."""
    try:
        t = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso
    if t.tzinfo is None:
        return t.strftime("%Y-%m-%d %H:%M")
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def line_label(line: ServiceLine) -> str:
    if line.kind == "idle":
        return "idle capacity"
    if line.kind == "unattributed":
        return "unattributed"
    return line.label


# -- chart buckets ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bucket:
    """One bar group of a per-service chart: a line, or several summed ("others")."""

    label: str
    kind: str  # service | others | unattributed | idle
    lines: tuple[ServiceLine, ...]
    flagged: bool

    def total(self, get: Callable[[ServiceLine], float | None]) -> tuple[float | None, int]:
        """Sum of the known values and how many lines had none (None when none had one)."""
        known = [v for v in (get(line) for line in self.lines) if v is not None]
        missing = len(self.lines) - len(known)
        return (sum(known) if known else None), missing


def buckets(
    lines: Sequence[ServiceLine], top: int = TOP_SERVICES, *, with_idle: bool = True
) -> list[Bucket]:
    """The services to chart: all unpriced ones (up to ``top``), the costliest priced ones
    up to ``top`` in all, one "others" bucket for the rest, then unattributed and idle."""
    services = [line for line in lines if line.kind == "service"]
    unpriced = [line for line in services if line.total_cost_usd is None][:top]
    priced = sorted(
        (line for line in services if line.total_cost_usd is not None),
        key=lambda line: (-(line.total_cost_usd or 0.0), line.label),
    )
    chosen = {id(line) for line in unpriced + priced[: max(0, top - len(unpriced))]}
    out = [
        Bucket(_clip(line.label), "service", (line,), line.counterfactual_flagged)
        for line in services
        if id(line) in chosen
    ]
    rest = tuple(line for line in services if id(line) not in chosen)
    if rest:
        label = f"others ({len(rest)} services)"
        out.append(Bucket(label, "others", rest, any(r.counterfactual_flagged for r in rest)))
    for kind in ("unattributed", "idle"):
        if kind == "idle" and not with_idle:
            continue
        for line in lines:
            if line.kind == kind:
                out.append(Bucket(line_label(line), kind, (line,), line.counterfactual_flagged))
    return out


# -- SVG plumbing ----------------------------------------------------------------------------

_PROLOG_RE = re.compile(r"^.*?(?=<svg\b)", re.S)
_METADATA_RE = re.compile(r"<metadata>.*?</metadata>\s*", re.S)
_SIZE_RE = re.compile(r'(<svg\b[^>]*?)\s+width="[^"]*"\s+height="[^"]*"')
_ID_RE = re.compile(r'(\bid="|url\(#|href="#)([A-Za-z_][\w.\-]*)')


def _svg(fig: Figure, chart_id: str, title: str) -> Markup:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    text = _PROLOG_RE.sub("", buf.getvalue(), count=1)
    text = _METADATA_RE.sub("", text, count=1)
    text = _SIZE_RE.sub(r"\1", text, count=1)
    # ids (figure_1, axes_1, clip paths, markers) are unique per SVG, not per page.
    text = _ID_RE.sub(lambda m: f"{m.group(1)}{chart_id}-{m.group(2)}", text)
    esc = str(Markup.escape(title))
    text = text.replace(
        "<svg ",
        f'<svg role="img" aria-label="{esc}" class="chart" preserveAspectRatio="xMinYMin meet" ',
        1,
    )
    return Markup(text.strip())  # noqa: S704 - matplotlib's own output, its text XML-escaped


def _figure(height_in: float, width_in: float = _WIDTH_IN) -> Figure:
    return Figure(figsize=(width_in, max(1.6, height_in)), layout="constrained")


def _money_axis(ax: Axes, axis: str = "x") -> None:
    fmt = FuncFormatter(lambda v, _pos: money(v, cents=False))
    (ax.xaxis if axis == "x" else ax.yaxis).set_major_formatter(fmt)


def _hours_axis(ax: Axes, axis: str = "x") -> None:
    fmt = FuncFormatter(lambda v, _pos: f"{v:,.0f}")
    (ax.xaxis if axis == "x" else ax.yaxis).set_major_formatter(fmt)


def _category_axis(ax: Axes, labels: Sequence[str], kinds: Sequence[str]) -> None:
    ax.set_yticks(range(len(labels)), labels=list(labels))
    ax.set_ylim(len(labels) - 0.5, -0.5)  # first on top, no margin rows
    ax.tick_params(axis="y", length=0)
    for tick, kind in zip(ax.get_yticklabels(), kinds, strict=True):
        if kind in ("idle", "unattributed", "others"):
            tick.set_fontstyle("italic")
            tick.set_color(C_MUTED)
    ax.grid(axis="x", color="#e5e5e5", linewidth=0.6)
    ax.set_axisbelow(True)


def _headroom(ax: Axes, top: float, share: float = 0.22) -> None:
    """Room on the right of horizontal bars for their value labels."""
    ax.set_xlim(0, (top if top > 0 else 1.0) * (1 + share))


def _legend_above(ax: Axes, handles: Sequence[Patch]) -> None:
    ax.legend(handles=list(handles), loc="lower left", bbox_to_anchor=(0.0, 1.0),
              ncols=len(handles), borderaxespad=0.3)  # fmt: skip


def _missing_note(n: int) -> str:
    return f" (+{n} {UNPRICED})" if n else ""


# -- the five charts -------------------------------------------------------------------------


def chart_cost_by_service(report: Report) -> Markup:
    """(1) What each line is charged, stacked capacity / energy / idle share."""
    bs = buckets(report.lines)
    fig = _figure(0.9 + 0.3 * len(bs))
    ax = fig.add_subplot()
    _category_axis(ax, [b.label for b in bs], [b.kind for b in bs])
    top = 0.0
    for i, b in enumerate(bs):
        cap, cap_missing = b.total(lambda line: line.capacity_cost_usd)
        energy, _ = b.total(lambda line: line.energy_cost_usd)
        share = sum(line.idle_share_usd for line in b.lines)
        total, missing = b.total(lambda line: line.total_cost_usd)
        if cap is None or total is None:
            ax.text(0, i, f"  {UNPRICED}", va="center", color=C_MISSING, style="italic")
            continue
        left = 0.0
        for value, color in ((cap, C_CAPACITY), (energy or 0.0, C_ENERGY)):
            ax.barh(i, value, left=left, color=color, height=0.62)
            left += value
        if share > 0:
            ax.barh(i, share, left=left, color=C_IDLE_SHARE, height=0.62, hatch="///")
            left += share
        top = max(top, left)
        label = money(total, cents=False) + _missing_note(max(missing, cap_missing))
        if share < 0:
            label += f" (idle cost {money(-share, cents=False)} spread to services)"
        ax.text(left, i, "  " + label, va="center", fontsize=8.5, color=C_TEXT)
    _headroom(ax, top, 0.3)
    _money_axis(ax)
    ax.set_xlabel(f"charged this month ({report.currency})")
    handles = [
        Patch(color=C_CAPACITY, label="capacity"),
        Patch(color=C_ENERGY, label="energy"),
    ]
    if any(line.idle_share_usd > 0 for line in report.lines):
        handles.append(
            Patch(facecolor=C_IDLE_SHARE, hatch="///", label="idle share", edgecolor="white")
        )
    _legend_above(ax, handles)
    return _svg(fig, "chart-cost", "Cost by service")


def chart_gpu_hours(report: Report) -> Markup:
    """(2) Allocated GPU-hours with the busy part inside, utilization beside."""
    bs = buckets(report.lines)
    fig = _figure(0.9 + 0.3 * len(bs))
    ax = fig.add_subplot()
    _category_axis(ax, [b.label for b in bs], [b.kind for b in bs])
    top = max((sum(line.allocated_gpu_hours for line in b.lines) for b in bs), default=0.0)
    for i, b in enumerate(bs):
        alloc = sum(line.allocated_gpu_hours for line in b.lines)
        busy = sum(line.busy_gpu_hours for line in b.lines)
        ax.barh(i, alloc, color=C_ALLOCATED, height=0.66, edgecolor="#8fb0d3", linewidth=0.5)
        ax.barh(i, busy, color=C_BUSY, height=0.36)
        util = pct(busy / alloc if alloc > 0 else None, 0)
        ax.text(
            alloc, i, f"  {hours(alloc)} h · {util} busy", va="center", fontsize=8.5, color=C_TEXT
        )
    _headroom(ax, top, 0.32)
    _hours_axis(ax)
    ax.set_xlabel("GPU-hours")
    _legend_above(
        ax, [Patch(color=C_ALLOCATED, label="allocated"), Patch(color=C_BUSY, label="busy")]
    )
    return _svg(fig, "chart-hours", "Allocated vs busy GPU-hours")


_COUNTERFACTUALS: tuple[tuple[str, str, Callable[[ServiceLine], float | None]], ...] = (
    ("internal cost (charged)", C_INTERNAL, lambda line: line.total_cost_usd),
    ("cheapest hyperscaler", C_HYPERSCALER, lambda line: line.rental_hyperscaler_usd),
    ("cheapest specialist", C_SPECIALIST, lambda line: line.rental_specialist_usd),
    ("per-token API", C_API, lambda line: line.token_api_usd),
)


def chart_counterfactuals(report: Report) -> Markup:
    """(3) Per service: what it cost here against renting or buying tokens instead."""
    bs = buckets(report.lines, with_idle=False)
    n = len(_COUNTERFACTUALS)
    bar = 0.8 / n
    fig = _figure(1.1 + 0.62 * len(bs))
    ax = fig.add_subplot()
    labels = [f"{FLAG} {b.label}" if b.flagged else b.label for b in bs]
    _category_axis(ax, labels, [b.kind for b in bs])
    top = 0.0
    for i, b in enumerate(bs):
        for j, (name, color, get) in enumerate(_COUNTERFACTUALS):
            y = i - 0.4 + bar * (j + 0.5)
            value, missing = b.total(get)
            if value is None:
                what = UNPRICED if j == 0 else NA
                color_na = C_MISSING if j == 0 else C_MUTED
                ax.text(0, y, f" {what}: {name}", va="center", fontsize=7.5, color=color_na,
                        style="italic")  # fmt: skip
                continue
            ax.barh(y, value, height=bar * 0.92, color=color)
            top = max(top, value)
            note = f" (+{missing} {NA})" if missing else ""
            ax.text(value, y, f" {money(value, cents=False)}{note}", va="center", fontsize=7.5)
    _headroom(ax, top, 0.25)
    _money_axis(ax)
    ax.set_xlabel(f"{report.currency} for the month's allocated GPU-hours / billable tokens")
    _legend_above(ax, [Patch(color=c, label=name) for name, c, _ in _COUNTERFACTUALS])
    return _svg(fig, "chart-counterfactual", "Internal cost against counterfactuals")


def chart_trend(report: Report) -> Markup:
    """(4) Month over month: internal cost and hyperscaler counterfactual; GPU-hours."""
    points = report.trend
    fig = _figure(3.3)
    ax_cost, ax_hours = fig.subplots(1, 2)
    xs = list(range(len(points)))
    months = [p.month for p in points]
    width = 0.38
    top = max((max(p.internal_cost_usd, p.rental_hyperscaler_usd) for p in points), default=0.0)
    for x, p in zip(xs, points, strict=True):
        ax_cost.bar(x - width / 2, p.internal_cost_usd, width, color=C_INTERNAL)
        ax_cost.bar(x + width / 2, p.rental_hyperscaler_usd, width, color=C_HYPERSCALER)
        for dx, v in ((-width / 2, p.internal_cost_usd), (width / 2, p.rental_hyperscaler_usd)):
            ax_cost.text(x + dx, v, money(v, cents=False), ha="center", va="bottom", fontsize=7.5)
    ax_cost.set_ylim(0, (top or 1.0) * 1.35)
    _money_axis(ax_cost, "y")
    ax_cost.set_title("Cost per month")
    ax_cost.legend(
        handles=[
            Patch(color=C_INTERNAL, label="internal cost"),
            Patch(color=C_HYPERSCALER, label="cheapest hyperscaler"),
        ],
        loc="upper left",
    )
    htop = max((p.allocated_gpu_hours for p in points), default=0.0)
    for x, p in zip(xs, points, strict=True):
        held = p.allocated_gpu_hours - p.idle_gpu_hours
        ax_hours.bar(x, held, 0.55, color=C_HELD)
        ax_hours.bar(x, p.idle_gpu_hours, 0.55, bottom=held, color=C_IDLE)
        ax_hours.text(
            x, p.allocated_gpu_hours, hours(p.allocated_gpu_hours), ha="center", va="bottom",
            fontsize=7.5,
        )  # fmt: skip
    ax_hours.set_ylim(0, (htop or 1.0) * 1.3)
    _hours_axis(ax_hours, "y")
    ax_hours.set_title("GPU-hours per month")
    ax_hours.legend(
        handles=[
            Patch(color=C_HELD, label="held by workloads"),
            Patch(color=C_IDLE, label="idle"),
        ],
        loc="upper left",
    )
    cost_labels = [
        f"{p.month}\nexcl. {hours(p.unpriced_gpu_hours)} {UNPRICED} GPU-h"
        if p.unpriced_gpu_hours > 0
        else p.month
        for p in points
    ]
    ax_cost.set_xticks(xs, labels=cost_labels)
    for label, p in zip(ax_cost.get_xticklabels(), points, strict=True):
        label.set_linespacing(1.4)
        if p.unpriced_gpu_hours > 0:
            label.set_color(C_MISSING)
    ax_hours.set_xticks(xs, labels=months)
    lo, hi = (-0.7, len(points) - 0.3) if len(points) > 1 else (-1.2, 1.2)
    for ax in (ax_cost, ax_hours):
        ax.set_xlim(lo, hi)
        ax.grid(axis="y", color="#e5e5e5", linewidth=0.6)
        ax.set_axisbelow(True)
    return _svg(fig, "chart-trend", "Month-over-month trend")


def idle_by_model(report: Report) -> list[tuple[str, float, float]]:
    """(GPU model, GPU-hours held by workloads, idle GPU-hours), largest first."""
    held: dict[str, float] = defaultdict(float)
    idle: dict[str, float] = defaultdict(float)
    for line in report.lines:
        for ml in line.models:
            (idle if line.kind == "idle" else held)[ml.gpu_model] += ml.allocated_gpu_hours
    models = sorted(set(held) | set(idle), key=lambda m: (-(held[m] + idle[m]), m))
    return [(m, held[m], idle[m]) for m in models]


def chart_idle(report: Report) -> Markup:
    """(5) Idle capacity: per GPU model and for the fleet, idle against held."""
    rows = idle_by_model(report)
    fleet = ("whole fleet", sum(r[1] for r in rows), sum(r[2] for r in rows))
    data = [fleet, *((short_model(m), h, i) for m, h, i in rows)]
    fig = _figure(1.0 + 0.34 * len(data))
    ax = fig.add_subplot()
    _category_axis(ax, [d[0] for d in data], ["total"] + ["model"] * len(rows))
    ax.get_yticklabels()[0].set_fontweight("bold")
    top = max((h + i for _, h, i in data), default=0.0)
    for y, (_label, held, idle) in enumerate(data):
        ax.barh(y, held, color=C_HELD, height=0.6)
        ax.barh(y, idle, left=held, color=C_IDLE, height=0.6)
        total = held + idle
        share = pct(idle / total if total > 0 else None)
        ax.text(total, y, f"  {hours(idle)} h idle ({share})", va="center", fontsize=8.5)
    if len(data) > 1:
        ax.axhline(0.5, color="#999", linewidth=0.6)
    _headroom(ax, top, 0.35)
    _hours_axis(ax)
    ax.set_xlabel("GPU-hours observed")
    _legend_above(
        ax, [Patch(color=C_HELD, label="held by workloads"), Patch(color=C_IDLE, label="idle")]
    )
    return _svg(fig, "chart-idle", "Idle capacity")


@dataclass(frozen=True, slots=True)
class Chart:
    id: str
    title: str
    caption: str
    svg: Markup
    wide: bool = True


def charts(report: Report) -> list[Chart]:
    """The five charts, in the order the page shows them."""
    capped = any(b.kind == "others" for b in buckets(report.lines))
    cap_note = (
        f" The {TOP_SERVICES} costliest services (and every unpriced one) are shown; the rest "
        "are summed as “others”."
        if capped
        else ""
    )
    with _RC_LOCK, matplotlib.rc_context(_RC):
        return [
            Chart(
                "chart-cost",
                "Cost by service",
                "What each line is charged this month: capacity (allocated GPU-hours × rate) "
                "plus energy (measured kWh × rate incl. PUE)"
                + (", plus its share of idle capacity" if report.idle_policy != "separate" else "")
                + f". Unpriced lines carry no bar.{cap_note}",
                chart_cost_by_service(report),
            ),
            Chart(
                "chart-hours",
                "Allocated vs busy GPU-hours",
                "Allocated GPU-hours (light) with the busy part inside (dark); the label gives "
                f"utilization = busy ÷ allocated.{cap_note}",
                chart_gpu_hours(report),
            ),
            Chart(
                "chart-counterfactual",
                "Internal cost against counterfactuals",
                "The same allocated GPU-hours rented on demand from the cheapest hyperscaler and "
                "specialist, and the billable tokens at the cheapest per-token API. "
                f"“n/a”: no counterfactual exists (see the basis table). {FLAG}: a "
                f"counterfactual of the line rests on something unvalidated (its flags in "
                f"the basis table).{cap_note}",
                chart_counterfactuals(report),
            ),
            Chart(
                "chart-trend",
                "Month-over-month trend",
                f"The last {len(report.trend)} month(s) with ledger data, priced with this "
                "rate card. Internal cost excludes unpriced GPU-hours.",
                chart_trend(report),
            ),
            Chart(
                "chart-idle",
                "Idle capacity",
                "GPU-hours the agent observed, held by workloads against idle, per GPU model.",
                chart_idle(report),
            ),
        ]


# -- page model ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Card:
    title: str
    value: str
    detail: str
    tone: str = ""  # "" | good | warn | bad


def _coverage_tone(cov: float | None) -> str:
    if cov is None:
        return "warn"
    return "bad" if cov < 0.95 else "warn" if cov < 0.99 else "good"


def _cards(report: Report) -> list[Card]:
    t = report.totals
    priced_lines = [line for line in report.lines if line.kind != "idle"]
    with_hyper = [line for line in priced_lines if line.savings_vs_hyperscaler_usd is not None]
    savings = sum(line.savings_vs_hyperscaler_usd or 0.0 for line in with_hyper)
    idle_cost = sum(line.total_cost_usd or 0.0 for line in report.lines if line.kind == "idle")
    unpriced = f"; {hours(t.unpriced_gpu_hours)} GPU-h {UNPRICED}" if t.unpriced_gpu_hours else ""
    cov = report.fleet_coverage_ratio
    idle_ratio = t.idle_gpu_hours / t.allocated_gpu_hours if t.allocated_gpu_hours else None
    savings_detail = f"over {len(with_hyper)} line(s) with a counterfactual"
    if idle_cost > 0:
        savings_detail += f"; idle capacity ({money(idle_cost)}) not netted"
    return [
        Card(
            "Total internal cost",
            money(t.total_cost_usd),
            f"capacity {money(t.capacity_cost_usd)} + energy {money(t.energy_cost_usd)}{unpriced}",
            "warn" if t.unpriced_gpu_hours else "",
        ),
        Card(
            "Cheapest-hyperscaler counterfactual",
            money(t.rental_hyperscaler_usd),
            "the same GPU-hours rented on demand (lines that have a rate)",
        ),
        Card(
            "Savings vs hyperscaler",
            money(savings),
            savings_detail,
            "good" if savings > 0 else "bad" if savings < 0 else "",
        ),
        Card(
            "Fleet utilization",
            pct(t.utilization_ratio),
            f"busy {hours(t.busy_gpu_hours)} of {hours(t.allocated_gpu_hours - t.idle_gpu_hours)}"
            " GPU-h held",
        ),
        Card(
            "Idle GPU-hours",
            hours(t.idle_gpu_hours),
            f"{pct(idle_ratio)} of {hours(t.allocated_gpu_hours)} GPU-h observed",
            "warn" if idle_ratio is not None and idle_ratio > 0.2 else "",
        ),
        Card(
            "Coverage",
            pct(cov),
            "GPU-time observed ÷ GPU-time in the period",
            _coverage_tone(cov),
        ),
    ]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Source:
    number: int
    text: str


class _Sources:
    """Rate sources, numbered in order of first use, for the per-model table's footnotes."""

    def __init__(self) -> None:
        self._numbers: dict[str, int] = {}

    def number(self, text: str) -> int:
        return self._numbers.setdefault(text, len(self._numbers) + 1)

    def items(self) -> list[Source]:
        return [Source(n, t) for t, n in self._numbers.items()]


@dataclass(frozen=True, slots=True)
class ModelRow:
    line: ServiceLine
    model: ModelLine
    hyperscaler_ref: int | None
    specialist_ref: int | None


def _model_rows(report: Report, sources: _Sources) -> list[ModelRow]:
    rows = []
    for line in report.lines:
        for ml in line.models:
            rows.append(
                ModelRow(
                    line,
                    ml,
                    sources.number(ml.hyperscaler.source) if ml.hyperscaler else None,
                    sources.number(ml.specialist.source) if ml.specialist else None,
                )
            )
    return rows


_NOTE_TONES = (("UNPRICED", "bad"), ("Coverage", "warn"), ("Counterfactuals", "warn"))


def _note_tone(note: str) -> str:
    return next((tone for prefix, tone in _NOTE_TONES if note.startswith(prefix)), "info")


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("gpuledger.chargeback.report.writers", "templates"),
        autoescape=True,  # namespaces and services come from Kubernetes: untrusted
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.globals.update(
        money=money, hours=hours, pct=pct, kwh=kwh, ms=ms, rate=rate, count=count,
        short_model=short_model, unpriced_reason=unpriced_reason, unpriced_short=unpriced_short,
        line_label=line_label, gpu_names=gpu_names, when=when,
        FLAG=FLAG, UNPRICED=UNPRICED, NA=NA,
    )  # fmt: skip
    return env


def _sum_known(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def render_html(report: Report) -> str:
    """The report as one self-contained HTML document (no scripts, no external resources)."""
    from gpuledger.chargeback.report.console import per_million
    from gpuledger.chargeback.report.writers import html_tenants as tn  # it reuses this module
    from gpuledger.chargeback.report.writers.html_anomalies import anomalies_view
    from gpuledger.chargeback.report.writers.html_findings import findings_view

    sources = _Sources()
    model_rows = _model_rows(report, sources)
    flagged = [line for line in report.lines if line.counterfactual_flagged]
    template = _environment().get_template("report.html.j2")
    return template.render(
        r=report,
        t=report.totals,
        cards=_cards(report),
        notes=[(note, _note_tone(note)) for note in report.notes],
        model_rows=model_rows,
        sources=sources.items(),
        flagged=flagged,
        charts=charts(report),
        idle_rows=idle_by_model(report),
        savings_total=_sum_known(line.savings_vs_hyperscaler_usd for line in report.lines),
        savings_specialist_total=_sum_known(
            line.savings_vs_specialist_usd for line in report.lines
        ),
        savings_api_total=_sum_known(line.savings_vs_token_api_usd for line in report.lines),
        idle_share_total=sum(line.idle_share_usd for line in report.lines),
        top_services=TOP_SERVICES,
        tenant_tables=tn.tenant_tables(report),
        tenant_label=tn.tenant_label,
        weights_label=tn.weights_label,
        weights_title=tn.weights_title,
        FIXED_MARK=tn.FIXED,
        per_million=per_million,
        fv=findings_view(report),
        av=anomalies_view(report),
    )
