"""Budget rows: ``report.budgets:`` (inline) and ``report.budgets_file:`` (a YAML file
with a ``budgets:`` list), one monthly USD amount per row for exactly one scope:

    - {cost_center: search-team, monthly_usd: 12000}
    - {namespace: llm-prod, monthly_usd: 30000}
    - {namespace: llm-prod, service: chat, monthly_usd: 18000}

Every problem is reported with its row (``budgets.yaml row 3 (cost_center search)``),
all of them at once, so a file is fixed in one pass: a row naming no scope or two, an
amount that is not a number (``12k``, ``"12000"``, ``true``), not finite, zero or
negative, an unknown field, a name with control characters or a reserved one, and two
rows for the same scope (in one source or across the config and the file).

Whether a cost center exists is not known here: a cost center may be named only by the
labels the agent records. :func:`unknown_cost_centers` checks the rows against a
:class:`~gpuledger.chargeback.costcenters.resolve.CostCenterMap`'s names where one is
at hand (``gpuledger budgets check`` exits 2; the refresh lists them as warnings).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from gpuledger.brief import brief
from gpuledger.chargeback.costcenters.config import MAX_NAME, UNASSIGNED, clean_cost_center
from gpuledger.yamlio import safe_load

Scope = Literal["cost_center", "namespace", "service"]
SCOPES: tuple[Scope, ...] = ("cost_center", "namespace", "service")
FIELDS = ("cost_center", "namespace", "service", "monthly_usd")


class BudgetError(Exception):
    """Budget rows are invalid; ``problems`` lists ``(row, message)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{row}: {msg}" for row, msg in problems))


@dataclass(frozen=True, slots=True)
class Budget:
    """One monthly budget. ``name`` is the cost center, the namespace, or
    ``namespace/service``; ``row`` says where it was written."""

    scope: Scope
    name: str
    namespace: str  # "" for a cost center
    service: str  # "" unless scope is "service"
    monthly_usd: float
    row: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.scope, self.name)

    def as_row(self) -> dict[str, object]:
        """The row as written (what :func:`parse_rows` reads back to this budget)."""
        if self.scope == "cost_center":
            return {"cost_center": self.name, "monthly_usd": self.monthly_usd}
        where: dict[str, object] = {"namespace": self.namespace}
        if self.scope == "service":
            where["service"] = self.service
        return {**where, "monthly_usd": self.monthly_usd}


def _plain_name(value: object) -> str | None:
    """A namespace or service name usable as a label value, else None."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or len(text) > MAX_NAME or any(ord(c) < 32 or ord(c) == 127 for c in text):
        return None
    return text


def _cost_center(value: object) -> str | None:
    """A budget's cost center: a clean name, or ``__unassigned__`` (what nothing
    assigned may have its budget too)."""
    if not isinstance(value, str):
        return None
    return UNASSIGNED if value.strip() == UNASSIGNED else clean_cost_center(value)


def _amount(value: object) -> tuple[float | None, str | None]:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return (
            None,
            f"monthly_usd {brief(value)} is not a number (write it without quotes or units)",
        )
    amount = float(value)
    if not math.isfinite(amount):
        return None, f"monthly_usd {brief(value)} is not a finite number"
    if amount <= 0:
        return None, f"monthly_usd {brief(value)} must be more than 0"
    return amount, None


def _what(raw: dict[Any, Any]) -> str:
    parts = [f"{k} {brief(raw[k])}" for k in ("cost_center", "namespace", "service") if k in raw]
    return f" ({', '.join(parts)})" if parts else ""


def _row(raw: object, label: str) -> tuple[Budget | None, list[tuple[str, str]]]:
    if not isinstance(raw, dict):
        return None, [(label, f"a row is a mapping ({', '.join(FIELDS)}), not {brief(raw)}")]
    label += _what(raw)
    problems: list[str] = []
    unknown = sorted(str(k) for k in raw if k not in FIELDS)
    if unknown:
        problems.append(f"unknown field(s) {', '.join(unknown)}; a row has {', '.join(FIELDS)}")
    amount, bad = _amount(raw.get("monthly_usd")) if "monthly_usd" in raw else (None, None)
    if "monthly_usd" not in raw:
        problems.append("monthly_usd is missing")
    elif bad:
        problems.append(bad)
    budget: Budget | None = None
    if "cost_center" in raw:
        if "namespace" in raw or "service" in raw:
            problems.append("name a cost_center or a namespace (and service), not both")
        name = _cost_center(raw["cost_center"])
        if name is None:
            problems.append(
                f"cost_center {brief(raw['cost_center'])} is not a cost-center name (1-{MAX_NAME} "
                "characters, no control characters, not __reserved__ except "
                f"{UNASSIGNED})"
            )
        if name is not None and amount is not None:
            budget = Budget("cost_center", name, "", "", amount, label)
    elif "namespace" in raw:
        ns = _plain_name(raw["namespace"])
        svc = _plain_name(raw["service"]) if "service" in raw else ""
        if ns is None:
            problems.append(f"namespace {brief(raw['namespace'])} is not a namespace name")
        if svc is None:
            problems.append(f"service {brief(raw['service'])} is not a service name")
        if ns is not None and svc is not None and amount is not None:
            if svc:
                budget = Budget("service", f"{ns}/{svc}", ns, svc, amount, label)
            else:
                budget = Budget("namespace", ns, ns, "", amount, label)
    else:
        problems.append("name the scope: cost_center, or namespace (and service)")
    if problems:
        return None, [(label, p) for p in problems]
    return budget, []


def parse_rows(rows: object, source: str) -> tuple[Budget, ...]:
    """The budgets of ``rows`` (a list of mappings) from ``source``; raises
    :class:`BudgetError` naming every bad row."""
    if rows is None:
        return ()
    if not isinstance(rows, list | tuple):
        raise BudgetError([(source, f"budgets is a list of rows, not {type(rows).__name__}")])
    out: list[Budget] = []
    problems: list[tuple[str, str]] = []
    for i, raw in enumerate(rows, start=1):
        budget, bad = _row(raw, f"{source} row {i}")
        problems += bad
        if budget is not None:
            out.append(budget)
    problems += duplicates(out)
    if problems:
        raise BudgetError(problems)
    return tuple(out)


def duplicates(budgets: Iterable[Budget]) -> list[tuple[str, str]]:
    """A problem for each row whose scope an earlier row already has."""
    seen: dict[tuple[str, str], Budget] = {}
    problems: list[tuple[str, str]] = []
    for b in budgets:
        first = seen.get(b.key)
        if first is not None:
            problems.append((b.row, f"{b.scope} {b.name!r} already has a budget ({first.row})"))
        else:
            seen[b.key] = b
    return problems


def load_file(path: Path) -> tuple[Budget, ...]:
    """The budgets of a YAML file ``budgets: [rows]``; BudgetError on any problem."""
    try:
        doc = safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BudgetError([(str(path), f"cannot be read: {exc.strerror or exc}")]) from None
    except yaml.YAMLError as exc:
        raise BudgetError([(str(path), f"not valid YAML: {exc}")]) from None
    if not isinstance(doc, dict) or set(doc) - {"budgets"}:
        raise BudgetError([(str(path), "a budgets file is a mapping with one key, budgets:")])
    return parse_rows(doc.get("budgets"), path.name)


def unknown_cost_centers(budgets: Sequence[Budget], known: Iterable[str]) -> list[tuple[str, str]]:
    """A problem for each cost-center budget no static rule, tenant or recorded label
    names (its spend would be 0 for ever: a typo, or a team that is not labelled yet)."""
    names = set(known)
    return [
        (b.row, f"cost center {b.name!r} is not known (known: {', '.join(sorted(names))})")
        for b in budgets
        if b.scope == "cost_center" and b.name not in names
    ]
