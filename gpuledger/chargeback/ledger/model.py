"""The ledger's rows: what is billed from (owners and claims are attribution's, in
:mod:`gpuledger.chargeback.attribution.claims`).

A ledger row is a bucket's **running total** for one hour: writers always send the whole
total (an upsert), never an increment, so replaying a row after a crash or a flush retry
cannot count a GPU-second twice. Stores additionally keep each column's maximum
(totals only grow within an hour), so an older replay can never lower a bucket either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

HOUR = 3600


def hour_start(unix_s: float) -> int:
    """The UTC hour containing ``unix_s``, as unix seconds."""
    return int(unix_s // HOUR) * HOUR


def hour_datetime(hour: int) -> datetime:
    return datetime.fromtimestamp(hour, UTC)


@dataclass(frozen=True, slots=True)
class UsageRow:
    """Running totals of one bucket: (hour, node, physical GPU, namespace, service)."""

    hour_start: int  # unix seconds, a multiple of 3600
    node: str
    gpu_uuid: str
    namespace: str
    service: str
    gpu_model: str
    mig_profile: str  # "" for a whole GPU; profiles joined with "+" when several
    allocated_gpu_seconds: float
    busy_gpu_seconds: float
    energy_joules: float

    @property
    def key(self) -> tuple[int, str, str, str, str]:
        return (self.hour_start, self.node, self.gpu_uuid, self.namespace, self.service)


@dataclass(frozen=True, slots=True)
class CoverageRow:
    """Seconds a physical GPU was observed in an hour: the invariant's right-hand side
    (Σ allocated over owners incl. idle = Σ observed, since a GPU's capacity is 1)."""

    hour_start: int
    node: str
    gpu_uuid: str
    gpu_model: str
    observed_seconds: float

    @property
    def key(self) -> tuple[int, str, str]:
        return (self.hour_start, self.node, self.gpu_uuid)


@dataclass(frozen=True, slots=True)
class TokenRow:
    """Running totals of tokens one service's engines processed in an hour, per model.

    ``prompt_tokens``/``generation_tokens`` are what the engine counted (probe traffic
    included); ``probe_*`` is the part the agent's own probes caused, so billable =
    engine − probe. Keyed ``(hour, node, namespace, service, model_name)``."""

    hour_start: int
    node: str
    namespace: str
    service: str
    model_name: str
    prompt_tokens: float
    generation_tokens: float
    probe_prompt_tokens: float
    probe_generation_tokens: float

    @property
    def key(self) -> tuple[int, str, str, str, str]:
        return (self.hour_start, self.node, self.namespace, self.service, self.model_name)


@dataclass(frozen=True, slots=True)
class ProbeRecord:
    """One probe and, once known, its validation verdict. Keyed ``(node, endpoint,
    started_unix)``; written when the probe ends and again when the verdict arrives."""

    started_unix: float
    node: str
    endpoint: str
    namespace: str
    service: str
    model_name: str
    ok: bool
    reason: str | None = None
    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None
    output_tokens_per_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_counted: bool | None = None
    ttft_histogram_moved: bool | None = None
    ttft_agrees: bool | None = None

    @property
    def key(self) -> tuple[str, str, float]:
        return (self.node, self.endpoint, self.started_unix)


@dataclass(frozen=True, slots=True)
class StorageSample:
    """A table's (or, with empty schema/table, a database's) size at one instant."""

    ts_unix: float
    node: str
    database: str
    schema: str
    table: str
    bytes: int

    @property
    def key(self) -> tuple[str, str, str, str, float]:
        return (self.node, self.database, self.schema, self.table, self.ts_unix)


USAGE_GROUP_KEYS = ("node", "gpu_uuid", "gpu_model", "namespace", "service", "hour")
TOKEN_GROUP_KEYS = ("node", "namespace", "service", "model_name", "hour")
"""What ``/api/v1/usage`` may group by."""


class StoreError(Exception):
    """The ledger store failed (unreachable, refused the write); the spool keeps the rows."""


class LedgerStore(Protocol):
    """A durable ledger: SQLite (default) or PostgreSQL, same schema, same semantics."""

    def migrate(self) -> None:
        """Create or upgrade the schema (versioned migrations, idempotent)."""
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
    ) -> list[dict[str, object]]:
        """Sum of allocated/busy GPU-seconds and energy over ``[start, end)`` hours,
        grouped by ``group_by`` (a subset of USAGE_GROUP_KEYS), aggregated in SQL."""
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
    ) -> list[dict[str, object]]:
        """Sums of the token columns over ``[start, end)`` grouped by TOKEN_GROUP_KEYS."""
        ...

    def probes(
        self, start: datetime, end: datetime, *, node: str | None = None
    ) -> list[dict[str, object]]:
        """Per (namespace, service, model_name): probes, successes, and verdict counts
        (agree / disagree / undecided) over ``[start, end)``."""
        ...

    def insert_storage_samples(self, rows: Sequence[StorageSample]) -> None:
        """Size samples (insert-only; a replayed sample is ignored)."""
        ...

    def close(self) -> None: ...
