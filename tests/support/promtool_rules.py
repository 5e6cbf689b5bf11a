"""Prometheus rule unit tests through ``promtool test rules``: a builder of test groups
(input series, the alerts expected with their rendered annotations, PromQL samples) and
the runner that writes the generated rule file beside them.

The annotation templates are rendered the way Prometheus renders them (the subset the
rules use: ``$labels``, ``humanize``, ``humanizeDuration``, ``humanizePercentage`` and
``if eq`` chains), independently of the rule module.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpuledger.alerts import rules
from gpuledger.alerts.config import AlertsConfig

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120)


# --- rendering the annotation templates the way Prometheus does (the subset used) ------


def _g4(v: float) -> str:
    return f"{v:.4g}"


def _humanize(v: float) -> str:
    if v == 0 or math.isnan(v) or math.isinf(v):
        return _g4(v)
    prefix = ""
    if abs(v) >= 1:
        for p in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(v) < 1000:
                break
            prefix, v = p, v / 1000
    else:
        for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
            if abs(v) >= 1:
                break
            prefix, v = p, v * 1000
    return _g4(v) + prefix


def _humanize_duration(v: float) -> str:
    if v == 0:
        return "0s"
    if abs(v) >= 1:
        sign = "-" if v < 0 else ""
        n = int(abs(v))
        d, h, m, s = n // 86400, n // 3600 % 24, n // 60 % 60, n % 60
        if d:
            return f"{sign}{d}d {h}h {m}m {s}s"
        if h:
            return f"{sign}{h}h {m}m {s}s"
        if m:
            return f"{sign}{m}m {s}s"
        return f"{sign}{_g4(abs(v))}s"
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix, v = p, v * 1000
    return f"{_g4(v)}{prefix}s"


_FILTERS: dict[str, Callable[[float], str]] = {
    "humanize": _humanize,
    "humanizeDuration": _humanize_duration,
    "humanizePercentage": lambda v: f"{_g4(v * 100)}%",
}


def render(template: str, labels: dict[str, str], value: float) -> str:
    def conditional(m: re.Match[str]) -> str:
        branches = re.findall(
            r'\{\{ (?:if|else if) eq \$labels\.(\w+) "([^"]*)" \}\}(.*?)(?=\{\{ else)', m.group(0)
        )
        for label, expected, text in branches:
            if labels.get(label, "") == expected:
                return str(text)
        fallback = re.search(r"\{\{ else \}\}(.*?)\{\{ end \}\}", m.group(0))
        assert fallback is not None
        return fallback.group(1)

    out = re.sub(r"\{\{ if .*?\{\{ end \}\}", conditional, template)
    out = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), out)
    out = re.sub(r"\{\{ \$value \| (\w+) \}\}", lambda m: _FILTERS[m.group(1)](value), out)
    assert "{{" not in out, out
    return out


# --- promtool unit-test builder ------------------------------------------------------


def sel(name: str, **labels: str) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{name}{{{inner}}}"


class Case:
    """One promtool test group: input series and the alerts expected at given times."""

    def __init__(self, cfg: AlertsConfig, interval: str = "1m") -> None:
        self.cfg = cfg
        self.alerts = {r["alert"]: r for r in rules.alert_rules(cfg)}
        self.doc: dict[str, Any] = {
            "interval": interval,
            "input_series": [],
            "alert_rule_test": [],
            "promql_expr_test": [],
        }

    def series(self, name: str, values: str, **labels: str) -> Case:
        self.doc["input_series"].append({"series": sel(name, **labels), "values": values})
        return self

    def expect(self, at: str, alertname: str, fired: list[tuple[dict[str, str], float]]) -> Case:
        rule = self.alerts[alertname]
        exp = []
        for labels, value in fired:
            all_labels = {**labels, **rule["labels"]}
            annotations = {k: render(v, labels, value) for k, v in rule["annotations"].items()}
            exp.append({"exp_labels": all_labels, "exp_annotations": annotations})
        self.doc["alert_rule_test"].append(
            {"eval_time": at, "alertname": alertname, "exp_alerts": exp}
        )
        return self

    def expr(self, at: str, expr: str, samples: list[tuple[str, float]]) -> Case:
        self.doc["promql_expr_test"].append(
            {
                "expr": expr,
                "eval_time": at,
                "exp_samples": [{"labels": lbl, "value": v} for lbl, v in samples],
            }
        )
        return self


def run_promtool_tests(tmp_path: Path, cfg: AlertsConfig, cases: list[Case]) -> None:
    (tmp_path / "rules.yml").write_text(rules.to_yaml(rules.rules_document(cfg)))
    test = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [c.doc for c in cases],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test, sort_keys=False, width=10000))
    result = promtool("test", "rules", str(tmp_path / "test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
