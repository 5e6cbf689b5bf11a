"""The ledger's tables, each declared once: its row type, names, key, and per column its
role and SQL type. The spool, both stores and the schema tests derive from these.

A ledger row is a bucket's **running total** for one hour: writers always send the whole
total (an upsert), never an increment, so replaying a row after a crash or a flush retry
cannot count a GPU-second twice. Stores additionally keep each total's maximum (totals
only grow within an hour), so an older replay can never lower a bucket either.

A column's role (:class:`~gpuledger.chargeback.ledger.columns.Role`: key, label, total,
peak, verdict, value; each explained in :mod:`gpuledger.chargeback.ledger.columns`) says
what a store does when a row with the same key arrives again.

The node-local spool is different on purpose: it holds the accumulator's latest running
totals, so there every non-key column takes the incoming value.

Adding a column: add the field here (role, type, default for existing rows; ``since``:
the version whose migration adds it to an existing table) and one migration per backend
that adds it; ``tests/chargeback/ledger/test_tables.py`` fails until
the migrated schema and this declaration agree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from operator import attrgetter
from typing import Any, Generic, TypeVar

from gpuledger.chargeback.ledger.columns import (
    BIGINT,
    BOOL,
    COLUMN_META,
    HOUR,
    INT,
    REAL,
    TEXT,
    Column,
    key,
    label,
    peak,
    total,
    value,
    verdict,
)
from gpuledger.chargeback.ledger.columns import BoundColumn as BoundColumn
from gpuledger.chargeback.ledger.columns import Role as Role
from gpuledger.chargeback.ledger.columns import merge_peak as merge_peak
from gpuledger.cluster import DEFAULT_CLUSTER

# -- the rows -----------------------------------------------------------------------------


def _cluster() -> Any:
    """Every row's ``cluster`` (migration 12): a key column, so two clusters' nodes of the
    same name never share a bucket. Declared last with a default so that rows built
    before clusters existed (and every positional constructor) keep working; the agent's
    accumulators always pass their configured cluster. Rows already in a ledger get the
    cluster the migration is given (``migrate(default_cluster=…)``).

    A row's ``key`` property stays its bucket's key *within* its cluster (what an agent's
    accumulators key their buckets by: one agent writes one cluster); the table's key
    (:attr:`Table.key`, the stores' conflict target) adds ``cluster``."""
    return field(default=DEFAULT_CLUSTER, metadata=key(TEXT, since=12, default="'default'"))


@dataclass(frozen=True, slots=True)
class UsageRow:
    """Running totals of one bucket: (hour, node, physical GPU, namespace, service)."""

    hour_start: int = field(metadata=key(HOUR))  # unix seconds, a multiple of 3600
    node: str = field(metadata=key(TEXT))
    gpu_uuid: str = field(metadata=key(TEXT))
    namespace: str = field(metadata=key(TEXT))
    service: str = field(metadata=key(TEXT))
    gpu_model: str = field(metadata=label(TEXT, default="''"))
    mig_profile: str = field(metadata=label(TEXT, default="''"))  # "" for a whole GPU
    allocated_gpu_seconds: float = field(metadata=total())
    busy_gpu_seconds: float = field(metadata=total())
    energy_joules: float = field(metadata=total())
    peak_memory_bytes: float | None = field(default=None, metadata=peak(since=9))
    """The most GPU memory the owner held on this GPU (its MIG instance) in the hour, as
    sampled; None: not measured (``__idle__``, or no source reported memory). The
    attribution rule per sharing case: ``docs/attribution.md``."""

    cluster: str = _cluster()

    @property
    def key(self) -> tuple[int, str, str, str, str]:
        return (self.hour_start, self.node, self.gpu_uuid, self.namespace, self.service)


@dataclass(frozen=True, slots=True)
class CoverageRow:
    """Seconds a physical GPU was observed in an hour: the invariant's right-hand side
    (Σ allocated over owners incl. idle = Σ observed, since a GPU's capacity is 1)."""

    hour_start: int = field(metadata=key(HOUR))
    node: str = field(metadata=key(TEXT))
    gpu_uuid: str = field(metadata=key(TEXT))
    gpu_model: str = field(metadata=label(TEXT, default="''"))
    observed_seconds: float = field(metadata=total())

    cluster: str = _cluster()

    @property
    def key(self) -> tuple[int, str, str]:
        return (self.hour_start, self.node, self.gpu_uuid)


@dataclass(frozen=True, slots=True)
class TokenRow:
    """Running totals of tokens one service's engines processed in an hour, per model.

    ``prompt_tokens``/``generation_tokens`` are what the engine counted (probe traffic
    included); ``probe_*`` is the part the agent's own probes caused, so billable =
    engine − probe."""

    hour_start: int = field(metadata=key(HOUR))
    node: str = field(metadata=key(TEXT))
    namespace: str = field(metadata=key(TEXT))
    service: str = field(metadata=key(TEXT))
    model_name: str = field(metadata=key(TEXT))
    prompt_tokens: float = field(metadata=total())
    generation_tokens: float = field(metadata=total())
    probe_prompt_tokens: float = field(metadata=total())
    probe_generation_tokens: float = field(metadata=total())

    cluster: str = _cluster()

    @property
    def key(self) -> tuple[int, str, str, str, str]:
        return (self.hour_start, self.node, self.namespace, self.service, self.model_name)


@dataclass(frozen=True, slots=True)
class TenantTokenRow:
    """Running totals of one tenant's traffic to one service's model in an hour, as a
    gateway (or ``gpuledger meter``) counted it in front of the engine.

    ``tenant`` is the gateway's caller (team, application or API-key alias, as the
    operator's ``tenant_labels`` chose); ``__untenanted__`` is traffic without one and
    ``__other__`` the overflow of the per-service tenant cap. These are facts only: the
    report divides GPU-seconds by them (weighted), the ledger never does."""

    hour_start: int = field(metadata=key(HOUR))
    node: str = field(metadata=key(TEXT))
    namespace: str = field(metadata=key(TEXT))
    service: str = field(metadata=key(TEXT))
    model_name: str = field(metadata=key(TEXT))
    tenant: str = field(metadata=key(TEXT))
    requests: float = field(metadata=total())
    prompt_tokens: float = field(metadata=total())
    cached_prompt_tokens: float = field(metadata=total())
    generation_tokens: float = field(metadata=total())

    cluster: str = _cluster()

    @property
    def key(self) -> tuple[int, str, str, str, str, str]:
        return (self.hour_start, self.node, self.namespace, self.service, self.model_name,
                self.tenant)  # fmt: skip


@dataclass(frozen=True, slots=True)
class EngineTimeRow:
    """Running totals of the engine's own time accounting for one service's model in an
    hour, from vLLM's histograms and counters (summed over its endpoints and engines).

    ``prefill_seconds``/``decode_seconds`` are the ``_sum`` deltas of
    ``vllm:request_prefill_time_seconds``/``request_decode_time_seconds`` and
    ``*_requests`` their ``_count`` deltas; ``prefix_cache_*`` are prompt tokens looked up
    in / found in the prefix cache. They include the agent's own probe requests. Facts
    only: the report turns them into per-token weights (prompt, cached prompt,
    generation) for that hour; the ledger never does."""

    hour_start: int = field(metadata=key(HOUR))
    node: str = field(metadata=key(TEXT))
    namespace: str = field(metadata=key(TEXT))
    service: str = field(metadata=key(TEXT))
    model_name: str = field(metadata=key(TEXT))
    prefill_seconds: float = field(metadata=total())
    decode_seconds: float = field(metadata=total())
    prefill_requests: float = field(metadata=total())
    decode_requests: float = field(metadata=total())
    prefix_cache_queries: float = field(metadata=total())
    prefix_cache_hits: float = field(metadata=total())

    cluster: str = _cluster()

    @property
    def key(self) -> tuple[int, str, str, str, str]:
        return (self.hour_start, self.node, self.namespace, self.service, self.model_name)


@dataclass(frozen=True, slots=True)
class CostCenterRow:
    """The cost center the agent saw for one owner it attributed GPU-seconds to in an
    hour: the first of ``report.cost_centers.label_keys`` on the pod's labels, then its
    annotations, then its namespace's labels (``source`` says which; ``docs/cost-centers.md``).

    A fact, not a total: a later write of the same hour replaces it (a label changed
    within the hour: the last one seen wins). The report reads, per (namespace, service),
    the value of the latest hour in the month (:meth:`LedgerStore.cost_centers`)."""

    hour_start: int = field(metadata=key(HOUR))
    node: str = field(metadata=key(TEXT))
    namespace: str = field(metadata=key(TEXT))
    service: str = field(metadata=key(TEXT))
    cost_center: str = field(metadata=label(TEXT))
    source: str = field(metadata=label(TEXT))  # pod_label, pod_annotation, namespace_label
    cluster: str = _cluster()

    @property
    def key(self) -> tuple[int, str, str, str]:
        return (self.hour_start, self.node, self.namespace, self.service)


_MEASURED = label(REAL, nullable=True)
_COUNTED = label(INT, nullable=True)


@dataclass(frozen=True, slots=True)
class ProbeRecord:
    """One probe and, once known, its validation verdict. Written when the probe ends and
    again when the verdict arrives."""

    started_unix: float = field(metadata=key(REAL))
    node: str = field(metadata=key(TEXT))
    endpoint: str = field(metadata=key(TEXT))
    namespace: str = field(metadata=label(TEXT))
    service: str = field(metadata=label(TEXT))
    model_name: str = field(metadata=label(TEXT))
    ok: bool = field(metadata=label(BOOL))
    reason: str | None = field(default=None, metadata=label(TEXT, nullable=True))
    ttft_s: float | None = field(default=None, metadata=_MEASURED)
    tpot_s: float | None = field(default=None, metadata=_MEASURED)
    e2e_s: float | None = field(default=None, metadata=_MEASURED)
    output_tokens_per_s: float | None = field(default=None, metadata=_MEASURED)
    prompt_tokens: int | None = field(default=None, metadata=_COUNTED)
    completion_tokens: int | None = field(default=None, metadata=_COUNTED)
    tokens_counted: bool | None = field(default=None, metadata=verdict())
    ttft_histogram_moved: bool | None = field(default=None, metadata=verdict())
    ttft_agrees: bool | None = field(default=None, metadata=verdict())

    cluster: str = _cluster()

    @property
    def key(self) -> tuple[str, str, float]:
        return (self.node, self.endpoint, self.started_unix)


@dataclass(frozen=True, slots=True)
class StorageSample:
    """A table's (or, with empty schema/table, a database's) size at one instant."""

    ts_unix: float = field(metadata=key(REAL, store_name="ts"))
    node: str = field(metadata=key(TEXT))
    database: str = field(metadata=key(TEXT))
    schema: str = field(metadata=key(TEXT))
    table: str = field(metadata=key(TEXT, store_name="table_name", spool_name="tbl"))
    bytes: int = field(metadata=value(BIGINT))

    cluster: str = _cluster()

    @property
    def key(self) -> tuple[str, str, str, str, float]:
        return (self.node, self.database, self.schema, self.table, self.ts_unix)


# -- the tables ---------------------------------------------------------------------------

R = TypeVar("R")

Backend = str
"""``"sqlite"`` or ``"postgres"``."""


@dataclass(frozen=True, slots=True)
class Index:
    name: str
    columns: tuple[str, ...]
    """Attribute names."""
    include: tuple[str, ...] = ()
    """PostgreSQL ``INCLUDE`` columns (a covering index)."""
    backends: tuple[Backend, ...] = ("sqlite", "postgres")


class Table(Generic[R]):
    """One ledger table: its row type and everything the spool and stores derive from it.

    Column order (in every value tuple and statement) is the key, in key order, then the
    row's other fields in declaration order; in DDL, columns added by a later migration
    (``since``) follow the stamp, where ``ALTER TABLE … ADD COLUMN`` puts them."""

    def __init__(
        self,
        row: type[R],
        *,
        store: str,
        spool: str,
        key: Sequence[str],
        stamped: bool = True,
        insert_only: bool = False,
        sqlite_primary_key: Sequence[str] | None = None,
        indexes: Sequence[Index] = (),
        monthly: bool = False,
        time: str = "hour_start",
    ) -> None:
        self.row = row
        self.store = store
        """The table's name in both stores."""
        self.spool = spool
        """The table's name in the node-local spool."""
        self.stamped = stamped
        """Stores add an ``updated_at`` column, set on every write."""
        self.insert_only = insert_only
        self.indexes = tuple(indexes)
        self.monthly = monthly
        """PostgreSQL keeps it as one partition per UTC month of ``hour_start`` (migration
        7): a month's report reads one partition, and retention drops whole months."""
        declared: dict[str, Column] = {}
        for f in fields(row):  # type: ignore[arg-type]
            column = f.metadata.get(COLUMN_META)
            if not isinstance(column, Column):
                raise TypeError(f"{row.__name__}.{f.name} has no column declaration")
            declared[f.name] = column
        if [declared[a].role for a in key] != [Role.KEY] * len(key) or len(key) != sum(
            c.role is Role.KEY for c in declared.values()
        ):
            raise TypeError(f"{row.__name__}: key {tuple(key)} != its KEY columns")
        order = [*key, *(a for a in declared if a not in key)]
        self.columns = tuple(
            BoundColumn(
                attr=a,
                store=declared[a].store_name or a,
                spool=declared[a].spool_name or a,
                role=declared[a].role,
                type=declared[a].type,
                nullable=declared[a].nullable,
                default=declared[a].default,
                since=declared[a].since,
            )
            for a in order
        )
        for c in self.columns:
            if c.since is not None and not c.nullable and c.default is None:
                raise TypeError(f"{row.__name__}.{c.attr}: an added column needs NULL or a default")
        self.by_attr = {c.attr: c for c in self.columns}
        self.time = self.by_attr[time]
        """The column that dates a row (an hour, or unix seconds): retention goes by it."""
        self.key = tuple(self.by_attr[a] for a in key)
        self.primary_key = {
            "sqlite": tuple(self.by_attr[a] for a in (sqlite_primary_key or key)),
            "postgres": self.key,
        }
        """Physical primary-key order per backend; the conflict target is always ``key``."""
        self._get = attrgetter(*order)
        self._floats = tuple(i for i, c in enumerate(self.columns) if c.type.python is float)
        field_order = [f.name for f in fields(row)]  # type: ignore[arg-type]
        self._to_field_order = tuple(order.index(name) for name in field_order)
        self._convert: tuple[Callable[[Any], Any], ...] = tuple(
            self.columns[i].type.python for i in self._to_field_order
        )

    def names(self, role: Role | None = None, *, spool: bool = False) -> tuple[str, ...]:
        """Column names (store names, or the spool's), all or those of one role."""
        return tuple(
            c.spool if spool else c.store for c in self.columns if role is None or c.role is role
        )

    def created(self) -> tuple[BoundColumn, ...]:
        """The columns the table was created with (DDL order: before the stamp)."""
        return tuple(c for c in self.columns if c.since is None)

    def added(self) -> tuple[BoundColumn, ...]:
        """The columns added since, in version order (DDL order: after the stamp)."""
        return tuple(sorted((c for c in self.columns if c.since is not None),
                            key=lambda c: c.since or 0))  # fmt: skip

    def values(self, row: R) -> tuple[Any, ...]:
        """``row``'s values in column order (floats as float, whatever was passed)."""
        got: tuple[Any, ...] = self._get(row)
        if not self._floats:
            return got
        out = list(got)
        for i in self._floats:
            if out[i] is not None:
                out[i] = float(out[i])
        return tuple(out)

    def from_values(self, values: Sequence[Any]) -> R:
        """The row whose :meth:`values` these are (as read back from the spool)."""
        args = [
            None if values[i] is None else convert(values[i])
            for i, convert in zip(self._to_field_order, self._convert, strict=True)
        ]
        return self.row(*args)

    def key_values(self, row: R) -> tuple[Any, ...]:
        return tuple(getattr(row, c.attr) for c in self.key)

    def merge(self, rows: Sequence[R]) -> list[R]:
        """Collapse rows with the same key within one batch, exactly as two sequential
        upserts would: totals and peaks keep the larger value (a peak's NULL never wins),
        labels the last row's, verdicts the last non-NULL. A database statement cannot
        touch one row twice (PostgreSQL refuses it), so batches go through this first."""
        merged: dict[tuple[Any, ...], R] = {}
        for row in rows:
            k = self.key_values(row)
            prev = merged.get(k)
            if prev is None:
                merged[k] = row
                continue
            changes: dict[str, Any] = {}
            for c in self.columns:
                old, new = getattr(prev, c.attr), getattr(row, c.attr)
                if c.role is Role.TOTAL:
                    changes[c.attr] = max(old, new)
                elif c.role is Role.PEAK:
                    changes[c.attr] = merge_peak(old, new)
                elif c.role is Role.VERDICT and new is None:
                    changes[c.attr] = old
            merged[k] = _replace(row, changes)
        return list(merged.values())

    def __repr__(self) -> str:
        return f"Table({self.row.__name__}, store={self.store!r}, spool={self.spool!r})"


def _replace(row: R, changes: Mapping[str, Any]) -> R:
    return replace(row, **changes) if changes else row  # type: ignore[type-var]


USAGE: Table[UsageRow] = Table(
    UsageRow,
    store="ledger_usage",
    spool="spool_usage",
    key=("hour_start", "cluster", "node", "gpu_uuid", "namespace", "service"),
    indexes=(Index("ledger_usage_node_hour_idx", ("node", "hour_start")),),
    monthly=True,
)
COVERAGE: Table[CoverageRow] = Table(
    CoverageRow,
    store="ledger_coverage",
    spool="spool_coverage",
    key=("hour_start", "cluster", "node", "gpu_uuid"),
    monthly=True,
)
TOKENS: Table[TokenRow] = Table(
    TokenRow,
    store="ledger_tokens",
    spool="spool_tokens",
    key=("hour_start", "cluster", "node", "namespace", "service", "model_name"),
    monthly=True,
)
PROBES: Table[ProbeRecord] = Table(
    ProbeRecord,
    store="probe_results",
    spool="spool_probes",
    key=("cluster", "node", "endpoint", "started_unix"),
    time="started_unix",
    # SQLite keys the table time-first (migration 4): every report reads a month of probes
    # by started_unix, and through a (node, endpoint, …) key each index hit cost a second
    # lookup. PostgreSQL gets the same from a covering index instead.
    sqlite_primary_key=("started_unix", "cluster", "node", "endpoint"),
    indexes=(
        Index(
            "probe_results_report_idx",
            ("started_unix",),
            include=(
                *("namespace", "service", "ok", "ttft_s", "tpot_s", "e2e_s"),
                *("tokens_counted", "ttft_histogram_moved", "ttft_agrees"),
            ),
            backends=("postgres",),
        ),
    ),
)
STORAGE: Table[StorageSample] = Table(
    StorageSample,
    store="storage_samples",
    spool="spool_storage_samples",
    key=("cluster", "node", "database", "schema", "table", "ts_unix"),
    time="ts_unix",
    stamped=False,
    insert_only=True,
)

TENANT_TOKENS: Table[TenantTokenRow] = Table(
    TenantTokenRow,
    store="ledger_tenant_tokens",
    spool="spool_tenant_tokens",
    key=("hour_start", "cluster", "node", "namespace", "service", "model_name", "tenant"),
    monthly=True,
)

ENGINE_TIME: Table[EngineTimeRow] = Table(
    EngineTimeRow,
    store="ledger_engine_time",
    spool="spool_engine_time",
    key=("hour_start", "cluster", "node", "namespace", "service", "model_name"),
    monthly=True,
)

COST_CENTERS: Table[CostCenterRow] = Table(
    CostCenterRow,
    store="ledger_cost_centers",
    spool="spool_cost_centers",
    key=("hour_start", "cluster", "node", "namespace", "service"),
    monthly=True,
)
"""Migration 10 (issue 18): one row per (hour, node, owner) the agent attributed time to
and found a cost-center label for; monthly partitions like every hour-keyed table, so
retention drops its months with the usage they describe."""

TABLES: tuple[Table[Any], ...] = (
    USAGE, COVERAGE, TOKENS, PROBES, STORAGE, TENANT_TOKENS, ENGINE_TIME, COST_CENTERS,
)  # fmt: skip
"""Every ledger table, in the order migrations created them."""


class Rollup:
    """A PostgreSQL summary of a ledger table: ``measures`` summed per (time bucket,
    ``dims``), plus how many source rows each sum covers (``row_count``).

    Kept exact by the database itself (statement triggers on the source, migration 8), not
    by the writers: an agent of an older release writing into an upgraded database keeps
    it true too. A read that needs only a rollup's columns reads it instead of every row
    (at 10,000 GPUs: ~91 k rows a month instead of 37 M). SQLite has none: it holds one
    node's ledger, which is small enough to read whole. See docs/ledger.md.

    The time bucket is the rollup's ``hour_start``: the source's hour (or the start of its
    month, ``grain="month"``), or a unix-seconds time column's hour. ``measures`` are SQL
    expressions over one source row, columns written ``{column}``; by default the source's
    totals (never its peaks: a maximum cannot be kept by adding and subtracting). A
    rollup of a monthly table is partitioned by month like it."""

    def __init__(
        self,
        source: Table[Any],
        *,
        store: str,
        dims: Sequence[str],
        grain: str = "hour",
        measures: Sequence[tuple[str, str]] | None = None,
    ) -> None:
        if grain not in ("hour", "month"):
            raise TypeError(f"{store}: grain is 'hour' or 'month', not {grain!r}")
        if any(source.by_attr[a].role not in (Role.KEY, Role.LABEL) for a in dims):
            raise TypeError(f"{store}: a rollup's dims are its source's keys and labels")
        self.source = source
        self.store = store
        self.grain = grain
        """``month``: ``hour_start`` holds the month's start, each row a month's sum."""
        self.time = source.time
        """The source column the bucket is computed from."""
        self.time_name = "hour_start"
        self.dims = tuple(source.by_attr[a] for a in dims)
        totals = [(c.store, "{" + c.store + "}") for c in source.columns if c.role is Role.TOTAL]
        self.measures = tuple(measures if measures is not None else totals)
        self.count = "row_count"
        """How many source rows each rollup row sums: 0 once every row it summed has moved
        to another key (a label rewritten) or was deleted, so a read skips it as the source
        would."""
        self.partitioned = source.monthly

    def key_names(self) -> tuple[str, ...]:
        return (self.time_name, *(c.store for c in self.dims))

    def measure_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.measures)

    def names(self) -> tuple[str, ...]:
        return (*self.key_names(), *self.measure_names(), self.count)

    def __repr__(self) -> str:
        return f"Rollup({self.store!r} of {self.source.store!r})"


USAGE_ROLLUP = Rollup(
    USAGE, store="ledger_usage_rollup", dims=("cluster", "namespace", "service", "gpu_model")
)
"""``/api/v1/usage`` and the report group by these (never by node or GPU): the month's read
at 10,000 GPUs sums 744 × ~120 rows instead of 37.2 M."""
USAGE_MONTH_ROLLUP = Rollup(
    USAGE,
    store="ledger_usage_month_rollup",
    dims=("cluster", "node", "gpu_uuid", "namespace", "service", "gpu_model"),
    grain="month",
)
"""Whole months by GPU and service (the report's coverage weights, a month's usage by
node): at 10,000 GPUs ~50 k rows a month instead of 37.2 M."""

_DISAGREE = " OR ".join(
    "COALESCE(NOT {" + c + "}, false)" for c in PROBES.names(Role.VERDICT)
)  # fmt: skip
_DECIDED = " OR ".join("COALESCE({" + c + "}, false)" for c in PROBES.names(Role.VERDICT))
PROBE_ROLLUP = Rollup(
    PROBES,
    store="probe_verdict_rollup",
    dims=("cluster", "namespace", "service", "model_name"),
    measures=(
        ("successes", "CASE WHEN {ok} THEN 1 ELSE 0 END"),
        ("disagree", f"CASE WHEN {_DISAGREE} THEN 1 ELSE 0 END"),
        ("agree", f"CASE WHEN NOT ({_DISAGREE}) AND ({_DECIDED}) THEN 1 ELSE 0 END"),
    ),
)
"""The report's probe verdicts per hour and served model (probes = ``row_count``): a
month's verdicts at 10,000 GPUs read ~100 k rows instead of 26.5 M probe records. The
measures are the verdict query's own definitions (``postgres_probes.verdicts``)."""

ROLLUPS: tuple[Rollup, ...] = (USAGE_ROLLUP, USAGE_MONTH_ROLLUP, PROBE_ROLLUP)
"""Every rollup (PostgreSQL only), in the order migrations created them; a read takes the
first that can answer it."""

UPDATED_AT = "updated_at"
"""The stores' write stamp on every ``stamped`` table (not part of a row)."""
