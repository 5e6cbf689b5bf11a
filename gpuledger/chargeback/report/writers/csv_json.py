"""The report as CSV (a line per service and a TOTAL; coverage per node; a line per tenant of
a shared service; a subtotal per cost center and a TOTAL) and as JSON.

CSV cells hold numbers with six decimals (traceable, not rounded to cents); a figure that
could not be priced is an empty cell, with the reason in the matching ``*_basis`` or
``unpriced_gpu_models`` column, never a zero.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence

from gpuledger.chargeback.report.model import Report, ServiceLine, TenantLine
from gpuledger.chargeback.report.writers.cells import neutralize

LINE_COLUMNS = (
    "month", "namespace", "service", "kind", "gpu_models",
    "allocated_gpu_hours", "busy_gpu_hours", "utilization_ratio", "energy_kwh",
    "capacity_cost_usd", "energy_cost_usd", "internal_cost_usd", "idle_share_usd",
    "total_cost_usd", "unpriced_gpu_models",
    "billable_prompt_tokens", "billable_generation_tokens",
    "probe_prompt_tokens", "probe_generation_tokens", "cost_per_1m_tokens_usd",
    "rental_hyperscaler_usd", "rental_hyperscaler_basis",
    "rental_specialist_usd", "rental_specialist_basis",
    "token_api_usd", "token_api_basis",
    "savings_vs_hyperscaler_usd", "savings_vs_specialist_usd", "savings_vs_token_api_usd",
    "p99_ttft_s", "p99_tpot_s", "p99_e2e_s",
    "probes", "probe_success_ratio", "verdicts_agree", "verdicts_disagree",
    "validation", "counterfactual_flagged", "idle_policy", "rate_card_version",
    # report schema 3 (issue 16): a flag per figure, appended so positions stay
    "token_api_flag", "token_api_flag_reason", "latency_flag", "latency_flag_reason",
    "rental_flag", "rental_flag_reason", "rental_coverage_ratio",
    # report schema 5 (issue 18): who pays, appended so positions stay
    "cost_center",
)  # fmt: skip
COVERAGE_COLUMNS = (
    "month", "node", "gpus", "observed_gpu_hours", "expected_gpu_hours", "coverage_ratio",
    "first_hour", "last_hour",
)  # fmt: skip

TENANT_COLUMNS = (
    "month", "fleet", "namespace", "service", "tenant", "tenant_kind",
    "requests", "prompt_tokens", "cached_prompt_tokens", "generation_tokens", "weighted_tokens",
    "allocated_gpu_hours", "busy_gpu_hours", "share_ratio", "energy_kwh",
    "capacity_cost_usd", "energy_cost_usd", "internal_cost_usd", "idle_share_usd",
    "total_cost_usd", "unpriced_gpu_models", "input_cost_usd", "output_cost_usd",
    "cost_per_1m_input_usd", "cost_per_1m_output_usd",
    "api_provider", "api_usd_per_1m_input", "api_usd_per_1m_output",
    "token_api_usd", "token_api_basis", "savings_vs_token_api_usd",
    "weights", "fixed_ratio_share", "headroom_policy", "idle_policy", "rate_card_version",
    "cost_center",  # issue 18: the tenant's own (tenants: map), else its service's
)  # fmt: skip
"""``chargeback-YYYY-MM-tenants.csv``: one row per (namespace, service, tenant). A
service's rows add up to its row of the main CSV; services without tenant lines have
none here."""


COST_CENTER_COLUMNS = (
    "month", "fleet", "cost_center", "lines", "allocated_gpu_hours", "busy_gpu_hours",
    "energy_kwh", "capacity_cost_usd", "energy_cost_usd", "internal_cost_usd",
    "idle_share_usd", "total_cost_usd", "unpriced_gpu_hours", "share_ratio",
    "idle_policy", "rate_card_version",
)  # fmt: skip
"""``chargeback-YYYY-MM-cost-centers.csv`` (issue 18): one row per cost center, costliest
first, ``__unassigned__`` last, then ``TOTAL``; the rows add up to it (docs/cost-centers.md).
``lines`` names the lines each pays for, ``;``-separated."""


def cell(value: object) -> str:
    """A CSV cell: floats with six decimals, None empty, booleans ``true``/``false``, text
    that a spreadsheet would run as a formula neutralized."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6f}"
    if isinstance(value, tuple | list):
        return neutralize(";".join(str(v) for v in value))
    return neutralize(str(value))


def _line_row(report: Report, line: ServiceLine) -> list[object]:
    return [
        report.month, line.namespace, line.service, line.kind, line.gpu_models,
        line.allocated_gpu_hours, line.busy_gpu_hours, line.utilization_ratio, line.energy_kwh,
        line.capacity_cost_usd, line.energy_cost_usd, line.internal_cost_usd,
        line.idle_share_usd, line.total_cost_usd, line.unpriced_gpu_models,
        line.prompt_tokens, line.generation_tokens,
        line.probe_prompt_tokens, line.probe_generation_tokens, line.cost_per_1m_tokens_usd,
        line.rental_hyperscaler_usd, line.rental_hyperscaler_basis,
        line.rental_specialist_usd, line.rental_specialist_basis,
        line.token_api_usd, line.token_api_basis,
        line.savings_vs_hyperscaler_usd, line.savings_vs_specialist_usd,
        line.savings_vs_token_api_usd,
        line.p99_ttft_s, line.p99_tpot_s, line.p99_e2e_s,
        line.probes, line.probe_success_ratio, line.verdicts_agree, line.verdicts_disagree,
        line.validation, line.counterfactual_flagged, report.idle_policy, report.rate_card.version,
        line.token_api_flag, line.token_api_flag_reason, line.latency_flag,
        line.latency_flag_reason, line.rental_flag, line.rental_flag_reason,
        line.rental_coverage_ratio, line.cost_center,
    ]  # fmt: skip


def _total_row(report: Report) -> list[object]:
    t = report.totals
    row: dict[str, object] = {
        "month": report.month,
        "service": "TOTAL",
        "kind": "total",
        "allocated_gpu_hours": t.allocated_gpu_hours,
        "busy_gpu_hours": t.busy_gpu_hours,
        "utilization_ratio": t.utilization_ratio,
        "energy_kwh": t.energy_kwh,
        "capacity_cost_usd": t.capacity_cost_usd,
        "energy_cost_usd": t.energy_cost_usd,
        "internal_cost_usd": t.internal_cost_usd,
        "total_cost_usd": t.total_cost_usd,
        "unpriced_gpu_models": tuple(report.unpriced_gpu_models),
        "billable_prompt_tokens": t.prompt_tokens,
        "billable_generation_tokens": t.generation_tokens,
        "rental_hyperscaler_usd": t.rental_hyperscaler_usd,
        "rental_hyperscaler_basis": "sum over the lines that have one",
        "rental_specialist_usd": t.rental_specialist_usd,
        "rental_specialist_basis": "sum over the lines that have one",
        "token_api_usd": t.token_api_usd,
        "token_api_basis": "sum over the lines that have one",
        "idle_policy": report.idle_policy,
        "rate_card_version": report.rate_card.version,
    }
    return [row.get(c) for c in LINE_COLUMNS]


def _csv(rows: Iterable[Sequence[object]], header: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow([cell(v) for v in row])
    return buf.getvalue()


def lines_csv(report: Report) -> str:
    """A row per (namespace, service), the idle and unattributed lines, then ``TOTAL``."""
    rows = [_line_row(report, line) for line in report.lines]
    rows.append(_total_row(report))
    return _csv(rows, LINE_COLUMNS)


def coverage_csv(report: Report) -> str:
    rows = [
        [report.month, c.node, c.gpus, c.observed_gpu_hours, c.expected_gpu_hours,
         c.coverage_ratio, c.first_hour, c.last_hour]
        for c in report.coverage
    ]  # fmt: skip
    return _csv(rows, COVERAGE_COLUMNS)


def _tenant_row(report: Report, line: ServiceLine, t: TenantLine) -> list[object]:
    return [
        report.month, report.fleet, line.namespace, line.service, t.tenant, t.kind,
        t.requests, t.prompt_tokens, t.cached_prompt_tokens, t.generation_tokens,
        t.weighted_tokens, t.allocated_gpu_hours, t.busy_gpu_hours, t.share_ratio, t.energy_kwh,
        t.capacity_cost_usd, t.energy_cost_usd, t.internal_cost_usd, t.idle_share_usd,
        t.total_cost_usd, line.unpriced_gpu_models, t.input_cost_usd, t.output_cost_usd,
        t.cost_per_1m_input_usd, t.cost_per_1m_output_usd,
        t.api_provider, t.api_usd_per_1m_input, t.api_usd_per_1m_output,
        t.token_api_usd, t.token_api_basis, t.savings_vs_token_api_usd,
        t.weights, t.fixed_ratio_share, report.headroom_policy, report.idle_policy,
        report.rate_card.version, t.cost_center,
    ]  # fmt: skip


def tenants_csv(report: Report) -> str:
    """A row per tenant line of every shared service, in the report's line order; only the
    header when no service has tenant lines."""
    rows = [_tenant_row(report, line, t) for line in report.lines for t in line.tenants]
    return _csv(rows, TENANT_COLUMNS)


def cost_centers_csv(report: Report) -> str:
    """A row per cost center and ``TOTAL`` (the report's totals); only the header when no
    cost center was assigned (a report built without a map)."""
    rows: list[list[object]] = [
        [report.month, report.fleet, c.cost_center, c.lines, c.allocated_gpu_hours,
         c.busy_gpu_hours, c.energy_kwh, c.capacity_cost_usd, c.energy_cost_usd,
         c.internal_cost_usd, c.idle_share_usd, c.total_cost_usd, c.unpriced_gpu_hours,
         c.share_ratio, report.idle_policy, report.rate_card.version]
        for c in report.cost_centers
    ]  # fmt: skip
    if rows:
        t = report.totals
        rows.append(
            [report.month, report.fleet, "TOTAL", (), t.allocated_gpu_hours, t.busy_gpu_hours,
             t.energy_kwh, t.capacity_cost_usd, t.energy_cost_usd, t.internal_cost_usd,
             sum(c.idle_share_usd for c in report.cost_centers), t.total_cost_usd,
             t.unpriced_gpu_hours, 1.0 if t.total_cost_usd else None, report.idle_policy,
             report.rate_card.version]
        )  # fmt: skip
    return _csv(rows, COST_CENTER_COLUMNS)


def report_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=False, ensure_ascii=False) + "\n"
