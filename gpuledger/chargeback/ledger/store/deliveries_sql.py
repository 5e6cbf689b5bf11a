"""Migration 11: ``ledger_deliveries``, the monthly report's delivery record, both backends.

Not an hourly running total, so not a declaration in ``tables.py`` (no spool table, no
upsert keeping the greater value): one row per (fleet, month, channel, recipient) whose
state moves ``pending`` → ``sent`` (or ``failed``, then ``pending`` again on a retry). It lives
in the ledger database because the ledger is what survives a reporter's restart and is
shared by the fleet: a month marked sent there is never sent again, whichever reporter
restarts. ``chargeback/delivery/record.py`` reads and writes it; ``docs/delivery.md``.

Frozen history like every migration: a later version changes it by a migration of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the SQLite default runs without the postgres extra
    from psycopg import sql

DELIVERIES = "ledger_deliveries"
"""The table's name in both stores."""

STATES = ("pending", "sent", "failed")

_COLUMNS = (
    # name, SQLite type, PostgreSQL type, NOT NULL, default
    ("fleet", "TEXT", "text", True, None),  # report.fleet: reporters sharing one ledger
    ("month", "TEXT", "text", True, None),  # YYYY-MM
    ("channel", "TEXT", "text", True, None),  # email | webhook
    ("recipient", "TEXT", "text", True, None),  # finance:a@b, cost-center:ml:c@d, webhook
    ("state", "TEXT", "text", True, None),
    ("attempts", "INTEGER", "integer", True, "0"),
    ("last_error", "TEXT", "text", False, None),  # redacted: no address, URL or password
    ("message_id", "TEXT", "text", True, None),  # the same on every resend
    ("created_at", "INTEGER", "bigint", True, None),  # unix seconds
    ("updated_at", "INTEGER", "bigint", True, None),
    ("sent_at", "INTEGER", "bigint", False, None),  # unix seconds of the server's ack
)
_KEY = ("fleet", "month", "channel", "recipient")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sqlite_migration_11() -> tuple[str, ...]:
    defs = []
    for name, sqlite_type, _, not_null, default in _COLUMNS:
        d = f"{_q(name)} {sqlite_type}" + (" NOT NULL" if not_null else "")
        defs.append(d + (f" DEFAULT {default}" if default is not None else ""))
    states = ", ".join(f"'{s}'" for s in STATES)
    defs.append(f"CHECK ({_q('state')} IN ({states}))")
    defs.append(f"PRIMARY KEY ({', '.join(_q(k) for k in _KEY)})")
    return (f"CREATE TABLE {_q(DELIVERIES)} (\n    " + ",\n    ".join(defs) + "\n) WITHOUT ROWID",)


def postgres_migration_11() -> list[sql.Composed]:
    from psycopg import sql

    defs: list[sql.Composable] = []
    for name, _, pg_type, not_null, default in _COLUMNS:
        text = " " + pg_type + (" NOT NULL" if not_null else "")
        text += f" DEFAULT {default}" if default is not None else ""
        defs.append(sql.Composed([sql.Identifier(name), sql.SQL(text)]))
    defs.append(
        sql.SQL("CHECK ({} IN ({}))").format(
            sql.Identifier("state"), sql.SQL(", ").join(sql.Literal(s) for s in STATES)
        )
    )
    defs.append(
        sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(sql.Identifier(k) for k in _KEY))
    )
    return [
        sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(DELIVERIES), sql.SQL(", ").join(defs))
    ]
