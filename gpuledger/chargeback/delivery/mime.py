"""The e-mails: an HTML summary (with a plain-text alternative) and the CSV files attached.

Finance gets the whole month: the total, a subtotal per cost center (they add up to the
total when every line is priced) and the CSV and FOCUS files exactly as written. A cost
center's recipients get their own lines, their subtotal and a CSV of those lines.

Every name in a body comes from the cluster (namespaces, services, cost-center labels),
so the HTML escapes all of it (``html.escape``; a test renders a hostile name). The
Message-ID is derived from (fleet, month, recipient), so a resend after a restart carries
the same one and mail clients show it once (``docs/delivery.md``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from html import escape

from gpuledger.chargeback.delivery.contents import Attachment, ReportFiles

FINANCE = "finance"


@dataclass(frozen=True, slots=True)
class Audience:
    """Who a message is for: finance (``cost_center`` None) or one cost center."""

    address: str
    cost_center: str | None = None

    @property
    def key(self) -> str:
        """The delivery record's ``recipient``: one row per (audience, address)."""
        if self.cost_center is None:
            return f"{FINANCE}:{self.address}"
        return f"cost-center:{self.cost_center}:{self.address}"


def message_id(fleet: str, month: str, channel: str, recipient: str, domain: str) -> str:
    """The same ID for the same (fleet, month, channel, recipient), on every try."""
    digest = hashlib.sha256(f"{fleet}\0{month}\0{channel}\0{recipient}".encode()).hexdigest()
    return f"<gpuledger.{month}.{digest[:24]}@{domain}>"


def usd(value: float | None) -> str:
    return "unpriced" if value is None else f"${value:,.2f}"


_STYLE = (
    "body{font-family:sans-serif;color:#222}table{border-collapse:collapse}"
    "th,td{border:1px solid #ccc;padding:4px 8px}td.num{text-align:right}"
)


def _table(head: tuple[str, ...], rows: Sequence[tuple[str, ...]], table_id: str) -> str:
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{escape(c)}</td>' if i == len(r) - 1 else f"<td>{escape(c)}</td>"
            for i, c in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    return f'<table id="{table_id}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _page(title: str, parts: list[str]) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{escape(title)}</h1>" + "".join(parts) + "</body></html>"
    )


def finance_body(files: ReportFiles) -> tuple[str, str]:
    """(HTML, text) for finance: the total and each cost center's subtotal."""
    title = f"GPU chargeback {files.month} — {files.fleet}"
    centers = files.cost_centers()
    rows = [(name, str(len(files.of(name))), usd(cost)) for name, cost in centers.items()]
    rows.append(("Total", str(len(files.lines)), usd(files.total_cost_usd)))
    status = "" if files.complete else " (month under way: figures so far)"
    html = _page(
        title,
        [
            f'<p>Total: <strong id="total">{escape(usd(files.total_cost_usd))}</strong>'
            f" {escape(files.currency)}{escape(status)}</p>",
            "<h2>By cost center</h2>",
            _table(("Cost center", "Lines", "Cost"), rows, "cost-centers"),
            "<p>Attached: every line (CSV) and the FOCUS 1.2 export.</p>",
        ],
    )
    text = "\n".join(
        [title, f"Total: {usd(files.total_cost_usd)} {files.currency}{status}", ""]
        + [f"{name}: {cost} ({n} lines)" for name, n, cost in rows[:-1]]
    )
    return html, text + "\n"


def cost_center_body(files: ReportFiles, cost_center: str) -> tuple[str, str]:
    """(HTML, text) for one cost center: its lines and its subtotal."""
    title = f"GPU chargeback {files.month} — {cost_center}"
    lines = files.of(cost_center)
    subtotal = files.subtotal(cost_center)
    rows = [(line.namespace, line.service, usd(line.total_cost_usd)) for line in lines]
    rows.append(("", "Subtotal", usd(subtotal)))
    html = _page(
        title,
        [
            f'<p>Cost center <strong id="cost-center">{escape(cost_center)}</strong>, fleet '
            f'{escape(files.fleet)}: <strong id="subtotal">{escape(usd(subtotal))}</strong> '
            f"{escape(files.currency)}</p>",
            _table(("Namespace", "Service", "Cost"), rows, "lines"),
            "<p>Attached: these lines (CSV).</p>",
        ],
    )
    text = "\n".join(
        [title, f"Subtotal: {usd(subtotal)} {files.currency}", ""]
        + [f"{ns}/{svc}: {cost}" for ns, svc, cost in rows[:-1]]
    )
    return html, text + "\n"


def build_email(files: ReportFiles, audience: Audience, sender: str, msg_id: str) -> EmailMessage:
    """The message for ``audience``: HTML + text alternative, CSV (and FOCUS) attached."""
    if audience.cost_center is None:
        html, text = finance_body(files)
        attachments: tuple[Attachment, ...] = files.attachments
        subject = f"GPU chargeback {files.month} ({files.fleet})"
    else:
        html, text = cost_center_body(files, audience.cost_center)
        attachments = (files.cost_center_csv(audience.cost_center),)
        subject = f"GPU chargeback {files.month} ({files.fleet}): {audience.cost_center}"
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = sender
    msg["To"] = audience.address
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = msg_id
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    for a in attachments:
        maintype, subtype = a.content_type.split("/", 1)
        msg.add_attachment(a.data, maintype=maintype, subtype=subtype, filename=a.filename)
    return msg
