"""One module per dashboard: its uid and :func:`build`, which lays out its cells.

Each dashboard reads its queries from :mod:`gpuledger.dashboards.queries` (written
only in terms of the metric schema and the recording rules) and its panels from
:mod:`gpuledger.dashboards.panels`; :mod:`gpuledger.dashboards.output` lists them all.
"""
