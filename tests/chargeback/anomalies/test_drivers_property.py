"""What docs/anomalies.md promises of the driver split, over random windows (hypothesis):
the baseline day's parts add up to the median in every partition, so the parts' changes
add up to the day's change; and a day that is the baseline's composition scaled (more of
the same) has no part standing out: its driver is the service."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from gpuledger.chargeback.anomalies.config import AnomaliesConfig
from gpuledger.chargeback.anomalies.daily import ServiceDay
from gpuledger.chargeback.anomalies.drivers import baseline_parts, drivers

MODELS = ("A", "B", "C")
money = st.floats(min_value=0.0, max_value=10_000.0, allow_nan=False, allow_subnormal=False)


@st.composite
def service_day(draw: st.DrawFn) -> ServiceDay:
    parts = {m: draw(money) for m in draw(st.sets(st.sampled_from(MODELS), min_size=1))}
    total = sum(parts.values())
    idle = draw(st.floats(min_value=0.0, max_value=1.0)) * total
    return ServiceDay(total, parts, {}, {"busy": total - idle, "idle": idle})


@settings(max_examples=200, deadline=None)
@given(
    window=st.lists(st.one_of(st.none(), service_day()), min_size=1, max_size=28),
    median=st.floats(min_value=0.01, max_value=10_000.0),
)
def test_the_baseline_parts_add_up_to_the_median(
    window: list[ServiceDay | None], median: float
) -> None:
    total = sum(d.total_usd for d in window if d is not None)
    for part in (lambda d: d.by_model, lambda d: d.by_use):
        base = baseline_parts(window, part, median)
        if total > 0:
            assert math.isclose(sum(base.values()), median, rel_tol=1e-9)
        else:
            assert all(v == 0 for v in base.values())


@settings(max_examples=200, deadline=None)
@given(
    window=st.lists(service_day(), min_size=7, max_size=28),
    scale=st.floats(min_value=0.0, max_value=10.0),
)
def test_more_of_the_same_is_driven_by_the_service(window: list[ServiceDay], scale: float) -> None:
    total = sum(d.total_usd for d in window)
    if total <= 1.0:
        return
    median = total / len(window)  # any positive median: the composition is what counts
    parts = baseline_parts(window, lambda d: d.by_model, median)
    use = baseline_parts(window, lambda d: d.by_use, median)
    day = ServiceDay(
        median * scale,
        {m: v * scale for m, v in parts.items()},
        {},
        {k: v * scale for k, v in use.items()},
    )
    got = drivers("ns/svc", day, window, median, AnomaliesConfig())
    if abs(median * scale - median) > 1e-6 * median:
        assert [d.kind for d in got] == ["service"]
