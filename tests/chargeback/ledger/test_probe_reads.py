"""The month report's probe reads (``probes`` and ``probe_latency``) on both backends,
against the same figures computed here in Python from the records written.

The PostgreSQL reads were rewritten for a 10,000-GPU month (issue 16,
bench/bench_report.py): these records are random (seeded), with ties, NULL metrics,
failures, several services, models and nodes, and records outside the month, so that a
read that picks the wrong rank, counts a NULL, drops a tie or leaks across the month's
bounds or another node gives a different figure than the nearest-rank definition below.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from psycopg import sql

from gpuledger.chargeback.ledger.model import ProbeLatencyGroup, ProbeVerdictGroup
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.chargeback.ledger.tables import ProbeRecord

START = datetime(2026, 10, 1, tzinfo=UTC)
END = datetime(2026, 11, 1, tzinfo=UTC)
LO, HI = START.timestamp(), END.timestamp()
SERVICES = (("chat", "llm-a"), ("chat", "llm-b"), ("search", "llm-a"), ("code", "tiny"))
MODELS = ("m-8b", "m-70b")
NODES = ("node-a", "node-b", "node-c")


def _records(seed: int, n: int) -> list[ProbeRecord]:
    rng = random.Random(seed)
    out: list[ProbeRecord] = []
    for i in range(n):
        ns, svc = SERVICES[0 if i % 7 == 0 else rng.randrange(len(SERVICES))]
        if svc == "tiny" and rng.random() < 0.8:
            ns, svc = SERVICES[1]  # one small group: a quantile over a handful of values
        where = rng.random()
        if where < 0.05:  # just outside the month on either side
            started = LO - rng.uniform(0.001, 7200) if where < 0.025 else HI + rng.uniform(0, 60)
        else:
            started = rng.uniform(LO, HI - 0.001)
        ok = rng.random() > 0.1
        # few distinct values: many ties, the case where a rank off by one shows
        ttft = round(rng.uniform(0.01, 0.2), 2) if ok and rng.random() > 0.05 else None
        tpot = rng.choice((0.01, 0.02, 0.02, 0.03, 0.05)) if ok and rng.random() > 0.1 else None
        e2e = rng.lognormvariate(0.0, 1.0) if ok and rng.random() > 0.03 else None
        verdict = (None, True, False)
        out.append(
            ProbeRecord(
                started_unix=started, node=rng.choice(NODES),
                endpoint=f"http://10.0.0.{i % 5}:8000", namespace=ns, service=svc,
                model_name=rng.choice(MODELS), ok=ok, reason=None if ok else "timeout",
                ttft_s=ttft, tpot_s=tpot, e2e_s=e2e,
                tokens_counted=rng.choice(verdict), ttft_histogram_moved=rng.choice(verdict),
                ttft_agrees=rng.choice(verdict),
            )
        )  # fmt: skip
    return out


def nearest_rank(values: list[float], quantile: float) -> float | None:
    """The smallest value whose cumulative share (values ≤ it / all) reaches
    ``quantile`` (to 1e-9, the stores' tolerance for a float quantile)."""
    if not values:
        return None
    ordered = sorted(values)
    n = len(ordered)
    for i, v in enumerate(ordered):
        if i + 1 < n and ordered[i + 1] == v:
            continue  # a tie's cumulative share counts every copy
        if (i + 1) / n >= quantile - 1e-9:
            return v
    return ordered[-1]


def expected_latency(
    records: list[ProbeRecord], quantile: float, node: str | None = None
) -> list[ProbeLatencyGroup]:
    groups: dict[tuple[str, str], list[ProbeRecord]] = defaultdict(list)
    for r in records:
        if r.ok and LO <= r.started_unix < HI and (node is None or r.node == node):
            groups[(r.namespace, r.service)].append(r)
    out = []
    for (ns, svc), rs in sorted(groups.items()):
        q = {
            m: nearest_rank([v for r in rs if (v := getattr(r, m)) is not None], quantile)
            for m in ("ttft_s", "tpot_s", "e2e_s")
        }
        out.append(ProbeLatencyGroup(namespace=ns, service=svc, **q))
    return out


def expected_verdicts(
    records: list[ProbeRecord], node: str | None = None
) -> list[ProbeVerdictGroup]:
    counts: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for r in records:
        if not (LO <= r.started_unix < HI and (node is None or r.node == node)):
            continue
        c = counts[(r.namespace, r.service, r.model_name)]
        verdicts = (r.tokens_counted, r.ttft_histogram_moved, r.ttft_agrees)
        c[0] += 1
        c[1] += r.ok
        c[2] += any(v is False for v in verdicts)
        c[3] += not any(v is False for v in verdicts) and any(v is True for v in verdicts)
    return [
        ProbeVerdictGroup(namespace=ns, service=svc, model_name=m, probes=float(c[0]),
                          successes=float(c[1]), disagree=float(c[2]), agree=float(c[3]))
        for (ns, svc, m), c in sorted(counts.items())
    ]  # fmt: skip


@pytest.mark.parametrize("seed", [1, 2])
def test_probe_reads_match_a_python_computation(
    ledger_store: AuditableLedgerStore, seed: int
) -> None:
    records = _records(seed, 600)
    ledger_store.upsert_probes(records)
    for quantile in (0.99, 0.95, 0.5, 0.0, 1.0, 0.999):
        got = ledger_store.probe_latency(START, END, quantile)
        assert got == expected_latency(records, quantile), quantile
    assert ledger_store.probes(START, END) == expected_verdicts(records)
    for node in NODES:
        assert ledger_store.probe_latency(START, END, 0.9, node=node) == expected_latency(
            records, 0.9, node
        )
        assert ledger_store.probes(START, END, node=node) == expected_verdicts(records, node)


def test_nearest_rank_is_the_textbook_one() -> None:
    # the reference itself: rank ceil(q * n) of the sorted values
    values = [5.0, 1.0, 3.0, 3.0, 2.0, 4.0, 3.0, 9.0, 7.0, 6.0]
    for q in (0.05, 0.1, 0.25, 0.3, 0.5, 0.51, 0.9, 0.99, 1.0):
        assert nearest_rank(values, q) == sorted(values)[max(1, math.ceil(q * 10)) - 1]
    assert nearest_rank([], 0.5) is None


def test_a_month_without_probes_reads_empty(ledger_store: AuditableLedgerStore) -> None:
    ledger_store.upsert_probes([r for r in _records(3, 50) if r.started_unix >= HI])
    assert ledger_store.probe_latency(START, END, 0.99) == []
    assert ledger_store.probes(START, END) == []


def test_postgres_latency_equals_percentile_disc_on_edge_values(postgres_db_url: str) -> None:
    # The PostgreSQL read narrows each quantile to a log-scale bucket: values no bucket
    # formula handles (0, negatives, infinities, NaN, subnormals), one bucket holding
    # every value, and quantiles at the ends must still give percentile_disc's value.
    import psycopg

    from gpuledger.chargeback.ledger.store.postgres import PostgresLedgerStore

    rng = random.Random(7)
    inf, nan = float("inf"), float("nan")
    specials = [0.0, -0.5, -inf, inf, nan, 5e-324, 1e-300, 1e300, 1.0, 1.0]
    series = {
        "edges": lambda i: specials[i % len(specials)] if i % 3 else rng.uniform(-1, 2),
        "one-value": lambda i: 0.25,
        "dense": lambda i: 1.0 + i * 1e-9,  # all inside one 0.1 % bucket
        "wide": lambda i: rng.lognormvariate(0, 6),
    }
    records = [
        ProbeRecord(started_unix=LO + i * 3600.0 + k, node="n", endpoint=f"e{k}",
                    namespace="ns", service=name, model_name="m", ok=True,
                    ttft_s=make(i), tpot_s=make(i + 1), e2e_s=None if i % 2 else make(i + 2))
        for k, (name, make) in enumerate(series.items()) for i in range(300)
    ]  # fmt: skip
    store = PostgresLedgerStore(postgres_db_url)
    try:
        store.migrate()
        store.upsert_probes(records)
        with psycopg.connect(postgres_db_url) as conn:
            for quantile in (0.0, 0.01, 0.5, 0.9, 0.99, 1.0):
                f = max(0.0, quantile - 1e-9)
                rows = conn.execute(
                    "SELECT service, percentile_disc(%s) WITHIN GROUP (ORDER BY ttft_s),"
                    " percentile_disc(%s) WITHIN GROUP (ORDER BY tpot_s),"
                    " percentile_disc(%s) WITHIN GROUP (ORDER BY e2e_s)"
                    ' FROM probe_results GROUP BY service ORDER BY service COLLATE "C"',
                    (f, f, f),
                ).fetchall()
                got = store.probe_latency(START, END, quantile)
                # repr: exact, and NaN equals NaN
                assert [(g.service, *map(repr, (g.ttft_s, g.tpot_s, g.e2e_s))) for g in got] == [
                    (r[0], *map(repr, r[1:])) for r in rows
                ], quantile
    finally:
        store.close()


@pytest.mark.parametrize("quantile", [0.99, 0.02])
def test_postgres_latency_is_exact_when_the_sample_misleads(
    postgres_db_url: str, quantile: float
) -> None:
    # PostgreSQL narrows each quantile by a cut placed from a sample (the first minutes of
    # each day). Here those minutes hold only outliers, so the cut lands on the wrong side
    # of the quantile: the read must notice and still return percentile_disc's value.
    import psycopg

    from gpuledger.chargeback.ledger.store import postgres_probes
    from gpuledger.chargeback.ledger.store.postgres import PostgresLedgerStore

    rng = random.Random(11)
    outlier = 50.0 if quantile > 0.5 else 1e-6
    records = []
    for day in range(31):
        for i in range(300):
            in_sample = i < 2  # at the start of the day: inside the sample window
            started = LO + day * 86400.0 + (i * 7.0 if in_sample else 3600.0 + i * 200.0)
            v = outlier if in_sample else rng.uniform(0.1, 0.2)
            records.append(
                ProbeRecord(started_unix=started, node="n", endpoint="e", namespace="ns",
                            service="svc", model_name="m", ok=True, ttft_s=v, tpot_s=v,
                            e2e_s=v)
            )  # fmt: skip
    store = PostgresLedgerStore(postgres_db_url)
    try:
        store.migrate()
        store.upsert_probes(records)
        trace: list[tuple[str, object, list[object]]] = []
        (got,) = postgres_probes.latency(store._connection, START, END, quantile, None, trace)
        assert "probe latency (percentile_disc, missed groups)" in [t[0] for t in trace]
        with psycopg.connect(postgres_db_url) as conn:
            (want,) = conn.execute(
                "SELECT percentile_disc(%s) WITHIN GROUP (ORDER BY ttft_s) FROM probe_results",
                (quantile - 1e-9,),
            ).fetchone() or (None,)
        assert want != outlier
        assert (got.ttft_s, got.tpot_s, got.e2e_s) == (want, want, want)
        assert store.probe_latency(START, END, quantile) == [got]
    finally:
        store.close()


def test_postgres_coverage_read_hashes_its_groups(postgres_db_url: str) -> None:
    # At 10,000 GPUs the planner took (node, gpu_uuid) for 744,000 groups where there are
    # 10,000 and sorted the month's 7.4 M coverage rows to disk (16 s of a 30 s budget,
    # bench/bench_report.py --explain); the read now runs with enable_sort off, and the
    # plan it gets that way aggregates by hashing. The figures must not change.
    from gpuledger.chargeback.ledger.store.postgres import PostgresLedgerStore
    from gpuledger.chargeback.ledger.tables import CoverageRow

    hour0 = int(LO)
    rows = [
        CoverageRow(hour0 + 3600 * h, f"node-{g // 4}", f"GPU-{g}", "H100", 3600.0 - g)
        for h in range(48) for g in range(12) if (h + g) % 7
    ]  # fmt: skip
    store = PostgresLedgerStore(postgres_db_url)
    try:
        store.migrate()
        store.upsert([], rows)
        seen: list[tuple[str, dict[str, object]]] = []
        inner = store._query

        def recording(what: str, query: Any, params: Sequence[object], **kw: Any) -> Any:
            seen.append((what, kw))
            return inner(what, query, params, **kw)

        store._query = recording  # type: ignore[method-assign]
        got = store.coverage(START, END)
        assert seen == [("coverage query", {"hash_aggregate": True})]
        want: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
        for r in rows:
            want[(r.node, r.gpu_uuid)][0] += r.observed_seconds
            want[(r.node, r.gpu_uuid)][1] += 1
        assert [(c.node, c.gpu_uuid, c.observed_seconds, c.hours) for c in got] == [
            (n, g, s, h) for (n, g), (s, h) in sorted(want.items())
        ]
        plan = inner(
            "plan",
            sql.SQL("EXPLAIN {}").format(sql.SQL(
                "SELECT node, gpu_uuid, sum(observed_seconds) FROM ledger_coverage"
                " GROUP BY node, gpu_uuid ORDER BY node, gpu_uuid")),
            [],
            hash_aggregate=True,
        )  # fmt: skip
        text = "\n".join(str(next(iter(r.values()))) for r in plan)
        assert "HashAggregate" in text
        assert "GroupAggregate" not in text
    finally:
        store.close()
