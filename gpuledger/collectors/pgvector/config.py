"""Configuration of the PostgreSQL/pgvector storage collector (the agent's ``pgvector:`` key).

A database's connection string comes from exactly one of ``dsn`` (inline; fine without a
password), ``dsn_file`` (a mounted Secret) or ``dsn_env``; a password may come separately
from ``password_file`` or ``password_env`` and is then handed to the driver as its own
connection parameter. Files and variables are read at every collection (a rotated Secret
is picked up without a restart), and nothing here ever puts a password into a ``repr``, a
``str`` or an error message: :class:`ResolvedDsn` is the only holder of the secret text.

This module does not import psycopg, so an agent config that does not use the collector
loads without the ``postgres`` extra.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gpuledger.redact import safe_url, scrub

DEFAULT_EXCLUDE_SCHEMAS: tuple[str, ...] = (
    "pg_catalog",
    "information_schema",
    "pg_toast",
    "pg_temp_*",
    "pg_toast_temp_*",
)

_Pattern = Annotated[str, Field(min_length=1)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ResolvedDsn:
    """A connection string (and separate password) ready for the driver.

    ``repr``/``str`` show only the redacted form; :meth:`scrub` removes both the DSN's own
    password and the separate one from any text (driver messages are not trusted)."""

    __slots__ = ("_conninfo", "_password")

    def __init__(self, conninfo: str, password: str | None = None) -> None:
        self._conninfo = conninfo
        self._password = password

    @property
    def conninfo(self) -> str:
        """The connection string as written (may hold a password: never log it)."""
        return self._conninfo

    @property
    def password(self) -> str | None:
        """The password from ``password_file``/``password_env`` (never log it)."""
        return self._password

    @property
    def redacted(self) -> str:
        return safe_url(self._conninfo)

    def scrub(self, message: str) -> str:
        if self._password:
            message = message.replace(self._password, "***")
        return scrub(message, self._conninfo)

    def __repr__(self) -> str:
        extra = ", password=***" if self._password else ""
        return f"ResolvedDsn({self.redacted!r}{extra})"

    def __str__(self) -> str:
        return self.redacted


def dsn_dbname(conninfo: str) -> str | None:
    """The database a connection string names (URL path or ``dbname=``), else None.
    Cheap and driver-free: used only for the default label."""
    text = conninfo.strip()
    if "://" in text:
        try:
            path = urlsplit(text).path
        except ValueError:
            return None
        name = unquote(path.lstrip("/"))
        return name or None
    for word in _kv_words(text):
        key, sep, value = word.partition("=")
        if sep and key.strip() == "dbname":
            return value or None
    return None


def _kv_words(text: str) -> list[str]:
    """``key=value`` words of a libpq key/value string (single quotes, backslash escapes)."""
    words: list[str] = []
    buf: list[str] = []
    quoted = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            buf.append(text[i + 1])
            i += 2
            continue
        if ch == "'":
            quoted = not quoted
        elif ch.isspace() and not quoted:
            if buf:
                words.append("".join(buf))
                buf = []
        else:
            buf.append(ch)
        i += 1
    if buf:
        words.append("".join(buf))
    # "key = value" spelled with spaces: glue the pieces back together
    glued: list[str] = []
    for word in words:
        if glued and (glued[-1].endswith("=") or word.startswith("=")):
            glued[-1] += word
        else:
            glued.append(word)
    return glued


class PgDatabaseConfig(_Section):
    """One database to watch. ``name`` is the ``database`` label of its series."""

    name: str | None = Field(None, min_length=1, max_length=200)
    dsn: str | None = Field(None, min_length=1, repr=False)
    dsn_file: Path | None = None
    dsn_env: str | None = Field(None, min_length=1)
    password_file: Path | None = None
    password_env: str | None = Field(None, min_length=1)
    capacity_bytes: int | None = Field(None, gt=0)
    include_schemas: list[_Pattern] = Field(default_factory=lambda: ["*"])
    exclude_schemas: list[_Pattern] = Field(default_factory=lambda: list(DEFAULT_EXCLUDE_SCHEMAS))
    include_tables: list[_Pattern] = Field(default_factory=lambda: ["*"])
    exclude_tables: list[_Pattern] = Field(default_factory=list)
    all_tables: bool = False  # also tables without vector columns
    statement_timeout_ms: int = Field(5000, ge=1, le=3_600_000)
    lock_timeout_ms: int = Field(1000, ge=1, le=3_600_000)
    connect_timeout_s: int = Field(5, ge=1, le=300)

    @model_validator(mode="after")
    def _one_source(self) -> PgDatabaseConfig:
        given = [k for k in ("dsn", "dsn_file", "dsn_env") if getattr(self, k) is not None]
        if len(given) != 1:
            what = ", ".join(given) if given else "none"
            raise ValueError(f"set exactly one of dsn, dsn_file, dsn_env (got: {what})")
        if self.password_file is not None and self.password_env is not None:
            raise ValueError("set password_file or password_env, not both")
        return self

    @field_validator("dsn")
    @classmethod
    def _no_blank(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must not be blank")
        return v

    def label(self) -> str:
        """``name``, else the database named by an inline DSN, else the key the DSN comes
        from (``dsn_env:VAR`` / ``dsn_file:NAME``): stable, and known without a secret."""
        if self.name:
            return self.name
        if self.dsn is not None:
            return dsn_dbname(self.dsn) or "postgres"
        if self.dsn_env is not None:
            return f"dsn_env:{self.dsn_env}"
        assert self.dsn_file is not None
        return f"dsn_file:{self.dsn_file.name}"

    def resolve(self) -> ResolvedDsn:
        """Read the DSN and password from wherever they are configured.

        ValueError naming the key when a file or variable is missing or empty; the message
        never holds a secret."""
        if self.dsn is not None:
            conninfo = self.dsn
        elif self.dsn_env is not None:
            conninfo = _from_env("dsn_env", self.dsn_env)
        else:
            assert self.dsn_file is not None
            conninfo = _from_file("dsn_file", self.dsn_file).strip()
            if not conninfo:
                raise ValueError(f"dsn_file: {str(self.dsn_file)!r} is empty")
        password: str | None = None
        if self.password_env is not None:
            password = _from_env("password_env", self.password_env)
        elif self.password_file is not None:
            password = _from_file("password_file", self.password_file).rstrip("\r\n")
            if not password:
                raise ValueError(f"password_file: {str(self.password_file)!r} is empty")
        return ResolvedDsn(conninfo, password)


def _from_env(key: str, var: str) -> str:
    value = os.environ.get(var)
    if value is None or not value.strip():
        raise ValueError(f"{key}: environment variable {var!r} is not set or empty")
    return value


def _from_file(key: str, path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as err:
        raise ValueError(f"{key}: cannot read {str(path)!r}: {err.strerror}") from None


class PgvectorConfig(_Section):
    """The agent's ``pgvector:`` section."""

    enabled: bool = False
    interval_seconds: float = Field(300.0, gt=0, le=86400)
    databases: list[PgDatabaseConfig] = Field(default_factory=list)
    # Growth: least-squares slope over this window, reported from min_samples samples on.
    growth_window_days: float = Field(7.0, gt=0, le=366)
    growth_min_samples: int = Field(6, ge=2)

    @model_validator(mode="after")
    def _check(self) -> PgvectorConfig:
        if self.enabled and not self.databases:
            raise ValueError("pgvector.enabled is true but no databases are configured")
        seen: dict[str, int] = {}
        for i, db in enumerate(self.databases):
            label = db.label()
            if label in seen:
                raise ValueError(
                    f"databases[{i}] and databases[{seen[label]}] share the label {label!r}; "
                    "give them distinct names"
                )
            seen[label] = i
        return self
