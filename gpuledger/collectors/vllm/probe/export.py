"""The probe families: per endpoint and model the probe counts, the last successful
probe's latencies and the last verdict of each validation check."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from gpuledger import schema
from gpuledger.collectors.source import Readings
from gpuledger.collectors.textformat.render import FamiliesBuilder

if TYPE_CHECKING:
    from gpuledger.collectors.vllm.probe.runner import ProbeStatus


def add_probe_status(f: FamiliesBuilder, status: ProbeStatus) -> None:
    for ep_status in status.endpoints:
        ep = ep_status.endpoint
        labels = (ep.service, ep.namespace, ep.name, ep_status.model_name)
        f.add(schema.PROBE_SUCCESS, labels, float(ep_status.successes))
        for reason, count in sorted(ep_status.failures.items()):
            f.add(schema.PROBE_FAILURES, (*labels, reason), float(count))
        for reason, count in sorted(ep_status.skipped.items()):
            f.add(schema.PROBE_SKIPPED, (*labels, reason), float(count))
        last = ep_status.last_success
        if last is not None:
            for spec, value in (
                (schema.PROBE_TTFT, last.ttft_s),
                (schema.PROBE_TPOT, last.tpot_s),
                (schema.PROBE_E2E, last.e2e_s),
                (schema.PROBE_TOKENS_PER_SECOND, last.output_tokens_per_s),
            ):
                if value is not None:
                    f.add(spec, labels, value)
        verdict = ep_status.last_verdict
        if verdict is not None:
            for check, ok in (
                ("tokens_counted", verdict.tokens_counted),
                ("ttft_histogram_moved", verdict.ttft_histogram_moved),
                ("ttft_agrees", verdict.ttft_agrees),
            ):
                if ok is not None:
                    f.add(schema.PROBE_VALIDATION, (*labels, check), 1.0 if ok else 0.0)


def export_probes(
    f: FamiliesBuilder, _snap: Readings, status: Callable[[], ProbeStatus] | None
) -> None:
    """The runner's status as of this render (``status`` is the runner's; None: no
    runner, nothing to export)."""
    if status is not None:
        add_probe_status(f, status())
