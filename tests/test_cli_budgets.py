"""``gpuledger budgets check`` and ``show``: a bad budgets file exits 2 naming each row;
an unknown cost center exits 2; a good one lists the rows; ``show`` prints each budget
against a real ledger (SQLite), with the figures of ``tests/support/budget_ledger.py``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpuledger.chargeback.ledger.store import open_store
from gpuledger.cli import app
from tests.support.budget_ledger import CHAT_H, MTD_HOURS, fill

BAD = """budgets:
  - {cost_center: search, monthly_usd: 12000}
  - {cost_center: search, monthly_usd: 5}
  - {cost_center: ads, monthly_usd: -3}
  - {cost_center: ads, monthly_usd: twelve}
"""

CONFIG = """report:
  cost_centers:
    static:
      - {namespace: prod, cost_center: chat-team}
  budgets:
    - {cost_center: chat-team, monthly_usd: 1000000}
"""


def _run(*args: str) -> tuple[int, str]:
    """Exit code and output, whitespace collapsed (the console wraps long lines)."""
    got = CliRunner().invoke(app, ["budgets", *args], env={"COLUMNS": "300"})
    return got.exit_code, " ".join(got.output.split())


def test_check_exits_2_naming_each_row(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(BAD)
    code, out = _run("check", "--file", str(tmp_path / "b.yaml"))
    assert code == 2
    assert "3 budget problem(s)" in out
    assert "b.yaml row 2 (cost_center 'search'): cost_center 'search' already has a budget" in out
    assert "b.yaml row 3 (cost_center 'ads'): monthly_usd -3 must be more than 0" in out
    assert "b.yaml row 4 (cost_center 'ads'): monthly_usd 'twelve' is not a number" in out


def test_check_refuses_an_unknown_cost_center(tmp_path: Path) -> None:
    (tmp_path / "agent.yaml").write_text(CONFIG)
    (tmp_path / "b.yaml").write_text("budgets:\n  - {cost_center: chat-tema, monthly_usd: 5}\n")
    code, out = _run("check", "-c", str(tmp_path / "agent.yaml"), "-f", str(tmp_path / "b.yaml"))
    assert code == 2
    assert "cost center 'chat-tema' is not known (known: __unassigned__, chat-team)" in out
    code, out = _run("check", "-c", str(tmp_path / "agent.yaml"))
    assert code == 0, out
    assert "chat-team" in out
    assert "$1,000,000.00" in out


def test_a_bad_config_exits_2(tmp_path: Path) -> None:
    (tmp_path / "agent.yaml").write_text(
        "report:\n  budgets:\n    - {namespace: prod, monthly_usd: -1}\n"
    )
    code, out = _run("check", "-c", str(tmp_path / "agent.yaml"))
    assert code == 2
    assert "report.budgets row 1 (namespace 'prod'): monthly_usd -1 must be more than 0" in out


def test_show_reads_the_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "ledger.db"
    store = open_store(f"sqlite:///{db}")
    store.migrate()
    fill(store)
    store.close()
    (tmp_path / "agent.yaml").write_text(CONFIG)
    import gpuledger.cli_budgets as cli_budgets

    class _Now(datetime):
        @classmethod
        def now(cls, tz: object = None) -> datetime:  # type: ignore[override]
            return datetime(2026, 11, 20, 10, 30, tzinfo=UTC)

    monkeypatch.setattr("datetime.datetime", _Now)
    assert cli_budgets.show is not None
    code, out = _run("show", "-c", str(tmp_path / "agent.yaml"), "--ledger", f"sqlite:///{db}")
    assert code == 0, out
    assert "budgets 2026-11, as of 2026-11-20T10:00:00Z" in out
    # chat-team is prod/chat: 466 h × CHAT_H to date; forecast 720 h × CHAT_H
    line = next(row for row in out.split("│ cost_center") if "chat-team" in row)
    assert f"${MTD_HOURS * CHAT_H:,.2f}" in line
    assert f"${720 * CHAT_H:,.2f}" in line
    assert line.split("│")[-2].strip() == "ok"
