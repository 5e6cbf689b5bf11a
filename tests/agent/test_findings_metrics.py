"""The reporter's findings metrics (issue 17): ``gpuledger_finding_savings_usd{kind,
namespace,service}`` and ``gpuledger_findings{kind}`` from the latest report written,
read back from the exposition text with prometheus_client's parser.

The findings are hand-built (tests/support/findings_report.py); the expected values are
their stated savings, summed by hand where one service has two findings of one kind.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gpuledger import schema
from gpuledger.agent.exporter import SnapshotExporter
from gpuledger.agent.reporter import Reporter
from gpuledger.agent.snapshot import Snapshot
from gpuledger.chargeback.findings.model import Finding
from gpuledger.chargeback.ledger.store.sqlite import SqliteLedgerStore
from gpuledger.chargeback.report.config import ReportConfig
from gpuledger.chargeback.report.model import Month
from tests.support import report_fixtures as fx
from tests.support.findings_report import EVIL_ATTR, EVIL_SCRIPT, RANKED, ZOMBIE, Provider

NOV_2 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
SECOND_ZOMBIE = replace(ZOMBIE, monthly_savings_usd=100.0, gpus=("GPU-x",))


@pytest.fixture
def store() -> Iterator[SqliteLedgerStore]:
    s = SqliteLedgerStore(":memory:")
    s.migrate()
    fx.fill(s)
    yield s
    s.close()


def _reporter(store: SqliteLedgerStore, out: Path, found: tuple[Finding, ...] | None) -> Reporter:
    cfg = ReportConfig.model_validate({"formats": ["json"]})
    provider = None if found is None else Provider(found)
    return Reporter(cfg, store, out, clock=lambda: NOV_2, findings=provider)


def _exposed(reporter: Reporter) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    text = SnapshotExporter("node-r", "1", reporter=reporter.status).render(Snapshot(version=1))
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(text.decode()):
        for s in fam.samples:
            labels = tuple(
                sorted((k, v) for k, v in s.labels.items() if k not in ("cluster", "node"))
            )
            out.setdefault(s.name, {})[labels] = s.value
    return out


def test_savings_and_counts_of_the_latest_report(store: SqliteLedgerStore, tmp_path: Path) -> None:
    reporter = _reporter(store, tmp_path, (*RANKED, SECOND_ZOMBIE))
    assert reporter.run()
    got = _exposed(reporter)
    assert got[schema.FINDING_SAVINGS.name] == {
        (("kind", "over_provisioned"), ("namespace", "prod"), ("service", "chat")): 3600.5,
        (("kind", "zombie"), ("namespace", EVIL_ATTR), ("service", EVIL_SCRIPT)): 1300.25,
        (("kind", "idle_capacity"), ("namespace", ""), ("service", "")): 800.0,
        (("kind", "mig_fit"), ("namespace", "search"),
         ("service", '=HYPERLINK("http://x.example/","y")')): 90.125,
    }  # fmt: skip
    assert got[schema.FINDINGS.name] == {
        (("kind", "over_provisioned"),): 1.0,
        (("kind", "smaller_gpu_class"),): 0.0,
        (("kind", "mig_fit"),): 1.0,
        (("kind", "idle_capacity"),): 1.0,
        (("kind", "zombie"),): 2.0,
    }


def test_every_kind_is_zero_when_none_cleared_the_thresholds(
    store: SqliteLedgerStore, tmp_path: Path
) -> None:
    reporter = _reporter(store, tmp_path, ())
    assert reporter.run()
    got = _exposed(reporter)
    assert schema.FINDING_SAVINGS.name not in got
    assert set(got[schema.FINDINGS.name].values()) == {0.0}
    assert len(got[schema.FINDINGS.name]) == 5


def test_absent_before_a_report_and_when_not_computed(
    store: SqliteLedgerStore, tmp_path: Path
) -> None:
    with_engine = _reporter(store, tmp_path / "a", RANKED)
    assert schema.FINDINGS.name not in _exposed(with_engine)  # no report yet: not zero
    without = _reporter(store, tmp_path / "b", None)
    assert without.run()
    got = _exposed(without)
    assert got[schema.REPORT_RUNS.name] == {(): 1.0}  # it ran, and wrote the report
    assert schema.FINDINGS.name not in got
    assert schema.FINDING_SAVINGS.name not in got


def test_a_catch_up_of_an_older_month_keeps_the_newer_findings(
    store: SqliteLedgerStore, tmp_path: Path
) -> None:
    provider = Provider(RANKED)
    cfg = ReportConfig.model_validate({"formats": ["json"]})
    reporter = Reporter(cfg, store, tmp_path, clock=lambda: NOV_2, findings=provider)
    assert reporter.run(Month.parse("2026-10"))
    provider.found = ()  # September's run finds nothing
    assert reporter.run(Month.parse("2026-09"))
    assert reporter.status().findings_month == "2026-10"
    assert _exposed(reporter)[schema.FINDINGS.name][(("kind", "zombie"),)] == 1.0


def test_a_restarted_reporter_exports_the_findings_on_disk(
    store: SqliteLedgerStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = _reporter(store, tmp_path, (*RANKED, SECOND_ZOMBIE))
    assert first.run()
    before = _exposed(first)
    restarted = _reporter(store, tmp_path, None)  # a new process: nothing in memory
    assert schema.FINDINGS.name not in _exposed(restarted)
    assert restarted.restore_findings() == "2026-10"
    after = _exposed(restarted)
    for name in (schema.FINDING_SAVINGS.name, schema.FINDINGS.name):
        assert after[name] == before[name]
    assert restarted.status().findings == first.status().findings  # field for field

    (tmp_path / "2026-10" / "chargeback-2026-10.json").write_text('{"findings_computed": true}')
    broken = _reporter(store, tmp_path, None)
    assert broken.restore_findings() is None
    assert schema.FINDINGS.name not in _exposed(broken)
    assert "findings of chargeback-2026-10.json not restored" in caplog.text


def test_nothing_is_restored_from_a_report_without_computed_findings(
    store: SqliteLedgerStore, tmp_path: Path
) -> None:
    assert _reporter(store, tmp_path, None).run()
    restarted = _reporter(store, tmp_path, None)
    assert restarted.restore_findings() is None
    assert schema.FINDINGS.name not in _exposed(restarted)
