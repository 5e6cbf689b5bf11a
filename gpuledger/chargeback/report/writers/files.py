"""Writes a :class:`~gpuledger.chargeback.report.model.Report` to disk in every format.

Layout: ``<out>/<YYYY-MM>/chargeback-<YYYY-MM>.{csv,json,html}``, plus
``chargeback-<YYYY-MM>-focus.csv`` (FOCUS 1.2), and with the CSV its companions
``chargeback-<YYYY-MM>-coverage.csv`` (per node), ``chargeback-<YYYY-MM>-tenants.csv``
(per tenant of a shared service), ``chargeback-<YYYY-MM>-findings.csv`` (per finding,
ranked), ``chargeback-<YYYY-MM>-cost-centers.csv`` (per cost center) and
``chargeback-<YYYY-MM>-anomalies.csv`` (per spend anomaly: "What changed"); the last
four are only a header when empty, so a rerun never leaves an earlier run's rows behind.
Each file is written to a temporary name and renamed into place, so the agent's
``/reports/`` never serves half a file and a failed run leaves the previous one intact.
A new format is a writer module beside this one, its name in :data:`FORMATS`, its file
name in :func:`file_name` and its renderer in :func:`_renderers`.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from gpuledger.chargeback.report.model import Report
from gpuledger.chargeback.report.writers.anomalies import anomalies_csv
from gpuledger.chargeback.report.writers.clusters import clusters_csv
from gpuledger.chargeback.report.writers.csv_json import (
    cost_centers_csv,
    coverage_csv,
    lines_csv,
    report_json,
    tenants_csv,
)
from gpuledger.chargeback.report.writers.findings import findings_csv

Format = Literal["csv", "json", "focus", "html"]
FORMATS: tuple[Format, ...] = ("csv", "json", "focus", "html")


def file_name(month: str, fmt: Format) -> str:
    suffix = {"csv": ".csv", "json": ".json", "focus": "-focus.csv", "html": ".html"}[fmt]
    return f"chargeback-{month}{suffix}"


CSV_COMPANIONS: dict[str, Callable[[Report], str]] = {
    "coverage": coverage_csv,
    "tenants": tenants_csv,
    "findings": findings_csv,
    "cost-centers": cost_centers_csv,  # issue 18: a subtotal per cost center
    "anomalies": anomalies_csv,
    "clusters": clusters_csv,
}
"""Files written beside ``chargeback-<YYYY-MM>.csv`` whenever the CSV is."""


def companion_name(month: str, what: str) -> str:
    return f"chargeback-{month}-{what}.csv"


def all_file_names(month: str) -> set[str]:
    """Every name :func:`write_report` may write for ``month``."""
    return {file_name(month, f) for f in FORMATS} | {
        companion_name(month, what) for what in CSV_COMPANIONS
    }


def write_atomic(path: Path, text: str) -> None:
    """``text`` to ``path`` through a temporary file in the same directory + rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the report from its readers
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# The HTML report's packages: the ``report`` extra, which the node agent's image leaves
# out (matplotlib and numpy are about 100 MB; docs/deploy.md).
HTML_PACKAGES: tuple[tuple[str, str], ...] = (("matplotlib", "matplotlib"), ("jinja2", "Jinja2"))
INSTALL_HINT = (
    "install the report extra (pip install 'gpuledger[report]'), or run the reporter image "
    "(docker build --target reporter, docs/deploy.md), or leave html out of report.formats "
    "(gpuledger report --format csv,json,focus)"
)


class ReportDependencyError(RuntimeError):
    """A format needs a package this installation lacks (one line: what and how)."""


def missing_packages(formats: Sequence[Format]) -> list[str]:
    """The distributions ``formats`` need and this environment lacks."""
    if "html" not in formats:
        return []
    return [dist for module, dist in HTML_PACKAGES if importlib.util.find_spec(module) is None]


def require_packages(formats: Sequence[Format]) -> None:
    """Refuse, before any work, formats whose packages are missing."""
    missing = missing_packages(formats)
    if missing:
        raise ReportDependencyError(
            f"the html report format needs {' and '.join(missing)}, not installed here: "
            + INSTALL_HINT
        )


def _renderers() -> dict[Format, Callable[[Report], str]]:
    from gpuledger.chargeback.report.writers.focus import focus_csv

    if missing_packages(("html",)):
        return {"csv": lines_csv, "json": report_json, "focus": focus_csv}
    from gpuledger.chargeback.report.writers.html import render_html

    return {"csv": lines_csv, "json": report_json, "focus": focus_csv, "html": render_html}


def write_report(
    report: Report,
    out_dir: Path,
    formats: Sequence[Format] = FORMATS,
    *,
    on_written: Callable[[Path], None] | None = None,
) -> list[Path]:
    """Every format of ``report`` under ``out_dir/<month>/``; returns the paths written."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown report format(s) {unknown}; use any of {', '.join(FORMATS)}")
    require_packages(formats)
    month_dir = out_dir / report.month
    renderers = _renderers()
    written: list[Path] = []
    for fmt in formats:
        path = month_dir / file_name(report.month, fmt)
        write_atomic(path, renderers[fmt](report))
        written.append(path)
        if on_written is not None:
            on_written(path)
        if fmt == "csv":
            for what, render in CSV_COMPANIONS.items():
                extra = month_dir / companion_name(report.month, what)
                write_atomic(extra, render(report))
                written.append(extra)
    return written
