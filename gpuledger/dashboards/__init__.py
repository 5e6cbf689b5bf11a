"""Grafana dashboards as code (grafana-foundation-sdk).

:mod:`gpuledger.dashboards.output` is the part the rest of the project uses: every
dashboard by uid, as JSON or as a ConfigMap for the Grafana sidecar, written to files.
Below it, :mod:`~gpuledger.dashboards.boards` holds one module per dashboard (GPU fleet,
services, vLLM serving, tenants of shared endpoints, pgvector storage, agent health),
built from the panel builders in :mod:`~gpuledger.dashboards.panels` and laid out by
:mod:`~gpuledger.dashboards.layout`;
:mod:`gpuledger.dashboards.queries` holds their PromQL, written only in terms of the
metric schema and the alert module's recording rules.
"""
