"""A real SMTP server on 127.0.0.1 (aiosmtpd) for the delivery tests, with the faults a
mail relay shows in the field: auth refused, the connection dropped mid-DATA, STARTTLS
or implicit TLS with a throwaway CA (trustme).

The handler keeps every message the server accepted (its envelope and raw bytes), so a
test counts exactly what a relay would have passed on.
"""

from __future__ import annotations

import email
import email.policy
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

USER, PASSWORD = "reporter", "s3cr3t-pa55word"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes

    def message(self) -> EmailMessage:
        msg = email.message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


@dataclass
class Inbox:
    """The handler: accepted messages, and the faults still to inject."""

    received: list[Received] = field(default_factory=list)
    drop_data: int = 0  # the next N DATA commands: connection closed, no reply
    refuse_auth: int = 0  # the next N AUTH attempts refused (535)
    data_seen: int = 0
    auth_seen: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.data_seen += 1
            if self.drop_data > 0:
                self.drop_data -= 1
                server.transport.abort()  # the whole message arrived; the 250 never does
                return "421 closing"
            self.received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
            )
        return "250 OK"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        with self.lock:
            self.auth_seen += 1
            if self.refuse_auth > 0:
                self.refuse_auth -= 1
                return AuthResult(success=False, handled=False)
        ok = isinstance(auth_data, LoginPassword) and (
            auth_data.login.decode(),
            auth_data.password.decode(),
        ) == (USER, PASSWORD)
        return AuthResult(success=ok, handled=False)

    def messages(self) -> list[EmailMessage]:
        with self.lock:
            return [r.message() for r in self.received]


@dataclass
class Tls:
    ca_file: Path
    server_context: ssl.SSLContext


def make_tls(tmp: Path) -> Tls:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    ca_file = tmp / "smtp-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return Tls(ca_file, ctx)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def smtp_server(
    inbox: Inbox, *, tls: Tls | None = None, mode: str = "starttls", auth: bool = False
) -> Iterator[int]:
    """Serve ``inbox`` on 127.0.0.1; yields the port. ``mode``: ``starttls`` (plain, then
    STARTTLS with ``tls``), ``tls`` (TLS from the first byte) or ``none``."""
    kwargs: dict[str, Any] = {}
    if auth:
        # aiosmtpd's auth_require_tls looks for a STARTTLS upgrade only: on an implicit-TLS
        # connection it would hide AUTH, so it is required where STARTTLS is the mode
        kwargs.update(authenticator=inbox.authenticate, auth_require_tls=mode == "starttls")
    if mode == "starttls":
        assert tls is not None
        kwargs.update(tls_context=tls.server_context, require_starttls=True)
    elif mode == "tls":
        assert tls is not None
        kwargs.update(ssl_context=tls.server_context)
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()
