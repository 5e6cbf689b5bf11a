"""The summary POSTed to a Slack-compatible incoming webhook (a real HTTP server on
127.0.0.1): its body, a 500 then a 200 (retried, sent once), a webhook that hangs (the
timeout bounds each try), and the URL -- a credential -- in no error, log or record."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from gpuledger.chargeback.delivery.config import DeliveryConfig
from gpuledger.chargeback.delivery.mime import usd
from gpuledger.chargeback.delivery.record import open_delivery_log
from gpuledger.chargeback.delivery.send import Deliverer
from gpuledger.chargeback.ledger.store import open_store
from tests.support import delivery as dv
from tests.support import report_expected as ex
from tests.support.webhook_server import TOKEN_PATH, Hook, webhook_server


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("webhook")
    dv.write_month(base / "reports", f"sqlite:///{base / 'ledger.db'}")
    return base / "reports"


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    store = open_store(url)
    store.migrate()
    store.close()
    return url


def _cfg(tmp_path: Path, url: str, timeout_s: float = 5.0) -> DeliveryConfig:
    secret = tmp_path / "webhook-url"
    secret.write_text(url + "\n", encoding="utf-8")
    return DeliveryConfig.model_validate(
        {
            "webhook": {"url_file": str(secret), "timeout_s": timeout_s},
            "retry": {"attempts": 3, "backoff_base_s": 0.05, "backoff_max_s": 0.1},
        }
    )


def test_500_then_200_is_retried_and_posted_once(
    out_dir: Path, ledger_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hook = Hook([500, 200])
    caplog.set_level(logging.INFO)
    with webhook_server(hook) as url:
        d = Deliverer(_cfg(tmp_path, url), open_delivery_log(ledger_url), fleet="default")
        first = d.deliver(out_dir, dv.MONTH, dv.cost_center_map())
        again = d.deliver(out_dir, dv.MONTH, dv.cost_center_map())
    assert (first.sent, first.failed, again.skipped) == (1, 0, 1)
    assert hook.posts == 2
    assert len(hook.bodies) == 1
    body = hook.bodies[0]
    assert hook.content_types == ["application/json;charset=utf-8"]
    assert set(body) == {"text", "blocks"}
    assert body["text"].startswith(f"GPU chargeback {dv.MONTH} (default): $")
    assert f"• ml-platform: {usd(ex.CHAT_COST)}" in body["text"]
    assert f"• search-team: {usd(ex.EMBED_COST)}" in body["text"]
    assert [b["type"] for b in body["blocks"]] == ["section", "section"]
    (row,) = d.record.rows(dv.MONTH)
    assert (row.channel, row.recipient, row.state, row.attempts) == (
        "webhook",
        "webhook",
        "sent",
        2,
    )
    assert d.stats.counts()[("webhook", "error")] == 1
    assert "HTTP 500" in caplog.text
    assert TOKEN_PATH not in caplog.text
    assert "very-secret-token" not in caplog.text


def test_a_webhook_that_hangs_is_cut_by_the_timeout_and_recorded_failed(
    out_dir: Path, ledger_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hook = Hook(["hang"])
    with webhook_server(hook) as url:
        d = Deliverer(
            _cfg(tmp_path, url, timeout_s=0.5), open_delivery_log(ledger_url), fleet="default"
        )
        started = time.monotonic()
        result = d.deliver(out_dir, dv.MONTH, dv.cost_center_map())
        took = time.monotonic() - started
    assert (result.sent, result.failed) == (0, 1)
    assert hook.posts == 3
    assert took < 10  # three tries of 0.5 s each, not three hung connections
    (row,) = d.record.rows(dv.MONTH)
    assert row.state == "failed"
    assert row.last_error is not None
    assert row.last_error.startswith("http://127.0.0.1:")
    assert "TimeoutError" in row.last_error
    assert "very-secret-token" not in row.last_error
    assert "very-secret-token" not in caplog.text
    assert d.stats.counts()[("webhook", "failed")] == 1
