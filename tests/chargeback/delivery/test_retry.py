"""A relay that refuses auth, drops the connection mid-DATA or is down: every try is
recorded and counted, the message is sent once it can be, and a month marked sent is
never sent again, with the record on SQLite and on PostgreSQL."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gpuledger.chargeback.delivery.config import DeliveryConfig
from gpuledger.chargeback.delivery.record import open_delivery_log
from gpuledger.chargeback.delivery.send import Deliverer, Job, backoff_s
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from tests.support import delivery as dv
from tests.support.smtp_server import PASSWORD, USER, Inbox, free_port, make_tls, smtp_server


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("retry")
    dv.write_month(base / "reports", f"sqlite:///{base / 'ledger.db'}")
    return base / "reports"


def _deliverer(cfg: DeliveryConfig, url: str) -> Deliverer:
    return Deliverer(cfg, open_delivery_log(url), fleet="default")


def test_a_server_that_is_down_then_up_gets_each_message_once(
    out_dir: Path, ledger_store: AuditableLedgerStore, ledger_store_url: str
) -> None:
    port = free_port()  # nothing listens there yet
    d = _deliverer(dv.delivery_config(port), ledger_store_url)
    first = d.deliver(out_dir, dv.MONTH, dv.cost_center_map())
    assert (first.sent, first.failed, first.error) == (0, 4, None)
    rows = d.record.rows(dv.MONTH)
    assert [(r.state, r.attempts) for r in rows] == [("failed", 3)] * 4
    assert all("ConnectionRefusedError" in (r.last_error or "") for r in rows)
    assert d.stats.counts()[("email", "error")] == 12  # 4 messages x 3 tries
    assert d.stats.counts()[("email", "failed")] == 4
    inbox = Inbox()
    with smtp_server(inbox, mode="none") as bound:
        d2 = _deliverer(dv.delivery_config(bound), ledger_store_url)
        second = d2.deliver(out_dir, dv.MONTH, dv.cost_center_map())
        third = d2.deliver(out_dir, dv.MONTH, dv.cost_center_map())
    assert (second.sent, second.skipped, second.failed) == (4, 0, 0)
    assert (third.sent, third.skipped) == (0, 4)  # marked sent: never again
    assert len(inbox.received) == 4
    rows = d2.record.rows(dv.MONTH)
    assert {r.state for r in rows} == {"sent"}
    assert [r.attempts for r in rows] == [4] * 4  # 3 failed + the one that went through
    assert all(r.sent_at is not None and r.last_error is None for r in rows)
    # the Message-ID recorded on the first (failed) pass is the one the message carried
    assert {r.message_id for r in rows} == {str(m["Message-ID"]) for m in inbox.messages()}


def test_a_connection_dropped_mid_data_is_retried_without_a_duplicate(
    out_dir: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    _migrate(url)
    inbox = Inbox(drop_data=2)  # the first two DATA: whole message received, no 250
    with smtp_server(inbox, mode="none") as port:
        d = _deliverer(dv.delivery_config(port), url)
        result = d.deliver(out_dir, dv.MONTH, dv.cost_center_map())
    assert (result.sent, result.failed) == (4, 0)
    assert inbox.data_seen == 6
    assert len(inbox.received) == 4
    assert sorted(str(m["To"]) for m in inbox.messages()) == sorted(
        [*dv.FINANCE, *dv.ML, *dv.SEARCH]
    )
    assert d.stats.counts()[("email", "error")] == 2
    assert d.stats.counts()[("email", "sent")] == 4


def test_refused_auth_is_retried_and_no_password_reaches_the_record_or_log(
    out_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    _migrate(url)
    tls = make_tls(tmp_path)
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD, encoding="utf-8")
    # smtplib tries each mechanism the server offers (PLAIN, LOGIN) before giving up: four
    # refusals are two failed logins
    inbox = Inbox(refuse_auth=4)
    caplog.set_level(logging.INFO)
    with smtp_server(inbox, tls=tls, mode="starttls", auth=True) as port:
        cfg = dv.delivery_config(
            port,
            security="starttls",
            username=USER,
            password_file=str(secret),
            ca_file=str(tls.ca_file),
        )
        d = _deliverer(cfg, url)
        result = d.deliver(out_dir, dv.MONTH, dv.cost_center_map())
    assert (result.sent, result.failed) == (4, 0)
    assert len(inbox.received) == 4
    assert d.stats.counts()[("email", "error")] == 2
    assert "SMTPAuthenticationError: 535" in caplog.text
    assert PASSWORD not in caplog.text
    first = next(r for r in d.record.rows(dv.MONTH) if r.recipient == f"finance:{dv.FINANCE[0]}")
    assert first.attempts == 3


def test_a_missing_password_file_is_named_and_nothing_is_sent(
    out_dir: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    _migrate(url)
    tls = make_tls(tmp_path)
    inbox = Inbox()
    with smtp_server(inbox, tls=tls, mode="starttls", auth=True) as port:
        cfg = dv.delivery_config(
            port,
            security="starttls",
            username=USER,
            password_file=str(tmp_path / "absent"),
            ca_file=str(tls.ca_file),
        )
        d = _deliverer(cfg, url)
        result = d.deliver(out_dir, dv.MONTH, dv.cost_center_map())
    assert result.failed == 4
    assert inbox.received == []
    errors = {r.last_error for r in d.record.rows(dv.MONTH)}
    assert errors == {
        f"report.delivery.smtp.password_file: cannot read {tmp_path / 'absent'}: "
        "No such file or directory"
    }


def test_without_the_record_table_nothing_is_sent(out_dir: Path, tmp_path: Path) -> None:
    """An unrecorded send could not be told from an unsent one after a restart."""
    url = f"sqlite:///{tmp_path / 'unmigrated.db'}"
    inbox = Inbox()
    with smtp_server(inbox, mode="none") as port:
        result = _deliverer(dv.delivery_config(port), url).deliver(
            out_dir, dv.MONTH, dv.cost_center_map()
        )
    assert inbox.received == []
    assert result.error is not None
    assert "ledger_deliveries" in result.error


def test_a_missing_report_is_an_error_and_nothing_is_sent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    _migrate(url)
    inbox = Inbox()
    with smtp_server(inbox, mode="none") as port:
        result = _deliverer(dv.delivery_config(port), url).deliver(
            tmp_path, dv.MONTH, dv.cost_center_map()
        )
    assert inbox.received == []
    assert result.error is not None
    assert result.error.startswith("report 2026-10: FileNotFoundError")


def test_backoff_doubles_up_to_its_cap() -> None:
    cfg = dv.delivery_config(25).retry.model_copy(
        update={"backoff_base_s": 30.0, "backoff_max_s": 100.0}
    )
    assert [backoff_s(cfg, k) for k in (1, 2, 3, 4)] == [30.0, 60.0, 100.0, 100.0]


def _migrate(url: str) -> None:
    from gpuledger.chargeback.ledger.store import open_store

    store = open_store(url)
    store.migrate()
    store.close()


def test_an_unforeseen_error_is_one_failed_try_not_the_end_of_the_pass(
    out_dir: Path, tmp_path: Path
) -> None:
    """A sender raising what no one planned for (here a KeyError) fails that message's
    tries, its text left out; the other messages of the pass still go."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    _migrate(url)
    inbox = Inbox()
    with smtp_server(inbox, mode="none") as port:
        d = _deliverer(dv.delivery_config(port), url)
        real = d.jobs

        def jobs(files: object) -> list[Job]:
            out = real(files)  # type: ignore[arg-type]
            broken = out[0]

            def boom() -> None:
                raise KeyError("secret-ish detail")

            return [Job(broken.channel, broken.recipient, broken.message_id, boom), *out[1:]]

        d.jobs = jobs  # type: ignore[method-assign]
        result = d.deliver(out_dir, dv.MONTH, dv.cost_center_map())
    assert (result.sent, result.failed) == (3, 1)
    assert len(inbox.received) == 3
    failed = next(r for r in d.record.rows(dv.MONTH) if r.state == "failed")
    assert failed.last_error == "unexpected KeyError"


def test_stop_ends_a_backoff_wait_and_the_pass(out_dir: Path, tmp_path: Path) -> None:
    """Stopping the reporter (SIGTERM) does not wait out a 10-minute backoff, and sends
    nothing more: the message being retried stays pending, the others unbegun."""
    import threading
    import time

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    _migrate(url)
    cfg = dv.delivery_config(free_port())
    cfg = cfg.model_copy(update={"retry": cfg.retry.model_copy(update={"backoff_base_s": 600.0})})
    d = _deliverer(cfg, url)
    done = threading.Event()
    threading.Thread(
        target=lambda: (d.deliver(out_dir, dv.MONTH, dv.cost_center_map()), done.set()),
        daemon=True,
    ).start()
    deadline = time.monotonic() + 10
    while d.stats.counts()[("email", "error")] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    started = time.monotonic()
    d.stop()
    assert done.wait(5)
    assert time.monotonic() - started < 2
    (row,) = d.record.rows(dv.MONTH)
    assert (row.recipient, row.state, row.attempts) == (f"finance:{dv.FINANCE[0]}", "pending", 1)


def test_two_fleets_sharing_one_ledger_each_deliver_their_month(
    out_dir: Path, ledger_store: AuditableLedgerStore, ledger_store_url: str
) -> None:
    """Reporters of two fleets (clusters) on one ledger database: the second is not told
    the month was sent because the first sent its own; each sends once."""
    inbox = Inbox()
    with smtp_server(inbox, mode="none") as port:
        cfg = dv.delivery_config(port)
        east = Deliverer(cfg, open_delivery_log(ledger_store_url, "east"))
        west = Deliverer(cfg, open_delivery_log(ledger_store_url, "west"))
        results = [d.deliver(out_dir, dv.MONTH, dv.cost_center_map()) for d in (east, west)]
        again = [d.deliver(out_dir, dv.MONTH, dv.cost_center_map()) for d in (east, west)]
    assert [(r.sent, r.skipped) for r in results] == [(4, 0), (4, 0)]
    assert [(r.sent, r.skipped) for r in again] == [(0, 4), (0, 4)]
    assert len(inbox.received) == 8
    ids = {str(m["Message-ID"]) for m in inbox.messages()}
    assert len(ids) == 8  # the fleet is part of each Message-ID
    assert [len(d.record.rows(dv.MONTH)) for d in (east, west)] == [4, 4]
