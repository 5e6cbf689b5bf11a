"""The cost-center facts in the ledger (issue 18, migration 10): the one read both
stores share (PostgreSQL's composition of it and its migration: ``postgres_cost_centers``).

The agent writes, per hour and owner it attributed GPU-seconds to, the cost center it
saw on the workload or its namespace (``ledger_cost_centers``). The report asks one
question of them: for each (namespace, service), which cost center was it *last* seen
with in the period? The latest hour wins: a team that relabels its workload mid-month is
billed the whole month to the new cost center, which is what finance expects of a bill
(one line, one payer) and what the label says today. Two nodes that saw different values
in the same hour (a rollout between two labels) are settled by the alphabetically first,
so the answer never depends on which agent flushed last. A static rule in
``report.cost_centers`` still overrides or fills in (``costcenters/resolve.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gpuledger.chargeback.ledger.sqlite_sql import q
from gpuledger.chargeback.ledger.tables import COST_CENTERS

NS, SVC, CC, HOUR = "namespace", "service", "cost_center", "hour_start"

LATEST_TEMPLATE = (
    "SELECT {c}.{ns}, {c}.{svc}, min({c}.{cc}) AS {cc} FROM {t} AS {c} JOIN ("
    " SELECT {ns}, {svc}, max({hour}) AS {h} FROM {t} WHERE {where} GROUP BY {ns}, {svc}"
    ") AS {latest} ON {c}.{ns} = {latest}.{ns} AND {c}.{svc} = {latest}.{svc}"
    " AND {c}.{hour} = {latest}.{h} WHERE {where} GROUP BY {c}.{ns}, {c}.{svc}"
)
"""Per (namespace, service): the cost center of its latest hour in the range (ties: the
alphabetically first). Both stores run this text, each with its own quoting; ``where``
(the range, and the node) appears twice, so its parameters are passed twice (the outer
one keeps another node's row of that hour out, and lets PostgreSQL prune partitions).
Two aggregations and a join, not ``row_number() OVER (PARTITION BY … ORDER BY …)``:
that sorts every row of the month, 4x slower on PostgreSQL and 2x on SQLite at 372,000
rows (``bench/bench_cost_centers.py``, docs/performance.md)."""


def sqlite_latest(node: bool) -> str:
    """The read on SQLite: parameters start, end (unix seconds)[, node], twice."""
    where = f"{q(HOUR)} >= ? AND {q(HOUR)} < ?" + (f" AND {q('node')} = ?" if node else "")
    return LATEST_TEMPLATE.format(
        ns=q(NS), svc=q(SVC), cc=q(CC), hour=q(HOUR), h=q("h"), c=q("c"),
        t=q(COST_CENTERS.store), where=where, latest=q("latest"),
    )  # fmt: skip


def as_mapping(rows: Iterable[Mapping[str, object]]) -> dict[tuple[str, str], str]:
    """The read's rows → ``{(namespace, service): cost center}`` (``CostCenterMap``'s
    ``recorded``)."""
    return {(str(r[NS]), str(r[SVC])): str(r[CC]) for r in rows}
