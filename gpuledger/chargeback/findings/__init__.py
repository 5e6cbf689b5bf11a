"""Findings: what to change in the fleet, and what each change would save (issue 17).

``find(store, month, rate_card, config)`` → ranked :class:`Finding` tuples; the formulas,
defaults and catalog sources are in ``docs/findings.md``.
"""

from gpuledger.chargeback.findings.config import FindingsConfig
from gpuledger.chargeback.findings.engine import find, find_in
from gpuledger.chargeback.findings.model import FINDING_KINDS, Finding, FindingKind

__all__ = ["FINDING_KINDS", "Finding", "FindingKind", "FindingsConfig", "find", "find_in"]
