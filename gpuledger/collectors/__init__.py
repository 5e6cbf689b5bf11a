"""Sources: one module per source. Collectors know nothing of Prometheus, the ledger or prices."""
