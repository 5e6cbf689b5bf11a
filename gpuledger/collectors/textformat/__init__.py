"""The Prometheus text exposition format: a strict, bounded parser for what dcgm-exporter
and vLLM serve (``parse``) and the renderer of the agent's own ``/metrics`` (``render``)."""
