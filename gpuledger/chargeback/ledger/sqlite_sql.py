"""SQLite statements derived from a table declaration: shared by the node-local spool and
the SQLite store, which speak the same dialect but keep different columns and rules.

Only names from :mod:`gpuledger.chargeback.ledger.tables` are interpolated, each quoted by
:func:`q`; every value is a bound parameter, so S608 (string-built SQL) does not apply:
"""

# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gpuledger.chargeback.ledger.tables import BoundColumn, Table


def q(name: str) -> str:
    """An SQLite identifier, quoted (names are constants, quoted all the same)."""
    return '"' + name.replace('"', '""') + '"'


def cols(names: Sequence[str]) -> str:
    return ", ".join(q(n) for n in names)


def column_def(column: BoundColumn, name: str, *, with_default: bool) -> str:
    """``"name" TYPE [NOT NULL] [DEFAULT …]``."""
    out = f"{q(name)} {column.type.sqlite}"
    if not column.nullable:
        out += " NOT NULL"
    if with_default and column.default is not None:
        out += f" DEFAULT {column.default}"
    return out


def insert(
    table: str,
    columns: Sequence[str],
    key: Sequence[str],
    sets: Sequence[str],
) -> str:
    """``INSERT … ON CONFLICT (key) DO UPDATE SET sets`` (``DO NOTHING`` without sets)."""
    head = f"INSERT INTO {q(table)} ({cols(columns)}) VALUES ({', '.join('?' for _ in columns)}) "
    if not sets:
        return head + "ON CONFLICT DO NOTHING"
    return head + f"ON CONFLICT ({cols(key)}) DO UPDATE SET {', '.join(sets)}"


def key_where(names: Sequence[str]) -> str:
    """``"a" = ? AND "b" = ?`` over ``names``."""
    return " AND ".join(f"{q(n)} = ?" for n in names)


def spool_names(table: Table[Any]) -> tuple[str, ...]:
    return table.names(spool=True)
