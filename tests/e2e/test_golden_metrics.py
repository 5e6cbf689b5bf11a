"""The exported surface of a seeded simulated node equals the committed golden file.

A failure here is not necessarily a bug: it says the text Prometheus scrapes changed.
If the change is intended, ``make golden`` rewrites the file and the diff goes into
review with the change that caused it. The run-duration series is the one value the
generator normalises (it is measured on the real monotonic clock); the comparison uses
the generator's own output, so both sides are normalised the same way.
"""

from __future__ import annotations

import difflib

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gpuledger import schema
from tests.support.golden import DURATION_PLACEHOLDER, GOLDEN_PATH, generate, normalise

HINT = "run make golden and review the diff"


def test_metrics_match_the_golden_file() -> None:
    expected = GOLDEN_PATH.read_text(encoding="utf-8")
    actual = generate()
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                fromfile=f"{GOLDEN_PATH.name} (committed)",
                tofile=f"{GOLDEN_PATH.name} (generated now)",
            )
        )
        pytest.fail(f"/metrics differs from the golden file ({HINT}):\n{diff}", pytrace=False)


def test_the_golden_file_is_valid_exposition_from_the_schema() -> None:
    """The committed file parses as the Prometheus text format and names only metrics
    the schema defines, so a hand edit of the golden file cannot slip through."""
    text = GOLDEN_PATH.read_text(encoding="utf-8")
    names = {s.name for family in text_string_to_metric_families(text) for s in family.samples}
    assert names, "the golden file has no samples"
    unknown = names - schema.all_series_names()
    assert not unknown, f"series the schema does not define: {sorted(unknown)}"


def test_normalise_touches_only_the_duration_series() -> None:
    name = schema.COLLECTOR_DURATION.name
    text = (
        f'{name}{{node="n",collector="nvml"}} 0.0123\n'
        'gpuledger_collector_up{node="n",collector="nvml"} 1.0\n'
    )
    assert normalise(text) == (
        f'{name}{{node="n",collector="nvml"}} {DURATION_PLACEHOLDER}\n'
        'gpuledger_collector_up{node="n",collector="nvml"} 1.0\n'
    )
