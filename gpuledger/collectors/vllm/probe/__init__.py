"""Synthetic probes: a small streaming request per endpoint, its latency, and its check
against the engine's own counters and TTFT histogram."""
