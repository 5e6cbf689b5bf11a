"""Redraw the README's two pictures from the demo: ``report.png`` and ``dashboard.png``.

Run ``make screenshots`` (or ``.venv/bin/python docs/images/generate.py``); it needs the
project installed in the interpreter that runs it, plus Debian's ``chromium`` and
``prometheus`` (``make test`` installs both). About two minutes: the demo's month takes
~40 s and the dashboard needs real data in a real Prometheus.

Both pictures come from what the project itself produces, through its command line (the
same commands a newcomer types), so they cannot show a report or a dashboard the code
does not make:

* ``report.png``: ``gpuledger demo --no-serve`` fast-forwards the simulated fleet's month
  into a ledger and writes the chargeback; headless Chromium screenshots the HTML report's
  first screen (title, notes, the headline figures and the per-service table).
* ``dashboard.png``: there is no Grafana here, so the GPU fleet dashboard that
  ``gpuledger dashboards`` writes is drawn from its own JSON: the simulated agent
  (``gpuledger agent``, ``simulate.enabled``) is scraped every second by a real Prometheus
  for :data:`DEFAULT_SECONDS`, every panel's PromQL runs through ``/api/v1/query_range``
  (or ``/api/v1/query`` for an instant panel), and matplotlib draws the panels where their
  ``gridPos`` puts them, in Grafana's dark theme, with their titles, units and legends.

The month is pinned (:data:`REPORT_MONTH`) so the report's figures are the same on every
run; the dashboard shows whatever the last minute of the simulated node was.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPORT_MONTH = "2026-11"
"""The demo month shown: priced by the default rate card (rows dated 2026-11-01)."""
REPORT_WINDOW = (1536, 1600)
"""Wide enough for the per-service table's every column (the page's max-width is 1500 px)."""
REPORT_CROP_HEIGHT = 985
"""The first screen: header, notes, headline figures, the per-service table and its key."""
DASHBOARD = "gpuledger-gpu-fleet.json"
DEFAULT_SECONDS = 75
NODE = "gpu-node-01"
SCRAPE_S = 1

# Grafana's dark theme and classic palette
BG = "#111217"
PANEL = "#181b1f"
BORDER = "#2c3235"
TEXT = "#ccccdc"
MUTED = "#8e8e9a"
PALETTE = (
    "#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9",
    "#705da0", "#37872d", "#fade2a", "#447ebc", "#c15c17", "#96d98d", "#ffb357",
    "#ca95e5", "#ff9830",
)  # fmt: skip
COLORS = {"green": "#73bf69", "yellow": "#fade2a", "red": "#f2495c", "orange": "#ff9830"}
GRID_ROW_PX = 34  # one gridPos row; Grafana's is 30 px, a little more gives legends room
WIDTH_PX = 1600
HEADER_PX = 56


# --- processes ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 -- 127.0.0.1 only
        return json.loads(resp.read())


def wait_until(ready: Callable[[], bool], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            if ready():
                return
        time.sleep(0.3)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
    raise SystemExit(f"timed out waiting for {what}; {log}:\n{tail}")


@contextlib.contextmanager
def running(
    argv: Sequence[str], log: Path, *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> Iterator[None]:
    """A background process for the duration of the block, stopped with SIGTERM."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env)
        try:
            yield
            if proc.poll() is not None:
                raise SystemExit(f"{argv[0]} exited early; see {log}")
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def gpuledger(*args: str, cwd: Path | None = None) -> None:
    """The project's own command line, from this interpreter's installation."""
    subprocess.run([sys.executable, "-m", "gpuledger", *args], check=True, cwd=cwd)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("chromium is not installed (make test installs Debian's package)")


# --- report.png -----------------------------------------------------------------------------
def report_png(work: Path, out: Path) -> None:
    from PIL import Image

    # relative --out: the report names its ledger as `make demo` users see it
    gpuledger("demo", "--no-serve", "--month", REPORT_MONTH, "--out", "demo-out", cwd=work)
    html = work / "demo-out" / "reports" / REPORT_MONTH / f"chargeback-{REPORT_MONTH}.html"
    shot = work / "report-full.png"
    width, height = REPORT_WINDOW
    subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",  # root in a container has no user namespace for the sandbox
            "--disable-gpu",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            f"--window-size={width},{height}",
            f"--screenshot={shot}",
            html.as_uri(),
        ],
        check=True,
        capture_output=True,
    )
    with Image.open(shot) as img:
        first_screen = img.convert("RGB").crop((0, 0, width, REPORT_CROP_HEIGHT))
    save_small(first_screen, out)


def save_small(img: Any, out: Path) -> None:
    """A 256-colour PNG: flat page colours survive it and the file stays small."""
    from PIL import Image

    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        out, optimize=True
    )
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB)")


# --- dashboard.png: data --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Series:
    labels: dict[str, str]
    times: list[float]
    values: list[float]


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def _get(self, path: str, params: dict[str, str]) -> Any:
        doc = http_json(f"{self.url}{path}?{urllib.parse.urlencode(params)}")
        if doc.get("status") != "success":
            raise SystemExit(f"Prometheus refused {params.get('query')}: {doc}")
        return doc["data"]

    def range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        params = {"query": expr, "start": f"{start}", "end": f"{end}", "step": f"{step}"}
        return [
            Series(
                r["metric"], [float(t) for t, _ in r["values"]], [_num(v) for _, v in r["values"]]
            )
            for r in self._get("/api/v1/query_range", params)["result"]
        ]

    def instant(self, expr: str, at: float) -> list[Series]:
        return [
            Series(r["metric"], [float(r["value"][0])], [_num(r["value"][1])])
            for r in self._get("/api/v1/query", {"query": expr, "time": f"{at}"})["result"]
        ]


def _num(text: str) -> float:
    return float(text)  # Prometheus writes NaN and +Inf as float() reads them


def substitute(expr: str, range_s: float) -> str:
    """Grafana's variables as the dashboard's defaults would set them: every node,
    namespace and service; ``$__range`` the shown span; ``$__rate_interval`` four
    scrape intervals (Grafana's floor for it)."""
    expr = expr.replace("$__rate_interval", f"{4 * SCRAPE_S}s")
    expr = expr.replace("$__interval", f"{SCRAPE_S}s").replace("$__range", f"{int(range_s)}s")
    return re.sub(r"\$\{?(node|namespace|service|model_name|database)\}?", ".*", expr)


def legend(fmt: str | None, labels: dict[str, str]) -> str:
    if not fmt:
        inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
        return f"{{{inner}}}"
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)
    return " ".join(text.split())


# --- dashboard.png: units -------------------------------------------------------------------
def fmt_unit(value: float, unit: str | None) -> str:
    if math.isnan(value):
        return "-"
    if unit == "percentunit":
        return f"{value * 100:.1f}%"
    if unit == "percent":
        return f"{value:.1f}%"
    if unit == "celsius":
        return f"{value:.0f} °C"
    if unit == "bytes":
        return _scaled(value, 1024, ("B", "KiB", "MiB", "GiB", "TiB", "PiB"))
    if unit == "watt":
        return _scaled(value, 1000, ("W", "kW", "MW"))
    if unit == "s":
        return f"{value * 1000:.0f} ms" if abs(value) < 1 else f"{value:.2f} s"
    if unit == "currencyUSD":
        return f"${value:,.2f}"
    return _scaled(value, 1000, ("", "K", "Mil", "Bil"))


def _scaled(value: float, base: int, names: tuple[str, ...]) -> str:
    i = 0
    while abs(value) >= base and i < len(names) - 1:
        value /= base
        i += 1
    digits = 0 if float(value).is_integer() else 1 if abs(value) >= 10 else 2
    return f"{value:.{digits}f} {names[i]}".rstrip()


def threshold_color(value: float, field: dict[str, Any]) -> str:
    steps = field.get("defaults", {}).get("thresholds", {}).get("steps")
    if not steps or math.isnan(value):
        return "#8ab8ff"  # no thresholds in the JSON: one neutral colour
    color = str(steps[0]["color"])
    for step in steps[1:]:
        if step.get("value") is not None and value >= step["value"]:
            color = str(step["color"])
    return COLORS.get(color, color)


# --- dashboard.png: drawing -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Box:
    """A panel's place on the figure, in figure fractions (matplotlib's add_axes)."""

    left: float
    bottom: float
    width: float
    height: float

    def inset(
        self, left: float, bottom: float, right: float, top: float
    ) -> tuple[float, float, float, float]:
        return (
            self.left + left * self.width,
            self.bottom + bottom * self.height,
            self.width * (1 - left - right),
            self.height * (1 - bottom - top),
        )


def draw_dashboard(
    board: dict[str, Any], prom: Prometheus, start: float, end: float, out: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyBboxPatch

    panels = [p for p in board["panels"] if p.get("type") != "row"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    height_px = HEADER_PX + rows * GRID_ROW_PX + 8
    fig = Figure(figsize=(WIDTH_PX / 100, height_px / 100), dpi=100, facecolor=BG)
    fig.text(
        12 / WIDTH_PX, 1 - 24 / height_px, board.get("title", ""), color=TEXT,
        fontsize=15, fontweight="bold", va="center",
    )  # fmt: skip
    span = end - start
    stamp = datetime.fromtimestamp(end, UTC).strftime("%Y-%m-%d %H:%M UTC")
    fig.text(
        1 - 12 / WIDTH_PX, 1 - 24 / height_px,
        f"node {NODE} (simulated) · last {span:.0f} s to {stamp} · queried from Prometheus",
        color=MUTED, fontsize=9.5, va="center", ha="right",
    )  # fmt: skip
    gap = 4
    for panel in panels:
        g = panel["gridPos"]
        x0 = g["x"] / 24 * WIDTH_PX + gap
        w = g["w"] / 24 * WIDTH_PX - 2 * gap
        y0 = HEADER_PX + g["y"] * GRID_ROW_PX + gap
        h = g["h"] * GRID_ROW_PX - 2 * gap
        box = Box(x0 / WIDTH_PX, 1 - (y0 + h) / height_px, w / WIDTH_PX, h / height_px)
        frame = fig.add_axes((box.left, box.bottom, box.width, box.height))
        frame.set_axis_off()
        frame.add_patch(
            FancyBboxPatch(
                (0, 0), 1, 1, boxstyle="round,pad=0,rounding_size=0.01",
                transform=frame.transAxes, facecolor=PANEL, edgecolor=BORDER, linewidth=1,
            )
        )  # fmt: skip
        title_h = 26 / h
        frame.text(
            8 / w, 1 - 13 / h, panel.get("title", ""), transform=frame.transAxes, color=TEXT,
            fontsize=10, fontweight="bold", va="center",
        )  # fmt: skip
        body = Box(box.left, box.bottom, box.width, box.height * (1 - title_h))
        data = query_panel(panel, prom, start, end)
        kind = panel.get("type")
        if kind == "stat":
            draw_stat(fig, body, panel, data)
        elif kind == "heatmap":
            draw_heatmap(fig, body, panel, data, mdates)
        elif kind == "table":
            draw_table(fig, body, panel, data, w)
        else:
            draw_timeseries(fig, body, panel, data, mdates, w)
    fig.savefig(out, facecolor=BG, dpi=100)


def query_panel(
    panel: dict[str, Any], prom: Prometheus, start: float, end: float
) -> list[tuple[str, Series]]:
    out: list[tuple[str, Series]] = []
    for target in panel.get("targets", []):
        expr = substitute(target["expr"], end - start)
        instant = target.get("instant") and not target.get("range")
        found = prom.instant(expr, end) if instant else prom.range(expr, start, end, SCRAPE_S)
        out.extend((legend(target.get("legendFormat"), s.labels), s) for s in found)
    return sorted(out, key=lambda item: _natural(item[0]))


def _natural(text: str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text)]


def _style(ax: Any) -> None:
    ax.set_facecolor(PANEL)
    for side in ("top", "right", "left", "bottom"):
        ax.spines[side].set_visible(False)
    ax.tick_params(colors=MUTED, labelsize=7.5, length=0)
    ax.grid(True, color=BORDER, linewidth=0.6)


def draw_stat(fig: Any, box: Box, panel: dict[str, Any], data: list[tuple[str, Series]]) -> None:
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
    value = float("nan")
    if data:
        values = [v for v in data[0][1].values if not math.isnan(v)]
        value = values[-1] if values else float("nan")
    color = threshold_color(value, panel.get("fieldConfig", {}))
    ax = fig.add_axes(box.inset(0.02, 0.04, 0.02, 0.02))
    ax.set_axis_off()
    graph = panel.get("options", {}).get("graphMode") == "area"
    if graph and data and len(data[0][1].times) > 1:
        s = data[0][1]
        ax.fill_between(s.times, s.values, min(s.values), color=color, alpha=0.18, linewidth=0)
        ax.plot(s.times, s.values, color=color, alpha=0.6, linewidth=1)
        low, high = min(s.values), max(s.values)
        pad = (high - low) or abs(high) or 1.0
        ax.set_ylim(low - 0.1 * pad, high + 1.6 * pad)  # the number sits over the line
    ax.text(
        0.5, 0.55, fmt_unit(value, unit), transform=ax.transAxes, ha="center", va="center",
        color=color, fontsize=24, fontweight="bold",
    )  # fmt: skip


def draw_heatmap(
    fig: Any, box: Box, panel: dict[str, Any], data: list[tuple[str, Series]], mdates: Any
) -> None:
    import numpy as np

    opts = panel.get("options", {})
    scheme = opts.get("color", {}).get("scheme", "RdYlGn")
    cmap = scheme + ("_r" if opts.get("color", {}).get("reverse") else "")
    ax = fig.add_axes(box.inset(0.12, 0.14, 0.07, 0.02))
    _style(ax)
    ax.grid(False)
    if not data:
        return
    times = sorted({t for _, s in data for t in s.times})
    col = {t: i for i, t in enumerate(times)}
    grid = np.full((len(data), len(times)), np.nan)
    for row, (_, s) in enumerate(data):
        for t, v in zip(s.times, s.values, strict=True):
            grid[row, col[t]] = v
    lo = opts.get("color", {}).get("min", np.nanmin(grid))
    hi = opts.get("color", {}).get("max", np.nanmax(grid))
    x = [mdates.date2num(datetime.fromtimestamp(t, UTC)) for t in times]
    mesh = ax.pcolormesh(
        [*x, x[-1] + (x[-1] - x[0]) / max(1, len(x) - 1)], np.arange(len(data) + 1), grid,
        cmap=cmap, vmin=lo, vmax=hi, edgecolors=PANEL, linewidth=0.3,
    )  # fmt: skip
    ax.set_yticks(np.arange(len(data)) + 0.5, [name for name, _ in data])
    ax.invert_yaxis()
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    unit = opts.get("cellValues", {}).get("unit")
    bar = fig.colorbar(mesh, cax=fig.add_axes(box.inset(0.945, 0.14, 0.04, 0.02)))
    bar.outline.set_visible(False)
    bar.ax.tick_params(colors=MUTED, labelsize=7.5, length=0)
    bar.ax.yaxis.set_major_formatter(lambda v, _pos: fmt_unit(v, unit))


def draw_timeseries(
    fig: Any,
    box: Box,
    panel: dict[str, Any],
    data: list[tuple[str, Series]],
    mdates: Any,
    width_px: float,
) -> None:
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
    show_legend = panel.get("options", {}).get("legend", {}).get("showLegend", True)
    legend_w = 0.42 if show_legend and data else 0.0
    ax = fig.add_axes(box.inset(70 / width_px, 0.13, legend_w + 0.015, 0.03))
    _style(ax)
    for i, (_, s) in enumerate(data):
        times = [datetime.fromtimestamp(t, UTC) for t in s.times]
        ax.plot(times, s.values, color=PALETTE[i % len(PALETTE)], linewidth=1.3)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    ax.xaxis.set_major_locator(mdates.SecondLocator(bysecond=range(0, 60, 20)))
    ax.yaxis.set_major_formatter(lambda v, _pos: fmt_unit(v, unit))
    if not data:
        ax.text(0.5, 0.5, "No data", transform=ax.transAxes, ha="center", color=MUTED)
        return
    if legend_w:
        draw_legend(fig, box, legend_w, data, unit)


def draw_legend(
    fig: Any, box: Box, legend_w: float, data: list[tuple[str, Series]], unit: str | None
) -> None:
    """Grafana's table legend (mean, max, last), beside the graph rather than under it:
    a panel eight rows high has no room under its graph for a dozen series."""
    ax = fig.add_axes(box.inset(1 - legend_w, 0.02, 0.01, 0.0))
    ax.set_axis_off()
    line_h = 0.098
    fits = int(0.92 / line_h) - 1
    shown = data if len(data) <= fits else data[: fits - 1]
    cols = (0.60, 0.78, 0.96)
    for x, head in zip(cols, ("Mean", "Max", "Last"), strict=True):
        ax.text(x, 0.96, head, transform=ax.transAxes, color=MUTED, fontsize=7, ha="right")
    for i, (name, s) in enumerate(shown):
        y = 0.96 - (i + 1) * line_h
        color = PALETTE[data.index((name, s)) % len(PALETTE)]
        ax.plot([0.0, 0.035], [y + 0.025, y + 0.025], transform=ax.transAxes, color=color, lw=2.5)
        ax.text(0.05, y, name[:30], transform=ax.transAxes, color=TEXT, fontsize=7)
        values = [v for v in s.values if not math.isnan(v)] or [float("nan")]
        stats = (sum(values) / len(values), max(values), values[-1])
        for x, v in zip(cols, stats, strict=True):
            text = fmt_unit(v, unit)
            ax.text(x, y, text, transform=ax.transAxes, color=TEXT, fontsize=7, ha="right")
    if len(shown) < len(data):
        y = 0.96 - (len(shown) + 1) * line_h
        more = f"… {len(data) - len(shown)} more"
        ax.text(0.05, y, more, transform=ax.transAxes, color=MUTED, fontsize=7)


def draw_table(
    fig: Any, box: Box, panel: dict[str, Any], data: list[tuple[str, Series]], width_px: float
) -> None:
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
    organize: dict[str, Any] = {}
    for t in panel.get("transformations", []):
        if t.get("id") == "organize":
            organize = t.get("options", {})
    hidden = set(organize.get("excludeByName", {})) | {"__name__"}
    renamed = organize.get("renameByName", {})
    label_cols = sorted({k for _, s in data for k in s.labels if k not in hidden})
    headers = [*label_cols, renamed.get("Value", "Value")]
    rows = [
        [s.labels.get(k, "") for k in label_cols] + [fmt_unit(s.values[-1], unit)]
        for _, s in sorted(data, key=lambda item: item[1].values[-1])
    ]
    ax = fig.add_axes(box.inset(8 / width_px, 0.03, 8 / width_px, 0.02))
    ax.set_axis_off()
    if not rows:
        ax.text(0.5, 0.5, "No data", transform=ax.transAxes, ha="center", color=MUTED)
        return
    weights = [max(len(h), *(len(r[i]) for r in rows)) + 2 for i, h in enumerate(headers)]
    xs = [sum(weights[:i]) / sum(weights) for i in range(len(weights))]
    line_h = 0.115
    for x, head in zip(xs, headers, strict=True):
        ax.text(x, 0.93, head, transform=ax.transAxes, color=MUTED, fontsize=8, fontweight="bold")
    ax.axhline(0.9, color=BORDER, linewidth=1)
    for i, row in enumerate(rows[: int(0.85 / line_h)]):
        y = 0.93 - (i + 1) * line_h
        for x, cell in zip(xs, row, strict=True):
            ax.text(x, y, cell, transform=ax.transAxes, color=TEXT, fontsize=8)


def dashboard_png(work: Path, out: Path, seconds: int) -> None:
    if shutil.which("prometheus") is None:
        raise SystemExit("prometheus is not installed (make test installs Debian's package)")
    gpuledger("dashboards", "--out", str(work / "dashboards"))
    board = json.loads((work / "dashboards" / DASHBOARD).read_text(encoding="utf-8"))
    agent_port, prom_port = free_port(), free_port()
    agent_cfg = work / "agent.yaml"
    agent_cfg.write_text(
        json.dumps(  # JSON is YAML
            {
                "node_name": NODE,
                "state_dir": str(work / "state"),
                "listen": {"host": "127.0.0.1", "port": agent_port},
                "collection": {"interval_seconds": SCRAPE_S},
                "simulate": {"enabled": True, "gpus": 8, "seed": 42},
            }
        ),
        encoding="utf-8",
    )
    gpuledger("alerts", "--out", str(work / "rules.yaml"))  # the recording rules panels use
    prom_cfg = work / "prometheus.yml"
    prom_cfg.write_text(
        json.dumps(
            {
                "global": {
                    "scrape_interval": f"{SCRAPE_S}s",
                    "evaluation_interval": f"{SCRAPE_S}s",
                },
                "rule_files": [str(work / "rules.yaml")],
                "scrape_configs": [
                    {
                        "job_name": "gpuledger",
                        "static_configs": [{"targets": [f"127.0.0.1:{agent_port}"]}],
                        # as a DaemonSet's target would read (not this run's free port)
                        "relabel_configs": [
                            {"target_label": "instance", "replacement": f"{NODE}:9835"}
                        ],
                    }
                ],
            }
        ),
        encoding="utf-8",
    )
    agent_argv = [sys.executable, "-m", "gpuledger", "agent", "--config", str(agent_cfg)]
    prom_argv = [
        "prometheus",
        f"--config.file={prom_cfg}",
        f"--storage.tsdb.path={work / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{prom_port}",
    ]
    # the agent refuses unknown GPULEDGER_* variables: start it with none of the caller's
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPULEDGER_")}
    prom = Prometheus(f"http://127.0.0.1:{prom_port}")
    with (
        running(agent_argv, work / "agent.log", env=env),
        running(prom_argv, work / "prometheus.log", cwd=work),
    ):
        wait_until(
            lambda: http_json(f"http://127.0.0.1:{agent_port}/readyz") is not None,
            60,
            "the agent to be ready",
            work / "agent.log",
        )
        wait_until(
            lambda: bool(prom.instant("gpuledger_build_info", time.time())),
            60,
            "Prometheus to scrape the agent",
            work / "prometheus.log",
        )
        start = time.time()
        print(f"collecting {seconds} s of the simulated node in Prometheus …", flush=True)
        time.sleep(seconds)
        end = time.time()
        draw_dashboard(board, prom, start, end, work / "dashboard-full.png")
    from PIL import Image

    with Image.open(work / "dashboard-full.png") as img:
        save_small(img.convert("RGB"), out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("report", "dashboard"), help="draw one picture")
    parser.add_argument("--seconds", type=int, default=DEFAULT_SECONDS, help="data to collect")
    parser.add_argument("--out", type=Path, default=HERE, help="directory for the PNGs")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gpuledger-screenshots-") as tmp:
        work = Path(tmp)
        if args.only in (None, "report"):
            (work / "report").mkdir()
            report_png(work / "report", args.out / "report.png")
        if args.only in (None, "dashboard"):
            (work / "dashboard").mkdir()
            dashboard_png(work / "dashboard", args.out / "dashboard.png", args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
