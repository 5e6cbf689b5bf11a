"""gpuledger: per-node GPU observability and cost-chargeback agent."""

__version__ = "0.1.0"
