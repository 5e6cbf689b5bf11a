"""The month report's probe reads on PostgreSQL: verdict counts per (namespace, service,
model) and the nearest-rank latency quantile per (namespace, service).

Why a module of its own: at a 10,000-GPU fleet a month holds ~26 M probe records, and the
obvious quantile query (``percentile_disc(q) WITHIN GROUP (ORDER BY …)``, one per metric)
sorts every successful probe three times, in one process: ordered-set aggregates have no
parallel (partial) form, and each sort of a service's ~2 M values spills at the default
``work_mem`` (bench/bench_report.py, docs/performance.md "Monthly report"). A quantile
needs one value per group, not an order of all of them, so the read here is exact in
two parallel passes and never sorts more than one narrow value range:

1. a grouped count of the values per (namespace, service, metric, bucket): buckets are
   a log scale of ``1/BUCKETS_PER_E`` of an e-fold (0.1 % wide), so a service's values
   fall into at most a few thousand of them; a plain ``count(*)`` aggregates in parallel
   workers;
2. from those counts, here in Python, the rank ``k = max(1, ceil(f · n))`` of the
   quantile (PostgreSQL's own ``percentile_disc`` rule, ``orderedsetaggs.c``) and the
   bucket holding it, and how many values lie below that bucket; then one pass that
   keeps only the values of each group's chosen bucket and takes the one at the
   remaining rank (``row_number()`` over that bucket's values alone).

The result is exactly ``percentile_disc``'s (the same value of the same rank: a bucket
only narrows where to look), for any data: ties, zeros, negatives, infinities and NaN
get buckets of their own at the ends of the scale, in PostgreSQL's float order (NaN
last). Both passes run in one REPEATABLE READ transaction, so a flush between them cannot
move a rank. tests/chargeback/ledger/test_probe_reads.py compares both reads with a
Python computation on both backends.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from gpuledger.chargeback.ledger.model import ProbeLatencyGroup, ProbeVerdictGroup
from gpuledger.chargeback.ledger.store.common import (
    PROBE_LATENCY_METRICS,
    QUANTILE_EPS,
    unix_seconds,
)
from gpuledger.chargeback.ledger.tables import PROBES, Role

I = sql.Identifier  # noqa: E741 - as in postgres_sql

Query = Callable[[str, sql.Composed, Sequence[object]], list[dict[str, object]]]
Connect = Callable[[str], AbstractContextManager[psycopg.Connection[Any]]]

BUCKETS_PER_E = 1024
"""Log-scale buckets per e-fold of a value: each 0.1 % wide, so the bucket that holds a
quantile holds few values unless many are equal (then those are the answer anyway)."""
LOWEST, HIGHEST = -(2**31), 2**31 - 1
"""The buckets of values ≤ 0 (and −∞) and of +∞ and NaN, below and above every other."""


def _where(
    start: datetime, end: datetime, node: str | None, *, ok_only: bool
) -> tuple[sql.Composed, list[object]]:
    where = sql.SQL("p.{s} >= %s AND p.{s} < %s").format(s=I("started_unix"))
    if ok_only:
        where = sql.SQL("p.{} AND {}").format(I("ok"), where)
    params: list[object] = [unix_seconds(start, "start"), unix_seconds(end, "end")]
    if node is not None:
        where = sql.SQL("{} AND p.{} = %s").format(where, I("node"))
        params.append(node)
    return where, params


def verdicts(
    query: Query, start: datetime, end: datetime, node: str | None
) -> list[ProbeVerdictGroup]:
    """Probes, successes, and the records whose verdicts disagree (any False) or agree
    (none False, one True) per (namespace, service, model), one grouped pass."""
    names = PROBES.names(Role.VERDICT)
    disagree = sql.SQL(" OR ").join(
        sql.SQL("COALESCE(NOT p.{}, false)").format(I(c)) for c in names
    )
    decided = sql.SQL(" OR ").join(sql.SQL("COALESCE(p.{}, false)").format(I(c)) for c in names)
    where, params = _where(start, end, node, ok_only=False)
    stmt = sql.SQL(
        "SELECT p.{ns} AS {ns}, p.{svc} AS {svc}, p.{m} AS {m}, "
        "COUNT(*)::double precision AS {probes}, "
        "COUNT(*) FILTER (WHERE p.{ok})::double precision AS {successes}, "
        "COUNT(*) FILTER (WHERE {dis})::double precision AS {disagree}, "
        "COUNT(*) FILTER (WHERE NOT ({dis}) AND ({dec}))::double precision AS {agree} "
        "FROM {t} AS p WHERE {w} GROUP BY p.{ns}, p.{svc}, p.{m} "
        'ORDER BY p.{ns} COLLATE "C", p.{svc} COLLATE "C", p.{m} COLLATE "C"'
    ).format(
        ns=I("namespace"), svc=I("service"), m=I("model_name"), probes=I("probes"),
        ok=I("ok"), successes=I("successes"), dis=disagree, disagree=I("disagree"),
        dec=decided, agree=I("agree"), t=I(PROBES.store), w=where,
    )  # fmt: skip
    return [ProbeVerdictGroup.from_row(r) for r in query("probes query", stmt, params)]


def _metrics() -> sql.Composed:
    """Each successful probe's three measurements as rows (metric index, value)."""
    values = sql.SQL(", ").join(
        sql.SQL("({}, p.{})").format(sql.Literal(i), I(m))
        for i, m in enumerate(PROBE_LATENCY_METRICS)
    )
    return sql.SQL("CROSS JOIN LATERAL (VALUES {}) AS x(metric, v)").format(values)


BUCKET = sql.SQL(
    "CASE WHEN x.v IS NULL THEN NULL"
    " WHEN x.v > 0 AND x.v < 'Infinity'::float8 THEN floor(ln(x.v) * {k})::integer"
    " WHEN x.v <= 0 THEN {lo} ELSE {hi} END"
).format(k=sql.Literal(BUCKETS_PER_E), lo=sql.Literal(LOWEST), hi=sql.Literal(HIGHEST))


def _lower_edge(bucket: int) -> float:
    """A value below every value of ``bucket`` (a pre-filter only; the bucket itself is
    matched exactly in SQL), -inf for the lowest buckets."""
    if bucket in (LOWEST, HIGHEST):
        return -math.inf if bucket == LOWEST else 0.0
    return math.exp((bucket - 1) / BUCKETS_PER_E)


def latency(
    connect: Connect,
    start: datetime,
    end: datetime,
    quantile: float,
    node: str | None,
    trace: list[tuple[str, sql.Composed, list[object]]] | None = None,
) -> list[ProbeLatencyGroup]:
    """The nearest-rank ``quantile`` of each metric per (namespace, service) of the
    successful probes in ``[start, end)`` (NULL measurements skipped; None where a
    service has none), as ``percentile_disc(quantile - QUANTILE_EPS)``. ``trace``
    collects each statement run with its parameters (the bench explains them)."""
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must be within [0, 1], not {quantile!r}")
    fraction = max(0.0, quantile - QUANTILE_EPS)
    where, params = _where(start, end, node, ok_only=True)
    what = "probe latency query"
    with connect(what) as conn, conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        stmt = sql.SQL(
            "SELECT p.{ns}, p.{svc}, x.metric, {b} AS b, count(*) AS n FROM {t} AS p {x}"
            " WHERE {w} GROUP BY 1, 2, 3, 4"
        ).format(
            ns=I("namespace"),
            svc=I("service"),
            b=BUCKET,
            t=I(PROBES.store),
            x=_metrics(),
            w=where,
        )
        if trace is not None:
            trace.append(("probe latency counts", stmt, params))
        counts = conn.execute(stmt, params).fetchall()
        groups: dict[tuple[str, str], list[dict[int, int]]] = {}
        for ns, svc, metric, bucket, n in counts:
            per = groups.setdefault((ns, svc), [{} for _ in PROBE_LATENCY_METRICS])
            if bucket is not None:
                per[metric][bucket] = n
        picks = _picks(groups, fraction)
        found: dict[tuple[str, str, int], float] = {}
        if picks:
            lower = [math.inf] * len(PROBE_LATENCY_METRICS)
            for _, _, metric, bucket, _ in picks:
                lower[metric] = min(lower[metric], _lower_edge(bucket))
            stmt = sql.SQL(
                "SELECT s.ns, s.svc, s.metric, s.v FROM ("
                " SELECT k.ns, k.svc, k.metric, x.v, k.j, row_number() OVER"
                " (PARTITION BY k.ns, k.svc, k.metric ORDER BY x.v) AS rn"
                " FROM {t} AS p {x}"
                " JOIN unnest(%s::text[], %s::text[], %s::integer[], %s::integer[],"
                " %s::bigint[]) AS k(ns, svc, metric, b, j)"
                " ON k.ns = p.{ns} AND k.svc = p.{svc} AND k.metric = x.metric"
                " AND k.b = {b}"
                " WHERE {w} AND x.v >= (%s::float8[])[x.metric + 1]"
                ") AS s WHERE s.rn = s.j"
            ).format(
                t=I(PROBES.store),
                x=_metrics(),
                ns=I("namespace"),
                svc=I("service"),
                b=BUCKET,
                w=where,
            )
            pick_params = [*(list(col) for col in zip(*picks, strict=True)), *params, lower]
            if trace is not None:
                trace.append(("probe latency picks", stmt, pick_params))
            rows = conn.execute(stmt, pick_params).fetchall()
            found = {(ns, svc, metric): v for ns, svc, metric, v in rows}
    out = []
    for ns, svc in sorted(groups):
        values = {m: found.get((ns, svc, i)) for i, m in enumerate(PROBE_LATENCY_METRICS)}
        out.append(ProbeLatencyGroup.from_row({"namespace": ns, "service": svc, **values}))
    return out


def _picks(
    groups: dict[tuple[str, str], list[dict[int, int]]], fraction: float
) -> list[tuple[str, str, int, int, int]]:
    """(namespace, service, metric, bucket, rank within the bucket) of each quantile:
    the value of rank ``max(1, ceil(fraction · n))`` among a group's ``n`` values."""
    picks = []
    for (ns, svc), per in groups.items():
        for metric, buckets in enumerate(per):
            n = sum(buckets.values())
            if n == 0:
                continue
            rank = max(1, math.ceil(fraction * n))
            below = 0
            for bucket in sorted(buckets):
                if below + buckets[bucket] >= rank:
                    picks.append((ns, svc, metric, bucket, rank - below))
                    break
                below += buckets[bucket]
    return picks
