"""``gpuledger findings``: the month's findings as a table (or JSON) from the configured
ledger, through the one findings provider every run uses (``monthly.findings_provider``,
pointed here at hand-built findings), filtered by service, namespace and kind; a bad month
or kind exits 2.

The expected table is written out by hand below, character for character.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import gpuledger.chargeback.report.monthly as monthly
from gpuledger.chargeback.ledger.store.sqlite import SqliteLedgerStore
from gpuledger.cli import app
from tests.support import report_fixtures as fx
from tests.support.findings_report import (
    EVIL_ATTR,
    EVIL_SCRIPT,
    UNRANKED,
    Provider,
    wired,
)


@pytest.fixture
def ledger(tmp_path: Path) -> str:
    path = tmp_path / "ledger.db"
    with SqliteLedgerStore(path) as store:
        store.migrate()
        fx.fill(store)
    return f"sqlite:///{path}"


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> Provider:
    found = Provider(UNRANKED)
    monkeypatch.setattr(monthly, "findings_provider", wired(found))
    return found


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})
    return result.exit_code, result.stdout, result.stderr


# ``--service chat``: the columns as wide as their widest cell (the header's, here), the
# amount right-aligned under "saves $/month" (columns 79..92), the total line's too
ONE_ROW = (
    "#  kind              service    GPU model              GPUs now → recommended  "
    "saves $/month  finding\n"
    "-  ----------------  ---------  ---------------------  ----------------------  "
    "-------------  ------------------------------\n"
    "1  over_provisioned  prod/chat  NVIDIA H100 80GB HBM3  4 → 2                   "
    "    $3,600.50  prod/chat: 2 GPUs instead of 4\n"
    "-  ----------------  ---------  ---------------------  ----------------------  "
    "-------------  ------------------------------\n"
    "1 finding: savings identified" + " " * 50 + "    $3,600.50\n"
)


def test_one_row_table_text(ledger: str, provider: Provider) -> None:
    code, out, _ = _run("findings", "--month", "2026-10", "--ledger", ledger,
                        "--service", "chat")  # fmt: skip
    assert (code, out) == (0, ONE_ROW)


def test_table_ranked_with_a_total(ledger: str, provider: Provider) -> None:
    code, out, _err = _run("findings", "--month", "2026-10", "--ledger", ledger)
    assert code == 0, _err
    lines = out.splitlines()
    assert lines[0].split() == ["#", "kind", "service", "GPU", "model", "GPUs", "now", "→",
                                "recommended", "saves", "$/month", "finding"]  # fmt: skip
    body = lines[2:7]
    # largest saving first; the two $800.00 in the order the provider gave them
    assert [row.split()[0:2] for row in body] == [
        ["1", "over_provisioned"], ["2", "zombie"], ["3", "idle_capacity"],
        ["4", "smaller_gpu_class"], ["5", "mig_fit"],
    ]  # fmt: skip
    assert f"{EVIL_ATTR}/{EVIL_SCRIPT}" in body[1]  # plain text on a terminal, shown as is
    assert "(fleet)" in body[2]
    assert "1 → 0.43" in body[4]
    # savings right-aligned: every amount ends in the same column, the total's too
    amounts = ["$3,600.50", "$1,200.25", "$800.00", "$800.00", "$90.12"]
    ends = {row.index(a) + len(a) for row, a in zip(body, amounts, strict=True)}
    header_end = lines[0].index("saves $/month") + len("saves $/month")
    total = lines[-1]
    assert total.startswith("5 findings: savings identified")
    assert ends == {header_end, total.index("$6,490.88") + len("$6,490.88")}
    assert len(lines) == 2 + 5 + 2  # header, rule, rows, rule, total
    assert lines[1].split()[0] == "-"
    assert [month.label for _, month, _ in provider.calls] == ["2026-10"]


def test_filters_by_service_namespace_and_kind(ledger: str, provider: Provider) -> None:
    code, out, _ = _run("findings", "--month", "2026-10", "--ledger", ledger,
                        "--service", "train")  # fmt: skip
    assert code == 0
    rows = out.splitlines()[2:-2]
    assert [r.split()[1] for r in rows] == ["smaller_gpu_class"]
    assert out.splitlines()[-1].startswith("1 finding: savings identified")
    code, out, _ = _run("findings", "--month", "2026-10", "--ledger", ledger,
                        "--namespace", EVIL_ATTR, "--kind", "zombie")  # fmt: skip
    assert [r.split()[1] for r in out.splitlines()[2:-2]] == ["zombie"]
    code, out, _ = _run("findings", "--month", "2026-10", "--ledger", ledger,
                        "--kind", "mig_fit", "--service", "chat")  # fmt: skip
    assert (code, out) == (0, "no findings above the thresholds\n")


def test_json_is_the_findings(ledger: str, provider: Provider) -> None:
    code, out, _ = _run("findings", "--month", "2026-10", "--ledger", ledger,
                        "--format", "json", "--kind", "smaller_gpu_class")  # fmt: skip
    assert code == 0
    doc = json.loads(out)
    assert doc["month"] == "2026-10"
    assert doc["computed"] is True
    assert doc["savings_identified_usd"] == 800.0
    assert doc["findings"] == [
        {
            "kind": "smaller_gpu_class", "namespace": "lab", "service": "train",
            "gpu_model": "NVIDIA H100 80GB HBM3", "title": "lab/train fits an L40S",
            "recommendation": "Run lab/train on an L40S.", "current_gpus": 1.0,
            "recommended_gpus": 1.0, "monthly_savings_usd": 800.0, "hours_of_evidence": 744,
            "assumption": "An L40S does 0.45 of an H100's work for this model.",
            "evidence": {}, "gpus": [], "peak_hours": [], "peak_hours_utc": [],
        }
    ]  # fmt: skip


def test_without_an_engine_it_says_not_computed(
    ledger: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(monthly, "findings_provider", lambda _cfg: None)
    code, out, _ = _run("findings", "--month", "2026-10", "--ledger", ledger)
    assert (code, out) == (0, "findings were not computed: no findings engine is wired into "
                              "this run\n")  # fmt: skip
    code, out, _ = _run("findings", "--month", "2026-10", "--ledger", ledger, "--format", "json")
    assert json.loads(out) == {"month": "2026-10", "computed": False,
                               "savings_identified_usd": 0, "findings": []}  # fmt: skip


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--month", "2026-13"), "--month"),
        (("--month", "October"), "--month"),
        (("--month", "2026-10", "--kind", "zombies"), "--kind"),
    ],
)
def test_bad_month_or_kind_exits_2(
    ledger: str, provider: Provider, args: tuple[str, ...], says: str
) -> None:
    code, out, err = _run("findings", "--ledger", ledger, *args)
    assert code == 2
    assert out == ""
    assert says in err
    assert provider.calls == []


def test_no_ledger_exits_3(tmp_path: Path, provider: Provider) -> None:
    code, _, err = _run("findings", "--month", "2026-10", "--ledger",
                        f"sqlite:///{tmp_path / 'missing.db'}")  # fmt: skip
    assert code == 3
    assert "no ledger at" in err
