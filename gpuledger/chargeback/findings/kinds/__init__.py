"""The kinds of finding, one module each; :data:`KINDS` is the registry the engine loops
over (adding a kind is one module and one line here)."""

from __future__ import annotations

from collections.abc import Callable

from gpuledger.chargeback.findings.kinds import (
    idle_capacity,
    mig_fit,
    over_provisioned,
    smaller_gpu_class,
    zombie,
)
from gpuledger.chargeback.findings.kinds.common import Context
from gpuledger.chargeback.findings.model import Finding, FindingKind

KindFinder = Callable[[Context], list[Finding]]

KINDS: tuple[tuple[FindingKind, KindFinder], ...] = (
    ("over_provisioned", over_provisioned.find),
    ("smaller_gpu_class", smaller_gpu_class.find),
    ("mig_fit", mig_fit.find),
    ("idle_capacity", idle_capacity.find),
    ("zombie", zombie.find),
)

ALTERNATIVES: frozenset[FindingKind] = frozenset(
    {"over_provisioned", "smaller_gpu_class", "mig_fit"}
)
"""Kinds that are alternative changes to one service: only the largest saving is kept."""
