"""Who sent a request: the tenant, by the methods the config lists, in its order.

``api_key``: the bearer token (``Authorization: Bearer K``, or ``api-key: K`` as Azure
clients send) looked up by its SHA-256 in the key file's map. ``header``: the configured
header's value. ``user``: the request body's ``user`` field (the OpenAI API's end-user
id). The first method that yields a usable name wins; none: ``__untenanted__``.

Tenant names come from callers, so they are bounded: a name longer than the configured
length or holding control characters is not used (the next method is tried), and each
service keeps at most ``max_tenants_per_service`` distinct names; the rest are counted
as ``__other__`` (a label a caller cannot inflate without bound).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from gpuledger.meter.keys import key_hash

UNTENANTED = "__untenanted__"
OTHER = "__other__"
RESERVED = frozenset({UNTENANTED, OTHER, "__probes__", "__idle__", "__unattributed__"})


def bearer_key(headers: Mapping[str, str]) -> str | None:
    """The API key a client sent (lower-case header names), or None."""
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    api_key = headers.get("api-key", "").strip()
    return api_key or None


class TenantIdentifier:
    """Maps a request (lower-case headers, parsed body or None) to a tenant name."""

    def __init__(
        self,
        order: Sequence[str],
        header: str,
        key_hashes: Mapping[str, str],
        max_name_length: int,
    ) -> None:
        self._order = tuple(order)
        self._header = header.lower()
        self._keys = dict(key_hashes)
        self._max = max_name_length

    def _usable(self, name: object) -> str | None:
        if not isinstance(name, str):
            return None
        name = name.strip()
        if not name or len(name) > self._max or name in RESERVED:
            return None
        if any(ord(c) < 32 or ord(c) == 127 for c in name):
            return None
        return name

    def identify(self, headers: Mapping[str, str], body: Any) -> str:
        for method in self._order:
            found: str | None = None
            if method == "api_key":
                key = bearer_key(headers)
                found = self._keys.get(key_hash(key)) if key is not None else None
            elif method == "header":
                found = self._usable(headers.get(self._header))
            elif method == "user" and isinstance(body, dict):
                found = self._usable(body.get("user"))
            if found is not None:
                return found
        return UNTENANTED


class TenantCap:
    """At most ``limit`` distinct tenant names per service; later ones become ``__other__``.

    A name is admitted the first time it is seen while there is room, and stays admitted
    for the process's life (counters never move between labels). ``__untenanted__`` does
    not use a place.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._admitted: set[str] = set()
        self._lock = threading.Lock()
        self.overflowed = 0  # requests relabelled __other__

    def admit(self, tenant: str) -> str:
        if tenant == UNTENANTED:
            return tenant
        with self._lock:
            if tenant in self._admitted:
                return tenant
            if len(self._admitted) < self._limit:
                self._admitted.add(tenant)
                return tenant
            self.overflowed += 1
            return OTHER
