"""PostgreSQL rollups (migration 8): each :class:`~gpuledger.chargeback.ledger.tables.Rollup`
as a monthly-partitioned table, the statement triggers that keep it exact, and the
backfill that builds it from the rows already there.

Why triggers and not the writers: a fleet upgrades node by node, and the first agent of
the new release migrates the shared database while agents of the old one keep flushing.
A rollup that only new writers maintained would silently miss their rows. The triggers
run in every writer's transaction, whatever its release, and see exactly the rows each
statement inserted, and for an update the row versions it replaced (transition tables),
so under any concurrency the rollup moves by exactly what the source moved:

    rollup(k) = Σ over source rows r with key(r) = k of r's totals

An ``INSERT … ON CONFLICT DO UPDATE`` fires both the INSERT trigger (rows it inserted)
and the UPDATE trigger (old and new versions of rows it updated). A label rewrite that
moves a row to another rollup key (a GPU model learned late) subtracts it from the old
key and adds it to the new one; ``row_count`` follows, and a key whose rows all left has
count 0 and is skipped by reads. Each trigger writes its keys in one sorted statement, so
two writers' row locks on shared keys are always taken in the same order (no deadlock).

Sums are kept in ``double precision`` like the source: the rollup adds each statement's
difference, so it can differ from a fresh ``SUM`` over the source in the last bits (a
parallel ``SUM`` over the source differs between plans the same way); tests bound it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from psycopg import sql

from gpuledger.chargeback.ledger.store.common import GROUP_COLUMNS, aware_utc
from gpuledger.chargeback.ledger.store.postgres_sql import PARTITION_FUNCTION, I, cols
from gpuledger.chargeback.ledger.store.retention import add_months, month_start
from gpuledger.chargeback.ledger.tables import PROBE_ROLLUP, PROBES, ROLLUPS, USAGE, Rollup

EVENTS = ("insert", "update", "delete")


def create_rollup(rollup: Rollup) -> list[sql.Composed]:
    """The rollup's table: ``hour_start``, the dims typed as in the source, one ``double
    precision`` per measure, ``row_count``; partitioned by month when its source is."""
    defs: list[sql.Composable] = [sql.SQL("{} timestamptz NOT NULL").format(I(rollup.time_name))]
    defs += [sql.SQL("{} " + c.type.postgres + " NOT NULL").format(I(c.store)) for c in rollup.dims]
    defs += [
        sql.SQL("{} double precision NOT NULL DEFAULT 0").format(I(n))
        for n in rollup.measure_names()
    ]
    defs.append(sql.SQL("{} bigint NOT NULL DEFAULT 0").format(I(rollup.count)))
    defs.append(
        sql.SQL("CONSTRAINT {} PRIMARY KEY ({})").format(
            I(f"{rollup.store}_pkey"), cols(rollup.key_names())
        )
    )
    create = sql.SQL("CREATE TABLE {} ({})").format(I(rollup.store), sql.SQL(", ").join(defs))
    if rollup.partitioned:
        create = sql.SQL("{} PARTITION BY RANGE ({})").format(create, I(rollup.time_name))
    return [create]


def bucket(rollup: Rollup) -> sql.Composable:
    """The rollup's ``hour_start`` computed from a source row: the hour itself (or its
    month's start), or a unix-seconds time's hour."""
    t = I(rollup.time.store)
    hour = t if rollup.time.type.postgres == "timestamptz" else (
        sql.SQL("to_timestamp(floor({} / 3600) * 3600)").format(t)
    )  # fmt: skip
    if rollup.grain == "hour":
        return hour
    return sql.SQL("(date_trunc('month', {} AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')").format(hour)


def source_key(rollup: Rollup) -> sql.Composed:
    """The rollup's key computed from a source row (time bucketed, the dims as they are)."""
    return sql.SQL(", ").join([bucket(rollup), *(I(c.store) for c in rollup.dims)])


def measure(rollup: Rollup, template: str) -> sql.Composed:
    """A measure's expression over one source row, its columns quoted."""
    return sql.SQL(template).format(**{c.store: I(c.store) for c in rollup.source.columns})


def positions(rollup: Rollup) -> sql.Composed:
    return sql.SQL(", ").join(sql.Literal(i + 1) for i in range(len(rollup.key_names())))


def function_name(rollup: Rollup, event: str) -> str:
    return f"gpuledger_{rollup.store}_{event}"


def _delta_rows(rollup: Rollup, relation: str, sign: str) -> sql.Composed:
    values = [sql.SQL(sign + "({})").format(measure(rollup, t)) for _, t in rollup.measures]
    return sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join([source_key(rollup), *values, sql.SQL(sign + "1")]), I(relation)
    )


def _apply(rollup: Rollup, event: str) -> sql.Composed:
    """The trigger body's statement: the statement's rows summed per rollup key (new
    versions added, old versions subtracted), upserted in key order."""
    parts = []
    if event in ("insert", "update"):
        parts.append(_delta_rows(rollup, "new_rows", ""))
    if event in ("update", "delete"):
        parts.append(_delta_rows(rollup, "old_rows", "-"))
    key = cols(rollup.key_names())
    summed = (*rollup.measure_names(), rollup.count)
    t = I(rollup.store)
    return sql.SQL(
        "INSERT INTO {t} AS {t} ({all}) SELECT {key}, {sums} FROM ({union}) AS d ({names})"
        " GROUP BY {key} ORDER BY {key} ON CONFLICT ({key}) DO UPDATE SET {sets}"
    ).format(
        t=t,
        all=cols(rollup.names()),
        key=key,
        sums=sql.SQL(", ").join(sql.SQL("SUM({})").format(I(n)) for n in summed),
        union=sql.SQL(" UNION ALL ").join(parts),
        names=cols(rollup.names()),
        sets=sql.SQL(", ").join(
            sql.SQL("{c} = {t}.{c} + EXCLUDED.{c}").format(c=I(n), t=t) for n in summed
        ),
    )


def _ensure_months(rollup: Rollup) -> sql.Composed:
    """Inside the INSERT trigger: the rollup's partitions for the months inserted into.
    The writers of this release create them ahead in a transaction of their own (as they
    do the source's), so this only creates one for a writer that does not know rollups."""
    return sql.SQL(
        "PERFORM {f}({parent}, m) FROM (SELECT DISTINCT date_trunc('month', {h} AT TIME"
        " ZONE 'UTC') AT TIME ZONE 'UTC' AS m FROM new_rows) AS months"
    ).format(f=I(PARTITION_FUNCTION), parent=sql.Literal(rollup.store), h=bucket(rollup))


def trigger_statements(rollup: Rollup) -> list[sql.Composed]:
    """One function and one statement-level AFTER trigger per event on the source (a
    trigger with transition tables has exactly one event)."""
    out: list[sql.Composed] = []
    for event in EVENTS:
        body: list[sql.Composable] = []
        if event == "insert" and rollup.partitioned:
            body.append(sql.SQL("{};").format(_ensure_months(rollup)))
        body.append(sql.SQL("{};").format(_apply(rollup, event)))
        fn = I(function_name(rollup, event))
        out.append(
            sql.SQL(
                "CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $fn$\n"
                "BEGIN\n{body}\nRETURN NULL;\nEND\n$fn$"
            ).format(fn=fn, body=sql.SQL("\n").join(body))
        )
        referencing = {
            "insert": "NEW TABLE AS new_rows",
            "update": "OLD TABLE AS old_rows NEW TABLE AS new_rows",
            "delete": "OLD TABLE AS old_rows",
        }[event]
        out.append(
            sql.SQL(
                "CREATE TRIGGER {name} AFTER " + event.upper() + " ON {src}"
                " REFERENCING " + referencing + " FOR EACH STATEMENT EXECUTE FUNCTION {fn}()"
            ).format(name=I(f"{rollup.store}_{event}"), src=I(rollup.source.store), fn=fn)
        )
    return out


def backfill(rollup: Rollup) -> list[sql.Composed]:
    """The rollup of every row already in the source: a partition per month present (when
    partitioned), then one ``INSERT … SELECT … GROUP BY``."""
    sums = sql.SQL(", ").join(
        [*(sql.SQL("SUM({})").format(measure(rollup, t)) for _, t in rollup.measures),
         sql.SQL("COUNT(*)")]
    )  # fmt: skip
    out: list[sql.Composed] = []
    if rollup.partitioned:
        out.append(
            sql.SQL(
                "SELECT {f}({parent}, m) FROM (SELECT DISTINCT date_trunc('month', {h} AT TIME"
                " ZONE 'UTC') AT TIME ZONE 'UTC' AS m FROM {src}) AS months"
            ).format(
                f=I(PARTITION_FUNCTION),
                parent=sql.Literal(rollup.store),
                h=bucket(rollup),
                src=I(rollup.source.store),
            )
        )
    out.append(
        sql.SQL("INSERT INTO {t} ({all}) SELECT {key}, {sums} FROM {src} GROUP BY {pos}").format(
            t=I(rollup.store),
            all=cols(rollup.names()),
            key=source_key(rollup),
            sums=sums,
            src=I(rollup.source.store),
            pos=positions(rollup),
        )
    )
    return out


def partition_function() -> sql.Composed:
    """Migration 7's ``gpuledger_month_partition``, fixed: two agents writing the first
    rows of a month at once both saw no partition; the second, after waiting for the
    first's advisory lock, still saw none (an advisory lock does not refresh the
    catalog cache) and its ``CREATE TABLE`` failed, and so did its flush. Now a partition
    created meanwhile is taken as created."""
    return sql.SQL(
        "CREATE OR REPLACE FUNCTION {f}(parent text, hour timestamptz) RETURNS text"
        " LANGUAGE plpgsql AS $fn$\n"
        "DECLARE\n"
        "  lo timestamp := date_trunc('month', hour AT TIME ZONE 'UTC');\n"
        "  name text := parent || '_p' || to_char(lo, 'YYYY_MM');\n"
        "BEGIN\n"
        "  IF to_regclass(quote_ident(name)) IS NULL THEN\n"
        "    PERFORM pg_advisory_xact_lock(hashtext(name));\n"
        "    BEGIN\n"
        "      EXECUTE format(\n"
        "        'CREATE TABLE IF NOT EXISTS %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',\n"
        "        name, parent, lo AT TIME ZONE 'UTC',\n"
        "        (lo + interval '1 month') AT TIME ZONE 'UTC');\n"
        "    EXCEPTION WHEN duplicate_table OR unique_violation THEN\n"
        "      NULL;  -- another writer created it after our check\n"
        "    END;\n"
        "  END IF;\n"
        "  RETURN name;\n"
        "END\n"
        "$fn$"
    ).format(f=I(PARTITION_FUNCTION))


ROLLUPS_V8: tuple[Rollup, ...] = (
    Rollup(USAGE, store="ledger_usage_rollup", dims=("namespace", "service", "gpu_model")),
    Rollup(
        USAGE,
        store="ledger_usage_month_rollup",
        dims=("node", "gpu_uuid", "namespace", "service", "gpu_model"),
        grain="month",
    ),
    Rollup(
        PROBES,
        store="probe_verdict_rollup",
        dims=("namespace", "service", "model_name"),
        measures=PROBE_ROLLUP.measures,
    ),
)
"""The rollups as migration 8 created them, before migration 12 added ``cluster`` to
each one's dims: a migration is history, so 8 builds these, never the newest ones."""


def migration_8() -> list[sql.Composed]:
    """Rollups (issue 16): ``ledger_usage_rollup`` by (hour, namespace, service, GPU
    model), its triggers, and its backfill. The triggers come first: ``CREATE TRIGGER``
    locks the source against writes until this transaction commits, so the backfill reads
    every row committed before it, and every write after it fires the triggers. Also
    replaces the month-partition function (see :func:`partition_function`)."""
    out: list[sql.Composed] = [partition_function()]
    for rollup in ROLLUPS_V8:
        out += create_rollup(rollup)
        out += trigger_statements(rollup)
        out += backfill(rollup)
    return out


def drift(rollup: Rollup) -> sql.Composed:
    """Keys where the rollup and a fresh sum of the source disagree over ``[%(start)s,
    %(end)s)`` (relative tolerance ``%(tol)s`` on each measure, exact on the row count):
    what the audit (``rollup_drift``) and the tests read. Reads the source's whole range."""
    key = rollup.key_names()
    names = rollup.measure_names()
    fresh = sql.SQL(", ").join(
        [*(sql.SQL("SUM({e}) AS {c}").format(e=measure(rollup, t), c=I(n))
           for n, t in rollup.measures),
         sql.SQL("COUNT(*) AS {}").format(I(rollup.count))]
    )  # fmt: skip
    differs = sql.SQL(" OR ").join(
        [
            *(
                sql.SQL(
                    "abs(COALESCE(r.{c}, 0) - COALESCE(s.{c}, 0)) >"
                    " %(tol)s * greatest(abs(COALESCE(s.{c}, 0)), 1)"
                ).format(c=I(n))
                for n in names
            ),
            sql.SQL("COALESCE(r.{c}, 0) <> COALESCE(s.{c}, 0)").format(c=I(rollup.count)),
        ]
    )
    on = sql.SQL(" AND ").join(sql.SQL("r.{c} = s.{c}").format(c=I(k)) for k in key)
    picked = sql.SQL(", ").join(
        sql.SQL("COALESCE(r.{c}, s.{c}) AS {c}").format(c=I(k)) for k in key
    )
    skey = sql.SQL(", ").join(
        sql.SQL("{} AS {}").format(e, I(k))
        for e, k in zip([bucket(rollup), *(I(c.store) for c in rollup.dims)], key, strict=True)
    )
    h = I(rollup.time_name)
    return sql.SQL(
        "WITH s AS (SELECT {skey}, {fresh} FROM {src} WHERE {b} >= %(start)s AND {b} < %(end)s"
        " GROUP BY {pos}), r AS (SELECT * FROM {t} WHERE {h} >= %(start)s AND {h} < %(end)s"
        " AND {n} <> 0)"
        " SELECT {picked} FROM r FULL JOIN s ON {on} WHERE {differs} ORDER BY {pos}"
    ).format(
        skey=skey, fresh=fresh, src=I(rollup.source.store), b=bucket(rollup), pos=positions(rollup),
        h=h, t=I(rollup.store), n=I(rollup.count), picked=picked, on=on, differs=differs,
    )  # fmt: skip


def usage_rollup(
    keys: Sequence[str], node: str | None, start: datetime, end: datetime
) -> Rollup | None:
    """The first rollup of ``ledger_usage`` that holds every column ``usage()`` groups or
    filters by, at a grain the range is aligned to (a month rollup answers whole months
    only, and never per hour); None when only the usage rows can answer."""
    need = {GROUP_COLUMNS[k] for k in keys} | ({"node"} if node is not None else set())
    for rollup in ROLLUPS:
        if rollup.source is not USAGE:
            continue
        have = {c.store for c in rollup.dims}
        if rollup.grain == "hour":
            have.add(rollup.time_name)
        elif not (_month_aligned(start) and _month_aligned(end)):
            continue
        if need <= have:
            return rollup
    return None


def _month_aligned(t: datetime) -> bool:
    u = aware_utc(t, "time")
    return u == month_start(u)


def hour_aligned(t: datetime) -> bool:
    return aware_utc(t, "time").timestamp() % 3600 == 0


def drift_bounds(rollup: Rollup, lo: datetime, hi: datetime) -> tuple[datetime, datetime]:
    """The range a drift check of ``rollup`` covers: whole months around ``[lo, hi)`` for
    a month rollup (its rows are whole months), the range itself otherwise."""
    if rollup.grain != "month":
        return lo, hi
    hi_m = month_start(hi)
    return month_start(lo), hi_m if hi_m == hi else add_months(hi_m, 1)
