"""The Prometheus text format, written: the other half of :mod:`.parse`.

The exporter builds every sample of one snapshot once, in structured form
(:class:`MetricSamples`, through a :class:`FamiliesBuilder`), and the text is written from
it here; the OTLP export (:mod:`gpuledger.agent.otel.export`) reads the same object, so
the two can never disagree. Rendered here rather than by client_python's
``generate_latest``: that re-validates every label *name* on every sample and took
~25 ms for 400 series on the reference machine (bench/bench_agent.py), while the names
here are fixed by :mod:`gpuledger.schema` and only label *values* need escaping. Every
family comes from its :class:`~gpuledger.schema.MetricSpec`, so a name, type or label set
the schema does not define cannot be exported.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import NamedTuple

from gpuledger.cluster import DEFAULT_CLUSTER
from gpuledger.collectors.vllm.types import Histogram
from gpuledger.schema import Kind, MetricSpec

_LABEL_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n"})
_HELP_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n"})


def format_value(value: float) -> str:
    """Integers as ``N.0`` and everything else as ``repr``: what client_python writes,
    so a scrape diff against an upstream exporter shows values, not formatting."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return f"{int(value)}.0"
    return repr(value)


class Series(NamedTuple):
    """One exported series of one render: the values of ``spec.labels`` in order
    (``cluster`` and ``node`` are the :class:`MetricSamples`' own) and its value; a
    histogram carries its buckets in ``histogram`` (exactly as upstream exposed them) and
    its count in ``value``. (Not the
    parser's :class:`~gpuledger.collectors.textformat.parse.Sample`: that is one line read,
    this is one series to write.)"""

    spec: MetricSpec
    labels: tuple[str, ...]
    value: float
    histogram: Histogram | None = None


class MetricSamples:
    """Every series one snapshot exports, grouped per metric in exposition order.

    The Prometheus text is written from this (:meth:`render`) and the OTLP export reads
    it, so the two can never disagree. Immutable.
    """

    __slots__ = ("_families", "cluster", "node")

    def __init__(
        self,
        node: str,
        families: Mapping[str, tuple[MetricSpec, tuple[Series, ...]]],
        *,
        cluster: str = DEFAULT_CLUSTER,
    ) -> None:
        self.node = node
        self.cluster = cluster
        self._families = MappingProxyType(dict(families))

    def families(self) -> Iterator[tuple[MetricSpec, tuple[Series, ...]]]:
        return iter(self._families.values())

    def of(self, spec: MetricSpec) -> tuple[Series, ...]:
        entry = self._families.get(spec.name)
        return () if entry is None else entry[1]

    def labels(self, sample: Series) -> dict[str, str]:
        """``cluster`` and ``node`` plus the series' labels, as the exposition writes them."""
        own = (self.cluster, self.node, *sample.labels)
        return dict(zip(sample.spec.all_labels, own, strict=True))

    def render(self) -> bytes:
        """The Prometheus text format (0.0.4)."""
        # A device's label values recur on every one of its series: escape them once.
        label_text: dict[tuple[tuple[str, ...], tuple[str, ...]], str] = {}
        cluster, node = self.cluster, self.node
        out: list[str] = []
        for spec, samples in self._families.values():
            out.append(f"# HELP {spec.name} {spec.help.translate(_HELP_ESCAPES)}\n")
            out.append(f"# TYPE {spec.name} {spec.kind.value}\n")
            name, names = spec.name, spec.labels
            for _spec, labels, value, hist in samples:
                key = (names, labels)
                text = label_text.get(key)
                if text is None:
                    pairs = zip(spec.all_labels, (cluster, node, *labels), strict=True)
                    text = ",".join(f'{k}="{v.translate(_LABEL_ESCAPES)}"' for k, v in pairs)
                    label_text[key] = text
                if hist is None:
                    out.append(f"{name}{{{text}}} {format_value(value)}\n")
                    continue
                for le, count in hist.buckets:
                    le_text = "+Inf" if math.isinf(le) else format_value(le)
                    out.append(
                        f'{spec.name}_bucket{{{text},le="{le_text}"}} {format_value(count)}\n'
                    )
                out.append(f"{spec.name}_sum{{{text}}} {format_value(hist.sum)}\n")
                out.append(f"{spec.name}_count{{{text}}} {format_value(hist.count)}\n")
        return "".join(out).encode("utf-8")


class FamiliesBuilder:
    """Builds a :class:`MetricSamples`: series grouped per spec in the order their
    metric was first added, label arity checked on every add (a wrong label count is a
    bug in an export function, caught at its first render rather than by a scraper)."""

    def __init__(self, node: str, *, cluster: str = DEFAULT_CLUSTER) -> None:
        self.node = node
        self.cluster = cluster
        self._samples: dict[str, tuple[MetricSpec, list[Series]]] = {}

    def _list(self, spec: MetricSpec, labels: Sequence[str]) -> list[Series]:
        if len(labels) != len(spec.labels):
            raise ValueError(f"{spec.name}: {len(labels)} label values for {spec.labels}")
        entry = self._samples.get(spec.name)
        if entry is None:
            entry = self._samples[spec.name] = (spec, [])
        return entry[1]

    def add(self, spec: MetricSpec, labels: Sequence[str], value: float) -> None:
        if spec.kind is Kind.HISTOGRAM:
            raise ValueError(f"{spec.name}: use add_histogram() for histograms")
        self._list(spec, labels).append(Series(spec, tuple(labels), float(value)))

    def add_histogram(self, spec: MetricSpec, labels: Sequence[str], hist: Histogram) -> None:
        """Buckets exactly as upstream exposed them (boundaries are never re-bucketed)."""
        if spec.kind is not Kind.HISTOGRAM:
            raise ValueError(f"{spec.name}: not a histogram")
        self._list(spec, labels).append(Series(spec, tuple(labels), float(hist.count), hist))

    def build(self) -> MetricSamples:
        return MetricSamples(
            self.node,
            {name: (spec, tuple(s)) for name, (spec, s) in self._samples.items()},
            cluster=self.cluster,
        )
