"""Durable ledger stores: ``open_store(url)`` and what both backends share.

Two backends implement :class:`~gpuledger.chargeback.ledger.model.LedgerStore` with the same
schema and the same semantics (see ``docs/ledger.md``):

- ``sqlite:///relative/ledger.db``, ``sqlite:////absolute/ledger.db`` or
  ``sqlite:///:memory:`` → :class:`~gpuledger.chargeback.ledger.store.sqlite.SqliteLedgerStore`
  (the default; no server);
- ``postgresql://…`` / ``postgres://…`` →
  :class:`~gpuledger.chargeback.ledger.store.postgres.PostgresLedgerStore` (one database for the
  fleet; needs the ``postgres`` extra: psycopg 3 + psycopg-pool).

This module holds the names (tables, columns, keys), the group-by vocabulary, the
in-batch merge of running totals that both backends use. It does
not import psycopg, so the SQLite default works without the ``postgres`` extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import unquote

from gpuledger.chargeback.ledger.model import (
    TOKEN_GROUP_KEYS,
    USAGE_GROUP_KEYS,
    CoverageRow,
    LedgerStore,
    ProbeRecord,
    TokenRow,
    UsageRow,
)
from gpuledger.redact import safe_url

# -- names --------------------------------------------------------------------------------

USAGE_TABLE = "ledger_usage"
COVERAGE_TABLE = "ledger_coverage"
MIGRATIONS_TABLE = "schema_migrations"

USAGE_KEY = ("hour_start", "node", "gpu_uuid", "namespace", "service")
USAGE_LABELS = ("gpu_model", "mig_profile")
"""Descriptive columns: an upsert takes the incoming (``excluded``) value."""
USAGE_TOTALS = ("allocated_gpu_seconds", "busy_gpu_seconds", "energy_joules")
"""Running totals: an upsert keeps the larger of stored and incoming value."""
USAGE_COLUMNS = USAGE_KEY + USAGE_LABELS + USAGE_TOTALS

COVERAGE_KEY = ("hour_start", "node", "gpu_uuid")
COVERAGE_LABELS = ("gpu_model",)
COVERAGE_TOTALS = ("observed_seconds",)
COVERAGE_COLUMNS = COVERAGE_KEY + COVERAGE_LABELS + COVERAGE_TOTALS

UPDATED_AT = "updated_at"

GROUP_COLUMNS: dict[str, str] = {key: key for key in USAGE_GROUP_KEYS}
GROUP_COLUMNS["hour"] = "hour_start"
"""``group_by`` key → ``ledger_usage`` column (``hour`` groups per ``hour_start``)."""

TOKENS_TABLE = "ledger_tokens"
TOKENS_KEY = ("hour_start", "node", "namespace", "service", "model_name")
TOKENS_TOTALS = (
    "prompt_tokens",
    "generation_tokens",
    "probe_prompt_tokens",
    "probe_generation_tokens",
)
TOKENS_COLUMNS = TOKENS_KEY + TOKENS_TOTALS
TOKEN_GROUP_COLUMNS: dict[str, str] = {key: key for key in TOKEN_GROUP_KEYS}
TOKEN_GROUP_COLUMNS["hour"] = "hour_start"

PROBES_TABLE = "probe_results"
PROBES_KEY = ("node", "endpoint", "started_unix")
PROBES_LABELS = (
    "namespace", "service", "model_name", "ok", "reason", "ttft_s", "tpot_s", "e2e_s",
    "output_tokens_per_s", "prompt_tokens", "completion_tokens",
)  # fmt: skip
PROBES_VERDICTS = ("tokens_counted", "ttft_histogram_moved", "ttft_agrees")
"""Verdict columns: a replay without the verdict never clears one already stored."""
PROBES_COLUMNS = PROBES_KEY + PROBES_LABELS + PROBES_VERDICTS
PROBE_LATENCY_METRICS = ("ttft_s", "tpot_s", "e2e_s")
"""What ``probe_latency`` takes a quantile of."""
QUANTILE_EPS = 1e-9
"""``CUME_DIST() >= q - eps``: k/N computed in floating point may land a hair below q."""

STORAGE_TABLE = "storage_samples"
STORAGE_KEY = ("node", "database", "schema", "table_name", "ts")
STORAGE_COLUMNS = (*STORAGE_KEY, "bytes")

SCHEMA_VERSION = 4
"""The newest migration version both backends define."""

SECONDS_PER_HOUR = 3600.0


# -- the extended protocol ----------------------------------------------------------------


class AuditableLedgerStore(LedgerStore, Protocol):
    """A :class:`LedgerStore` that can also answer the coverage and invariant queries."""

    def applied_versions(self) -> list[int]:
        """Migration versions recorded in ``schema_migrations``, ascending."""
        ...

    def coverage(
        self, start: datetime, end: datetime, *, node: str | None = None
    ) -> list[dict[str, object]]:
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
    ) -> list[dict[str, object]]:
        """Per ``(namespace, service)``: the nearest-rank ``quantile`` of successful
        probes' ``ttft_s``, ``tpot_s``, ``e2e_s`` (None where no probe measured it)."""
        ...

    def invariant_violations(
        self,
        start: datetime,
        end: datetime,
        rel_tol: float = 1e-9,
        *,
        node: str | None = None,
    ) -> list[dict[str, object]]:
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


def merge_usage(rows: Sequence[UsageRow]) -> list[UsageRow]:
    """Collapse rows with the same key within one batch: per total the larger value,
    labels from the last row. A database upsert cannot touch one row twice in a statement
    (PostgreSQL refuses it), and this is exactly what two sequential upserts would do."""
    merged: dict[tuple[int, str, str, str, str], UsageRow] = {}
    for row in rows:
        prev = merged.get(row.key)
        if prev is None:
            merged[row.key] = row
        else:
            merged[row.key] = UsageRow(
                hour_start=row.hour_start,
                node=row.node,
                gpu_uuid=row.gpu_uuid,
                namespace=row.namespace,
                service=row.service,
                gpu_model=row.gpu_model,
                mig_profile=row.mig_profile,
                allocated_gpu_seconds=max(prev.allocated_gpu_seconds, row.allocated_gpu_seconds),
                busy_gpu_seconds=max(prev.busy_gpu_seconds, row.busy_gpu_seconds),
                energy_joules=max(prev.energy_joules, row.energy_joules),
            )
    return list(merged.values())


def merge_coverage(rows: Sequence[CoverageRow]) -> list[CoverageRow]:
    """As :func:`merge_usage`, for coverage rows."""
    merged: dict[tuple[int, str, str], CoverageRow] = {}
    for row in rows:
        prev = merged.get(row.key)
        if prev is None:
            merged[row.key] = row
        else:
            merged[row.key] = CoverageRow(
                hour_start=row.hour_start,
                node=row.node,
                gpu_uuid=row.gpu_uuid,
                gpu_model=row.gpu_model,
                observed_seconds=max(prev.observed_seconds, row.observed_seconds),
            )
    return list(merged.values())


def usage_values(row: UsageRow) -> tuple[int, str, str, str, str, str, str, float, float, float]:
    """A row's values in :data:`USAGE_COLUMNS` order."""
    return (
        row.hour_start,
        row.node,
        row.gpu_uuid,
        row.namespace,
        row.service,
        row.gpu_model,
        row.mig_profile,
        float(row.allocated_gpu_seconds),
        float(row.busy_gpu_seconds),
        float(row.energy_joules),
    )


def coverage_values(row: CoverageRow) -> tuple[int, str, str, str, float]:
    """A row's values in :data:`COVERAGE_COLUMNS` order."""
    return (row.hour_start, row.node, row.gpu_uuid, row.gpu_model, float(row.observed_seconds))


def check_token_group_by(group_by: Sequence[str]) -> tuple[str, ...]:
    keys = tuple(group_by)
    for key in keys:
        if key not in TOKEN_GROUP_COLUMNS:
            raise ValueError(
                f"unknown group_by key {key!r} for tokens; use any of {', '.join(TOKEN_GROUP_KEYS)}"
            )
    return keys


def merge_tokens(rows: Sequence[TokenRow]) -> list[TokenRow]:
    """One row per key, keeping each total's maximum (a batch may repeat a key)."""
    merged: dict[tuple[int, str, str, str, str], TokenRow] = {}
    for r in rows:
        prev = merged.get(r.key)
        if prev is None:
            merged[r.key] = r
            continue
        merged[r.key] = TokenRow(
            *r.key,
            max(prev.prompt_tokens, r.prompt_tokens),
            max(prev.generation_tokens, r.generation_tokens),
            max(prev.probe_prompt_tokens, r.probe_prompt_tokens),
            max(prev.probe_generation_tokens, r.probe_generation_tokens),
        )
    return list(merged.values())


def token_values(row: TokenRow) -> tuple[int, str, str, str, str, float, float, float, float]:
    return (
        row.hour_start, row.node, row.namespace, row.service, row.model_name,
        row.prompt_tokens, row.generation_tokens, row.probe_prompt_tokens,
        row.probe_generation_tokens,
    )  # fmt: skip


def probe_values(row: ProbeRecord) -> tuple[object, ...]:
    return (
        row.node, row.endpoint, row.started_unix, row.namespace, row.service,
        row.model_name, row.ok, row.reason, row.ttft_s, row.tpot_s, row.e2e_s,
        row.output_tokens_per_s, row.prompt_tokens, row.completion_tokens,
        row.tokens_counted, row.ttft_histogram_moved, row.ttft_agrees,
    )  # fmt: skip


def pivot_probe_latency(rows: Sequence[dict[str, object]]) -> list[dict[str, object]]:
    """``(namespace, service, metric, value, n)`` rows → one row per service with a column
    per metric (absent metrics None), ordered by namespace, service."""
    out: dict[tuple[str, str], dict[str, object]] = {}
    for r in rows:
        key = (str(r["namespace"]), str(r["service"]))
        row = out.setdefault(
            key,
            {"namespace": key[0], "service": key[1], **dict.fromkeys(PROBE_LATENCY_METRICS)},
        )
        row[str(r["metric"])] = float(r["value"]) if r["value"] is not None else None  # type: ignore[arg-type]
    return [out[k] for k in sorted(out)]


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
