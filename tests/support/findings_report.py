"""Hand-built findings for the report's Findings section, ``gpuledger findings`` and the
reporter's metrics -- built here, not by the findings engine, so the writers are tested
against values stated once, by hand. Names include hostile ones (script, attribute break,
spreadsheet formula): they come from the cluster.

``RANKED`` is the order the report must show them in (largest saving first);
``UNRANKED`` the same findings shuffled, with a tie, for the ranking tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import MappingProxyType

from gpuledger.chargeback.findings.model import Finding
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.chargeback.report.model import Month
from gpuledger.chargeback.report.ratecard import RateCard
from tests.support.report_fixtures import OCT

EVIL_SCRIPT = "<script>alert(1)</script>"
EVIL_ATTR = '"><img src=x onerror=alert(2)>'
EVIL_FORMULA = '=HYPERLINK("http://x.example/","y")'
H100 = "NVIDIA H100 80GB HBM3"
A100 = "NVIDIA A100-SXM4-80GB"

OVER = Finding(
    kind="over_provisioned", namespace="prod", service="chat", gpu_model=H100,
    title="prod/chat: 2 GPUs instead of 4",
    recommendation="Run prod/chat on 2 replicas instead of 4.",
    current_gpus=4.0, recommended_gpus=2.0, monthly_savings_usd=3600.5, hours_of_evidence=744,
    assumption="The next month's load is like this one's p95.",
    evidence=MappingProxyType({"p95_busy_gpus": 1.4, "target_utilization": 0.7,
                               "usd_per_gpu_hour": 2.42}),
    gpus=("GPU-h1", "GPU-h2"), peak_hours=(OCT + 13 * 3600, OCT + 37 * 3600),
)  # fmt: skip
ZOMBIE = Finding(
    kind="zombie", namespace=EVIL_ATTR, service=EVIL_SCRIPT, gpu_model=H100,
    title=f"{EVIL_SCRIPT} holds GPU memory and does no work",
    recommendation=f"Stop the process of {EVIL_SCRIPT}; its pod no longer exists.",
    current_gpus=1.0, recommended_gpus=0.0, monthly_savings_usd=1200.25, hours_of_evidence=496,
    assumption="Nothing needs the memory it holds.",
    evidence=MappingProxyType({"held_gpu_hours": 496.0, "busy_ratio": 0.0,
                               "pod": "gone-pod-7"}),
    gpus=("GPU-u1",), peak_hours=(),
)  # fmt: skip
IDLE = Finding(
    kind="idle_capacity", namespace="", service="", gpu_model=A100,
    title="3 A100 GPUs, at most 1 used",
    recommendation="Release 2 A100 GPUs.",
    current_gpus=3.0, recommended_gpus=1.0, monthly_savings_usd=800.0, hours_of_evidence=744,
    assumption="The fleet's p95 of concurrently used A100s stays at 1.",
    evidence=MappingProxyType({"p95_used_gpus": 1.0}),
    gpus=("GPU-a1", "GPU-a2", "GPU-a3"), peak_hours=(OCT + 100 * 3600,),
)  # fmt: skip
MIG = Finding(
    kind="mig_fit", namespace="search", service=EVIL_FORMULA, gpu_model=H100,
    title="fits a 3g.40gb MIG slice",
    recommendation="Move it to a 3g.40gb MIG instance.",
    current_gpus=1.0, recommended_gpus=0.43, monthly_savings_usd=90.125, hours_of_evidence=700,
    assumption="Its peak memory stays under 40 GB.",
    evidence=MappingProxyType({"peak_memory_gib": 31.2, "profile": "3g.40gb"}),
    gpus=("GPU-h2",), peak_hours=(OCT,),
)  # fmt: skip
TIE = Finding(
    kind="smaller_gpu_class", namespace="lab", service="train", gpu_model=H100,
    title="lab/train fits an L40S", recommendation="Run lab/train on an L40S.",
    current_gpus=1.0, recommended_gpus=1.0, monthly_savings_usd=800.0, hours_of_evidence=744,
    assumption="An L40S does 0.45 of an H100's work for this model.",
)  # fmt: skip

RANKED = (OVER, ZOMBIE, IDLE, MIG)
TOTAL_USD = 3600.5 + 1200.25 + 800.0 + 90.125  # 5690.875
UNRANKED = (MIG, IDLE, OVER, TIE, ZOMBIE)  # ranked: OVER, ZOMBIE, IDLE, TIE (tie kept), MIG


@dataclass
class Provider:
    """A findings provider returning ``found``, recording what it was asked."""

    found: tuple[Finding, ...] = RANKED
    calls: list[tuple[AuditableLedgerStore, Month, RateCard]] = field(default_factory=list)

    def __call__(
        self, store: AuditableLedgerStore, month: Month, card: RateCard
    ) -> tuple[Finding, ...]:
        self.calls.append((store, month, card))
        return self.found


def wired(provider: Provider) -> Callable[[object], Provider]:
    """A stand-in for ``monthly.findings_provider``: every run gets ``provider``."""
    return lambda _cfg: provider
