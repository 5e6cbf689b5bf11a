"""What a ledger column is: its role (what a store does when a row with the same key
arrives again), its SQL type on each backend, and the field helpers the row types in
:mod:`gpuledger.chargeback.ledger.tables` declare their columns with. Kept apart from the
tables so that each module holds one thing: the vocabulary here, the tables there.

The roles:

- ``KEY``: part of the conflict target;
- ``LABEL``: descriptive or measured once, the incoming value wins;
- ``TOTAL``: a running total, the larger of stored and incoming value wins
  (``max()`` in SQLite, ``GREATEST`` in PostgreSQL, ``max`` in the in-batch merge);
- ``PEAK``: a running maximum (the largest value seen in the hour, e.g. GPU memory
  held), nullable (NULL: not measured): merged like a total -- the larger wins -- except
  that NULL never wins over a measured value (:func:`merge_peak`). Unlike a total it is
  never summed: a rollup (sums kept by adding and subtracting) does not carry it, and a
  grouped read takes its ``MAX``;
- ``VERDICT``: filled in later, the incoming value wins unless it is NULL (a replay of
  the bare record never clears a verdict);
- ``VALUE``: the payload of an insert-only table (a replayed row is ignored).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Role(StrEnum):
    KEY = "key"
    LABEL = "label"
    TOTAL = "total"
    PEAK = "peak"
    VERDICT = "verdict"
    VALUE = "value"


@dataclass(frozen=True, slots=True)
class SqlType:
    """A column's type on each backend, and the Python type its values are coerced to."""

    sqlite: str
    postgres: str
    python: type
    pg_param: str = "%s"
    """How a bound value enters a PostgreSQL statement."""
    pg_staging: str | None = None
    """The column's type in a COPY staging table, where it differs from ``postgres``."""
    pg_unstage: str | None = None
    """How a staged value becomes the column's type (``{}``: the staged column)."""


HOUR = SqlType(
    "INTEGER",
    "timestamptz",
    int,
    pg_param="to_timestamp(%s::bigint)",
    pg_staging="bigint",
    pg_unstage="to_timestamp({})",
)
"""An hour's start: unix seconds in SQLite, an instant (timestamptz) in PostgreSQL, so no
session time zone can shift a bucket."""
TEXT = SqlType("TEXT", "text", str)
REAL = SqlType("REAL", "double precision", float)
"""GPU-seconds, joules, tokens, seconds: a double's 15-16 digits are exact far below what
is billed, and numeric would cost space and aggregate speed for nothing."""
INT = SqlType("INTEGER", "integer", int)
BIGINT = SqlType("INTEGER", "bigint", int)
BOOL = SqlType("INTEGER", "boolean", bool)


@dataclass(frozen=True, slots=True)
class Column:
    """One column: the row attribute's role and type, and where its names differ."""

    role: Role
    type: SqlType
    nullable: bool = False
    default: str | None = None
    """The stores' DDL default (SQL text); the spool always receives every value."""
    store_name: str | None = None
    spool_name: str | None = None
    since: int | None = None
    """The schema version that added the column to an existing table (None: the table
    had it from its creation). ``ALTER TABLE … ADD COLUMN`` appends, so in every DDL such
    a column follows the table's stamp (``updated_at``; the spool's ``seq`` and
    ``flushed_seq``): a migrated database and a fresh one are laid out alike. It must be
    nullable or have a default: existing rows get that."""


@dataclass(frozen=True, slots=True)
class BoundColumn:
    """A :class:`Column` with its attribute and resolved names."""

    attr: str
    store: str
    spool: str
    role: Role
    type: SqlType
    nullable: bool
    default: str | None
    since: int | None = None


COLUMN_META = "gpuledger.column"
"""The dataclass field metadata key a column declaration is kept under."""


def _column(role: Role, sql_type: SqlType, **kw: Any) -> Mapping[str, Column]:
    return {COLUMN_META: Column(role, sql_type, **kw)}


def key(sql_type: SqlType, **kw: Any) -> Mapping[str, Column]:
    return _column(Role.KEY, sql_type, **kw)


def label(sql_type: SqlType, **kw: Any) -> Mapping[str, Column]:
    return _column(Role.LABEL, sql_type, **kw)


def total(sql_type: SqlType = REAL, **kw: Any) -> Mapping[str, Column]:
    return _column(Role.TOTAL, sql_type, default="0", **kw)


def peak(sql_type: SqlType = REAL, **kw: Any) -> Mapping[str, Column]:
    return _column(Role.PEAK, sql_type, nullable=True, **kw)


def verdict(**kw: Any) -> Mapping[str, Column]:
    return _column(Role.VERDICT, BOOL, nullable=True, **kw)


def value(sql_type: SqlType, **kw: Any) -> Mapping[str, Column]:
    return _column(Role.VALUE, sql_type, **kw)


def merge_peak(old: float | None, new: float | None) -> float | None:
    """Two readings of a running maximum: the larger; None (not measured) only when both
    are (SQL's ``GREATEST``, which ignores NULLs)."""
    if old is None:
        return new
    if new is None:
        return old
    return max(old, new)
