"""Secrets read from files at the moment they are needed, never kept in the config.

A Kubernetes Secret mounted as a file is rotated in place; reading it at each send picks
up the new value without a restart. The error names the config key and the path (a path
is not a secret), never the content.
"""

from __future__ import annotations

from pathlib import Path

from gpuledger.chargeback.delivery.config import DeliveryConfig
from gpuledger.chargeback.delivery.contents import DeliveryError

MAX_SECRET_BYTES = 64 * 1024


def read_secret(path: Path, key: str) -> str:
    """The file's text without its trailing newline; DeliveryError naming ``key``."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise DeliveryError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_SECRET_BYTES:
        raise DeliveryError(f"{key}: {path} is larger than {MAX_SECRET_BYTES} bytes")
    try:
        text = data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise DeliveryError(f"{key}: {path} is not UTF-8 text") from None
    if not text:
        raise DeliveryError(f"{key}: {path} is empty")
    return text


def secret_problems(cfg: DeliveryConfig) -> list[tuple[str, str]]:
    """(key, message) for each secret or CA file the delivery cannot read now: checked at
    the reporter's start, so a missing mount is found the day it is deployed, not on the
    1st of next month. The files are read again at each send (rotation)."""
    files: list[tuple[str, Path | None]] = []
    if cfg.smtp is not None:
        files += [
            ("report.delivery.smtp.password_file", cfg.smtp.password_file),
            ("report.delivery.smtp.ca_file", cfg.smtp.ca_file),
        ]
    if cfg.webhook is not None:
        files.append(("report.delivery.webhook.url_file", cfg.webhook.url_file))
    problems: list[tuple[str, str]] = []
    for key, path in files:
        if path is None:
            continue
        try:
            text = read_secret(path, key)
        except DeliveryError as exc:
            problems.append((key, str(exc).removeprefix(f"{key}: ")))
            continue
        if key.endswith("url_file") and not text.startswith(("https://", "http://")):
            problems.append((key, f"{path} holds no http(s) URL"))
    return problems
