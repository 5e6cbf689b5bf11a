"""Prometheus alert and recording rules as code.

:mod:`gpuledger.alerts.rules` builds them from :mod:`gpuledger.schema` and the
``alerts:`` config section (:class:`gpuledger.alerts.config.AlertsConfig`);
:data:`gpuledger.alerts.rules.RECORDED` names every recording rule (dashboards import it);
:func:`gpuledger.alerts.promql.metric_names` lists the metric names a PromQL query uses.
"""
