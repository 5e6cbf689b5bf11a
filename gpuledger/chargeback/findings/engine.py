"""The findings engine: one month of the ledger + a rate card → ranked findings.

``find`` reads the month (:mod:`.inputs`), runs every registered kind (:mod:`.kinds`),
keeps per (namespace, service, GPU class) only the largest of the alternative changes
(over-provisioned, smaller class, MIG fit: the three are ways to spend less on the same
service, and their savings do not add up), drops findings under the configured minimum
saving, and ranks by monthly savings (descending; ties by kind, then namespace, service
and GPU class), so the same ledger and card always give the same list.
"""

from __future__ import annotations

from gpuledger.chargeback.findings.config import FindingsConfig
from gpuledger.chargeback.findings.inputs import FindingsInputs, PeakMemoryReader, read_inputs
from gpuledger.chargeback.findings.kinds import ALTERNATIVES, KINDS
from gpuledger.chargeback.findings.kinds.common import Context
from gpuledger.chargeback.findings.model import FINDING_KINDS, Finding
from gpuledger.chargeback.ledger.model import LedgerStore
from gpuledger.chargeback.report.model import Month
from gpuledger.chargeback.report.ratecard import RateCard


def _rank_key(f: Finding) -> tuple[float, int, str, str, str]:
    return (-f.monthly_savings_usd, FINDING_KINDS.index(f.kind), f.namespace, f.service,
            f.gpu_model)  # fmt: skip


def find_in(
    inputs: FindingsInputs, rate_card: RateCard, config: FindingsConfig
) -> tuple[Finding, ...]:
    """Findings of ``inputs`` (already read), ranked; see the module docstring."""
    ctx = Context(inputs, config, rate_card)
    found = [f for _, finder in KINDS for f in finder(ctx)]
    best: dict[tuple[str, str, str], Finding] = {}
    kept: list[Finding] = []
    for f in sorted(found, key=_rank_key):
        if f.kind in ALTERNATIVES:
            key = (f.namespace, f.service, f.gpu_model)
            if key in best:
                continue
            best[key] = f
        kept.append(f)
    return tuple(
        f
        for f in kept
        if f.monthly_savings_usd > 0 and f.monthly_savings_usd >= config.min_savings_usd
    )


def find(
    store: LedgerStore,
    month: Month,
    rate_card: RateCard,
    config: FindingsConfig | None = None,
    *,
    peak_memory: PeakMemoryReader | None = None,
) -> tuple[Finding, ...]:
    """The findings of ``month`` in ``store`` priced with ``rate_card``, ranked by
    monthly savings (descending; ties by kind, then namespace/service)."""
    inputs = read_inputs(store, month.start, month.end, peak_memory=peak_memory)
    return find_in(inputs, rate_card, config or FindingsConfig())
