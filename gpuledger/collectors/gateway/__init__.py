"""Gateway counters: per-tenant token and request counters read from the Prometheus page
of a gateway in front of the engines (LiteLLM proxy, Envoy AI Gateway, `gpuledger meter`
or any endpoint configured by metric and label names). See docs/tenants.md."""
