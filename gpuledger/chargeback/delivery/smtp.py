"""One e-mail handed to an SMTP server (stdlib ``smtplib``): STARTTLS, implicit TLS or a
plain relay, optional login with the password read from its file.

Sent means the server answered 250 to the end of DATA (RFC 5321 §4.1.1.4): from then on
the message is the server's to deliver. Everything before that raising (connection
refused, TLS refused, auth refused, a connection dropped mid-DATA, a refused recipient)
is a :class:`SendError` whose text has no password in it.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage

from gpuledger.chargeback.delivery.config import SmtpConfig
from gpuledger.chargeback.delivery.secrets import read_secret
from gpuledger.redact import hide


class SendError(Exception):
    """One try that failed; the text is safe to log and to store."""


def tls_context(cfg: SmtpConfig) -> ssl.SSLContext:
    """Certificate and host name verified, against ``ca_file`` or the system store."""
    return ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = sorted({code for code, _ in exc.recipients.values()})
        return f"recipient refused ({', '.join(str(c) for c in codes)})"
    if isinstance(exc, smtplib.SMTPResponseException):
        text = (
            exc.smtp_error.decode("utf-8", "replace")
            if isinstance(exc.smtp_error, bytes)
            else str(exc.smtp_error)
        )
        return f"{type(exc).__name__}: {exc.smtp_code} {text[:200]}"
    return f"{type(exc).__name__}: {exc}"[:300]


def send_mail(cfg: SmtpConfig, msg: EmailMessage) -> None:
    """Send ``msg`` over one connection; SendError on any failure before the server's 250."""
    password = None
    if cfg.password_file is not None:
        password = read_secret(cfg.password_file, "report.delivery.smtp.password_file")
    port = cfg.effective_port()
    client: smtplib.SMTP | None = None
    try:
        if cfg.security == "tls":
            client = smtplib.SMTP_SSL(
                cfg.host, port, timeout=cfg.timeout_s, context=tls_context(cfg)
            )
        else:
            client = smtplib.SMTP(cfg.host, port, timeout=cfg.timeout_s)
        client.ehlo()
        if cfg.security == "starttls":
            if not client.has_extn("starttls"):
                raise SendError("the server does not offer STARTTLS (security: starttls)")
            client.starttls(context=tls_context(cfg))
            client.ehlo()
        if cfg.username is not None and password is not None:
            client.login(cfg.username, password)
        client.send_message(msg)  # raises unless the server accepted it for every recipient
    except SendError:
        raise
    except (smtplib.SMTPException, OSError, ValueError) as exc:  # ValueError: encoding
        raise SendError(hide(_describe(exc), password)) from None
    finally:
        if client is not None:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                client.close()  # the message was accepted or not already: QUIT changes nothing
