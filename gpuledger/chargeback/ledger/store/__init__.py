"""The durable ledger stores: ``open_store(url)`` picks the backend.

- ``sqlite:///relative/ledger.db``, ``sqlite:////absolute/ledger.db`` or
  ``sqlite:///:memory:`` → :class:`~gpuledger.chargeback.ledger.store.sqlite.SqliteLedgerStore`
  (the default; no server);
- ``postgresql://…`` / ``postgres://…`` →
  :class:`~gpuledger.chargeback.ledger.store.postgres.PostgresLedgerStore` (one database for
  the fleet; needs the ``postgres`` extra: psycopg 3 + psycopg-pool).

Each backend is one module; what both share is in ``common``. This module imports a
backend only when asked for it, so the SQLite default works without psycopg and no
backend imports the package that chooses it.
"""

from __future__ import annotations

from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore, sqlite_path
from gpuledger.redact import safe_url

__all__ = ["open_store"]


def open_store(url: str) -> AuditableLedgerStore:
    """The ledger store named by ``url`` (not yet migrated: call ``migrate()``).

    ``sqlite:///…`` → SQLite; ``postgresql://…`` or ``postgres://…`` → PostgreSQL.
    Another scheme → ValueError. A store that cannot be opened → StoreError.
    """
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "sqlite":
        from gpuledger.chargeback.ledger.store.sqlite import SqliteLedgerStore

        return SqliteLedgerStore(sqlite_path(url))
    if scheme in ("postgresql", "postgres"):
        from gpuledger.chargeback.ledger.store.postgres import PostgresLedgerStore

        return PostgresLedgerStore(url)
    raise ValueError(
        f"unsupported ledger store URL scheme {scheme or '(none)'!r} in {safe_url(url)!r}; "
        "use sqlite:///path or postgresql://…"
    )
