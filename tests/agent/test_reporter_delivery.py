"""The reporter role with ``report.delivery``: the scheduled run writes the report, then
delivers it (a real SMTP server on 127.0.0.1); a delivery that fails leaves the report
on disk and counts as a failed delivery, not a failed report; the tries show on
``/metrics`` as ``gpuledger_report_deliveries_total{channel,outcome}`` and the last
success as ``gpuledger_report_delivery_last_success_timestamp_seconds{channel}``."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gpuledger.agent.reporter import Reporter
from gpuledger.chargeback.delivery.record import open_delivery_log
from gpuledger.chargeback.delivery.send import Deliverer
from gpuledger.chargeback.ledger.store.sqlite import SqliteLedgerStore
from gpuledger.chargeback.report.config import ReportConfig
from tests.support import delivery as dv
from tests.support import report_fixtures as fx
from tests.support.reporter_metrics import exposed
from tests.support.smtp_server import Inbox, free_port, smtp_server

NOV_2 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def _reporter(tmp_path: Path, port: int) -> Reporter:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    store = SqliteLedgerStore(str(tmp_path / "ledger.db"))
    store.migrate()
    fx.fill(store)
    delivery = dv.delivery_config(port)
    cfg = ReportConfig(
        formats=("csv", "json", "focus"), cost_centers=dv.COST_CENTERS, delivery=delivery
    )
    deliverer = Deliverer(delivery, open_delivery_log(url), fleet=cfg.fleet)
    return Reporter(
        cfg, store, tmp_path / "reports", clock=lambda: NOV_2, delivery=deliverer,
        cost_centers=lambda _m: dv.cost_center_map(),
    )  # fmt: skip


def _key(channel: str, outcome: str) -> tuple[tuple[str, str], ...]:
    return (("channel", channel), ("outcome", outcome))


def test_the_scheduled_run_writes_then_delivers(tmp_path: Path) -> None:
    inbox = Inbox()
    with smtp_server(inbox, mode="none") as port:
        reporter = _reporter(tmp_path, port)
        before = time.time()
        paths = reporter.run()
    assert {p.name for p in paths} >= {"chargeback-2026-10.csv", "chargeback-2026-10.json"}
    assert len(inbox.received) == 4
    got = exposed(reporter)
    assert got["gpuledger_report_deliveries_total"] == {
        _key("email", "sent"): 4.0, _key("email", "error"): 0.0, _key("email", "failed"): 0.0
    }  # fmt: skip
    (last,) = got["gpuledger_report_delivery_last_success_timestamp_seconds"].items()
    assert last[0] == (("channel", "email"),)
    assert before <= last[1] <= time.time()
    store = reporter.store
    store.close()


def test_a_failed_delivery_keeps_the_report_and_is_counted(tmp_path: Path) -> None:
    reporter = _reporter(tmp_path, free_port())  # no server there
    paths = reporter.run()
    assert paths  # written: a delivery failure is not a report failure
    assert all(p.is_file() for p in paths)
    status = reporter.status()
    assert (status.runs, status.failures, status.last_month) == (1, 0, "2026-10")
    got = exposed(reporter)
    assert got["gpuledger_report_deliveries_total"][_key("email", "failed")] == 4.0
    assert got["gpuledger_report_deliveries_total"][_key("email", "error")] == 12.0
    assert "gpuledger_report_delivery_last_success_timestamp_seconds" not in got
    # the hourly pass delivers once the server is back, and the month only once
    inbox = Inbox()
    with smtp_server(inbox, mode="none") as port:
        reporter._delivery = Deliverer(  # the same record; the server moved
            dv.delivery_config(port),
            reporter._delivery.record,
            fleet="default",  # type: ignore[union-attr]
        )
        first = reporter.resume_delivery()
        second = reporter.resume_delivery()
    assert first is not None
    assert (first.sent, first.failed) == (4, 0)
    assert second is not None
    assert (second.sent, second.skipped) == (0, 4)
    assert len(inbox.received) == 4


def test_without_delivery_no_delivery_series(tmp_path: Path) -> None:
    store = SqliteLedgerStore(":memory:")
    store.migrate()
    fx.fill(store)
    reporter = Reporter(ReportConfig(formats=("json",)), store, tmp_path, clock=lambda: NOV_2)
    reporter.run()
    assert reporter.resume_delivery() is None
    assert "gpuledger_report_deliveries_total" not in exposed(reporter)


@pytest.mark.parametrize("formats", [("json",), ("csv",)])
def test_delivery_needs_the_csv_and_json_formats(formats: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match=r"delivery: needs csv and json in report\.formats"):
        ReportConfig.model_validate(
            {"formats": list(formats), "delivery": dv.delivery_config(25).model_dump(by_alias=True)}
        )


def test_the_agent_in_the_reporter_role_catches_up_and_delivers(tmp_path: Path) -> None:
    """The whole wiring (config from GPULEDGER_* variables, agent/main.py, the record in
    the fleet ledger): a reporter started after the schedule fired writes last month's
    report, mails finance and posts the summary, and /metrics shows it."""
    from fastapi.testclient import TestClient

    from gpuledger.agent.config import load_config
    from gpuledger.agent.main import Agent
    from gpuledger.chargeback.report.model import Month
    from gpuledger.sim.month import simulate_month
    from tests.support.webhook_server import Hook, webhook_server

    last = Month.of(datetime.now(UTC)).previous()
    ledger = tmp_path / "fleet-ledger.db"
    with SqliteLedgerStore(ledger) as store:
        store.migrate()
        simulate_month(store, last)
    inbox, hook = Inbox(), Hook([200])
    with smtp_server(inbox, mode="none") as port, webhook_server(hook) as url:
        url_file = tmp_path / "webhook-url"
        url_file.write_text(url, encoding="utf-8")
        prefix = "GPULEDGER_REPORT__DELIVERY__"
        cfg = load_config(
            None,
            environ={
                "GPULEDGER_ROLES": '["reporter"]',
                "GPULEDGER_STATE_DIR": str(tmp_path / "state"),
                "GPULEDGER_LEDGER__URL": f"sqlite:///{ledger}",
                "GPULEDGER_REPORT__SCHEDULE": "0 0 1 * *",  # fired already this month
                "GPULEDGER_REPORT__FORMATS": '["csv", "json", "focus"]',
                prefix + "SMTP__HOST": "127.0.0.1",
                prefix + "SMTP__PORT": str(port),
                prefix + "SMTP__SECURITY": "none",
                prefix + "SMTP__FROM": "gpuledger@example.com",
                prefix + "RECIPIENTS__FINANCE": '["finops@example.com"]',
                prefix + "WEBHOOK__URL_FILE": str(url_file),
            },
        )
        agent = Agent(cfg)
        agent.start()
        try:
            client, deadline = TestClient(agent.app), time.monotonic() + 90
            while 'outcome="sent"} 1.0' not in (metrics := client.get("/metrics").text) or (
                metrics.count('outcome="sent"} 1.0') < 2  # the exposition is re-rendered
            ):  # after the pass (on_run), so poll it rather than the inbox
                assert time.monotonic() < deadline, agent.reporter and agent.reporter.status()
                time.sleep(0.2)
        finally:
            agent.stop()
    (msg,) = inbox.messages()
    assert str(msg["To"]) == "finops@example.com"
    assert last.label in str(msg["Subject"])
    sent = {
        (s.labels["node"], s.labels["channel"]): s.value
        for fam in text_string_to_metric_families(metrics)
        for s in fam.samples
        if s.name == "gpuledger_report_deliveries_total" and s.labels["outcome"] == "sent"
    }
    assert sent == {(cfg.node_name, "email"): 1.0, (cfg.node_name, "webhook"): 1.0}
    assert hook.bodies[0]["text"].startswith(f"GPU chargeback {last.label} (default): $")


def test_a_cost_center_map_that_cannot_be_read_skips_the_pass_not_the_schedule(
    tmp_path: Path,
) -> None:
    """The recorded labels come from the ledger: a store error there is logged and the
    report stays written; run() still never raises."""
    from gpuledger.chargeback.ledger.model import StoreError

    inbox = Inbox()
    with smtp_server(inbox, mode="none") as port:
        reporter = _reporter(tmp_path, port)

        def broken(_month: object) -> object:
            raise StoreError("ledger down")

        reporter._cost_centers = broken  # type: ignore[assignment]
        paths = reporter.run()
    assert paths
    assert inbox.received == []
    assert reporter.status().failures == 0
