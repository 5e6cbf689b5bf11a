"""The migration versions a fresh ledger ends with, from the migration list itself: some
numbers are reserved for work that lands in parallel (10: cost centers, 12: clusters),
so a literal list in each test would break at every merge."""

from __future__ import annotations

from gpuledger.chargeback.ledger.store.common import SCHEMA_VERSION
from gpuledger.chargeback.ledger.store.sqlite_migrations import MIGRATIONS

ALL_VERSIONS = [v for v, _ in MIGRATIONS]
assert sorted(ALL_VERSIONS) == ALL_VERSIONS
assert ALL_VERSIONS[-1] == SCHEMA_VERSION
