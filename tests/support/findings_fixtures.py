"""Hand-stated months for the findings tests: a small rate card whose capacity rates are
round numbers, and builders of hourly series (no code under test computes anything here).

Card: capex / (amortization years x 8,760 h) with no residual value, colocation or
overhead, so the capacity rate is exactly capex / 35,040 per GPU-hour:
H100-80GB 70,080 → $2.00, L4 8,760 → $0.25. A10G has a rental row only ($0.50).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gpuledger.chargeback.findings.inputs import (
    FindingsInputs,
    ModelHour,
    ModelUsage,
    ServiceHour,
    ServiceUsage,
)
from gpuledger.chargeback.report.model import Month
from gpuledger.chargeback.report.ratecard import RateCard, parse_rate_card

H100 = "NVIDIA H100 80GB HBM3"
L4 = "NVIDIA L4"
H100_RATE = 2.00
L4_RATE = 0.25
GIB = 1 << 30
MONTH = Month(2026, 11)  # 30 days
HOURS = 720
START = int(MONTH.start.timestamp())

CARD_YAML = """
version: findings-test
gpu_models:
  - {name: H100-80GB, match: ["NVIDIA H100*"]}
  - {name: L4, match: ["NVIDIA L4"]}
  - {name: A10G, match: ["NVIDIA A10G"]}
gpu_rental:
  - {gpu: A10G, provider: X, provider_kind: hyperscaler, offering: g5, usd_per_gpu_hour: 0.5,
     source: test row, as_of: 2026-11-01}
tco:
  - {gpu: H100-80GB, capex_usd_per_gpu: 70080, amortization_years: 4, power_kw_per_gpu: 1,
     electricity_usd_per_kwh: 0, pue: 1, colocation_usd_per_kw_month: 0, source: test row,
     as_of: 2026-11-01}
  - {gpu: L4, capex_usd_per_gpu: 8760, amortization_years: 4, power_kw_per_gpu: 0.1,
     electricity_usd_per_kwh: 0, pue: 1, colocation_usd_per_kw_month: 0, source: test row,
     as_of: 2026-11-01}
gpu_classes:
  - {name: H100-80GB, memory_gib: 80, relative_throughput: 1.0, basis: reference,
     source: test row, as_of: 2026-11-01}
  - {name: L4, memory_gib: 24, relative_throughput: 0.25, basis: test ratio,
     source: test row, as_of: 2026-11-01}
"""


def card(without_l4_class: bool = False) -> RateCard:
    text = CARD_YAML
    if without_l4_class:
        text = text.replace(
            "  - {name: L4, memory_gib: 24, relative_throughput: 0.25, basis: test ratio,\n"
            "     source: test row, as_of: 2026-11-01}\n",
            "",
        )
    return parse_rate_card(text, "findings-test")


def hour(i: int) -> int:
    return START + 3600 * i


def series(
    allocated_gpus: Callable[[int], float],
    busy_gpus: Callable[[int], float],
    peak_gib: Callable[[int], float | None] = lambda i: None,
    hours: Sequence[int] = range(HOURS),
) -> tuple[ServiceHour, ...]:
    out = []
    for i in hours:
        peak = peak_gib(i)
        out.append(
            ServiceHour(
                hour(i),
                allocated_gpus(i) * 3600.0,
                busy_gpus(i) * 3600.0,
                None if peak is None else peak * GIB,
            )
        )
    return tuple(out)


def service(name: str, hours: tuple[ServiceHour, ...], model: str = H100) -> ServiceUsage:
    return ServiceUsage("team", name, model, hours, ("node-a/GPU-0",))


def inputs(
    services: Sequence[ServiceUsage] = (),
    models: Sequence[ModelUsage] = (),
) -> FindingsInputs:
    return FindingsInputs(START, START + HOURS * 3600, tuple(services), tuple(models))


def fleet(
    observed_gpus: Callable[[int], float], used_gpus: Callable[[int], float], model: str = H100
) -> ModelUsage:
    return ModelUsage(
        model,
        tuple(
            ModelHour(
                hour(i), observed_gpus(i) * 3600.0, (observed_gpus(i) - used_gpus(i)) * 3600.0
            )
            for i in range(HOURS)
        ),
    )
