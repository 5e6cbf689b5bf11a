"""The short summary POSTed to a Slack-compatible incoming webhook.

Body: ``{"text": ..., "blocks": [...]}`` as JSON (``Content-Type:
application/json;charset=utf-8``), the shape Slack's own client sends
(slackapi/python-slack-sdk, ``slack_sdk/webhook/client.py`` at b4259fb,
``WebhookClient.send``/``_perform_http_request``: ``text`` is kept beside ``blocks``
as the fallback shown in notifications). Mattermost and Rocket.Chat incoming webhooks
read the same ``text`` key. Success is a 2xx; anything else, or no answer within the
timeout (connect, and each read and write), is a try that failed.

The URL is the credential: it never reaches a message, a log line or the delivery record
(``gpuledger.redact.secret_url``).
"""

from __future__ import annotations

import http.client
import json
import ssl
from typing import Any
from urllib.parse import urlsplit

from gpuledger.chargeback.delivery.config import WebhookConfig
from gpuledger.chargeback.delivery.contents import ReportFiles
from gpuledger.chargeback.delivery.mime import usd
from gpuledger.chargeback.delivery.secrets import read_secret
from gpuledger.chargeback.delivery.smtp import SendError
from gpuledger.redact import hide, secret_url

MAX_CENTERS = 10
"""Cost centers named in the summary; the rest are one line ("and N more")."""


def summary(files: ReportFiles) -> dict[str, Any]:
    """``{"text", "blocks"}``: the month's total and its largest cost centers."""
    centers = list(files.cost_centers().items())
    head = f"GPU chargeback {files.month} ({files.fleet}): {usd(files.total_cost_usd)}"
    if not files.complete:
        head += " so far (month under way)"
    rows = [f"• {name}: {usd(cost)}" for name, cost in centers[:MAX_CENTERS]]
    if len(centers) > MAX_CENTERS:
        rows.append(f"• and {len(centers) - MAX_CENTERS} more cost centers")
    text = head + "\n" + "\n".join(rows)
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "plain_text", "text": head}},
            {"type": "section", "text": {"type": "plain_text", "text": "\n".join(rows) or "-"}},
        ],
    }


def webhook_url(cfg: WebhookConfig) -> str:
    if cfg.url is not None:
        return cfg.url
    assert cfg.url_file is not None  # the config requires one of them
    url = read_secret(cfg.url_file, "report.delivery.webhook.url_file")
    if not url.startswith(("https://", "http://")):
        raise SendError(f"report.delivery.webhook.url_file: {cfg.url_file} holds no http(s) URL")
    return url


def post_summary(cfg: WebhookConfig, files: ReportFiles) -> None:
    """POST the summary once; SendError (without the URL) unless the answer is a 2xx.

    Over the stdlib's ``http.client``, not httpx: httpx logs every request's full URL at
    INFO, and this URL is a credential."""
    url = webhook_url(cfg)
    body = json.dumps(summary(files), ensure_ascii=False).encode("utf-8")
    where = secret_url(url)
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn: http.client.HTTPConnection
    try:
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(
                parts.hostname or "", parts.port, timeout=cfg.timeout_s,
                context=ssl.create_default_context(),
            )  # fmt: skip
        else:
            conn = http.client.HTTPConnection(
                parts.hostname or "", parts.port, timeout=cfg.timeout_s
            )
        try:
            conn.request(
                "POST", target, body=body,
                headers={"Content-Type": "application/json;charset=utf-8"},
            )  # fmt: skip
            response = conn.getresponse()
            response.read(64 * 1024)
            status = response.status
        finally:
            conn.close()
    except (OSError, http.client.HTTPException, ValueError) as exc:
        detail = str(exc)
        if url in detail or (len(parts.path) > 1 and parts.path in detail):
            detail = ""  # a library message that quotes the URL is dropped, not trimmed
        raise SendError(
            hide(f"{where}: {type(exc).__name__} {detail}".strip(), url)[:300]
        ) from None
    if not 200 <= status < 300:
        raise SendError(f"{where}: HTTP {status}")
