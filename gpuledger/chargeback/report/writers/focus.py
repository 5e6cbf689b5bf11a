"""The monthly chargeback as a FOCUS 1.2 cost-and-usage dataset.

FinOps tools and finance teams read cloud bills in FOCUS. Writing the self-hosted fleet in
the same columns puts its GPU-hours beside the cloud bill in one report, with the cloud's
price for the same hours next to the internal one. The column-by-column mapping, and how
to check a file with the official validator, are in ``docs/focus.md``.

The choices the FOCUS columns force on a self-hosted fleet, and the reasons for them:

- One row per :class:`~gpuledger.chargeback.report.model.ModelLine` (a namespace/service
  on one GPU model) over the report's period. A FOCUS row has one SKU and one unit
  price, and a service that runs on two GPU models has two prices.
- ``ContractedCost`` is what the line used, at the internal rate (capacity + energy).
  ``BilledCost`` = ``EffectiveCost`` is what the line is charged. Under the idle policies
  ``share-*`` that includes its share of idle capacity (``x_IdleShareCost``). Sharing moves
  cost and never creates any, so the rows' ``BilledCost`` add up to the report's total, and
  an idle row whose cost moved onto services is billed 0.
- ``ContractedUnitPrice`` is ``ContractedCost / PricingQuantity``, a blended $/GPU-hour.
  The internal cost has a per-hour capacity part and a per-kWh energy part, but FOCUS
  wants unit price × quantity = cost on every row. Both parts stay traceable in
  ``x_CapacityUnitPrice``/``x_CapacityCost`` and ``x_EnergyUnitPrice``/``x_EnergyCost``.
- ``ListCost`` is the counterfactual: the same GPU-hours at the cheapest hyperscaler's
  on-demand rate. That is the "list price" a FinOps reader measures a discount against.
  Idle capacity has no cloud counterpart, and a GPU class may have no hyperscaler rate.
  FOCUS still needs a list price (it cannot be null), so such rows are listed at the
  internal rate, and ``x_ListCostBasis`` says so.
- The cost columns FOCUS makes mandatory cannot be null. A line the rate card does not
  price is therefore written with 0 there, but never silently: ``x_PricingStatus`` is
  ``unpriced``, ``ChargeDescription`` starts with ``UNPRICED:``, and the ``x_`` cost
  columns are empty.
- A shared service with tenant lines (issue 14) has one row per (GPU model, tenant)
  instead, with the tenant's own figures on that GPU model (``TenantLine.models``, from
  the hour-by-hour split), so the rows of one GPU model add up to its model line and the
  rows of one tenant to its tenant line. A tenant line without them (built by hand) is
  spread over the GPU models in proportion to the model lines, figure by figure. The
  tenant goes into ``Tags`` (``gpuledger/tenant``, ``gpuledger/tenant_kind``) and
  ``x_Tenant``/``x_TenantKind``; ``SubAccount*`` stays the namespace (one sub-account
  type per file), and ``ResourceId`` the service.
- Every row's ``Tags`` carry its cost center (issue 18, ``docs/cost-centers.md``):
  ``gpuledger/cost-center``, the tenant line's own on a tenant row, ``__unassigned__``
  where nothing assigned one (idle and unattributed capacity included), so a FinOps tool
  groups the fleet by who pays the way it groups a cloud bill by its cost-allocation tag.
- Idle capacity (``kind == "idle"``) belongs to nobody: it has no ``SubAccountId``, and
  ``x_Allocation`` is ``unallocated``. Unattributed GPU time (held by a process no service
  claims) has no namespace either; its ``x_Allocation`` is ``unattributed``.
- ``InvoiceId`` is present and null. gpuledger issues no invoice, and the validator counts
  the column's absence as a failure (it is RECOMMENDED).
- Numbers keep every digit Python's ``repr`` gives and are never written as exponents.
  The validator checks unit price × quantity = cost to a relative 1e-9, which six decimals
  would break, and FOCUS forbids ``e+NN``. Every number has a decimal point, so a column
  whose values are all whole still reads as decimal, not integer.
- The strings this module writes are ASCII, because the validator holds FOCUS string
  columns to ASCII.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

from gpuledger.chargeback.report.model import (
    ModelLine,
    Month,
    Report,
    ServiceLine,
    TenantLine,
    TenantModelPart,
)
from gpuledger.chargeback.report.writers.cells import neutralize

FOCUS_VERSION = "1.2"
PROVIDER = "gpuledger (self-hosted)"
"""ProviderName, PublisherName and InvoiceIssuerName. The fleet is its own provider, and
the chargeback comes from gpuledger's report, not from a vendor."""
SERVICE_NAME = "GPU compute"
SERVICE_CATEGORY = "AI and Machine Learning"
SERVICE_SUBCATEGORY = "AI Platforms"
UNIT = "GPU-Hours"
TAG_PREFIX = "gpuledger/"
"""FOCUS wants provider-defined tag keys under a provider prefix (Tags-C-012-M)."""
SUB_ACCOUNT_TYPE = "Kubernetes Namespace"

APPLICABILITY_CRITERIA: tuple[str, ...] = (
    "ACCOUNT_NAMING_SUPPORTED",
    "BILLING_BASED_ON_PROVISIONED_RESOURCES_SUPPORTED",
    "NEGOTIATED_PRICING_SUPPORTED",
    "PUBLIC_PRICE_LIST_SUPPORTED",
    "RESOURCE_TYPE_ASSIGNMENT_SUPPORTED",
    "SUB_ACCOUNT_SUPPORTED",
    "TAGGING_SUPPORTED",
    "UNIT_PRICING_SUPPORTED",
    "USAGE_MEASUREMENT_SUPPORTED",
)
"""The FOCUS applicability criteria that hold for this dataset, as passed to the
validator's ``--applicability-criteria``. Every conditional column they call for is
written. Not claimed: availability zones, regions, capacity reservations, commitment
discounts, several account or pricing-category types, and pricing or virtual currencies
other than the billing currency."""

FOCUS_COLUMNS: tuple[str, ...] = (
    "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency",
    "BillingPeriodEnd", "BillingPeriodStart", "ChargeCategory", "ChargeClass",
    "ChargeDescription", "ChargeFrequency", "ChargePeriodEnd", "ChargePeriodStart",
    "CommitmentDiscountStatus", "ConsumedQuantity", "ConsumedUnit", "ContractedCost",
    "ContractedUnitPrice", "EffectiveCost", "InvoiceId", "InvoiceIssuerName", "ListCost",
    "ListUnitPrice", "PricingCategory", "PricingCurrency",
    "PricingCurrencyContractedUnitPrice", "PricingCurrencyEffectiveCost",
    "PricingCurrencyListUnitPrice", "PricingQuantity", "PricingUnit", "ProviderName",
    "PublisherName", "ResourceId", "ResourceName", "ResourceType", "ServiceCategory",
    "ServiceName", "ServiceSubcategory", "SkuId", "SkuMeter", "SkuPriceDetails",
    "SkuPriceId", "SubAccountId", "SubAccountName", "SubAccountType", "Tags",
)  # fmt: skip
CUSTOM_COLUMNS: tuple[str, ...] = (
    "x_Month", "x_Namespace", "x_Service", "x_GpuModel", "x_GpuClass", "x_LineKind",
    "x_Allocation", "x_BusyGpuHours", "x_EnergyKWh", "x_CapacityUnitPrice",
    "x_CapacityCost", "x_EnergyUnitPrice", "x_EnergyCost", "x_InternalCost",
    "x_IdleShareCost", "x_IdlePolicy", "x_PricingStatus", "x_ListCostBasis",
    "x_SpecialistCost", "x_SpecialistBasis", "x_Validation", "x_CounterfactualFlagged",
    "x_RateCardVersion", "x_RateCardDigest", "x_PeriodComplete", "x_Tenant", "x_TenantKind",
    "x_RentalFlag", "x_TokenApiFlag", "x_LatencyFlag",  # issue 16: a flag per figure
    "x_Cluster",  # issue 18: the cluster whose GPUs the row's time ran on
)  # fmt: skip
COLUMNS: tuple[str, ...] = FOCUS_COLUMNS + CUSTOM_COLUMNS
"""The FOCUS columns come first and the custom ones after them (ColumnHandling-A-012/013)."""

_RESOURCE_TYPE = {
    "service": "Service",
    "unattributed": "Unattributed GPU time",
    "idle": "Idle GPU capacity",
}
_ALLOCATION = {"service": "allocated", "unattributed": "unattributed", "idle": "unallocated"}


def _num(value: float) -> str:
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {value!r}")
    if value == 0:
        return "0.0"  # also turns -0.0 into 0.0
    text = format(Decimal(repr(value)), "f")
    return text if "." in text else text + ".0"


def _opt(value: float | None) -> str | None:
    return None if value is None else _num(value)


def _utc(text: str) -> str:
    """ISO 8601 ending in the ``Z`` FOCUS wants, from the report's ``+00:00`` form."""
    t = datetime.fromisoformat(text)
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ascii(text: str) -> str:
    return text.encode("ascii", "backslashreplace").decode("ascii")


def _sku(ml: ModelLine) -> str:
    """The rate card prices GPU classes. A model outside every class is its own SKU."""
    return ml.gpu_class or ml.gpu_model or "unknown GPU"


def _list_price(
    report: Report, line: ServiceLine, ml: ModelLine, contracted: float, unit: float | None
) -> tuple[float, float | None, str]:
    """ListCost, ListUnitPrice and the text saying where they come from."""
    if ml.hyperscaler is not None:
        q = ml.hyperscaler
        return (
            q.usd,
            q.usd_per_gpu_hour,
            f"cloud counterfactual: {q.provider} {q.offering} at {q.usd_per_gpu_hour} "
            f"{report.currency}/GPU-hour on demand (as of {q.as_of}; {q.source})",
        )
    if line.kind == "idle":
        why = "idle capacity has no cloud counterpart"
    else:
        where = f"class {ml.gpu_class}" if ml.gpu_class else "not on the rate card"
        why = f"no hyperscaler rate for {ml.gpu_model} ({where})"
    if ml.internal_cost_usd is None:
        return contracted, unit, f"no cloud rate: {why}; unpriced, listed at 0"
    return contracted, unit, f"no cloud rate: {why}; listed at the internal rate"


def _description(
    report: Report, line: ServiceLine, ml: ModelLine, tenant: TenantLine | None = None
) -> str:
    text = _line_description(report, line, ml)
    if tenant is not None:
        text += f"; tenant {tenant.tenant} ({tenant.kind}), its share of the service"
    return text


def _line_description(report: Report, line: ServiceLine, ml: ModelLine) -> str:
    hours = f"{ml.allocated_gpu_hours:.3f} GPU-hours"
    where = f"{ml.gpu_model} ({ml.gpu_class})" if ml.gpu_class else ml.gpu_model
    policy = f"idle policy {report.idle_policy}"
    if ml.internal_cost_usd is None:
        return (
            f"UNPRICED: {ml.gpu_model} is not on the rate card {report.rate_card.version} "
            f"(no cost-of-ownership row); {hours} of {line.label} are shown at cost 0, "
            "not charged"
        )
    if line.kind == "idle":
        text = f"Unallocated (idle) capacity on {where}: {hours}"
        if ml.idle_share_usd:
            text += f"; its cost is spread over the services on this GPU model ({policy})"
        return text
    if line.kind == "unattributed":
        text = f"Unattributed GPU time on {where}: {hours} held by processes no service claims"
    else:
        text = f"{line.label} on {where}: {hours} at the internal rate"
    if ml.idle_share_usd:
        text += f", plus a share of idle capacity ({policy})"
    return text


def _tags(line: ServiceLine, ml: ModelLine, tenant: TenantLine | None) -> str:
    tags: dict[str, str | None] = {
        "allocation": _ALLOCATION[line.kind],
        "cluster": ml.cluster,
        # who pays (issue 18): the tenant line's own, else the line's
        "cost-center": tenant.cost_center if tenant is not None else line.cost_center,
        "gpu_class": ml.gpu_class,
        "gpu_model": ml.gpu_model,
        "kind": line.kind,
        "namespace": line.namespace or None,
        "service": line.service,
        "tenant": tenant.tenant if tenant is not None else None,
        "tenant_kind": tenant.kind if tenant is not None else None,
    }
    # Keys without a value are left out (Tags-C-006-M: keys SHOULD carry values).
    return json.dumps(
        {TAG_PREFIX + k: v for k, v in tags.items() if v}, sort_keys=True, ensure_ascii=True
    )


def _row(
    report: Report, line: ServiceLine, ml: ModelLine, tenant: TenantLine | None = None
) -> dict[str, str | None]:
    hours = ml.allocated_gpu_hours
    priced = ml.internal_cost_usd is not None and ml.total_cost_usd is not None
    contracted = ml.internal_cost_usd if ml.internal_cost_usd is not None else 0.0
    billed = ml.total_cost_usd if ml.total_cost_usd is not None else 0.0
    # No GPU-hours, no price per GPU-hour: the unit prices stay null rather than break
    # unit price × quantity = cost.
    contracted_unit = contracted / hours if hours > 0 else None
    list_cost, list_unit, list_basis = _list_price(report, line, ml, contracted, contracted_unit)
    namespace = line.namespace or None
    month = Month.parse(report.month)
    spec = ml.specialist
    sku = _ascii(_sku(ml))
    details = (
        json.dumps({"x_CapacityUnitPrice": ml.capacity_usd_per_gpu_hour})
        if ml.capacity_usd_per_gpu_hour is not None
        else None
    )
    return {
        "BilledCost": _num(billed),
        "BillingAccountId": _ascii(f"gpuledger:fleet:{report.fleet}"),
        "BillingAccountName": _ascii(report.fleet),
        "BillingCurrency": report.currency,
        # The billing period is the calendar month even while it is under way; the charge
        # period is the part of it the report covers.
        "BillingPeriodEnd": _utc(month.end.isoformat()),
        "BillingPeriodStart": _utc(month.start.isoformat()),
        "ChargeCategory": "Usage",
        "ChargeClass": None,
        "ChargeDescription": _ascii(_description(report, line, ml, tenant)),
        "ChargeFrequency": "Usage-Based",
        "ChargePeriodEnd": _utc(report.period_end),
        "ChargePeriodStart": _utc(report.period_start),
        "CommitmentDiscountStatus": None,
        "ConsumedQuantity": _num(hours),
        "ConsumedUnit": UNIT,
        "ContractedCost": _num(contracted),
        "ContractedUnitPrice": _opt(contracted_unit),
        "EffectiveCost": _num(billed),
        "InvoiceId": None,
        "InvoiceIssuerName": PROVIDER,
        "ListCost": _num(list_cost),
        "ListUnitPrice": _opt(list_unit),
        "PricingCategory": "Standard",
        "PricingCurrency": report.currency,
        "PricingCurrencyContractedUnitPrice": _opt(contracted_unit),
        "PricingCurrencyEffectiveCost": _num(billed),
        "PricingCurrencyListUnitPrice": _opt(list_unit),
        "PricingQuantity": _num(hours),
        "PricingUnit": UNIT,
        "ProviderName": PROVIDER,
        "PublisherName": PROVIDER,
        "ResourceId": _ascii(line.label),
        # Idle and unattributed time have no display name of their own.
        "ResourceName": _ascii(line.service) if line.kind == "service" else None,
        "ResourceType": _RESOURCE_TYPE[line.kind],
        "ServiceCategory": SERVICE_CATEGORY,
        "ServiceName": SERVICE_NAME,
        "ServiceSubcategory": SERVICE_SUBCATEGORY,
        "SkuId": sku,
        "SkuMeter": UNIT,
        "SkuPriceDetails": details,
        "SkuPriceId": _ascii(f"{sku}@{report.rate_card.version}"),
        "SubAccountId": _ascii(namespace) if namespace else None,
        "SubAccountName": _ascii(namespace) if namespace else None,
        "SubAccountType": SUB_ACCOUNT_TYPE if namespace else None,
        "Tags": _tags(line, ml, tenant),
        "x_Month": report.month,
        "x_Namespace": line.namespace or None,
        "x_Service": line.service,
        "x_GpuModel": ml.gpu_model,
        "x_GpuClass": ml.gpu_class,
        "x_LineKind": line.kind,
        "x_Allocation": _ALLOCATION[line.kind],
        "x_BusyGpuHours": _num(ml.busy_gpu_hours),
        "x_EnergyKWh": _num(ml.energy_kwh),
        "x_CapacityUnitPrice": _opt(ml.capacity_usd_per_gpu_hour),
        "x_CapacityCost": _opt(ml.capacity_cost_usd),
        "x_EnergyUnitPrice": _opt(ml.energy_usd_per_kwh),
        "x_EnergyCost": _opt(ml.energy_cost_usd),
        "x_InternalCost": _opt(ml.internal_cost_usd),
        "x_IdleShareCost": _num(ml.idle_share_usd) if priced else None,
        "x_IdlePolicy": report.idle_policy,
        "x_PricingStatus": "priced" if priced else "unpriced",
        "x_ListCostBasis": list_basis,
        "x_SpecialistCost": _num(spec.usd) if spec is not None else None,
        "x_SpecialistBasis": (
            f"{spec.provider} {spec.offering} at {spec.usd_per_gpu_hour} "
            f"{report.currency}/GPU-hour on demand (as of {spec.as_of})"
            if spec is not None
            else None
        ),
        "x_Validation": line.validation,
        "x_CounterfactualFlagged": "true" if line.counterfactual_flagged else "false",
        "x_RateCardVersion": report.rate_card.version,
        "x_RateCardDigest": report.rate_card.digest,
        "x_PeriodComplete": "true" if report.complete else "false",
        "x_Tenant": tenant.tenant if tenant is not None else None,
        "x_TenantKind": tenant.kind if tenant is not None else None,
        "x_RentalFlag": line.rental_flag,
        "x_TokenApiFlag": line.token_api_flag,
        "x_LatencyFlag": line.latency_flag,
        "x_Cluster": ml.cluster,
    }


_SPLIT_FIGURES = (
    "allocated_gpu_hours", "busy_gpu_hours", "energy_kwh", "capacity_cost_usd",
    "energy_cost_usd", "internal_cost_usd", "idle_share_usd", "total_cost_usd",
)  # fmt: skip
"""The figures a :class:`ModelLine` and a :class:`TenantLine` both have, split per tenant."""


def _shares(tenants: tuple[TenantLine, ...], figure: str) -> list[float]:
    """Each tenant's part of ``figure`` over the service. Where the tenants' figures are
    not all known (a service with an unpriced GPU model has no tenant costs) or add up to
    0, the GPU-hours' parts stand in; with no GPU-hours either, equal parts."""
    values = [getattr(t, figure) for t in tenants]
    known = [v for v in values if v is not None]
    total = sum(known)
    if len(known) == len(values) and total != 0:
        return [v / total for v in known]
    if figure != "allocated_gpu_hours":
        return _shares(tenants, "allocated_gpu_hours")
    return [1.0 / len(tenants)] * len(tenants)


def _model_part(tenant: TenantLine, gpu_model: str) -> TenantModelPart | None:
    """The tenant's own figures on ``gpu_model`` (a built report has them for every GPU
    model the tenant used; a model it did not use is an exact zero)."""
    if not tenant.models:
        return None
    for part in tenant.models:
        if part.gpu_model == gpu_model:
            return part
    return TenantModelPart(gpu_model, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def tenant_model_lines(line: ServiceLine) -> list[tuple[TenantLine, ModelLine]]:
    """``line``'s model lines split per tenant: for each GPU model, each tenant's part of
    every figure is its part of that figure over the whole service. The parts of one GPU
    model add up to its model line; one tenant's parts add up to its tenant line."""
    tenants = line.tenants
    shares = {f: _shares(tenants, f) for f in _SPLIT_FIGURES}
    out: list[tuple[TenantLine, ModelLine]] = []
    for ml in line.models:
        for i, t in enumerate(tenants):
            part: dict[str, float | None] = {}
            exact = _model_part(t, ml.gpu_model)
            for f in _SPLIT_FIGURES:
                value = getattr(ml, f)
                if exact is not None:
                    part[f] = getattr(exact, f)  # the split's own figure on this model
                else:
                    part[f] = None if value is None else value * shares[f][i]
            hours_share = (
                exact.allocated_gpu_hours / ml.allocated_gpu_hours
                if exact is not None and ml.allocated_gpu_hours > 0
                else shares["allocated_gpu_hours"][i]
            )
            out.append((t, replace(
                ml,
                allocated_gpu_hours=part["allocated_gpu_hours"] or 0.0,
                busy_gpu_hours=part["busy_gpu_hours"] or 0.0,
                energy_kwh=part["energy_kwh"] or 0.0,
                capacity_cost_usd=part["capacity_cost_usd"],
                energy_cost_usd=part["energy_cost_usd"],
                internal_cost_usd=part["internal_cost_usd"],
                idle_share_usd=part["idle_share_usd"] or 0.0,
                total_cost_usd=part["total_cost_usd"],
                # a quote is GPU-hours × its rate: it follows the GPU-hours
                hyperscaler=(
                    replace(ml.hyperscaler, usd=ml.hyperscaler.usd * hours_share)
                    if ml.hyperscaler is not None
                    else None
                ),
                specialist=(
                    replace(ml.specialist, usd=ml.specialist.usd * hours_share)
                    if ml.specialist is not None
                    else None
                ),
            )))  # fmt: skip
    return out


def focus_rows(report: Report) -> list[dict[str, str]]:
    """One row per (namespace, service, GPU model), or per (namespace, service, GPU model,
    tenant) for a service with tenant lines, in the report's line order. Cells are the text
    the CSV holds, with ``""`` for null and formula-like names neutralized."""
    rows = []
    for line in report.lines:
        pairs: list[tuple[TenantLine | None, ModelLine]]
        if line.tenants:
            pairs = list(tenant_model_lines(line))
        else:
            pairs = [(None, ml) for ml in line.models]
        for tenant, ml in pairs:
            row = _row(report, line, ml, tenant)
            rows.append({col: neutralize(row[col] or "") for col in COLUMNS})
    return rows


def focus_csv(report: Report) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(focus_rows(report))
    return buf.getvalue()
