"""Retention: which months may leave the ledger, and their archive files.

Both stores' ``retire_before()`` use this module: the cut-off policy (never the current
or the previous UTC month: the previous month may not be reported yet, and a node's spool
may still replay its last hours into it), the months between two instants, and the
archive writer (one gzip CSV per table and month, written to a temporary name, fsynced and
renamed before the rows are dropped, so a crash leaves either the rows or the archive and
the rows, never neither). See ``docs/ledger.md`` (Retention).
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO


@dataclass(frozen=True, slots=True)
class RetiredMonth:
    """One table's month that left the ledger: its rows, and the archive holding them
    (``None`` when the month was dropped without one)."""

    table: str
    month: str  # YYYY-MM
    rows: int
    archive: Path | None


def month_start(t: datetime) -> datetime:
    """The first instant of ``t``'s UTC month."""
    if t.tzinfo is None:
        raise ValueError("naive datetime: pass an aware UTC datetime")
    u = t.astimezone(UTC)
    return datetime(u.year, u.month, 1, tzinfo=UTC)


def add_months(t: datetime, n: int) -> datetime:
    """The month start ``n`` months after (before, when negative) ``t``'s month."""
    m = month_start(t)
    index = m.year * 12 + (m.month - 1) + n
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def retention_cutoff(now: datetime, keep_months: int) -> datetime:
    """The start of the oldest month kept: the current month and ``keep_months`` full
    months before it stay; everything dated before the returned instant may go.
    ``keep_months`` must be at least 1, so the previous month (maybe not reported yet)
    always stays."""
    if keep_months < 1:
        raise ValueError(
            f"keep_months must be >= 1 (the current and previous month always stay), "
            f"got {keep_months}"
        )
    return add_months(now, -keep_months)


def check_cutoff(before: datetime, now: datetime) -> datetime:
    """``before`` as a month start, refused when it would touch the current or previous
    month (a ValueError naming both)."""
    if before != month_start(before):
        raise ValueError(f"retention cut-off {before.isoformat()} is not the start of a month")
    latest = add_months(now, -1)
    if before > latest:
        raise ValueError(
            f"retention cut-off {before:%Y-%m} would drop the current or previous month "
            f"(the latest allowed is {latest:%Y-%m}, as of {now:%Y-%m-%d})"
        )
    return before


def months(first: datetime, before: datetime) -> Iterator[datetime]:
    """Month starts from ``first``'s month up to (excluding) ``before``."""
    m = month_start(first)
    while m < before:
        yield m
        m = add_months(m, 1)


def label(m: datetime) -> str:
    return f"{m:%Y-%m}"


class Archive:
    """``<dir>/<YYYY-MM>/<table>.csv.gz``, written under a temporary name and published
    by :meth:`publish` (fsync, rename, fsync of the folder). A replaced archive of the
    same month (a retry after a failed drop) is overwritten whole, never appended to."""

    def __init__(self, directory: Path, table: str, month: datetime) -> None:
        self.path = directory / label(month) / f"{table}.csv.gz"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._raw: IO[bytes] = open(self._tmp, "wb")  # noqa: SIM115 - closed in publish/abort
        self._gz = gzip.GzipFile(fileobj=self._raw, mode="wb", mtime=0)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._gz.write(data)

    def write_rows(self, header: Sequence[str], rows: Iterable[Sequence[object]]) -> int:
        """CSV rows under ``header``; returns how many were written."""
        text = io.TextIOWrapper(self._gz, encoding="utf-8", newline="", write_through=True)
        writer = csv.writer(text)
        writer.writerow(header)
        n = 0
        for r in rows:
            writer.writerow(r)
            n += 1
        text.detach()
        return n

    def publish(self) -> Path:
        self._gz.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        os.replace(self._tmp, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return self.path

    def abort(self) -> None:
        self._gz.close()
        self._raw.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> Archive:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is not None and not self._raw.closed:
            self.abort()
