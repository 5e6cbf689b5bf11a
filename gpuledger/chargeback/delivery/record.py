"""The delivery record: ``ledger_deliveries`` in the ledger database (migration 11).

One row per (fleet, month, channel, recipient): reporters of several fleets (clusters)
sharing one ledger database each keep their own record. The retry loop writes it *before* each send
(``begin``: the row and its Message-ID, ``attempt``: one more try) and marks it ``sent``
after the server's acknowledgement, so a restarted reporter knows what went out: a row
``sent`` is never sent again; a row ``pending`` or ``failed`` is sent again, with the
Message-ID it was first given. The window this leaves (killed between the server's 250
and ``sent``: one resend, same Message-ID) is in ``docs/delivery.md``.

Its own connection, not the ledger store's: a few statements a month need no pool, and
the stores stay about usage. SQLite (one file, the node's or single server's ledger) or
PostgreSQL (the fleet's); both speak ``INSERT … ON CONFLICT DO NOTHING``. The PostgreSQL
statements quote the table's name with ``psycopg.sql``; every value is a parameter.
"""

# SQL text is built from the constant table name, quoted; values are parameters:
# ruff: noqa: S608

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gpuledger.chargeback.delivery.contents import DeliveryError
from gpuledger.chargeback.ledger.store.common import sqlite_path
from gpuledger.chargeback.ledger.store.deliveries_sql import DELIVERIES
from gpuledger.redact import safe_url, scrub

_COLUMNS = "month, channel, recipient, state, attempts, last_error, message_id, sent_at"
_KEY = "fleet = {p} AND month = {p} AND channel = {p} AND recipient = {p}"

BEGIN = (
    "INSERT INTO {t} (fleet, month, channel, recipient, state, attempts, message_id,"
    " created_at, updated_at) VALUES ({p}, {p}, {p}, {p}, 'pending', 0, {p}, {p}, {p})"
    " ON CONFLICT (fleet, month, channel, recipient) DO NOTHING"
)
SELECT_ONE = "SELECT " + _COLUMNS + " FROM {t} WHERE " + _KEY
SELECT_MONTH = (
    "SELECT " + _COLUMNS + " FROM {t} WHERE fleet = {p} AND month = {p} ORDER BY channel, recipient"
)
ATTEMPT = (
    "UPDATE {t} SET attempts = attempts + 1, state = 'pending', updated_at = {p}"
    " WHERE " + _KEY + " AND state <> 'sent'"
)
SENT = (
    "UPDATE {t} SET state = 'sent', sent_at = {p}, last_error = NULL, updated_at = {p}"
    " WHERE " + _KEY
)
ERROR = (
    "UPDATE {t} SET state = {p}, last_error = {p}, updated_at = {p} WHERE "
    + _KEY
    + (" AND state <> 'sent'")
)

MIGRATE_HINT = (
    "the ledger has no ledger_deliveries table (schema version 11): start an agent of this "
    "release with the ledger (it migrates at start) before the reporter delivers"
)


@dataclass(frozen=True, slots=True)
class Record:
    month: str
    channel: str
    recipient: str
    state: str  # pending | sent | failed
    attempts: int
    last_error: str | None
    message_id: str
    sent_at: int | None  # unix seconds


class DeliveryLog(Protocol):
    fleet: str  # whose rows: report.fleet

    def begin(self, month: str, channel: str, recipient: str, message_id: str) -> Record:
        """The row, inserted ``pending`` with ``message_id`` if it was not there."""
        ...

    def attempt(self, month: str, channel: str, recipient: str) -> None:
        """One more try is about to be made (not on a row already sent)."""
        ...

    def sent(self, month: str, channel: str, recipient: str, at: int) -> None: ...

    def error(self, month: str, channel: str, recipient: str, message: str, *, final: bool) -> None:
        """A try failed (``final``: no more tries this pass → ``failed``)."""
        ...

    def rows(self, month: str) -> list[Record]: ...

    def close(self) -> None: ...


def _record(row: Sequence[Any]) -> Record:
    return Record(
        str(row[0]), str(row[1]), str(row[2]), str(row[3]), int(row[4]),
        None if row[5] is None else str(row[5]), str(row[6]),
        None if row[7] is None else int(row[7]),
    )  # fmt: skip


class _Statements:
    """The record's operations, once; a backend supplies ``_run(template, params)``."""

    fleet: str = "default"

    def _run(self, template: str, params: Sequence[object]) -> list[Any]:
        raise NotImplementedError

    def begin(self, month: str, channel: str, recipient: str, message_id: str) -> Record:
        now, f = int(time.time()), self.fleet
        self._run(BEGIN, (f, month, channel, recipient, message_id, now, now))
        return _record(self._run(SELECT_ONE, (f, month, channel, recipient))[0])

    def attempt(self, month: str, channel: str, recipient: str) -> None:
        self._run(ATTEMPT, (int(time.time()), self.fleet, month, channel, recipient))

    def sent(self, month: str, channel: str, recipient: str, at: int) -> None:
        self._run(SENT, (at, int(time.time()), self.fleet, month, channel, recipient))

    def error(self, month: str, channel: str, recipient: str, message: str, *, final: bool) -> None:
        state = "failed" if final else "pending"
        params = (state, message, int(time.time()), self.fleet, month, channel, recipient)
        self._run(ERROR, params)

    def rows(self, month: str) -> list[Record]:
        """This fleet's rows of ``month``."""
        return [_record(r) for r in self._run(SELECT_MONTH, (self.fleet, month))]


class SqliteDeliveryLog(_Statements):
    """The record in a SQLite ledger file (autocommit: each statement its own transaction)."""

    def __init__(self, path: str, fleet: str = "default") -> None:
        self.fleet = fleet
        self._path = path
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(
                path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as err:
            raise DeliveryError(f"delivery record in {path!r}: {err}") from None

    def _run(self, template: str, params: Sequence[object]) -> list[Any]:
        statement = template.format(t='"' + DELIVERIES + '"', p="?")
        with self._lock:
            try:
                return self._conn.execute(statement, tuple(params)).fetchall()
            except sqlite3.OperationalError as err:
                if "no such table" in str(err):
                    raise DeliveryError(MIGRATE_HINT) from None
                raise DeliveryError(f"delivery record in {self._path!r}: {err}") from None
            except sqlite3.Error as err:
                raise DeliveryError(f"delivery record in {self._path!r}: {err}") from None

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class PostgresDeliveryLog(_Statements):
    """The record in the fleet's PostgreSQL ledger: a short connection per statement
    (a handful a month), autocommit, the DSN's password never in an error."""

    def __init__(self, dsn: str, fleet: str = "default", *, connect_timeout_s: int = 10) -> None:
        self.fleet = fleet
        self._dsn = dsn
        self._timeout = connect_timeout_s

    def _run(self, template: str, params: Sequence[object]) -> list[Any]:
        import psycopg
        from psycopg import errors, sql

        statement = sql.SQL(template).format(t=sql.Identifier(DELIVERIES), p=sql.Placeholder())
        try:
            with psycopg.connect(
                self._dsn, autocommit=True, connect_timeout=self._timeout
            ) as conn, conn.cursor() as cur:  # fmt: skip
                cur.execute(statement, tuple(params))
                return cur.fetchall() if cur.description is not None else []
        except errors.UndefinedTable:
            raise DeliveryError(MIGRATE_HINT) from None
        except psycopg.Error as err:
            raise DeliveryError(
                f"delivery record in {safe_url(self._dsn)}: {type(err).__name__}: "
                f"{scrub(str(err), self._dsn)}"
            ) from None

    def close(self) -> None:
        pass  # no connection is kept


def open_delivery_log(url: str, fleet: str = "default") -> DeliveryLog:
    """``fleet``'s record in the ledger named by ``ledger.url`` (the store's URL)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "sqlite":
        return SqliteDeliveryLog(sqlite_path(url), fleet)
    if scheme in ("postgresql", "postgres"):
        return PostgresDeliveryLog(url, fleet)
    raise ValueError(f"unsupported ledger URL scheme in {safe_url(url)!r}")
