"""Reading the world: one package per source (``gpu``, ``vllm``, ``pgvector``), the
workload inputs attribution uses (``workload``), the Prometheus text format
(``textformat``), and the registry the agent loops over. Nothing here knows the ledger,
prices or the HTTP server."""
