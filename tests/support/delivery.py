"""The delivery tests' month: the hand-computed fixture ledger's October 2026
(:mod:`tests.support.report_fixtures`) written as a report, and its cost centers.

Cost centers (static rules of ``report.cost_centers``): namespace ``prod`` →
``ml-platform``; ``search/embed`` → ``search-team``; ``lab/train`` carries the recorded
label :data:`HOSTILE` (what a workload's label could say); the idle and unattributed
lines → ``__unassigned__``. Expected subtotals come from ``report_expected`` (computed
from the fixture's seconds and the rate card's YAML, not by the code under test).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gpuledger.chargeback.costcenters.config import CostCentersConfig
from gpuledger.chargeback.costcenters.resolve import CostCenterMap
from gpuledger.chargeback.delivery.config import DeliveryConfig
from gpuledger.chargeback.ledger.store import open_store
from gpuledger.chargeback.report.config import ReportConfig
from gpuledger.chargeback.report.model import Month
from gpuledger.chargeback.report.monthly import run_report
from tests.support import report_expected as ex
from tests.support import report_fixtures as fx

MONTH = "2026-10"
HOSTILE = '<img src=x onerror="alert(1)">Lab & <b>Co</b>'
COST_CENTERS = CostCentersConfig.model_validate(
    {
        "static": [
            {"namespace": "prod", "cost_center": "ml-platform"},
            {"namespace": "search", "service": "embed", "cost_center": "search-team"},
        ]
    }
)
RECORDED = {("lab", "train"): HOSTILE}
SUBTOTALS: dict[str, float | None] = {
    "ml-platform": ex.CHAT_COST,
    "search-team": ex.EMBED_COST,
}
FINANCE = ("cfo@example.com", "ap@example.com")
ML = ("ml-lead@example.com",)
SEARCH = ("search-lead@example.com",)


def cost_center_map() -> CostCenterMap:
    return CostCenterMap(COST_CENTERS, recorded=RECORDED)


def write_month(out_dir: Path, ledger_url: str) -> list[Path]:
    """October 2026's report (csv, json, focus) of the fixture ledger under ``out_dir``."""
    store = open_store(ledger_url)
    try:
        store.migrate()
        fx.fill(store)
        cfg = ReportConfig(formats=("csv", "json", "focus"))
        _, paths = run_report(store, cfg, Month.parse(MONTH), out_dir, now=fx.NOW)
    finally:
        store.close()
    return paths


def delivery_config(port: int, **smtp: Any) -> DeliveryConfig:
    """Finance, two cost centers' leads, e-mail to 127.0.0.1:``port``, fast retries."""
    return DeliveryConfig.model_validate(
        {
            "smtp": {"host": "127.0.0.1", "port": port, "from": "gpuledger@example.com",
                     "security": "none", "timeout_s": 5, **smtp},
            "recipients": {
                "finance": list(FINANCE),
                "cost_centers": {"ml-platform": list(ML), "search-team": list(SEARCH)},
            },
            "retry": {"attempts": 3, "backoff_base_s": 0.05, "backoff_max_s": 0.2},
        }
    )  # fmt: skip
