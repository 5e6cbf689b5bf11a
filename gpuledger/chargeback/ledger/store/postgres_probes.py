"""The month report's probe reads on PostgreSQL: verdict counts per (namespace, service,
model) and the nearest-rank latency quantile per (namespace, service).

Why a module of its own: at a 10,000-GPU fleet a month holds ~26 M probe records, and the
obvious quantile query (``percentile_disc(q) WITHIN GROUP (ORDER BY …)``, one per metric)
sorts every successful probe of the month three times, in one process: ordered-set
aggregates have no parallel (partial) form, and each service's ~2 M values spill to disk
at the default ``work_mem`` (bench/bench_report.py; docs/performance.md, "Monthly
report"). A p99 needs the top 1 % of the values in order, not all of them, so the read:

1. takes a small sample (the first 5 minutes of each UTC day of the range, through the
   ``started_unix`` index) and places a cut per (namespace, service) and metric a margin
   beyond the quantile (``percentile_disc`` of the sample at ``q − 1.5 %``);
2. reads the range once, in parallel: per group and metric the count of values and the
   values beyond the cut (``array_agg … FILTER``, which has a parallel form); the rank
   ``k = max(1, ceil(f · n))`` is PostgreSQL's own ``percentile_disc`` rule
   (``percentile_disc_final`` in src/backend/utils/adt/orderedsetaggs.c), and when it
   falls among the kept values the answer is the kept value at the rank that remains,
   found by sorting only those;
3. when the sample misled (the rank falls on the other side of the cut), reads those
   groups again with ``percentile_disc``: slower, never different.

The result is exactly ``percentile_disc``'s value, for any data (ties, zeros, negatives,
infinities and NaN compare as PostgreSQL orders floats). Low quantiles keep the bottom
tail instead; a quantile whose tail is wider than ``MAX_TAIL`` (a median) is read with
``percentile_disc`` directly. The passes share one REPEATABLE READ transaction, so a flush
between them cannot move a rank. tests/chargeback/ledger/test_probe_reads.py compares the
reads with a Python computation on both backends and with ``percentile_disc`` on edge
values and on a misleading sample.
"""

from __future__ import annotations

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
    aware_utc,
    unix_seconds,
)
from gpuledger.chargeback.ledger.store.postgres_rollup import hour_aligned
from gpuledger.chargeback.ledger.tables import PROBE_ROLLUP, PROBES, Role

I = sql.Identifier  # noqa: E741 - as in postgres_sql

Query = Callable[[str, sql.Composed, Sequence[object]], list[dict[str, object]]]
Connect = Callable[[str], AbstractContextManager[psycopg.Connection[Any]]]


def _where(start: datetime, end: datetime, node: str | None) -> tuple[sql.Composed, list[object]]:
    where = sql.SQL("p.{s} >= %s AND p.{s} < %s").format(s=I("started_unix"))
    params: list[object] = [unix_seconds(start, "start"), unix_seconds(end, "end")]
    if node is not None:
        where = sql.SQL("{} AND p.{} = %s").format(where, I("node"))
        params.append(node)
    return where, params


def verdicts(
    query: Query, start: datetime, end: datetime, node: str | None
) -> list[ProbeVerdictGroup]:
    """Probes, successes, and the records whose verdicts disagree (any False) or agree
    (none False, one True) per (namespace, service, model), one grouped pass — over the
    hourly verdict rollup (migration 8, the same definitions kept by triggers) when the
    range is whole hours of every node, else over the records."""
    if node is None and hour_aligned(start) and hour_aligned(end):
        return _verdicts_from_rollup(query, start, end)
    names = PROBES.names(Role.VERDICT)
    disagree = sql.SQL(" OR ").join(
        sql.SQL("COALESCE(NOT p.{}, false)").format(I(c)) for c in names
    )
    decided = sql.SQL(" OR ").join(sql.SQL("COALESCE(p.{}, false)").format(I(c)) for c in names)
    where, params = _where(start, end, node)
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


def _verdicts_from_rollup(query: Query, start: datetime, end: datetime) -> list[ProbeVerdictGroup]:
    r = PROBE_ROLLUP
    h = I(r.time_name)
    sums = sql.SQL(", ").join(
        sql.SQL("SUM({c})::double precision AS {c}").format(c=I(n)) for n in r.measure_names()
    )
    stmt = sql.SQL(
        "SELECT {ns}, {svc}, {m}, SUM({n})::double precision AS {probes}, {sums} FROM {t}"
        " WHERE {h} >= %s AND {h} < %s AND {n} > 0 GROUP BY {ns}, {svc}, {m}"
        ' ORDER BY {ns} COLLATE "C", {svc} COLLATE "C", {m} COLLATE "C"'
    ).format(
        ns=I("namespace"), svc=I("service"), m=I("model_name"), n=I(r.count),
        probes=I("probes"), sums=sums, t=I(r.store), h=h,
    )  # fmt: skip
    params: list[object] = [aware_utc(start, "start"), aware_utc(end, "end")]
    return [ProbeVerdictGroup.from_row(row) for row in query("probes query", stmt, params)]


SAMPLE_EVERY_S = 86_400
SAMPLE_WINDOW_S = 300
"""The sample that places each cut: the first 5 minutes of every UTC day of the range
(0.35 % of a month), read through the ``started_unix`` index."""
TAIL_MARGIN = 0.015
"""How far beyond the quantile (as a fraction of the values) the sample's cut is set, so
that the cut falls on the right side of the quantile unless the sample misleads badly
(then the group is read again with ``percentile_disc``: slower, never wrong)."""
MAX_TAIL = 0.1
"""Quantiles whose tail (``1 − q`` or ``q``) is wider than this are read directly with
``percentile_disc``: a wide tail would carry too many values for the narrowing to pay."""


def _range_sql(node: str | None) -> sql.Composed:
    where = sql.SQL("p.{ok} AND p.{s} >= %s AND p.{s} < %s").format(ok=I("ok"), s=I("started_unix"))
    if node is not None:
        where = sql.SQL("{} AND p.{} = %s").format(where, I("node"))
    return where


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
    service has none): ``percentile_disc(quantile - QUANTILE_EPS)``'s value. ``trace``
    collects each statement run with its parameters (the bench explains them)."""
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must be within [0, 1], not {quantile!r}")
    fraction = max(0.0, quantile - QUANTILE_EPS)
    lo, hi = unix_seconds(start, "start"), unix_seconds(end, "end")
    rng: list[object] = [lo, hi, *([node] if node is not None else [])]
    top = fraction >= 0.5
    what = "probe latency query"
    with connect(what) as conn, conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")

        def run(label: str, stmt: sql.Composed, params: list[object]) -> list[tuple[Any, ...]]:
            if trace is not None:
                trace.append((label, stmt, params))
            return conn.execute(stmt, params).fetchall()

        if min(fraction, 1.0 - fraction) > MAX_TAIL:
            f3 = [fraction] * len(PROBE_LATENCY_METRICS)
            rows = run("probe latency (percentile_disc)", _direct(node, False), [*f3, *rng])
            return _groups({(ns, svc): list(v) for ns, svc, *v in rows})
        cut_at = min(1.0, fraction + TAIL_MARGIN) if not top else max(0.0, fraction - TAIL_MARGIN)
        starts = range(int(lo // SAMPLE_EVERY_S) * SAMPLE_EVERY_S, int(hi) + 1, SAMPLE_EVERY_S)
        windows = [(max(float(a), lo), min(float(a + SAMPLE_WINDOW_S), hi)) for a in starts]
        windows = [(a, b) for a, b in windows if a < b] or [(lo, hi)]
        cuts = run(
            "probe latency sample",
            _sample(node),
            [*[cut_at] * len(PROBE_LATENCY_METRICS), [a for a, _ in windows],
             [b for _, b in windows], *rng[2:]],
        )  # fmt: skip
        columns: list[list[Any]] = [list(c) for c in zip(*cuts, strict=True)] or [
            [] for _ in range(2 + len(PROBE_LATENCY_METRICS))
        ]
        rows = run(
            "probe latency tails",
            _tails(node, top),
            [fraction, *columns, *rng],
        )
        values: dict[tuple[str, str], list[float | None]] = {}
        missed: set[tuple[str, str]] = set()
        for ns, svc, *per in rows:
            got: list[float | None] = []
            for i in range(len(PROBE_LATENCY_METRICS)):
                n, hit, v = per[3 * i : 3 * i + 3]
                got.append(v)
                if n and not hit:
                    missed.add((ns, svc))
            values[(ns, svc)] = got
        if missed:  # the sample misled for these: their exact value the slow way
            ns_list, svc_list = zip(*sorted(missed), strict=True)
            again = run(
                "probe latency (percentile_disc, missed groups)",
                _direct(node, True),
                [*[fraction] * len(PROBE_LATENCY_METRICS), *rng, list(ns_list), list(svc_list)],
            )
            values.update({(ns, svc): list(v) for ns, svc, *v in again})
    return _groups(values)


def _groups(values: dict[tuple[str, str], list[Any]]) -> list[ProbeLatencyGroup]:
    return [
        ProbeLatencyGroup.from_row(
            {"namespace": ns, "service": svc, **dict(zip(PROBE_LATENCY_METRICS, v, strict=True))}
        )
        for (ns, svc), v in sorted(values.items())
    ]


def _direct(node: str | None, only_groups: bool) -> sql.Composed:
    """``percentile_disc`` of every metric per (namespace, service): one sort per metric
    and group (params: the fraction once per metric, the range, [namespaces, services])."""
    metrics = sql.SQL(", ").join(
        sql.SQL("percentile_disc(%s) WITHIN GROUP (ORDER BY p.{})").format(I(m))
        for m in PROBE_LATENCY_METRICS
    )
    where = _range_sql(node)
    if only_groups:
        where = sql.SQL(
            "{} AND (p.{}, p.{}) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
        ).format(where, I("namespace"), I("service"))
    return sql.SQL(
        "SELECT p.{ns}, p.{svc}, {metrics} FROM {t} AS p WHERE {w} GROUP BY p.{ns}, p.{svc}"
    ).format(ns=I("namespace"), svc=I("service"), metrics=metrics, t=I(PROBES.store), w=where)


def _sample(node: str | None) -> sql.Composed:
    """Per (namespace, service), each metric's ``percentile_disc`` at the cut fraction over
    the sample windows (params: the fraction per metric, window starts, ends, [node])."""
    metrics = sql.SQL(", ").join(
        sql.SQL("percentile_disc(%s) WITHIN GROUP (ORDER BY p.{})").format(I(m))
        for m in PROBE_LATENCY_METRICS
    )
    where = sql.SQL("p.{}").format(I("ok"))
    if node is not None:
        where = sql.SQL("{} AND p.{} = %s").format(where, I("node"))
    return sql.SQL(
        "SELECT p.{ns}, p.{svc}, {metrics}"
        " FROM unnest(%s::float8[], %s::float8[]) AS w(lo, hi)"
        " JOIN {t} AS p ON p.{s} >= w.lo AND p.{s} < w.hi"
        " WHERE {w} GROUP BY p.{ns}, p.{svc}"
    ).format(
        ns=I("namespace"), svc=I("service"), metrics=metrics, t=I(PROBES.store),
        s=I("started_unix"), w=where,
    )  # fmt: skip


def _tails(node: str | None, top: bool) -> sql.Composed:
    """One pass over the range: per (namespace, service) and metric, the count of values
    and the values beyond the cut (at or above it for a high quantile, at or below for a
    low one); then, per metric, whether the rank ``max(1, ceil(f · n))`` falls among
    those values (``hit``) and the value there. A group the sample missed keeps every
    value (cut −∞, or NaN: PostgreSQL's largest float). Params: fraction, namespaces,
    services, one cut array per metric, the range."""
    n_metrics = len(PROBE_LATENCY_METRICS)
    cut_cols = [I(f"c{i}") for i in range(n_metrics)]
    agg: list[sql.Composable] = []
    out: list[sql.Composable] = []
    for i, m in enumerate(PROBE_LATENCY_METRICS):
        n, a = I(f"n{i}"), I(f"a{i}")
        keep = (
            sql.SQL("p.{m} >= COALESCE(c.{c}, '-Infinity'::float8)")
            if top
            else sql.SQL("p.{m} <= COALESCE(c.{c}, 'NaN'::float8)")
        ).format(m=I(m), c=cut_cols[i])
        agg.append(
            sql.SQL("count(p.{m}) AS {n}, array_agg(p.{m}) FILTER (WHERE {keep}) AS {a}").format(
                m=I(m), n=n, a=a, keep=keep
            )
        )
        k = sql.SQL("greatest(1, ceil(q.f * {n}))::bigint").format(n=n)
        t = sql.SQL("COALESCE(cardinality({a}), 0)").format(a=a)
        hit = (sql.SQL("{k} > {n} - {t}") if top else sql.SQL("{k} <= {t}")).format(k=k, n=n, t=t)
        offset = (sql.SQL("{k} - ({n} - {t}) - 1") if top else sql.SQL("{k} - 1")).format(
            k=k, n=n, t=t
        )
        out.append(
            sql.SQL(
                "{n}, {hit}, CASE WHEN {hit} THEN (SELECT v FROM unnest({a}) AS v"
                " ORDER BY v OFFSET {offset} LIMIT 1) END"
            ).format(n=n, hit=hit, a=a, offset=offset)
        )
    return sql.SQL(
        "WITH q AS (SELECT %s::float8 AS f),"
        " cut AS (SELECT * FROM unnest(%s::text[], %s::text[], {cut_types})"
        " AS c(ns, svc, {cut_cols})),"
        " agg AS (SELECT p.{ns} AS ns, p.{svc} AS svc, {agg} FROM {t} AS p"
        " LEFT JOIN cut AS c ON c.ns = p.{ns} AND c.svc = p.{svc}"
        " WHERE {w} GROUP BY p.{ns}, p.{svc})"
        " SELECT agg.ns, agg.svc, {out} FROM agg, q"
    ).format(
        cut_types=sql.SQL(", ").join(sql.SQL("%s::float8[]") for _ in range(n_metrics)),
        cut_cols=sql.SQL(", ").join(cut_cols), ns=I("namespace"), svc=I("service"),
        agg=sql.SQL(", ").join(agg), t=I(PROBES.store), w=_range_sql(node),
        out=sql.SQL(", ").join(out),
    )  # fmt: skip
