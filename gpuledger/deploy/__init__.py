"""Deployment artifacts generated from code, like the dashboards and the alert rules.

:mod:`gpuledger.deploy.kubernetes` builds the kustomize-ready Kubernetes manifests
(``gpuledger manifests``): the node agent's DaemonSet and its RBAC, the reporter's
Deployment, the Prometheus monitors and rules, and the Grafana dashboard ConfigMaps. They
are built from the same config models the agent validates, so a generated config is one
the agent accepts.
"""
