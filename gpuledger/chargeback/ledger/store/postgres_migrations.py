"""The PostgreSQL ledger's versioned migrations, in order: 1–7 in
:mod:`~gpuledger.chargeback.ledger.store.postgres_sql` (the tables, monthly partitions),
8 in :mod:`~gpuledger.chargeback.ledger.store.postgres_rollup` (rollups and their
triggers), 9 (peak GPU memory per usage bucket) in ``postgres_sql``, 10 (the cost centers
the agent saw) in ``postgres_cost_centers``, 11 (the monthly report's delivery record) in
``deliveries_sql``, 12 (clusters) in ``postgres_cluster``: built by :func:`migrations` from
the cluster rows already there belong to. Frozen once released;
``PostgresLedgerStore.migrate`` applies them."""

from __future__ import annotations

from psycopg import sql

from gpuledger.chargeback.ledger.store.deliveries_sql import postgres_migration_11
from gpuledger.chargeback.ledger.store.postgres_cluster import migration_12
from gpuledger.chargeback.ledger.store.postgres_cost_centers import postgres_migration_10
from gpuledger.chargeback.ledger.store.postgres_rollup import migration_8
from gpuledger.chargeback.ledger.store.postgres_sql import (
    migration_1,
    migration_2,
    migration_3,
    migration_4,
    migration_5,
    migration_6,
    migration_7,
    migration_9,
)

MIGRATIONS: tuple[tuple[int, list[sql.Composed]], ...] = (
    (1, migration_1()),
    (2, migration_2()),
    (3, migration_3()),
    (4, migration_4()),
    (5, migration_5()),
    (6, migration_6()),
    (7, migration_7()),
    (8, migration_8()),
    (9, migration_9()),
    (10, postgres_migration_10()),  # cost centers (issue 18): postgres_cost_centers
    (11, postgres_migration_11()),  # the report's delivery record (deliveries_sql.py)
)
"""Versioned migrations, applied in order, each once, in one transaction under an
advisory lock (two agents starting at once serialize; the second finds nothing to do)."""


def migrations(default_cluster: str) -> tuple[tuple[int, list[sql.Composed]], ...]:
    """Every migration in order; 12 gives the rows already there ``default_cluster``."""
    return (*MIGRATIONS, (12, migration_12(default_cluster)))
