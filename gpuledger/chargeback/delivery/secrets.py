"""Secrets read from files at the moment they are needed, never kept in the config.

A Kubernetes Secret mounted as a file is rotated in place; reading it at each send picks
up the new value without a restart. The error names the config key and the path (a path
is not a secret), never the content.
"""

from __future__ import annotations

from pathlib import Path

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
