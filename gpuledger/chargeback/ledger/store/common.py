"""Durable ledger stores: ``open_store(url)`` and what both backends share.

Two backends implement :class:`~gpuledger.chargeback.ledger.model.LedgerStore` with the same
schema and the same semantics (see ``docs/ledger.md``):

- ``sqlite:///relative/ledger.db``, ``sqlite:////absolute/ledger.db`` or
  ``sqlite:///:memory:`` → :class:`~gpuledger.chargeback.ledger.store.sqlite.SqliteLedgerStore`
  (the default; no server);
- ``postgresql://…`` / ``postgres://…`` →
  :class:`~gpuledger.chargeback.ledger.store.postgres.PostgresLedgerStore` (one database for the
  fleet; needs the ``postgres`` extra: psycopg 3 + psycopg-pool).

The tables themselves (columns, keys, merge rules) are declared in
:mod:`gpuledger.chargeback.ledger.tables`; this module holds what both backends' reads
share: the group-by vocabulary, time ranges, the extended protocol. It does not import
psycopg, so the SQLite default works without the ``postgres`` extra.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote

from gpuledger.chargeback.ledger.model import (
    ENGINE_GROUP_KEYS,
    PEAK_GROUP_KEYS,
    TENANT_GROUP_KEYS,
    TOKEN_GROUP_KEYS,
    USAGE_GROUP_KEYS,
    CoverageGroup,
    EngineTimeGroup,
    InvariantViolation,
    LedgerStore,
    PeakMemoryGroup,
    ProbeLatencyGroup,
    SplitCoefficient,
    TenantHourSum,
    TenantTokenGroup,
    TenantWeightedGroup,
    TokenGroup,
    UsageGroup,
)
from gpuledger.chargeback.ledger.store.retention import RetiredMonth
from gpuledger.chargeback.ledger.tables import ENGINE_TIME, TENANT_TOKENS, TOKENS, Role
from gpuledger.redact import safe_url

# -- names --------------------------------------------------------------------------------

MIGRATIONS_TABLE = "schema_migrations"

GROUP_COLUMNS: dict[str, str] = {key: key for key in USAGE_GROUP_KEYS}
GROUP_COLUMNS["hour"] = "hour_start"
"""``group_by`` key → ``ledger_usage`` column (``hour`` groups per ``hour_start``)."""

PEAK_GROUP_COLUMNS: dict[str, str] = {key: key for key in PEAK_GROUP_KEYS}
PEAK_GROUP_COLUMNS["hour"] = "hour_start"

TOKEN_GROUP_COLUMNS: dict[str, str] = {key: key for key in TOKEN_GROUP_KEYS}
TOKEN_GROUP_COLUMNS["hour"] = "hour_start"

TENANT_GROUP_COLUMNS: dict[str, str] = {key: key for key in TENANT_GROUP_KEYS}
TENANT_GROUP_COLUMNS["hour"] = "hour_start"

ENGINE_GROUP_COLUMNS: dict[str, str] = {key: key for key in ENGINE_GROUP_KEYS}
ENGINE_GROUP_COLUMNS["hour"] = "hour_start"

PROBE_LATENCY_METRICS = ("ttft_s", "tpot_s", "e2e_s")
"""What ``probe_latency`` takes a quantile of."""
QUANTILE_EPS = 1e-9
"""``CUME_DIST() >= q - eps``: k/N computed in floating point may land a hair below q."""

SCHEMA_VERSION = 12
"""The newest migration version both backends define."""

SECONDS_PER_HOUR = 3600.0


# -- the extended protocol ----------------------------------------------------------------


class AuditableLedgerStore(LedgerStore, Protocol):
    """A :class:`LedgerStore` that can also answer the coverage and invariant queries."""

    def applied_versions(self) -> list[int]:
        """Migration versions recorded in ``schema_migrations``, ascending."""
        ...

    def retire_before(
        self, before: datetime, *, archive_dir: Path | None, now: datetime | None = None
    ) -> list[RetiredMonth]:
        """Retention: every row dated before ``before`` removed, a table's month at a
        time, archived under ``archive_dir`` first unless it is None; the current and
        previous month (as of ``now``) are refused (``retention.check_cutoff``)."""
        ...

    def coverage(
        self, start: datetime, end: datetime, *, node: str | None = None
    ) -> list[CoverageGroup]:
        """Per ``(node, gpu_uuid)`` over ``[start, end)`` hours: ``gpu_model``,
        ``observed_seconds``, ``hours`` (buckets present) and ``first_hour``/``last_hour``
        (ISO-8601 UTC)."""
        ...

    def probe_latency(
        self,
        start: datetime,
        end: datetime,
        quantile: float = 0.99,
        *,
        node: str | None = None,
    ) -> list[ProbeLatencyGroup]:
        """Per ``(namespace, service)``: the nearest-rank ``quantile`` of successful
        probes' ``ttft_s``, ``tpot_s``, ``e2e_s`` (None where no probe measured it)."""
        ...

    def tenant_hour_sums(self, start: datetime, end: datetime) -> list[TenantHourSum]: ...

    def tenant_weighted_sums(
        self,
        start: datetime,
        end: datetime,
        coefficients: Sequence[SplitCoefficient],
        cached_weight: float,
    ) -> list[TenantWeightedGroup]: ...

    def invariant_violations(
        self,
        start: datetime,
        end: datetime,
        rel_tol: float = 1e-9,
        *,
        node: str | None = None,
    ) -> list[InvariantViolation]:
        """``(hour, node)`` buckets where Σ allocated (all services incl. ``__idle__``)
        differs from Σ observed seconds by more than ``rel_tol`` (relative)."""
        ...


# -- shared helpers -----------------------------------------------------------------------


def check_group_by(group_by: Sequence[str]) -> tuple[str, ...]:
    """``group_by`` without duplicates (first occurrence kept); ValueError naming any
    unknown key. A bare string is refused (it would be read as its characters)."""
    if isinstance(group_by, str):
        raise TypeError("group_by must be a sequence of keys, not a string")
    unknown = [key for key in group_by if key not in GROUP_COLUMNS]
    if unknown:
        raise ValueError(
            f"unknown group_by key(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(USAGE_GROUP_KEYS)}"
        )
    return tuple(dict.fromkeys(group_by))


def aware_utc(value: datetime, name: str) -> datetime:
    """``value`` in UTC; a naive datetime is taken to be UTC already."""
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def unix_seconds(value: datetime, name: str) -> int:
    """``value`` as whole unix seconds, rounded up (``hour_start >= start`` stays exact)."""
    ts = aware_utc(value, name).timestamp()
    whole = int(ts)
    return whole + 1 if ts > whole else whole


def check_token_group_by(group_by: Sequence[str]) -> tuple[str, ...]:
    keys = tuple(group_by)
    for key in keys:
        if key not in TOKEN_GROUP_COLUMNS:
            raise ValueError(
                f"unknown group_by key {key!r} for tokens; use any of {', '.join(TOKEN_GROUP_KEYS)}"
            )
    return keys


def _check_keys(
    group_by: Sequence[str], columns: Mapping[str, str], allowed: Sequence[str], what: str
) -> tuple[str, ...]:
    """``group_by`` without duplicates; ValueError naming an unknown key (a bare string is
    refused: it would be read as its characters)."""
    if isinstance(group_by, str):
        raise TypeError("group_by must be a sequence of keys, not a string")
    for key in group_by:
        if key not in columns:
            raise ValueError(
                f"unknown group_by key {key!r} for {what}; use any of {', '.join(allowed)}"
            )
    return tuple(dict.fromkeys(group_by))


def check_peak_group_by(group_by: Sequence[str]) -> tuple[str, ...]:
    return _check_keys(group_by, PEAK_GROUP_COLUMNS, PEAK_GROUP_KEYS, "peak memory")


def check_tenant_group_by(group_by: Sequence[str]) -> tuple[str, ...]:
    return _check_keys(group_by, TENANT_GROUP_COLUMNS, TENANT_GROUP_KEYS, "tenant tokens")


def check_engine_group_by(group_by: Sequence[str]) -> tuple[str, ...]:
    return _check_keys(group_by, ENGINE_GROUP_COLUMNS, ENGINE_GROUP_KEYS, "engine time")


class GroupedReads:
    """The reads both backends answer with one grouped sum over a table's totals: each
    backend supplies :meth:`_grouped_sums` (its SQL dialect), these say which table,
    keys and totals, and type the rows."""

    def _grouped_sums(
        self,
        what: str,
        table: str,
        keys: Sequence[str],
        columns: dict[str, str],
        totals: Sequence[str],
        start: datetime,
        end: datetime,
        node: str | None,
    ) -> Sequence[Mapping[str, object]]:
        raise NotImplementedError

    def usage(
        self, start: datetime, end: datetime, group_by: Sequence[str], *, node: str | None = None
    ) -> list[UsageGroup]:
        raise NotImplementedError

    def peak_memory(
        self, start: datetime, end: datetime, group_by: Sequence[str], *, node: str | None = None
    ) -> list[PeakMemoryGroup]:
        raise NotImplementedError

    def usage_and_peaks(
        self, start: datetime, end: datetime, group_by: Sequence[str], *, node: str | None = None
    ) -> tuple[list[UsageGroup], list[PeakMemoryGroup]]:
        """Both reads, one after the other (a store that can do better overrides it)."""
        check_group_by(group_by)
        check_peak_group_by(group_by)
        return (
            self.usage(start, end, group_by, node=node),
            self.peak_memory(start, end, group_by, node=node),
        )

    def tokens(
        self, start: datetime, end: datetime, group_by: Sequence[str], *, node: str | None = None
    ) -> list[TokenGroup]:
        rows = self._grouped_sums(
            "tokens query", TOKENS.store, check_token_group_by(group_by), TOKEN_GROUP_COLUMNS,
            TOKENS.names(Role.TOTAL), start, end, node,
        )  # fmt: skip
        return [TokenGroup.from_row(r) for r in rows]

    def tenant_tokens(
        self, start: datetime, end: datetime, group_by: Sequence[str], *, node: str | None = None
    ) -> list[TenantTokenGroup]:
        rows = self._grouped_sums(
            "tenant tokens query", TENANT_TOKENS.store, check_tenant_group_by(group_by),
            TENANT_GROUP_COLUMNS, TENANT_TOKENS.names(Role.TOTAL), start, end, node,
        )  # fmt: skip
        return [TenantTokenGroup.from_row(r) for r in rows]

    def engine_time(
        self, start: datetime, end: datetime, group_by: Sequence[str], *, node: str | None = None
    ) -> list[EngineTimeGroup]:
        rows = self._grouped_sums(
            "engine time query", ENGINE_TIME.store, check_engine_group_by(group_by),
            ENGINE_GROUP_COLUMNS, ENGINE_TIME.names(Role.TOTAL), start, end, node,
        )  # fmt: skip
        return [EngineTimeGroup.from_row(r) for r in rows]

    # -- the tenant split (gpuledger.chargeback.report.tenant_split) ------------------------

    def _tenant_hour_rows(self, start: datetime, end: datetime) -> Sequence[Mapping[str, object]]:
        raise NotImplementedError

    def _tenant_weighted_rows(
        self, start: datetime, end: datetime, coefficients: str, cached_weight: float
    ) -> Sequence[Mapping[str, object]]:
        raise NotImplementedError

    def tenant_hour_sums(self, start: datetime, end: datetime) -> list[TenantHourSum]:
        """Per (namespace, service, hour): Σ of the tenant rows, each row's cached prompt
        tokens counted at most up to its prompt tokens."""
        return [TenantHourSum.from_row(r) for r in self._tenant_hour_rows(start, end)]

    def tenant_weighted_sums(
        self,
        start: datetime,
        end: datetime,
        coefficients: Sequence[SplitCoefficient],
        cached_weight: float,
    ) -> list[TenantWeightedGroup]:
        """Per (namespace, service, tenant, GPU model): Σ over the service-hours in
        ``coefficients`` of the tenant's weighted tokens × the hour's coefficients, in SQL,
        so a month of a thousand tenants never crosses into Python row by row. A tenant's
        weight in an hour: prompt − cached + ``cached_weight`` × cached + the hour's
        generation weight × generated (its rows of the hour summed first)."""
        if not coefficients:
            return []
        payload = json.dumps([c.as_json() for c in coefficients], separators=(",", ":"))
        rows = self._tenant_weighted_rows(start, end, payload, float(cached_weight))
        return [TenantWeightedGroup.from_row(r) for r in rows]


def pivot_probe_latency(rows: Sequence[Mapping[str, object]]) -> list[ProbeLatencyGroup]:
    """``(namespace, service, metric, value, n)`` rows → one group per service with a value
    per metric (absent metrics None), ordered by namespace, service."""
    out: dict[tuple[str, str], dict[str, object]] = {}
    for r in rows:
        key = (str(r["namespace"]), str(r["service"]))
        row = out.setdefault(
            key,
            {"namespace": key[0], "service": key[1], **dict.fromkeys(PROBE_LATENCY_METRICS)},
        )
        row[str(r["metric"])] = r["value"]
    return [ProbeLatencyGroup.from_row(out[k]) for k in sorted(out)]


def sqlite_path(url: str) -> str:
    """The file path in a ``sqlite:///`` URL, SQLAlchemy style: ``sqlite:///ledger.db`` is
    relative to the working directory, ``sqlite:////var/lib/x.db`` is absolute,
    ``sqlite:///:memory:`` is an in-memory database (tests)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ValueError(f"not a sqlite:/// URL: {safe_url(url)!r}")
    path = unquote(url[len(prefix) :].split("?", 1)[0])
    if not path:
        raise ValueError("sqlite:/// URL without a path; use sqlite:///:memory: for memory")
    return path
