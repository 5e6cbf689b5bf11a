"""What a finding is: one change to make, what it would save a month, and why we think so.

A finding is read by three audiences at once -- the report's Findings section (HTML, JSON,
CSV), ``gpuledger findings`` on a terminal, and ``gpuledger_finding_savings_usd`` in
Prometheus -- so it carries its figures as data (``evidence``) and its reasoning as one
sentence (``assumption``), never only as prose. Every figure must be reproducible from
ledger rows and rate-card rows, like the rest of the report (docs/findings.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

FindingKind = Literal[
    "over_provisioned",  # allocated far above what its busy time needs
    "smaller_gpu_class",  # its memory and busy time fit a cheaper GPU class
    "mig_fit",  # its memory and compute share fit a MIG profile of its GPU model
    "idle_capacity",  # GPUs of a model that stayed unallocated
    "zombie",  # GPU memory held with ~0 busy, or GPU time held by no pod
]
FINDING_KINDS: tuple[FindingKind, ...] = (
    "over_provisioned",
    "smaller_gpu_class",
    "mig_fit",
    "idle_capacity",
    "zombie",
)


@dataclass(frozen=True, slots=True)
class Finding:
    """One recommendation for one (namespace, service) -- or, for idle capacity, one GPU
    model of the fleet (``namespace`` and ``service`` empty) -- for one month."""

    kind: FindingKind
    namespace: str
    service: str
    gpu_model: str  # the rate card's GPU class the finding is about
    title: str  # one line, e.g. "llm-chat: 2 GPUs instead of 4"
    recommendation: str  # what to change, in one or two sentences
    current_gpus: float  # GPUs (or GPU-equivalents) held now, on the figure's basis
    recommended_gpus: float  # ... and after the change
    monthly_savings_usd: float  # >= 0: what the change saves over a month like this one
    hours_of_evidence: int  # ledger hours the finding rests on
    assumption: str  # one sentence: what must hold for the saving to be real
    # named figures (e.g. "p95_busy_gpus": 1.4, "peak_memory_gib": 31.2), the GPUs
    # concerned and the hours that decided it (unix seconds of the hour starts)
    evidence: Mapping[str, float | str] = field(default_factory=lambda: MappingProxyType({}))
    gpus: tuple[str, ...] = ()
    peak_hours: tuple[int, ...] = ()
