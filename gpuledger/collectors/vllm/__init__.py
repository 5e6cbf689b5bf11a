"""vLLM engines: every generation's ``/metrics`` scraped and normalized, endpoints from
config and pod annotations, and synthetic probes (``probe``)."""
