"""The PostgreSQL ledger's SQL: its frozen migrations and the statements derived from the
table declarations (CREATE TABLE of the newest version, upserts from VALUES and from a
COPY staging table).

Kept apart from :mod:`gpuledger.chargeback.ledger.store.postgres` (the connection pool,
transactions and reads) so that a schema change reads as one file: a new migration here
and a column in :mod:`gpuledger.chargeback.ledger.tables`. Every identifier is composed
with :mod:`psycopg.sql`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from psycopg import sql

from gpuledger.chargeback.ledger.tables import (
    COST_CENTERS,
    COVERAGE,
    ENGINE_TIME,
    PROBES,
    STORAGE,
    TENANT_TOKENS,
    TOKENS,
    UPDATED_AT,
    USAGE,
    BoundColumn,
    Index,
    Role,
    Table,
)

log = logging.getLogger(__name__)

I = sql.Identifier  # noqa: E741 - short on purpose: it is on every line below


def cols(names: Sequence[str]) -> sql.Composed:
    return sql.SQL(", ").join(I(n) for n in names)


def migration_1() -> list[sql.Composed]:
    t, c = sql.SQL, I
    return [
        t(
            "CREATE TABLE {usage} ("
            " {hour_start} timestamptz NOT NULL,"
            " {node} text NOT NULL,"
            " {gpu_uuid} text NOT NULL,"
            " {namespace} text NOT NULL,"
            " {service} text NOT NULL,"
            " {gpu_model} text NOT NULL DEFAULT '',"
            " {mig_profile} text NOT NULL DEFAULT '',"
            " {alloc} double precision NOT NULL DEFAULT 0,"
            " {busy} double precision NOT NULL DEFAULT 0,"
            " {energy} double precision NOT NULL DEFAULT 0,"
            " {updated_at} timestamptz NOT NULL DEFAULT now(),"
            " CONSTRAINT {pkey} PRIMARY KEY ({key}))"
        ).format(
            usage=c("ledger_usage"),
            hour_start=c("hour_start"),
            node=c("node"),
            gpu_uuid=c("gpu_uuid"),
            namespace=c("namespace"),
            service=c("service"),
            gpu_model=c("gpu_model"),
            mig_profile=c("mig_profile"),
            alloc=c("allocated_gpu_seconds"),
            busy=c("busy_gpu_seconds"),
            energy=c("energy_joules"),
            updated_at=c("updated_at"),
            pkey=c("ledger_usage_pkey"),
            key=cols(("hour_start", "node", "gpu_uuid", "namespace", "service")),
        ),
        t("CREATE INDEX {idx} ON {usage} ({node}, {hour_start})").format(
            idx=c("ledger_usage_node_hour_idx"),
            usage=c("ledger_usage"),
            node=c("node"),
            hour_start=c("hour_start"),
        ),
        t(
            "CREATE TABLE {coverage} ("
            " {hour_start} timestamptz NOT NULL,"
            " {node} text NOT NULL,"
            " {gpu_uuid} text NOT NULL,"
            " {gpu_model} text NOT NULL DEFAULT '',"
            " {observed} double precision NOT NULL DEFAULT 0,"
            " {updated_at} timestamptz NOT NULL DEFAULT now(),"
            " CONSTRAINT {pkey} PRIMARY KEY ({key}))"
        ).format(
            coverage=c("ledger_coverage"),
            hour_start=c("hour_start"),
            node=c("node"),
            gpu_uuid=c("gpu_uuid"),
            gpu_model=c("gpu_model"),
            observed=c("observed_seconds"),
            updated_at=c("updated_at"),
            pkey=c("ledger_coverage_pkey"),
            key=cols(("hour_start", "node", "gpu_uuid")),
        ),
    ]


def migration_2() -> list[sql.Composed]:
    t, c = sql.SQL, I
    token_cols = sql.SQL(", ").join(
        sql.SQL("{} double precision NOT NULL DEFAULT 0").format(c(n))
        for n in (
            "prompt_tokens",
            "generation_tokens",
            "probe_prompt_tokens",
            "probe_generation_tokens",
        )
    )
    return [
        t(
            "CREATE TABLE {tokens} ("
            " {hour_start} timestamptz NOT NULL, {node} text NOT NULL,"
            " {namespace} text NOT NULL, {service} text NOT NULL, {model} text NOT NULL,"
            " {token_cols},"
            " {updated_at} timestamptz NOT NULL DEFAULT now(),"
            " CONSTRAINT {pkey} PRIMARY KEY ({key}))"
        ).format(
            tokens=c("ledger_tokens"), hour_start=c("hour_start"), node=c("node"),
            namespace=c("namespace"), service=c("service"), model=c("model_name"),
            token_cols=token_cols, updated_at=c("updated_at"), pkey=c("ledger_tokens_pkey"),
            key=cols(("hour_start", "node", "namespace", "service", "model_name")),
        ),
        t(
            "CREATE TABLE {probes} ("
            " {node} text NOT NULL, {endpoint} text NOT NULL,"
            " {started} double precision NOT NULL,"
            " {namespace} text NOT NULL, {service} text NOT NULL, {model} text NOT NULL,"
            " {ok} boolean NOT NULL, {reason} text,"
            " {ttft} double precision, {tpot} double precision, {e2e} double precision,"
            " {tps} double precision, {pt} integer, {ct} integer,"
            " {tc} boolean, {hm} boolean, {ta} boolean,"
            " {updated_at} timestamptz NOT NULL DEFAULT now(),"
            " CONSTRAINT {pkey} PRIMARY KEY ({key}))"
        ).format(
            probes=c("probe_results"), node=c("node"), endpoint=c("endpoint"),
            started=c("started_unix"), namespace=c("namespace"), service=c("service"),
            model=c("model_name"), ok=c("ok"), reason=c("reason"), ttft=c("ttft_s"),
            tpot=c("tpot_s"), e2e=c("e2e_s"), tps=c("output_tokens_per_s"),
            pt=c("prompt_tokens"), ct=c("completion_tokens"), tc=c("tokens_counted"),
            hm=c("ttft_histogram_moved"), ta=c("ttft_agrees"), updated_at=c("updated_at"),
            pkey=c("probe_results_pkey"), key=cols(("node", "endpoint", "started_unix")),
        ),
        t("CREATE INDEX {idx} ON {probes} ({started})").format(
            idx=c("probe_results_started_idx"), probes=c("probe_results"), started=c("started_unix")
        ),
    ]  # fmt: skip


def migration_3() -> list[sql.Composed]:
    return [
        sql.SQL(
            "CREATE TABLE {t} ({node} text NOT NULL, {db} text NOT NULL, {schema} text NOT NULL,"
            " {tbl} text NOT NULL, {ts} double precision NOT NULL, {b} bigint NOT NULL,"
            " CONSTRAINT {pkey} PRIMARY KEY ({key}))"
        ).format(
            t=I("storage_samples"),
            node=I("node"),
            db=I("database"),
            schema=I("schema"),
            tbl=I("table_name"),
            ts=I("ts"),
            b=I("bytes"),
            pkey=I("storage_samples_pkey"),
            key=cols(("node", "database", "schema", "table_name", "ts")),
        )
    ]


def migration_4() -> list[sql.Composed]:
    """The monthly report reads a month of probe records by time, a few columns of each:
    a covering index on started_unix lets those reads skip the heap (index-only scans)."""
    return [
        sql.SQL("CREATE INDEX {idx} ON {t} ({s}) INCLUDE ({cols})").format(
            idx=I("probe_results_report_idx"),
            t=I("probe_results"),
            s=I("started_unix"),
            cols=cols(("namespace", "service", "ok", "ttft_s", "tpot_s", "e2e_s",
                        "tokens_counted", "ttft_histogram_moved", "ttft_agrees")),
        ),
        sql.SQL("DROP INDEX {}").format(I("probe_results_started_idx")),
    ]  # fmt: skip


def migration_5() -> list[sql.Composed]:
    """Tenants of shared endpoints (issue 14): per-tenant token and request totals."""
    totals = sql.SQL(", ").join(
        sql.SQL("{} double precision NOT NULL DEFAULT 0").format(I(n))
        for n in ("requests", "prompt_tokens", "cached_prompt_tokens", "generation_tokens")
    )
    return [
        sql.SQL(
            "CREATE TABLE {t} ("
            " {hour_start} timestamptz NOT NULL, {node} text NOT NULL,"
            " {namespace} text NOT NULL, {service} text NOT NULL, {model} text NOT NULL,"
            " {tenant} text NOT NULL, {totals},"
            " {updated_at} timestamptz NOT NULL DEFAULT now(),"
            " CONSTRAINT {pkey} PRIMARY KEY ({key}))"
        ).format(
            t=I("ledger_tenant_tokens"), hour_start=I("hour_start"), node=I("node"),
            namespace=I("namespace"), service=I("service"), model=I("model_name"),
            tenant=I("tenant"), totals=totals, updated_at=I("updated_at"),
            pkey=I("ledger_tenant_tokens_pkey"),
            key=cols(("hour_start", "node", "namespace", "service", "model_name", "tenant")),
        )
    ]  # fmt: skip


def migration_6() -> list[sql.Composed]:
    """The engine's cost weights (issue 14): per (hour, service, model) prefill and
    decode seconds and requests, prefix-cache queries and hits, from vLLM."""
    totals = sql.SQL(", ").join(
        sql.SQL("{} double precision NOT NULL DEFAULT 0").format(I(n))
        for n in ("prefill_seconds", "decode_seconds", "prefill_requests", "decode_requests",
                  "prefix_cache_queries", "prefix_cache_hits")
    )  # fmt: skip
    return [
        sql.SQL(
            "CREATE TABLE {t} ("
            " {hour_start} timestamptz NOT NULL, {node} text NOT NULL,"
            " {namespace} text NOT NULL, {service} text NOT NULL, {model} text NOT NULL,"
            " {totals}, {updated_at} timestamptz NOT NULL DEFAULT now(),"
            " CONSTRAINT {pkey} PRIMARY KEY ({key}))"
        ).format(
            t=I("ledger_engine_time"), hour_start=I("hour_start"), node=I("node"),
            namespace=I("namespace"), service=I("service"), model=I("model_name"),
            totals=totals, updated_at=I("updated_at"), pkey=I("ledger_engine_time_pkey"),
            key=cols(("hour_start", "node", "namespace", "service", "model_name")),
        )
    ]  # fmt: skip


PARTITION_FUNCTION = "gpuledger_month_partition"
"""``gpuledger_month_partition(parent, hour)``: the name of ``parent``'s partition for the
UTC month of ``hour``, created when missing (migration 7). One definition of partition
names and bounds for the migration, the writers and retention."""


def migration_7() -> list[sql.Composed]:
    """Monthly partitions (issue 16): the five hour-keyed tables become ``PARTITION BY
    RANGE (hour_start)``, one partition per UTC month named ``<table>_pYYYY_MM``. A month's
    report and ``/api/v1/usage`` read one partition instead of the whole history, and
    retention drops a month as one partition (no DELETE, no bloat, no VACUUM).

    Existing rows move in this migration's transaction: each table is renamed aside, its
    partitioned successor created with the same columns (``LIKE … INCLUDING DEFAULTS``),
    key and indexes, a partition created for every month present, every row copied with
    one ``INSERT … SELECT`` and the old table dropped. The key is unchanged, so no two
    rows can merge and none is lost (tested with rows across several months)."""
    t = sql.SQL
    out: list[sql.Composed] = [
        t(
            "CREATE FUNCTION {f}(parent text, hour timestamptz) RETURNS text"
            " LANGUAGE plpgsql AS $fn$\n"
            "DECLARE\n"
            "  lo timestamp := date_trunc('month', hour AT TIME ZONE 'UTC');\n"
            "  name text := parent || '_p' || to_char(lo, 'YYYY_MM');\n"
            "BEGIN\n"
            "  IF to_regclass(quote_ident(name)) IS NULL THEN\n"
            "    PERFORM pg_advisory_xact_lock(hashtext(name));\n"
            "    IF to_regclass(quote_ident(name)) IS NULL THEN\n"
            "      EXECUTE format(\n"
            "        'CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)', name,\n"
            "        parent, lo AT TIME ZONE 'UTC',\n"
            "        (lo + interval '1 month') AT TIME ZONE 'UTC');\n"
            "    END IF;\n"
            "  END IF;\n"
            "  RETURN name;\n"
            "END\n"
            "$fn$"
        ).format(f=I(PARTITION_FUNCTION))
    ]
    tables: tuple[tuple[str, tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...]], ...] = (
        ("ledger_usage", ("hour_start", "node", "gpu_uuid", "namespace", "service"),
         (("ledger_usage_node_hour_idx", ("node", "hour_start")),)),
        ("ledger_coverage", ("hour_start", "node", "gpu_uuid"), ()),
        ("ledger_tokens", ("hour_start", "node", "namespace", "service", "model_name"), ()),
        ("ledger_tenant_tokens",
         ("hour_start", "node", "namespace", "service", "model_name", "tenant"), ()),
        ("ledger_engine_time", ("hour_start", "node", "namespace", "service", "model_name"), ()),
    )  # fmt: skip
    for name, key, indexes in tables:
        old = f"{name}_v6"
        out += [
            t("ALTER TABLE {} RENAME TO {}").format(I(name), I(old)),
            t("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                I(old), I(f"{name}_pkey"), I(f"{old}_pkey")
            ),
            *(
                t("ALTER INDEX {} RENAME TO {}").format(I(idx), I(f"{idx}_v6"))
                for idx, _ in indexes
            ),
            t("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS) PARTITION BY RANGE ({})").format(
                I(name), I(old), I("hour_start")
            ),
            t("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({})").format(
                I(name), I(f"{name}_pkey"), cols(key)
            ),
            *(
                t("CREATE INDEX {} ON {} ({})").format(I(idx), I(name), cols(columns))
                for idx, columns in indexes
            ),
            t(
                "SELECT {f}({parent}, m) FROM (SELECT DISTINCT date_trunc('month', {h} AT TIME"
                " ZONE 'UTC') AT TIME ZONE 'UTC' AS m FROM {old}) AS months"
            ).format(
                f=I(PARTITION_FUNCTION), parent=sql.Literal(name), h=I("hour_start"), old=I(old)
            ),
            t("INSERT INTO {} SELECT * FROM {}").format(I(name), I(old)),
            t("DROP TABLE {}").format(I(old)),
        ]
    return out


def migration_9() -> list[sql.Composed]:
    """Peak GPU memory per usage bucket (issue 17): one nullable column, NULL (not
    measured) on every row already there. Adding a nullable column without a default is a
    catalog change only: no month partition is rewritten (each inherits the column). The
    rollups' triggers (migration 8) sum only the totals they name, so they ignore it."""
    return [
        sql.SQL("ALTER TABLE {} ADD COLUMN {} double precision").format(
            I("ledger_usage"), I("peak_memory_bytes")
        )
    ]


def create_statements(table: Table[Any]) -> list[sql.Composed]:
    """The newest version's CREATE TABLE (and indexes) of ``table`` in PostgreSQL."""
    defs: list[sql.Composable] = [column_def(c) for c in table.created()]
    if table.stamped:
        defs.append(sql.SQL("{} timestamptz NOT NULL DEFAULT now()").format(I(UPDATED_AT)))
    defs += [column_def(c) for c in table.added()]
    defs.append(
        sql.SQL("CONSTRAINT {} PRIMARY KEY ({})").format(
            I(f"{table.store}_pkey"), cols([c.store for c in table.primary_key["postgres"]])
        )
    )
    out = [sql.SQL("CREATE TABLE {} ({})").format(I(table.store), sql.SQL(", ").join(defs))]
    if table.monthly:
        out[0] = sql.SQL("{} PARTITION BY RANGE ({})").format(out[0], I(table.time.store))
    out += [create_index(table, i) for i in table.indexes if "postgres" in i.backends]
    return out


def column_def(c: BoundColumn) -> sql.Composed:
    """``"name" type [NOT NULL] [DEFAULT …]`` (in CREATE TABLE and ADD COLUMN)."""
    spec = c.type.postgres + ("" if c.nullable else " NOT NULL")
    spec += f" DEFAULT {c.default}" if c.default is not None else ""
    return sql.SQL("{} " + spec).format(I(c.store))


def create_index(table: Table[Any], index: Index) -> sql.Composed:
    stmt = sql.SQL("CREATE INDEX {} ON {} ({})").format(
        I(index.name), I(table.store), cols([table.by_attr[a].store for a in index.columns])
    )
    if index.include:
        include = cols([table.by_attr[a].store for a in index.include])
        stmt = sql.SQL("{} INCLUDE ({})").format(stmt, include)
    return stmt


def upsert_statement(table: Table[Any], source: sql.Composable) -> sql.Composed:
    """``INSERT … ON CONFLICT (key) DO UPDATE``: totals and peaks take GREATEST(stored,
    incoming) (which ignores a NULL, so an unmeasured peak never erases one), labels and
    ``updated_at`` the incoming value, verdicts the incoming one unless NULL;
    insert-only tables ignore a conflicting row. ``source`` supplies the columns."""
    columns = [*table.names(), *((UPDATED_AT,) if table.stamped else ())]
    head = sql.SQL("INSERT INTO {t} AS {t} ({cols}) {source} ").format(
        t=I(table.store), cols=cols(columns), source=source
    )
    if table.insert_only:
        return sql.SQL("{}ON CONFLICT DO NOTHING").format(head)
    t = I(table.store)
    sets = [
        sql.SQL("{c} = GREATEST({t}.{c}, EXCLUDED.{c})").format(c=I(c), t=t)
        for c in (*table.names(Role.TOTAL), *table.names(Role.PEAK))
    ]
    sets += [
        sql.SQL("{c} = EXCLUDED.{c}").format(c=I(c)) for c in (*table.names(Role.LABEL), UPDATED_AT)
    ]
    sets += [
        sql.SQL("{c} = COALESCE(EXCLUDED.{c}, {t}.{c})").format(c=I(c), t=t)
        for c in table.names(Role.VERDICT)
    ]
    return sql.SQL("{}ON CONFLICT ({key}) DO UPDATE SET {sets}").format(
        head, key=cols(table.names(Role.KEY)), sets=sql.SQL(", ").join(sets)
    )


def values_source(table: Table[Any]) -> sql.Composed:
    """One row of bound values (an hour arrives as unix seconds: to_timestamp())."""
    params: list[sql.Composable] = [sql.SQL(c.type.pg_param) for c in table.columns]
    if table.stamped:
        params.append(sql.SQL("now()"))
    return sql.SQL("VALUES ({})").format(sql.SQL(", ").join(params))


def arrays_source(table: Table[Any]) -> sql.Composed:
    """Every row of a batch as one array parameter per column (``unnest``), converted to
    the columns' types: a batch is one statement, so the ledger's statement triggers
    (rollups, migration 8) fire once per batch instead of once per row."""
    arrays = [
        sql.SQL("%s::" + (c.type.pg_staging or c.type.postgres) + "[]") for c in table.columns
    ]
    converted: list[sql.Composable] = [
        sql.SQL(c.type.pg_unstage or "{}").format(I(c.store)) for c in table.columns
    ]
    if table.stamped:
        converted.append(sql.SQL("now()"))
    return sql.SQL("SELECT {cols} FROM unnest({arrays}) AS {x} ({names})").format(
        cols=sql.SQL(", ").join(converted),
        arrays=sql.SQL(", ").join(arrays),
        x=I("batch"),
        names=cols(table.names()),
    )


def staging_name(table: Table[Any]) -> str:
    return f"_gpuledger_{table.store.removeprefix('ledger_')}_in"


def select_source(table: Table[Any]) -> sql.Composed:
    """Every row of the COPY staging table, converted to the columns' types."""
    cols: list[sql.Composable] = [
        sql.SQL(c.type.pg_unstage or "{}").format(I(c.store)) for c in table.columns
    ]
    if table.stamped:
        cols.append(sql.SQL("now()"))
    return sql.SQL("SELECT {cols} FROM {temp}").format(
        cols=sql.SQL(", ").join(cols), temp=I(staging_name(table))
    )


def staging_table(table: Table[Any]) -> sql.Composed:
    """A transaction-scoped staging table for COPY (dropped at commit): each column in
    its wire type (an hour as bigint unix seconds)."""
    defs = [
        sql.SQL("{} " + (c.type.pg_staging or c.type.postgres)).format(I(c.store))
        for c in table.columns
    ]
    return sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
        I(staging_name(table)), sql.SQL(", ").join(defs)
    )


UPSERT_USAGE_ARRAYS = upsert_statement(USAGE, arrays_source(USAGE))
UPSERT_COVERAGE_ARRAYS = upsert_statement(COVERAGE, arrays_source(COVERAGE))
UPSERT_USAGE_TEMP = upsert_statement(USAGE, select_source(USAGE))
UPSERT_COVERAGE_TEMP = upsert_statement(COVERAGE, select_source(COVERAGE))
UPSERT_TOKENS = upsert_statement(TOKENS, values_source(TOKENS))
UPSERT_PROBES = upsert_statement(PROBES, values_source(PROBES))
INSERT_STORAGE = upsert_statement(STORAGE, values_source(STORAGE))
UPSERT_TENANT_TOKENS = upsert_statement(TENANT_TOKENS, values_source(TENANT_TOKENS))
UPSERT_ENGINE_TIME = upsert_statement(ENGINE_TIME, values_source(ENGINE_TIME))
UPSERT_COST_CENTERS = upsert_statement(COST_CENTERS, values_source(COST_CENTERS))


def ensure_partitions() -> sql.Composed:
    """Every (table, hour) pair's month partition, created when missing: two arrays of
    table names and unix hours. Runs in a short transaction of its own before a write (the
    creation locks the parent briefly, once per table and month)."""
    return sql.SQL(
        "SELECT {f}(t, to_timestamp(h)) FROM unnest(%s::text[], %s::bigint[]) AS x(t, h)"
    ).format(f=I(PARTITION_FUNCTION))


def month_partitions() -> sql.SQL:
    """Each partition of the monthly tables named in the one parameter (an array):
    (parent, partition); the month is the partition name's ``_pYYYY_MM`` suffix."""
    return sql.SQL(
        "SELECT p.relname AS parent, c.relname AS partition"
        " FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " JOIN pg_class p ON p.oid = i.inhparent"
        " WHERE p.relname = ANY(%s) AND c.relkind IN ('r', 'p') ORDER BY 1, 2"
    )


ISO_HOUR = "to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"


def iso_hour(col: sql.Composable) -> sql.Composed:
    return sql.SQL(ISO_HOUR).format(col=col)


TENANT_WEIGHTED = """
WITH x AS MATERIALIZED (
    SELECT r.n, r.s, to_timestamp(r.h) AS h, r.m, r.wg, r.measured, r.first,
           r.ka, r.kb, r.ke
    FROM jsonb_to_recordset(%s::jsonb) AS r(n text, s text, h bigint, m text,
         wg double precision, measured boolean, first boolean, ka double precision,
         kb double precision, ke double precision)
), t AS (
    SELECT {ns}, {svc}, {h}, {tenant}, {req}, {p}, {c}, {g},
           {p} - LEAST({c}, {p}) + %s::double precision * LEAST({c}, {p}) AS w_in
    FROM {t} WHERE {w}
), j AS (
    SELECT t.*, x.m, x.first, x.measured, x.ka, x.kb, x.ke,
           t.w_in + x.wg * t.{g} AS wt, x.first IS NOT FALSE AS once
    FROM t LEFT JOIN x ON x.n = t.{ns} AND x.s = t.{svc} AND x.h = t.{h}
)
SELECT {ns} AS namespace, {svc} AS service, {tenant} AS tenant, m AS gpu_model,
       COALESCE(SUM(wt * ka), 0)::double precision AS allocated_seconds,
       COALESCE(SUM(wt * kb), 0)::double precision AS busy_seconds,
       COALESCE(SUM(wt * ke), 0)::double precision AS energy_joules,
       COALESCE(SUM(w_in * ka), 0)::double precision AS input_seconds,
       COALESCE(SUM(wt) FILTER (WHERE first), 0)::double precision AS weighted_tokens,
       COALESCE(SUM(wt) FILTER (WHERE first AND NOT measured), 0)::double precision
           AS fixed_ratio_weight,
       COALESCE(SUM({req}) FILTER (WHERE once), 0)::double precision AS requests,
       COALESCE(SUM({p}) FILTER (WHERE once), 0)::double precision AS prompt_tokens,
       COALESCE(SUM({c}) FILTER (WHERE once), 0)::double precision AS cached_prompt_tokens,
       COALESCE(SUM({g}) FILTER (WHERE once), 0)::double precision AS generation_tokens
FROM j GROUP BY {ns}, {svc}, {tenant}, m
"""
"""The tenant split's one heavy read (``tenant_weighted_sums``): every tenant row of the
period, weighted with its hour's generation weight, times the hour's coefficients per GPU
model (passed as one JSON parameter), summed per tenant and GPU model; the rows' token
totals ride along (once per hour: on its first coefficient, or alone without one). Run
with sorting discouraged: the planner cannot know the JSON's row count and would sort
the whole period to group a few thousand tenants."""
