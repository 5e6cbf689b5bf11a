"""PostgreSQL migration 12 (issue 18): a ``cluster`` key column on every ledger table and
on every rollup, so one fleet ledger serves several clusters whose node names may repeat.

Kept apart from ``postgres_sql.py`` (migrations 1-9) because it is the one migration
built from a value of the deployment: the cluster that rows already there belong to.

Why it is cheap on a large ledger, and exact:

- ``ADD COLUMN … NOT NULL DEFAULT <constant>`` is a catalog change since PostgreSQL 11
  (the constant is stored once as the column's "missing value"); no month partition is
  rewritten. The default is then set to the declaration's ``'default'`` (a fresh ledger's
  DDL), which changes nothing already stored.
- The primary key is replaced by one that includes ``cluster`` (the conflict target of
  every upsert): one index build per table. The old key is unique, so the longer one is.
- The rollups (migration 8) are dropped with their triggers and rebuilt from the rows,
  with ``cluster`` among their dims: their triggers must name the column, and a rebuild
  from the source is exact by construction (the backfill's ``GROUP BY``). The triggers
  are created before the backfill, in the same transaction, as migration 8 did, so a
  writer waiting on the lock is summed by them once the migration commits.

Writers of an earlier release cannot write after it (their ``ON CONFLICT`` names the old
key, which no longer exists): their flushes fail, their rows stay in their spools, and
they are sent once the agent is upgraded. ``docs/deploy.md`` says to upgrade agents
before or with the reporter.
"""

from __future__ import annotations

from psycopg import sql

from gpuledger.chargeback.ledger.store.postgres_rollup import (
    EVENTS,
    backfill,
    create_rollup,
    function_name,
    trigger_statements,
)
from gpuledger.chargeback.ledger.store.postgres_sql import I, cols
from gpuledger.chargeback.ledger.tables import ROLLUPS
from gpuledger.cluster import sql_literal

_KEYS_V12: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ledger_usage", ("hour_start", "cluster", "node", "gpu_uuid", "namespace", "service")),
    ("ledger_coverage", ("hour_start", "cluster", "node", "gpu_uuid")),
    ("ledger_tokens", ("hour_start", "cluster", "node", "namespace", "service", "model_name")),
    ("probe_results", ("cluster", "node", "endpoint", "started_unix")),
    ("storage_samples", ("cluster", "node", "database", "schema", "table_name", "ts")),
    ("ledger_tenant_tokens",
     ("hour_start", "cluster", "node", "namespace", "service", "model_name", "tenant")),
    ("ledger_engine_time",
     ("hour_start", "cluster", "node", "namespace", "service", "model_name")),
    ("ledger_cost_centers", ("hour_start", "cluster", "node", "namespace", "service")),
)  # fmt: skip
"""Each table and its key from version 12 on (frozen: later versions change it in theirs)."""


def migration_12(default_cluster: str) -> list[sql.Composed]:
    """The statements of migration 12; existing rows get ``default_cluster``."""
    t = sql.SQL
    value = t(sql_literal(default_cluster))
    out: list[sql.Composed] = []
    for rollup in ROLLUPS:  # the old triggers name no cluster: gone before any row moves
        out += [t("DROP FUNCTION {}() CASCADE").format(I(function_name(rollup, e))) for e in EVENTS]
        out.append(t("DROP TABLE {}").format(I(rollup.store)))
    for name, key in _KEYS_V12:
        out += [
            t("ALTER TABLE {} ADD COLUMN {} text NOT NULL DEFAULT {}").format(
                I(name), I("cluster"), value
            ),
            t("ALTER TABLE {} ALTER COLUMN {} SET DEFAULT 'default'").format(I(name), I("cluster")),
            t("ALTER TABLE {} DROP CONSTRAINT {}").format(I(name), I(f"{name}_pkey")),
            t("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({})").format(
                I(name), I(f"{name}_pkey"), cols(key)
            ),
        ]
    for rollup in ROLLUPS:
        out += create_rollup(rollup)
        out += trigger_statements(rollup)
        out += backfill(rollup)
    return out
