"""Storage growth from the samples the ledger keeps: the spool-backed side of growth.

Every pgvector collection adds one sample per table (its total bytes) and one per
database (``table = ""``, the database size). The samples live in the node-local spool
for the growth window and are flushed to the ledger store (``storage_samples``) for the
record. Growth is the ordinary least-squares slope of bytes over time across the window's
samples -- robust to the scrape jitter and the VACUUM dips that make "last minus first"
misleading -- reported only once there are ``min_samples`` of them. The sums the slope
needs are computed in SQL; time is measured from "now" so the sums stay small. The
math itself (the slope, days until full) is the pgvector source's:
:mod:`gpuledger.collectors.pgvector.growth`, whose ``GrowthTracker`` this satisfies.
"""

from __future__ import annotations

from gpuledger.chargeback.ledger.spool import Spool
from gpuledger.chargeback.ledger.tables import StorageSample
from gpuledger.cluster import DEFAULT_CLUSTER
from gpuledger.collectors.pgvector.growth import DAY, Growth, GrowthKey, slope_from_sums
from gpuledger.collectors.pgvector.types import PgTelemetry


def samples_of(
    node: str, telemetry: PgTelemetry, cluster: str = DEFAULT_CLUSTER
) -> list[StorageSample]:
    out: list[StorageSample] = []
    for db in telemetry.databases:
        if not db.up or db.database_bytes is None:
            continue
        ts = db.collected_unix
        out.append(StorageSample(ts, node, db.name, "", "", db.database_bytes, cluster))
        out += [
            StorageSample(ts, node, db.name, t.schema, t.table, t.total_bytes, cluster)
            for t in db.tables
        ]
    return out


class StorageGrowth:
    def __init__(
        self,
        spool: Spool,
        node: str,
        *,
        window_s: float,
        min_samples: int,
        cluster: str = DEFAULT_CLUSTER,
    ) -> None:
        self.spool = spool
        self.node = node
        self.cluster = cluster
        self.window_s = window_s
        self.min_samples = max(2, min_samples)

    def record(self, telemetry: PgTelemetry) -> None:
        self.spool.write_storage_samples(samples_of(self.node, telemetry, self.cluster))

    def compute(self, now: float) -> dict[GrowthKey, Growth]:
        out: dict[GrowthKey, Growth] = {}
        for database, schema, table, n, sx, sy, sxx, sxy in self.spool.storage_sums(
            self.node, since=now - self.window_s, origin=now
        ):
            if n < self.min_samples:
                continue
            slope = slope_from_sums(n, sx, sy, sxx, sxy)
            if slope is not None:
                out[(database, schema, table)] = Growth(slope * DAY, n)
        return out
