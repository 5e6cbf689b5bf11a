"""``gpuledger meter``: an OpenAI-compatible metering reverse proxy (issue 14).

For clusters without a gateway in front of their shared model endpoints: the meter sits
in front of one vLLM (or any OpenAI-compatible) server, relays every request unchanged,
and counts prompt, cached-prompt and generation tokens per tenant from the upstream's own
``usage``. The node agent reads its ``/metrics`` like a gateway's (preset
``gpuledger-meter``). It sits beside ``collectors/`` and ``agent/``, not under them: it is
its own process and imports only the shared leaves and the exposition writer.

Modules, one job each: :mod:`.config` (the YAML file), :mod:`.keys` (the API-key file,
held as SHA-256 hashes), :mod:`.tenants` (who sent a request, and the per-service cap),
:mod:`.usage` (reading ``usage`` out of JSON bodies and SSE events), :mod:`.relay` (the
streaming relay that removes the usage chunk it asked for), :mod:`.metrics` (the counters
and their exposition), :mod:`.proxy` (the ASGI application), :mod:`.main` (the process).
"""
