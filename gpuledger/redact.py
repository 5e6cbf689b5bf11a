"""Secrets out of everything a person reads: DSNs and URLs with their passwords replaced.

One module for every part that names a database or endpoint in a message, a log line, a
report or an error: the ledger stores, the pgvector collector's config, the agent's
config check and the CLI. It imports nothing from the project, so the collectors and the
chargeback stages can both use it without importing each other.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit, urlunsplit

_KV_PASSWORD = re.compile(r"(?i)\b(password|passwd|pwd)\s*=\s*('(?:[^'\\]|\\.)*'|[^\s&]*)")
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s]*):([^@/\s]*)@")


def redact_dsn(dsn: str) -> str:
    """``dsn`` with any password replaced by ``***``: URL userinfo
    (``postgresql://u:secret@h/db``), a ``password=`` query parameter and the key/value
    form (``host=h password='s e'``). Use it for every DSN that reaches a message or log."""
    text = _URL_USERINFO.sub(r"\1:***@", dsn)
    return _KV_PASSWORD.sub(r"\1=***", text)


def dsn_password(dsn: str) -> str | None:
    """The password written in ``dsn`` (URL or key/value form), for scrubbing it out of
    driver messages; None when there is none."""
    if "://" in dsn:
        try:
            parts = urlsplit(dsn)
        except ValueError:
            parts = None
        if parts is not None and parts.password:
            return unquote(parts.password)
    match = _KV_PASSWORD.search(dsn)
    if match:
        value = match.group(2)
        if value.startswith("'") and value.endswith("'") and len(value) >= 2:
            value = value[1:-1].replace("\\'", "'").replace("\\\\", "\\")
        return unquote(value) or None
    return None


def scrub(message: str, dsn: str) -> str:
    """``message`` with the DSN's password (raw and URL-quoted) and any DSN-like text
    redacted: driver messages are not trusted to leave it out."""
    password = dsn_password(dsn)
    if password:
        message = message.replace(password, "***")
        raw = urlsplit(dsn).password if "://" in dsn else None
        if raw:
            message = message.replace(raw, "***")
    return redact_dsn(message)


def safe_url(url: str) -> str:
    """``url`` without its password, for messages about which store failed."""
    if "://" not in url:
        return redact_dsn(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{hostport}" if ":" in userinfo else f"{user}@{hostport}"
    if not netloc:  # sqlite:///path: urlunsplit would drop the empty authority's "//"
        return redact_dsn(
            f"{parts.scheme}://{parts.path}" + (f"?{parts.query}" if parts.query else "")
        )
    return redact_dsn(urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")))


def secret_url(url: str) -> str:
    """``url`` with everything after its host hidden: for a URL that *is* a credential
    (a Slack-compatible incoming webhook's path is its token), where hiding the password
    is not enough. ``https://hooks.slack.com/services/T/B/x`` → ``https://hooks.slack.com/***``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparseable url>"
    if not parts.scheme or not host:
        return "***"
    return f"{parts.scheme}://{host}{port}/***"


def hide(message: str, *secrets: str | None) -> str:
    """``message`` with each given secret (and its URL-quoted form) replaced by ``***``:
    for messages from libraries that may echo what they were handed."""
    from urllib.parse import quote

    for secret in secrets:
        if secret:
            message = message.replace(secret, "***").replace(quote(secret, safe=""), "***")
    return message
