"""The monthly chargeback: the ledger's grouped sums priced with a dated rate card into a
:class:`.model.Report` (internal cost, counterfactuals, validation, coverage), and the
writers that turn it into files."""
