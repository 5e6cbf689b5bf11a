"""``gpuledger report --by tenant``: the tenants of every shared service in the terminal,
summed across services and costliest first; ``--by service`` (the default) unchanged.

The report's tenant lines are attached by hand (tests/support/tenant_report.py); the
expected sums are worked out here from the stated shares.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import gpuledger.chargeback.report.monthly as monthly
from gpuledger.chargeback.ledger.store.sqlite import SqliteLedgerStore
from gpuledger.chargeback.report.console import per_million, print_summary, tenant_totals
from gpuledger.chargeback.report.model import Report
from gpuledger.cli import app
from tests.support import report_fixtures as fx
from tests.support.report_expected import CHAT_COST, CHAT_H, EMBED_A100_H, EMBED_COST, EMBED_H100_H
from tests.support.tenant_report import (
    EVIL_FORMULA,
    EVIL_SCRIPT,
    INPUT_PART,
    tenant_report,
    with_tenants,
)

MARKUP = "[red]lab[/red]"
WIDE = {"COLUMNS": "250"}  # rich reads the width from here: no column is squeezed


def _shared(report: Report) -> Report:
    """The tenant report, with ``team-a`` also the embed service's main caller and the
    unpriced train service's caller named like rich markup."""
    report = with_tenants(report)
    names = {"search-ui": "team-a", "research": MARKUP}
    lines = tuple(
        replace(ln, tenants=tuple(replace(t, tenant=names.get(t.tenant, t.tenant))
                                  for t in ln.tenants))
        for ln in report.lines
    )  # fmt: skip
    return replace(report, lines=lines)


@pytest.fixture(scope="module")
def report() -> Report:
    return _shared(tenant_report())


def test_tenant_totals_sum_across_services(report: Report) -> None:
    totals = tenant_totals(report)
    assert [(t.tenant, t.kind) for t in totals] == [
        ("team-a", "tenant"),  # CHAT/2 + EMBED·¾
        (EVIL_SCRIPT, "tenant"),  # CHAT/4
        (EVIL_FORMULA, "tenant"),  # CHAT/8
        ("__headroom__", "headroom"),  # EMBED/4
        ("__probes__", "probes"),  # CHAT/16, same GPU-hours as untenanted: by name
        ("__untenanted__", "untenanted"),
        (MARKUP, "tenant"),  # unpriced: last
    ]
    a = totals[0]
    assert a.services == ("prod/chat", "search/embed")
    assert a.allocated_gpu_hours == pytest.approx(CHAT_H / 2 + (EMBED_H100_H + EMBED_A100_H) * 0.75)
    assert a.total_cost_usd == pytest.approx(CHAT_COST / 2 + EMBED_COST * 0.75)
    assert not a.unpriced
    # input cost over both services ÷ their 600 M + 500 M prompt tokens
    per_in = (CHAT_COST / 2 + EMBED_COST * 0.75) * INPUT_PART / 1100.0
    assert a.cost_per_1m_input_usd == pytest.approx(per_in)
    # embed generated nothing: only chat's 150 M generated tokens and their cost count
    assert a.cost_per_1m_output_usd == pytest.approx(CHAT_COST / 2 * (1 - INPUT_PART) / 150.0)
    assert a.prompt_tokens == 1.1e9
    assert a.cached_prompt_tokens == 1.0e8
    assert a.generation_tokens == 1.5e8
    lab = totals[-1]
    assert lab.total_cost_usd is None
    assert lab.unpriced
    assert lab.cost_per_1m_input_usd is None
    assert lab.allocated_gpu_hours == 744.0


def test_print_by_tenant(
    report: Report, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    print_summary(report, by="tenant")
    err = capsys.readouterr().err
    rows = {line.split("│")[1].strip(): line for line in err.splitlines() if line.count("│") > 5}
    assert list(rows) == [
        "team-a", EVIL_SCRIPT, EVIL_FORMULA, "__headroom__ (headroom)", "__probes__ (probes)",
        "__untenanted__ (untenanted)", MARKUP,
    ]  # fmt: skip
    a = [c.strip() for c in rows["team-a"].split("│")[1:-1]]
    assert a[1] == "prod/chat, search/embed"
    assert a[2] == f"{CHAT_H / 2 + (EMBED_H100_H + EMBED_A100_H) * 0.75:,.1f}"
    assert a[3] == f"${CHAT_COST / 2 + EMBED_COST * 0.75:,.2f}"
    per_in = (CHAT_COST / 2 + EMBED_COST * 0.75) * INPUT_PART / 1100.0  # ≈ 0.75: 3 digits
    per_out = CHAT_COST / 2 * (1 - INPUT_PART) / 150.0  # ≈ 1.24
    assert (a[4], a[5]) == (f"${per_in:.3f}", f"${per_out:.2f}")
    assert a[6:] == ["1.10 B", "100.00 M", "150.00 M"]
    lab = [c.strip() for c in rows[MARKUP].split("│")[1:-1]]
    assert lab[3:6] == ["unpriced", "n/a", "n/a"]  # never $0
    assert "GPU-hours" in err
    assert "busy" not in err  # the tenants, not the fleet's totals


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.001864, "$0.00186"), (0.319761, "$0.320"), (1.244, "$1.24"), (582.061, "$582.06"),
     (0.0, "$0.00"), (-0.0123, "−$0.0123"), (12345.678, "$12,345.68")],
)  # fmt: skip
def test_prices_per_million_keep_three_significant_digits(value: float, text: str) -> None:
    """A self-hosted prompt token can cost $0.002 per million: cents would read $0.00."""
    assert per_million(value) == text


def test_print_by_tenant_without_tenants(
    report: Report, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = replace(report, lines=tuple(replace(ln, tenants=()) for ln in report.lines))
    print_summary(bare, by="tenant")
    assert "no tenant lines" in capsys.readouterr().err
    with pytest.raises(ValueError, match="service, tenant"):
        print_summary(bare, by="team")  # type: ignore[arg-type]


# -- the command -----------------------------------------------------------------------------


@pytest.fixture
def ledger(tmp_path: Path) -> str:
    path = tmp_path / "ledger.db"
    with SqliteLedgerStore(path) as store:
        store.migrate()
        fx.fill(store)
    return f"sqlite:///{path}"


@pytest.fixture
def shared_services(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command's summary gets the report with the hand-stated tenant lines (the
    fixture ledger has no tenant tokens; the files are written before, as usual)."""
    real = monthly.run_report

    def run_report(*args: Any, **kwargs: Any) -> tuple[Report, list[Path]]:
        report, paths = real(*args, **kwargs)
        return _shared(report), paths

    monkeypatch.setattr(monthly, "run_report", run_report)


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env=WIDE)
    return result.exit_code, result.stdout, result.stderr


def test_report_by_tenant(ledger: str, tmp_path: Path, shared_services: None) -> None:
    code, stdout, stderr = _run(
        "report", "--month", "2026-10", "--ledger", ledger, "--out", str(tmp_path),
        "--format", "json", "--by", "tenant",
    )  # fmt: skip
    assert code == 0, stderr
    assert "tenants of shared services" in stderr
    lines = [ln for ln in stderr.splitlines() if "│" in ln]
    names = [ln.split("│")[1].strip() for ln in lines]
    assert names.index("team-a") < names.index(EVIL_SCRIPT) < names.index(MARKUP)
    assert f"${CHAT_COST / 2 + EMBED_COST * 0.75:,.2f}" in stderr
    assert stdout.split() == [str(tmp_path / "2026-10" / "chargeback-2026-10.json")]


def test_report_by_service_is_the_default(ledger: str, tmp_path: Path) -> None:
    code, _, stderr = _run(
        "report", "--month", "2026-10", "--ledger", ledger, "--out", str(tmp_path),
        "--format", "json",
    )  # fmt: skip
    assert code == 0, stderr
    assert "internal cost" in stderr
    assert "hyperscaler" in stderr
    assert "tenants of shared services" not in stderr


def test_report_by_refuses_other_values(ledger: str, tmp_path: Path) -> None:
    code, _, stderr = _run(
        "report", "--month", "2026-10", "--ledger", ledger, "--out", str(tmp_path / "o"),
        "--by", "team",
    )  # fmt: skip
    assert code == 2
    flat = " ".join(stderr.split())
    assert "--by" in flat
    assert "'team' is not one of 'service', 'tenant'" in flat
    assert not (tmp_path / "o").exists()
