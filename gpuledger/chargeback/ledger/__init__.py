"""The durable hourly ledger: shares × monotonic seconds accumulated into UTC hours, kept
in a node-local spool and upserted as running totals into a store. Each table is declared
once in :mod:`.tables`."""
