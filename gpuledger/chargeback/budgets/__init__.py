"""Monthly budgets per cost center, namespace or service: their rows, validation, and
month to date and forecast against them. See ``docs/budgets.md``."""
