"""The API-key file: a YAML or JSON mapping ``key -> tenant``, held only as hashes.

The keys are secrets shared with the upstream's callers; the meter needs only to
recognise them, so each is replaced by its SHA-256 at load and the file's text is dropped.
An error names the file and the entry's position, never a key.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml


class KeyFileError(Exception):
    """The key file is missing or malformed (the message holds no key)."""


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def load_api_keys(path: Path) -> dict[str, str]:
    """``sha256(key) -> tenant`` from ``path`` (JSON is YAML, so one parser reads both)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        # the parser's message quotes the offending line, which may be a key
        raise KeyFileError(f"{path} is not valid YAML or JSON") from None
    finally:
        del text
    if not isinstance(data, dict) or not data:
        raise KeyFileError(f"{path} must hold a non-empty mapping of API key to tenant")
    out: dict[str, str] = {}
    for position, (key, tenant) in enumerate(data.items(), start=1):
        if not isinstance(key, str) or not key.strip():
            raise KeyFileError(f"{path}: entry {position}: the key must be a non-empty string")
        if not isinstance(tenant, str) or not tenant.strip():
            raise KeyFileError(f"{path}: entry {position}: the tenant must be a non-empty string")
        out[key_hash(key.strip())] = tenant.strip()
    return out
