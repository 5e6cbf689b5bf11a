"""The ledger schema versions a fully migrated store records, stated by hand (not read
from the migrations under test, so a migration dropped from the list fails the tests):
10 cost centers, 11 the report's delivery record, 12 clusters (issue 18)."""

from __future__ import annotations

ALL_VERSIONS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
