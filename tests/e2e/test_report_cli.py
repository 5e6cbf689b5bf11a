"""``gpuledger report`` and ``gpuledger demo --month`` as a user runs them."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpuledger.chargeback.ledger.store.sqlite import SqliteLedgerStore
from gpuledger.chargeback.report.model import Month
from gpuledger.cli import app
from tests.support import report_fixtures as fx
from tests.support.report_expected import CHAT_COST, CHAT_H

runner = CliRunner()


@pytest.fixture
def ledger(tmp_path: Path) -> str:
    path = tmp_path / "ledger.db"
    with SqliteLedgerStore(path) as store:
        store.migrate()
        fx.fill(store)
    return f"sqlite:///{path}"


def _run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_report_writes_csv_and_json(ledger: str, tmp_path: Path) -> None:
    out = tmp_path / "reports"
    code, stdout, stderr = _run(
        "report",
        "--month",
        "2026-10",
        "--ledger",
        ledger,
        "--out",
        str(out),
        "--format",
        "csv,json",
    )
    assert code == 0, stderr
    written = stdout.split()
    assert str(out / "2026-10" / "chargeback-2026-10.csv") in written
    assert "rate card 2026-11" in stderr
    assert "UNPRICED" in stderr
    with (out / "2026-10" / "chargeback-2026-10.csv").open(newline="") as f:
        rows = {(r["namespace"], r["service"]): r for r in csv.DictReader(f)}
    chat = rows[("prod", "chat")]
    assert float(chat["allocated_gpu_hours"]) == pytest.approx(CHAT_H)
    assert float(chat["total_cost_usd"]) == pytest.approx(CHAT_COST, abs=1e-6)
    assert chat["validation"] == "validated"
    assert chat["counterfactual_flagged"] == "false"
    train = rows[("lab", "train")]
    assert train["total_cost_usd"] == ""
    assert train["unpriced_gpu_models"] == fx.B200
    assert rows[("", "TOTAL")]["kind"] == "total"
    doc = json.loads((out / "2026-10" / "chargeback-2026-10.json").read_text())
    assert doc["lines"][0]["service"] == "chat"
    cov = (out / "2026-10" / "chargeback-2026-10-coverage.csv").read_text().splitlines()
    assert cov[0].startswith("month,node,gpus")
    assert len(cov) == 3


def test_report_idle_policy_flag(ledger: str, tmp_path: Path) -> None:
    code, _, stderr = _run(
        "report", "--month", "2026-10", "--ledger", ledger, "--out", str(tmp_path),
        "--format", "json", "--idle-policy", "share-even",
    )  # fmt: skip
    assert code == 0, stderr
    doc = json.loads((tmp_path / "2026-10" / "chargeback-2026-10.json").read_text())
    assert doc["idle_policy"] == "share-even"
    idle = next(line for line in doc["lines"] if line["kind"] == "idle")
    assert idle["total_cost_usd"] == pytest.approx(0.0, abs=1e-9)


def test_month_without_data_exits_1_and_writes_nothing(ledger: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, _, stderr = _run("report", "--month", "2026-07", "--ledger", ledger, "--out", str(out))
    assert code == 1
    assert "nothing to report" in stderr
    assert "2026-07" in stderr
    assert not out.exists()


def test_malformed_rate_card_exits_2_naming_the_row(ledger: str, tmp_path: Path) -> None:
    card = tmp_path / "card.yaml"
    card.write_text(
        "version: mine\n"
        "gpu_models: [{name: H100-80GB, match: ['NVIDIA H100*']}]\n"
        "gpu_rental:\n"
        "  - {gpu: H100-80GB, provider: AWS, provider_kind: hyperscaler, offering: p5,\n"
        "     usd_per_gpu_hour: 'six', source: pricing page, as_of: 2026-11-01}\n",
        encoding="utf-8",
    )
    code, _, stderr = _run(
        "report", "--month", "2026-10", "--ledger", ledger, "--rate-card", str(card),
        "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 2
    flat = " ".join(stderr.split())
    assert "gpu_rental[0] (H100-80GB/AWS/p5)" in flat
    assert "usd_per_gpu_hour" in flat
    assert not (tmp_path / "out").exists()


def test_missing_ledger_and_bad_month(tmp_path: Path) -> None:
    code, _, stderr = _run("report", "--ledger", f"sqlite:///{tmp_path / 'nope.db'}")
    assert code == 3
    assert "no ledger" in stderr
    code, _, stderr = _run("report", "--month", "2026-13", "--ledger", "sqlite:///x.db")
    assert code == 2
    assert "YYYY-MM" in stderr


def test_demo_month_end_to_end(tmp_path: Path) -> None:
    """What ``make demo`` does first, as a subprocess: fast-forward, report, paths."""
    out = tmp_path / "demo"
    args = [sys.executable, "-m", "gpuledger", "demo", "--month", "2026-11", "--history", "1",
            "--no-serve", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    month_dir = out / "reports" / "2026-11"
    for name in ("chargeback-2026-11.csv", "chargeback-2026-11.json",
                 "chargeback-2026-11-focus.csv", "chargeback-2026-11.html"):  # fmt: skip
        assert (month_dir / name).is_file(), name
        assert str(month_dir / name) in proc.stdout
    assert f"file://{(month_dir / 'chargeback-2026-11.html').resolve()}" in proc.stdout
    doc = json.loads((month_dir / "chargeback-2026-11.json").read_text())
    assert [p["month"] for p in doc["trend"]] == ["2026-10", "2026-11"]
    # the ledger it wrote keeps the invariant, and a second run changes nothing
    ledger = out / "state" / "ledger.db"
    m = Month.parse("2026-11")
    with SqliteLedgerStore(ledger) as store:
        assert store.invariant_violations(m.start, m.end) == []
        before = store.usage(m.start, m.end, ["service"])
    again = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr
    with SqliteLedgerStore(ledger) as store:
        assert store.usage(m.start, m.end, ["service"]) == before
