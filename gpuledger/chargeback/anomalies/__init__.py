"""Spend anomalies: each service's daily cost against its own trailing baseline (median
and MAD), and what drove each change (``docs/anomalies.md``).

``config.py`` (``report.anomalies:``), ``model.py`` (what an anomaly is), ``stats.py``
(median, MAD, the robust z), ``daily.py`` (the ledger's days priced as the bill prices
them), ``drivers.py`` (a change split by GPU model, tenant and idle), ``detect.py`` (the
days scored, the anomalies named). Nothing is imported here, so the report's model can
import ``model.py`` without pulling in the reads.
"""
