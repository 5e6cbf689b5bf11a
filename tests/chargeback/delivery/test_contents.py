"""A cost center's CSV, read back from the report on disk: its rows exactly as written,
a TOTAL row that sums them (hand-computed from the fixture), an unpriced cost staying
unpriced, and a cost-center name a spreadsheet would run neutralized."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from gpuledger.chargeback.costcenters.config import CostCentersConfig
from gpuledger.chargeback.costcenters.resolve import CostCenterMap
from gpuledger.chargeback.delivery.config import RecipientsConfig
from gpuledger.chargeback.delivery.contents import read_report
from tests.support import delivery as dv
from tests.support import report_expected as ex
from tests.support import report_fixtures as fx

FORMULA = '=HYPERLINK("http://evil.example/","x")'


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("contents")
    dv.write_month(base / "reports", f"sqlite:///{base / 'ledger.db'}")
    return base / "reports"


def _rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))


def test_two_lines_and_their_subtotal(out_dir: Path) -> None:
    """ml-platform holds prod/chat and search/embed here: the TOTAL row is their sum."""
    cfg = CostCentersConfig.model_validate(
        {"static": [{"namespace": n, "cost_center": "ml-platform"} for n in ("prod", "search")]}
    )
    files = read_report(out_dir, dv.MONTH, CostCenterMap(cfg))
    assert files.subtotal("ml-platform") == pytest.approx(ex.CHAT_COST + ex.EMBED_COST, abs=1e-5)
    rows = _rows(files.cost_center_csv("ml-platform").data)
    assert [(r["namespace"], r["service"], r["kind"]) for r in rows] == [
        ("prod", "chat", rows[0]["kind"]),
        ("search", "embed", rows[1]["kind"]),
        ("ml-platform", "TOTAL", "total"),
    ]
    total = rows[2]
    assert float(total["total_cost_usd"]) == pytest.approx(ex.CHAT_COST + ex.EMBED_COST, abs=1e-5)
    embed_h = ex.EMBED_H100_H + ex.EMBED_A100_H
    assert float(total["allocated_gpu_hours"]) == pytest.approx(ex.CHAT_H + embed_h, abs=1e-6)
    assert (total["month"], total["idle_policy"]) == (dv.MONTH, "separate")
    # the rows are the main CSV's rows as the writer wrote them
    main = (out_dir / dv.MONTH / f"chargeback-{dv.MONTH}.csv").read_text(encoding="utf-8")
    mine = files.cost_center_csv("ml-platform").data.decode("utf-8").splitlines()
    assert mine[1] in main.splitlines()
    assert mine[2] in main.splitlines()


def test_an_unpriced_line_leaves_the_cost_subtotal_empty_and_a_formula_name_inert(
    out_dir: Path,
) -> None:
    cfg = CostCentersConfig.model_validate(
        {"static": [{"namespace": "lab", "cost_center": FORMULA}]}
    )
    files = read_report(out_dir, dv.MONTH, CostCenterMap(cfg))
    assert files.subtotal(FORMULA) is None  # lab/train runs on a B200: no TCO row
    attachment = files.cost_center_csv(FORMULA)
    assert "/" not in attachment.filename
    assert '"' not in attachment.filename
    (line, total) = _rows(attachment.data)
    assert (line["namespace"], line["service"]) == ("lab", "train")
    assert total["namespace"] == "'" + FORMULA  # shown as text by a spreadsheet
    assert total["total_cost_usd"] == ""
    assert total["capacity_cost_usd"] == ""
    # what was measured is still summed: 3600 s every hour of October's 744
    assert float(total["allocated_gpu_hours"]) == pytest.approx(fx.HOURS)
    assert float(total["energy_kwh"]) == pytest.approx(3.6e6 * fx.HOURS / 3.6e6)
    assert float(total["utilization_ratio"]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "address",
    ["ann@example.com\r\nBcc: x@example.com", "Ann <ann@example.com>", "a@b.c, d@e.f",
     "ännä@example.com", "@example.com", "ann@"],
)  # fmt: skip
def test_an_address_that_is_not_a_plain_ascii_mailbox_is_refused(address: str) -> None:
    with pytest.raises(ValueError, match="is not an e-mail address"):
        RecipientsConfig(finance=(address,))
