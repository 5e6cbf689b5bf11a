"""Kubernetes manifests for gpuledger, kustomize-ready (``gpuledger manifests``).

One object per file plus a ``kustomization.yaml`` listing them, so ``kubectl apply -k DIR``
installs everything and a kustomize overlay can patch any single object. Each object is
built by its own function from
:class:`~gpuledger.deploy.kubernetes.options.ManifestOptions`, in one module per family:

- :mod:`~gpuledger.deploy.kubernetes.rbac`: the Namespace, the ServiceAccounts, the
  agent's ClusterRole and binding;
- :mod:`~gpuledger.deploy.kubernetes.config`: the ConfigMap, and the Secrets it refers to;
- :mod:`~gpuledger.deploy.kubernetes.workloads`: the agent's DaemonSet, the reporter's
  Deployment, their Services and the reports' volume claim;
- :mod:`~gpuledger.deploy.kubernetes.monitoring`: the ServiceMonitor, PodMonitor and
  PrometheusRule, the dashboards' ConfigMaps.
- :mod:`~gpuledger.deploy.kubernetes.meter`: the ``examples/`` folder, not applied by the
  base's kustomization: a vLLM endpoint with ``gpuledger meter`` as a sidecar, and the
  agent's ``gateways:`` entry that reads it.

:mod:`~gpuledger.deploy.kubernetes.common` holds the names, labels and security context
they share; :mod:`~gpuledger.deploy.kubernetes.output` assembles every object by file
name (``manifests``) and renders and writes them (``write_manifests``). Rendering is
deterministic (no timestamps, insertion-ordered keys, no YAML anchors), so
``deploy/kubernetes/`` in the repository is checked byte for byte against a fresh run by
the tests and can never drift from the code.

What is deliberately here, and why (the long form is in the files' header comments):

* The node agent's config (``agent.yaml`` in the ConfigMap) is built from the same keys
  :class:`~gpuledger.agent.config.AgentConfig` validates, and the tests load it with
  :func:`~gpuledger.agent.config.load_config`: a manifest can never ship a config the
  agent refuses at start.
* No Secret object is generated: the ledger DSN and the API token are the operator's to
  create (``gpuledger-ledger`` key ``url``, ``gpuledger-api-token`` key ``token``). Both are
  mounted as required volumes: the agent refuses to start without them
  (``ledger.url_file`` and ``http.api_token_file`` are read at start), and silently falling
  back to a node-local SQLite ledger would bill from rows finance never sees.
* ``enableServiceLinks: false`` on every pod: Kubernetes would otherwise inject
  ``GPULEDGER_REPORTER_SERVICE_HOST`` and friends for the ``gpuledger-reporter`` Service,
  and the agent refuses every unknown ``GPULEDGER_*`` variable.
* The monitors scrape with ``honorLabels: true``: the vLLM series carry the *served* pod's
  ``namespace`` and ``pod``; without it Prometheus would rename them ``exported_*`` in
  favour of the agent pod's own.
"""
