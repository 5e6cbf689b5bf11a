"""PostgreSQL's side of the cost-center facts (issue 18): migration 10 and the read of
:mod:`~gpuledger.chargeback.ledger.store.cost_centers`, composed with quoted identifiers."""

from __future__ import annotations

from psycopg import sql

from gpuledger.chargeback.ledger.store.cost_centers import CC, HOUR, LATEST_TEMPLATE, NS, SVC
from gpuledger.chargeback.ledger.tables import COST_CENTERS

I = sql.Identifier  # noqa: E741 - psycopg's identifier, as in postgres_sql


def postgres_latest(where: sql.Composable) -> sql.Composed:
    """The read on PostgreSQL, ``where`` selecting the range (and node); its parameters
    are passed twice."""
    return sql.SQL(LATEST_TEMPLATE).format(
        ns=I(NS), svc=I(SVC), cc=I(CC), hour=I(HOUR), h=I("h"), c=I("c"),
        t=I(COST_CENTERS.store), where=where, latest=I("latest"),
    )  # fmt: skip


def postgres_migration_10() -> list[sql.Composed]:
    """``ledger_cost_centers``: (hour, node, namespace, service) → cost center and the
    source it was read from; partitioned by month like every hour-keyed table (migration
    7), its months created on write by ``gpuledger_month_partition``."""
    key = ("hour_start", "node", "namespace", "service")
    return [
        sql.SQL(
            "CREATE TABLE {t} ("
            " {hour} timestamptz NOT NULL, {node} text NOT NULL,"
            " {ns} text NOT NULL, {svc} text NOT NULL, {cc} text NOT NULL,"
            " {source} text NOT NULL, {updated_at} timestamptz NOT NULL DEFAULT now(),"
            " CONSTRAINT {pkey} PRIMARY KEY ({key})) PARTITION BY RANGE ({hour})"
        ).format(
            t=I("ledger_cost_centers"), hour=I("hour_start"), node=I("node"), ns=I("namespace"),
            svc=I("service"), cc=I("cost_center"), source=I("source"), updated_at=I("updated_at"),
            pkey=I("ledger_cost_centers_pkey"),
            key=sql.SQL(", ").join(I(k) for k in key),
        )
    ]  # fmt: skip
