"""Budget rows: every bad row named at once (its number and scope), from the config and
from a budgets file; duplicates within and across the two; hostile names refused."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from gpuledger.agent.config import ConfigError, load_config
from gpuledger.chargeback.budgets.config import (
    Budget,
    BudgetError,
    load_file,
    parse_rows,
    unknown_cost_centers,
)
from gpuledger.chargeback.report.config import ReportConfig


def _problems(rows: object) -> list[tuple[str, str]]:
    with pytest.raises(BudgetError) as info:
        parse_rows(rows, "b.yaml")
    return info.value.problems


def test_good_rows_by_scope() -> None:
    got = parse_rows(
        [
            {"cost_center": "search", "monthly_usd": 12000},
            {"namespace": "llm-prod", "monthly_usd": 30000.5},
            {"namespace": "llm-prod", "service": "chat", "monthly_usd": 18000},
            {"cost_center": "__unassigned__", "monthly_usd": 100},
        ],
        "b.yaml",
    )
    assert got == (
        Budget("cost_center", "search", "", "", 12000.0, "b.yaml row 1 (cost_center 'search')"),
        Budget("namespace", "llm-prod", "llm-prod", "", 30000.5,
               "b.yaml row 2 (namespace 'llm-prod')"),
        Budget("service", "llm-prod/chat", "llm-prod", "chat", 18000.0,
               "b.yaml row 3 (namespace 'llm-prod', service 'chat')"),
        Budget("cost_center", "__unassigned__", "", "", 100.0,
               "b.yaml row 4 (cost_center '__unassigned__')"),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        (-5, "monthly_usd -5 must be more than 0"),
        (0, "monthly_usd 0 must be more than 0"),
        ("12k", "monthly_usd '12k' is not a number"),
        ("12000", "monthly_usd '12000' is not a number"),
        (True, "monthly_usd True is not a number"),
        (None, "monthly_usd None is not a number"),
        (math.inf, "monthly_usd inf is not a finite number"),
        (math.nan, "monthly_usd nan is not a finite number"),
    ],
)
def test_bad_amounts_are_named(amount: object, message: str) -> None:
    (problem,) = _problems([{"cost_center": "ok", "monthly_usd": 1}, {"cost_center": "x",
                            "monthly_usd": amount}])  # fmt: skip
    assert problem[0] == "b.yaml row 2 (cost_center 'x')"
    assert problem[1].startswith(message)


def test_every_problem_at_once() -> None:
    problems = _problems(
        [
            {"cost_center": "search", "monthly_usd": 10},
            {"cost_center": "search", "monthly_usd": 20},
            {"namespace": "a", "service": "b", "monthly_usd": 1},
            {"namespace": "a", "service": "b", "monthly_usd": 2},
            {"monthly_usd": 3},
            {"cost_center": "c", "namespace": "d", "monthly_usd": 3},
            {"cost_center": "e"},
            {"cost_center": "f", "monthly_usd": 1, "montly_usd": 2},
            "twelve",
        ]
    )
    assert problems == [
        ("b.yaml row 5", "name the scope: cost_center, or namespace (and service)"),
        ("b.yaml row 6 (cost_center 'c', namespace 'd')",
         "name a cost_center or a namespace (and service), not both"),
        ("b.yaml row 7 (cost_center 'e')", "monthly_usd is missing"),
        ("b.yaml row 8 (cost_center 'f')",
         "unknown field(s) montly_usd; a row has cost_center, namespace, service, monthly_usd"),
        ("b.yaml row 9",
         "a row is a mapping (cost_center, namespace, service, monthly_usd), not 'twelve'"),
        ("b.yaml row 2 (cost_center 'search')",
         "cost_center 'search' already has a budget (b.yaml row 1 (cost_center 'search'))"),
        ("b.yaml row 4 (namespace 'a', service 'b')",
         "service 'a/b' already has a budget (b.yaml row 3 (namespace 'a', service 'b'))"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    "row",
    [
        {"cost_center": "team\r\nBcc: attacker@example.com", "monthly_usd": 1},
        {"cost_center": "__idle__", "monthly_usd": 1},
        {"cost_center": "x" * 129, "monthly_usd": 1},
        {"cost_center": "", "monthly_usd": 1},
        {"cost_center": 42, "monthly_usd": 1},
        {"namespace": "ns\x1b[31m", "monthly_usd": 1},
        {"namespace": "ns", "service": "svc\nforged: line", "monthly_usd": 1},
    ],
)
def test_hostile_names_are_refused(row: dict[str, object]) -> None:
    (problem,) = _problems([row])
    assert problem[0].startswith("b.yaml row 1")
    assert "is not a" in problem[1]
    assert "\n" not in problem[0] + problem[1]  # repr: nothing forged into a log line
    assert "\x1b" not in problem[0] + problem[1]


def test_unknown_cost_centers_are_named() -> None:
    rows = parse_rows(
        [{"cost_center": "search", "monthly_usd": 1}, {"cost_center": "serch", "monthly_usd": 1},
         {"namespace": "serch", "monthly_usd": 1}],
        "b.yaml",
    )  # fmt: skip
    assert unknown_cost_centers(rows, {"search", "__unassigned__"}) == [
        ("b.yaml row 2 (cost_center 'serch')",
         "cost center 'serch' is not known (known: __unassigned__, search)"),
    ]  # fmt: skip


def test_budgets_file(tmp_path: Path) -> None:
    path = tmp_path / "budgets.yaml"
    path.write_text("budgets:\n  - {cost_center: search, monthly_usd: 12000}\n")
    assert load_file(path)[0].monthly_usd == 12000.0
    path.write_text("budgets:\n  - {cost_center: search, monthly_usd: -1}\n")
    with pytest.raises(BudgetError, match=r"budgets.yaml row 1 \(cost_center 'search'\)"):
        load_file(path)
    path.write_text("budgets: [\n")
    with pytest.raises(BudgetError, match="not valid YAML"):
        load_file(path)
    path.write_text("budget:\n  - {cost_center: search, monthly_usd: 1}\n")
    with pytest.raises(BudgetError, match="one key, budgets:"):
        load_file(path)
    with pytest.raises(BudgetError, match="cannot be read"):
        load_file(tmp_path / "missing.yaml")


def test_config_rows_and_file_together(tmp_path: Path) -> None:
    path = tmp_path / "budgets.yaml"
    path.write_text("budgets:\n  - {namespace: lab, monthly_usd: 50}\n")
    cfg = ReportConfig(budgets=[{"cost_center": "search", "monthly_usd": 1}], budgets_file=path)
    assert [b.name for b in cfg.budget_rows()] == ["search", "lab"]
    # the file is read again at each refresh: an edit applies without a restart
    path.write_text("budgets:\n  - {namespace: lab, monthly_usd: 70}\n")
    assert cfg.budget_rows()[1].monthly_usd == 70.0
    path.write_text("budgets:\n  - {cost_center: search, monthly_usd: 70}\n")
    with pytest.raises(BudgetError, match="already has a budget"):
        cfg.budget_rows()


def test_the_agent_config_names_the_bad_key(tmp_path: Path) -> None:
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text("budgets:\n  - {cost_center: search, monthly_usd: 12k}\n")
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        "report:\n  budgets:\n    - {cost_center: a, monthly_usd: -1}\n"
        f"  budgets_file: {budgets}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(cfg, environ={})
    found = dict(info.value.problems)
    assert "report.budgets" in found
    assert "report.budgets row 1 (cost_center 'a'): monthly_usd -1" in found["report.budgets"]
    assert "report.budgets_file" in found
    assert "budgets.yaml row 1 (cost_center 'search')" in found["report.budgets_file"]
