"""Grafana dashboards as code (grafana-foundation-sdk).

:mod:`gpuledger.dashboards.build` builds the five dashboards (GPU fleet, services, vLLM
serving, pgvector storage, agent health) and writes them as JSON or as ConfigMaps for the
Grafana sidecar; :mod:`gpuledger.dashboards.queries` holds their PromQL, written only in
terms of the metric schema and the alert module's recording rules.
"""
