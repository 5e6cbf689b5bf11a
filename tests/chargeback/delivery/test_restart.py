"""A reporter process killed in the middle of a delivery, restarted: nobody gets the
month twice as a mail client shows it, nobody misses it, and the report on disk is
untouched. Killed before the send (row pending): exactly one message each. Killed after
the server's 250 and before the record: the one message in flight is sent once more,
with the same Message-ID (the documented window, docs/delivery.md), and never again."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from gpuledger.chargeback.delivery.record import open_delivery_log
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from tests.support import delivery as dv
from tests.support import report_fixtures as fx
from tests.support.paths import REPO_ROOT as ROOT
from tests.support.smtp_server import Inbox, smtp_server

EVERYONE = sorted([*dv.FINANCE, *dv.ML, *dv.SEARCH])


def _child(url: str, out: Path, port: int, mode: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "tests.support.delivery_child", url, str(out), str(port), mode],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / dv.MONTH).iterdir())}


@pytest.mark.parametrize("stage", ["recorded", "sent"])
def test_killed_mid_delivery_then_restarted(
    ledger_store: AuditableLedgerStore, ledger_store_url: str, tmp_path: Path, stage: str
) -> None:
    fx.fill(ledger_store)
    out = tmp_path / "reports"
    inbox = Inbox()
    with smtp_server(inbox, mode="none") as port:
        killed = _child(ledger_store_url, out, port, f"run-kill-{stage}")
        assert killed.returncode == -9, killed.stderr[-2000:]
        on_disk = _files(out)
        assert f"chargeback-{dv.MONTH}.csv" in on_disk  # written before any delivery
        (first,) = open_delivery_log(ledger_store_url).rows(dv.MONTH)
        assert (first.recipient, first.state, first.attempts) == (
            f"finance:{dv.FINANCE[0]}",
            "pending",
            1,
        )
        assert len(inbox.received) == (1 if stage == "sent" else 0)

        restarted = _child(ledger_store_url, out, port, "restart")
        assert restarted.returncode == 0, restarted.stderr[-2000:]
        again = _child(ledger_store_url, out, port, "restart")
        assert again.returncode == 0, again.stderr[-2000:]
    assert _files(out) == on_disk  # delivery never rewrites the report

    rows = open_delivery_log(ledger_store_url).rows(dv.MONTH)
    assert len(rows) == 4
    assert {r.state for r in rows} == {"sent"}
    messages = inbox.messages()
    # per recipient, one distinct message (Message-ID): what a mail client shows
    distinct = {(str(m["To"]), str(m["Message-ID"])) for m in messages}
    assert sorted(to for to, _ in distinct) == EVERYONE
    copies = Counter(str(m["To"]) for m in messages)
    if stage == "recorded":
        assert copies == Counter(EVERYONE)  # exactly one message each
    else:  # the message in flight at the kill went once more, with its Message-ID
        assert copies == Counter([*EVERYONE, dv.FINANCE[0]])
        resent = [m for m in messages if str(m["To"]) == dv.FINANCE[0]]
        assert resent[0]["Message-ID"] == resent[1]["Message-ID"]
    # the second restart sent nothing: the month is marked sent
    assert "('email', 'sent'): 0" in again.stdout
