"""The ledger store's contract: what a store is asked (:class:`LedgerStore`) and what its
reads return (typed groups). What is written -- the tables and their rows -- is declared
in :mod:`gpuledger.chargeback.ledger.tables`; owners and claims are attribution's, in
:mod:`gpuledger.chargeback.attribution.claims`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from gpuledger.chargeback.ledger.tables import (
    CostCenterRow,
    CoverageRow,
    EngineTimeRow,
    ProbeRecord,
    StorageSample,
    TenantTokenRow,
    TokenRow,
    UsageRow,
)
from gpuledger.cluster import DEFAULT_CLUSTER

HOUR = 3600


def hour_start(unix_s: float) -> int:
    """The UTC hour containing ``unix_s``, as unix seconds."""
    return int(unix_s // HOUR) * HOUR


def hour_datetime(hour: int) -> datetime:
    return datetime.fromtimestamp(hour, UTC)


# -- what store reads return ---------------------------------------------------------------
# Sums come back from SQL already aggregated (a month of a fleet is millions of rows and a
# few hundred groups); these are the groups, typed, so no caller coerces field by field.


def _float(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def _opt_float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True, slots=True)
class UsageGroup:
    """Σ of one group of usage buckets; a key not grouped by is None."""

    allocated_gpu_seconds: float
    busy_gpu_seconds: float
    energy_joules: float
    allocated_gpu_hours: float
    node: str | None = None
    gpu_uuid: str | None = None
    gpu_model: str | None = None
    namespace: str | None = None
    service: str | None = None
    hour: str | None = None  # ISO-8601 UTC, e.g. 2026-01-01T00:00:00Z
    cluster: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, object]) -> UsageGroup:
        return cls(
            allocated_gpu_seconds=_float(row["allocated_gpu_seconds"]),
            busy_gpu_seconds=_float(row["busy_gpu_seconds"]),
            energy_joules=_float(row["energy_joules"]),
            allocated_gpu_hours=_float(row["allocated_gpu_hours"]),
            **{k: _opt_str(row[k]) for k in USAGE_GROUP_KEYS if k in row},
        )

    def as_json(self, group_by: Sequence[str]) -> dict[str, object]:
        """The ``/api/v1/usage`` row: the grouped keys (in ``group_by`` order), then sums."""
        out: dict[str, object] = {k: getattr(self, k) for k in dict.fromkeys(group_by)}
        out["allocated_gpu_seconds"] = self.allocated_gpu_seconds
        out["busy_gpu_seconds"] = self.busy_gpu_seconds
        out["energy_joules"] = self.energy_joules
        out["allocated_gpu_hours"] = self.allocated_gpu_hours
        return out


@dataclass(frozen=True, slots=True)
class PeakMemoryGroup:
    """The most GPU memory one group of usage buckets held: the MAX of the buckets' peaks
    (a peak is never summed: two GPUs' peaks in one hour are two peaks, not one larger
    one). Only buckets with a measured peak count, so a group is absent when none of its
    buckets was measured (``__idle__``, hours before migration 9); a key not grouped by is
    None."""

    peak_memory_bytes: float
    buckets: int  # usage rows of the group with a measured peak
    node: str | None = None
    gpu_uuid: str | None = None
    gpu_model: str | None = None
    mig_profile: str | None = None
    namespace: str | None = None
    service: str | None = None
    hour: str | None = None  # ISO-8601 UTC
    cluster: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, object]) -> PeakMemoryGroup:
        return cls(
            peak_memory_bytes=_float(row["peak_memory_bytes"]),
            buckets=int(_float(row["buckets"])),
            **{k: _opt_str(row[k]) for k in PEAK_GROUP_KEYS if k in row},
        )


@dataclass(frozen=True, slots=True)
class TokenGroup:
    """Σ of one group of token rows; a key not grouped by is None."""

    prompt_tokens: float
    generation_tokens: float
    probe_prompt_tokens: float
    probe_generation_tokens: float
    node: str | None = None
    namespace: str | None = None
    service: str | None = None
    model_name: str | None = None
    hour: str | None = None
    cluster: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, object]) -> TokenGroup:
        return cls(
            prompt_tokens=_float(row["prompt_tokens"]),
            generation_tokens=_float(row["generation_tokens"]),
            probe_prompt_tokens=_float(row["probe_prompt_tokens"]),
            probe_generation_tokens=_float(row["probe_generation_tokens"]),
            **{k: _opt_str(row[k]) for k in TOKEN_GROUP_KEYS if k in row},
        )


@dataclass(frozen=True, slots=True)
class TenantTokenGroup:
    """Σ of one group of tenant token rows; a key not grouped by is None."""

    requests: float
    prompt_tokens: float
    cached_prompt_tokens: float
    generation_tokens: float
    node: str | None = None
    namespace: str | None = None
    service: str | None = None
    model_name: str | None = None
    tenant: str | None = None
    hour: str | None = None
    cluster: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, object]) -> TenantTokenGroup:
        return cls(
            requests=_float(row["requests"]),
            prompt_tokens=_float(row["prompt_tokens"]),
            cached_prompt_tokens=_float(row["cached_prompt_tokens"]),
            generation_tokens=_float(row["generation_tokens"]),
            **{k: _opt_str(row[k]) for k in TENANT_GROUP_KEYS if k in row},
        )

    def as_json(self, group_by: Sequence[str]) -> dict[str, object]:
        """The ``/api/v1/tenants`` row: the grouped keys (in ``group_by`` order), then sums."""
        out: dict[str, object] = {k: getattr(self, k) for k in dict.fromkeys(group_by)}
        out["requests"] = self.requests
        out["prompt_tokens"] = self.prompt_tokens
        out["cached_prompt_tokens"] = self.cached_prompt_tokens
        out["generation_tokens"] = self.generation_tokens
        return out


@dataclass(frozen=True, slots=True)
class EngineTimeGroup:
    """Σ of one group of engine-time rows; a key not grouped by is None."""

    prefill_seconds: float
    decode_seconds: float
    prefill_requests: float
    decode_requests: float
    prefix_cache_queries: float
    prefix_cache_hits: float
    node: str | None = None
    namespace: str | None = None
    service: str | None = None
    model_name: str | None = None
    hour: str | None = None
    cluster: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, object]) -> EngineTimeGroup:
        return cls(
            prefill_seconds=_float(row["prefill_seconds"]),
            decode_seconds=_float(row["decode_seconds"]),
            prefill_requests=_float(row["prefill_requests"]),
            decode_requests=_float(row["decode_requests"]),
            prefix_cache_queries=_float(row["prefix_cache_queries"]),
            prefix_cache_hits=_float(row["prefix_cache_hits"]),
            **{k: _opt_str(row[k]) for k in ENGINE_GROUP_KEYS if k in row},
        )


@dataclass(frozen=True, slots=True)
class ProbeVerdictGroup:
    """Probes of one (namespace, service, model) and how their verdicts came out."""

    namespace: str
    service: str
    model_name: str
    probes: int
    successes: int
    disagree: int  # at least one verdict says the engine's own figures disagree
    agree: int  # no disagreement and at least one verdict decided

    @classmethod
    def from_row(cls, row: Mapping[str, object]) -> ProbeVerdictGroup:
        return cls(
            str(row["namespace"]), str(row["service"]), str(row["model_name"]),
            *(int(_float(row[k])) for k in ("probes", "successes", "disagree", "agree")),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class ProbeLatencyGroup:
    """A quantile of one service's successful probes (None where none measured it)."""

    namespace: str
    service: str
    ttft_s: float | None
    tpot_s: float | None
    e2e_s: float | None

    @classmethod
    def from_row(cls, row: Mapping[str, object]) -> ProbeLatencyGroup:
        return cls(
            str(row["namespace"]), str(row["service"]),
            *(_opt_float(row.get(k)) for k in ("ttft_s", "tpot_s", "e2e_s")),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class CoverageGroup:
    """How long one GPU was observed over a range of hours."""

    node: str
    gpu_uuid: str
    gpu_model: str
    observed_seconds: float
    hours: int  # buckets present
    first_hour: str  # ISO-8601 UTC
    last_hour: str

    @classmethod
    def from_row(cls, row: Mapping[str, object]) -> CoverageGroup:
        return cls(
            str(row["node"]), str(row["gpu_uuid"]), str(row["gpu_model"] or ""),
            _float(row["observed_seconds"]), int(_float(row["hours"])),
            str(row["first_hour"] or ""), str(row["last_hour"] or ""),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class InvariantViolation:
    """An (hour, cluster, node) whose Σ allocated differs from its Σ observed seconds
    (per cluster: two clusters' nodes of one name are two nodes, and one's surplus must
    not hide the other's deficit)."""

    hour: str
    node: str
    allocated_gpu_seconds: float
    observed_seconds: float
    cluster: str = DEFAULT_CLUSTER

    @classmethod
    def from_row(cls, row: Mapping[str, object]) -> InvariantViolation:
        return cls(
            str(row["hour"]), str(row["node"]),
            _float(row["allocated_gpu_seconds"]), _float(row["observed_seconds"]),
            str(row.get("cluster", DEFAULT_CLUSTER)),
        )  # fmt: skip


USAGE_GROUP_KEYS = ("cluster", "node", "gpu_uuid", "gpu_model", "namespace", "service", "hour")
PEAK_GROUP_KEYS = (*USAGE_GROUP_KEYS, "mig_profile")
"""What ``LedgerStore.peak_memory`` may group by (the usage keys and the MIG profile)."""
TOKEN_GROUP_KEYS = ("cluster", "node", "namespace", "service", "model_name", "hour")
TENANT_GROUP_KEYS = ("cluster", "node", "namespace", "service", "model_name", "tenant", "hour")
"""What ``/api/v1/usage`` may group by."""
ENGINE_GROUP_KEYS = ("cluster", "node", "namespace", "service", "model_name", "hour")
"""What ``LedgerStore.engine_time`` may group by."""
ENGINE_TOTALS = ("prefill_seconds", "decode_seconds", "prefill_requests", "decode_requests",
                 "prefix_cache_queries", "prefix_cache_hits")  # fmt: skip


class StoreError(Exception):
    """The ledger store failed (unreachable, refused the write); the spool keeps the rows."""


class LedgerStore(Protocol):
    """A durable ledger: SQLite (default) or PostgreSQL, same schema, same semantics."""

    def migrate(self, *, default_cluster: str = DEFAULT_CLUSTER) -> None:
        """Create or upgrade the schema (versioned migrations, idempotent). Rows written
        before clusters existed get ``default_cluster`` (migration 12): the agent passes
        its configured cluster, so an upgraded single-cluster ledger keeps its name."""
        ...

    def upsert(self, usage: Sequence[UsageRow], coverage: Sequence[CoverageRow]) -> None:
        """Write running totals in one transaction; raise StoreError on failure."""
        ...

    def usage(
        self,
        start: datetime,
        end: datetime,
        group_by: Sequence[str],
        *,
        node: str | None = None,
    ) -> list[UsageGroup]:
        """Sum of allocated/busy GPU-seconds and energy over ``[start, end)`` hours,
        grouped by ``group_by`` (a subset of USAGE_GROUP_KEYS), aggregated in SQL."""
        ...

    def peak_memory(
        self,
        start: datetime,
        end: datetime,
        group_by: Sequence[str],
        *,
        node: str | None = None,
    ) -> list[PeakMemoryGroup]:
        """MAX of the usage buckets' measured peak GPU memory over ``[start, end)`` hours,
        grouped by ``group_by`` (a subset of PEAK_GROUP_KEYS), aggregated in SQL from the
        usage rows (no rollup carries a peak); e.g. ``("service", "gpu_model", "hour")``:
        each service's hourly peak per GPU model."""
        ...

    def usage_and_peaks(
        self,
        start: datetime,
        end: datetime,
        group_by: Sequence[str],
        *,
        node: str | None = None,
    ) -> tuple[list[UsageGroup], list[PeakMemoryGroup]]:
        """``usage()`` and ``peak_memory()`` of one grouping (keys valid for both), read
        the cheapest way the store can: SQLite aggregates both in one scan of the usage
        rows; PostgreSQL answers the sums from its rollups and the peaks from the rows.
        For a reader of both, like the findings engine."""
        ...

    def upsert_tokens(self, rows: Sequence[TokenRow]) -> None:
        """Token running totals, same GREATEST rule as usage."""
        ...

    def upsert_probes(self, rows: Sequence[ProbeRecord]) -> None:
        """Probe records; a verdict column once set is never cleared by a replay."""
        ...

    def tokens(
        self,
        start: datetime,
        end: datetime,
        group_by: Sequence[str],
        *,
        node: str | None = None,
    ) -> list[TokenGroup]:
        """Sums of the token columns over ``[start, end)`` grouped by TOKEN_GROUP_KEYS."""
        ...

    def probes(
        self, start: datetime, end: datetime, *, node: str | None = None
    ) -> list[ProbeVerdictGroup]:
        """Per (namespace, service, model_name): probes, successes, and verdict counts
        (agree / disagree / undecided) over ``[start, end)``."""
        ...

    def insert_storage_samples(self, rows: Sequence[StorageSample]) -> None:
        """Size samples (insert-only; a replayed sample is ignored)."""
        ...

    def upsert_tenant_tokens(self, rows: Sequence[TenantTokenRow]) -> None:
        """Per-tenant token and request running totals, same GREATEST rule as usage."""
        ...

    def tenant_tokens(
        self,
        start: datetime,
        end: datetime,
        group_by: Sequence[str],
        *,
        node: str | None = None,
    ) -> list[TenantTokenGroup]:
        """Sums of requests and token kinds over ``[start, end)`` grouped by any of
        TENANT_GROUP_KEYS, aggregated in SQL."""
        ...

    def upsert_engine_time(self, rows: Sequence[EngineTimeRow]) -> None:
        """Engine prefill/decode/prefix-cache running totals, same GREATEST rule as usage."""
        ...

    def engine_time(
        self,
        start: datetime,
        end: datetime,
        group_by: Sequence[str],
        *,
        node: str | None = None,
    ) -> list[EngineTimeGroup]:
        """Sums of the engine-time totals over ``[start, end)`` grouped by any of
        ENGINE_GROUP_KEYS, aggregated in SQL."""
        ...

    def upsert_cost_centers(self, rows: Sequence[CostCenterRow]) -> None:
        """The cost centers the agent saw per hour and owner; a replay or a later write of
        the same hour replaces the value (a label, not a total)."""
        ...

    def cost_centers(
        self, start: datetime, end: datetime, *, node: str | None = None
    ) -> dict[tuple[str, str], str]:
        """``{(namespace, service): cost center}`` over ``[start, end)``: per owner the
        value of its latest recorded hour (``store/cost_centers.py``)."""
        ...

    def close(self) -> None: ...


# -- the tenant split's reads (see gpuledger.chargeback.report.tenant_split) -----------------


@dataclass(frozen=True, slots=True)
class TenantHourSum:
    """Σ over a service-hour's tenant rows (cached prompt tokens at most the prompt tokens
    of their row): what the split needs to know the hour's total weight."""

    namespace: str
    service: str
    hour_start: int  # unix seconds
    requests: float
    prompt_tokens: float
    cached_prompt_tokens: float
    generation_tokens: float

    @classmethod
    def from_row(cls, row: Mapping[str, object]) -> TenantHourSum:
        return cls(
            str(row["namespace"]), str(row["service"]), int(_float(row["hour_start"])),
            *(_float(row[k]) for k in ("requests", "prompt_tokens", "cached_prompt_tokens",
                                       "generation_tokens")),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class SplitCoefficient:
    """What one weighted token of a service-hour earns on one GPU model: the hour's
    allocated, busy and energy shares per unit of weight (the split's part ÷ the hour's
    total weight). ``gpu_model`` None: the hour held no GPU, only its weights count.
    ``first`` marks one row per service-hour, so per-hour figures are counted once."""

    namespace: str
    service: str
    hour_start: int
    gpu_model: str | None
    generation_weight: float
    measured: bool
    first: bool
    allocated_per_weight: float
    busy_per_weight: float
    energy_per_weight: float

    def as_json(self) -> dict[str, object]:
        return {
            "n": self.namespace, "s": self.service, "h": self.hour_start, "m": self.gpu_model,
            "wg": self.generation_weight, "measured": self.measured, "first": self.first,
            "ka": self.allocated_per_weight, "kb": self.busy_per_weight,
            "ke": self.energy_per_weight,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class TenantWeightedGroup:
    """One tenant's Σ over the hours of a service with coefficients, on one GPU model
    (None: hours without a GPU or without coefficients; token totals sit on the rows of
    each hour's ``first`` coefficient or, without one, on the None row)."""

    namespace: str
    service: str
    tenant: str
    gpu_model: str | None
    allocated_seconds: float
    busy_seconds: float
    energy_joules: float
    input_seconds: float  # the part of allocated_seconds due to prompt tokens
    weighted_tokens: float
    fixed_ratio_weight: float  # of weighted_tokens, in hours weighted with the fixed ratio
    requests: float  # the tenant's totals over every hour of the period, weighted or not
    prompt_tokens: float
    cached_prompt_tokens: float
    generation_tokens: float

    @classmethod
    def from_row(cls, row: Mapping[str, object]) -> TenantWeightedGroup:
        return cls(
            namespace=str(row["namespace"]),
            service=str(row["service"]),
            tenant=str(row["tenant"]),
            gpu_model=_opt_str(row["gpu_model"]),
            allocated_seconds=_float(row["allocated_seconds"]),
            busy_seconds=_float(row["busy_seconds"]),
            energy_joules=_float(row["energy_joules"]),
            input_seconds=_float(row["input_seconds"]),
            weighted_tokens=_float(row["weighted_tokens"]),
            fixed_ratio_weight=_float(row["fixed_ratio_weight"]),
            requests=_float(row["requests"]),
            prompt_tokens=_float(row["prompt_tokens"]),
            cached_prompt_tokens=_float(row["cached_prompt_tokens"]),
            generation_tokens=_float(row["generation_tokens"]),
        )
