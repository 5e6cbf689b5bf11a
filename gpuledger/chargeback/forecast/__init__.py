"""Forecasts of spend: the ledger's daily cost series per service, namespace and cost
center, and its end of this month and of next month. See ``docs/budgets.md``."""
