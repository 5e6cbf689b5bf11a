"""A vLLM page's layout, learnt once, so that later scrapes read only their values.

A busy engine's page changes nearly every value between two scrapes (``bench/vllm_busy.py``:
864 of the 978 lines the collector reads) and nothing else: the same families in the same
order, the same label sets, the same ``# HELP``/``# TYPE`` lines. Parsing and normalizing
such a page again costs ~3.5 µs a line (``docs/performance.md``, "vLLM scrape and
normalize"). A :class:`PageLayout` is what one full parse and normalization of a page
established about every page that differs from it **only in its sample values**: which
line carries which value of which :class:`VllmSeries` field. :meth:`PageLayout.read` checks
that a new page is such a page -- same line count, every comment line byte-for-byte equal,
every sample line starting with the same bytes up to its value -- and then reads the values
with ``float`` (C calls over the whole page, no Python work per line), or answers None and
the page takes the full path.

Why the answer is the full path's answer, exactly:

- the page differs from the learnt one only in value tokens, and each token is made only
  of ``0-9 . e E + -`` and read by ``float``: on that alphabet ``float`` accepts exactly the
  exposition grammar's decimal values (the parser's own fast path relies on the same fact),
  so the strict parser would have read every line, and read the same value; anything else
  (``NaN``, ``+Inf``, a timestamp, a blank or a tab before the value) is not read here;
- how the parser groups samples and how normalization picks among them (newest spelling,
  router series, histogram runs) depends on names and label sets only, which are the
  learnt page's. The layout is learnt by running the real parser and the real
  normalization on the learnt page with every value replaced by its line's position
  (:class:`_Ref`), so what it records is what that code did, not a second implementation of
  it; a layout is kept only if reading the learnt page itself through it gives back the
  series the full path gave;
- what normalization decides by value is excluded: ``NaN`` (skipped) cannot be written in
  the alphabet, and pages with per-process gauges (a ``pid`` label: multiprocess pages,
  where agreeing values are read and disagreeing ones are not) are never learnt.

Bounded: a layout holds the learnt page's comment lines and sample-line prefixes (about the
size of the selected page, ~110 KB for a 2,000-line vLLM page) and is learnt only from a
page that passed the parser's byte and sample caps and has at most
:data:`MAX_LEARNT_SAMPLES` sample lines.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from types import MappingProxyType
from typing import Any

from gpuledger.collectors.textformat.parse import (
    NUMBER_CHARS,
    ExpositionError,
    MetricFamily,
    Sample,
    parse,
)
from gpuledger.collectors.vllm.types import Histogram, VllmSeries

__all__ = ["MAX_LEARNT_SAMPLES", "LayoutState", "PageLayout", "learn"]

# what float() reads exactly as the exposition grammar does, without the blanks
_DIGITS = NUMBER_CHARS.replace(" ", "").encode()
_PID_LABEL = "pid"
# Pages with more sample lines (of the families the collector reads) are not learnt: the
# largest real vLLM page has ~10,600 samples in all (8 engines x 4 model names,
# docs/upstream-prometheus-text.md), of which about half are read; learning costs about
# three full parses, which past this size would exceed the parser's 2 s bound on a page
# within the caps.
MAX_LEARNT_SAMPLES = 32_768
_HEAD, _TOKEN = itemgetter(0), itemgetter(2)  # of a line's rpartition at its last blank

# The normalization a layout records: parsed families -> (series, version hint).
Normalize = Callable[[Mapping[str, MetricFamily]], tuple[tuple[VllmSeries, ...], str]]
_Pick = Callable[[Sequence[bytes]], tuple[bytes, ...]]


class _Ref(float):
    """A value that stands for the sample lines it came from (by position among the
    page's sample lines). Adding refs (how normalization totals ``request_success`` over
    finish reasons split across lines) keeps every position, in order."""

    __slots__ = ("indices",)
    indices: tuple[int, ...]

    @staticmethod
    def of(indices: tuple[int, ...]) -> _Ref:
        ref = _Ref(indices[0])
        ref.indices = indices
        return ref

    def __add__(self, other: object) -> _Ref:
        if not isinstance(other, _Ref):
            raise TypeError("a layout records sums of sample values only")
        return _Ref.of(self.indices + other.indices)

    def __radd__(self, other: object) -> _Ref:
        # normalization starts a total at 0.0; the layout's reader folds from 0.0 too
        if type(other) is not float or other != 0.0:
            raise TypeError("a layout records sums of sample values only")
        return _Ref.of(self.indices)


class _Unlearnable(Exception):
    """Normalization did something with a value that a layout cannot replay."""


def _one(value: object) -> int:
    if not isinstance(value, _Ref) or len(value.indices) != 1:
        raise _Unlearnable
    return value.indices[0]


@dataclass(frozen=True, slots=True)
class _HistogramSlots:
    field: str
    bounds: tuple[float, ...]
    buckets: Callable[[Sequence[float]], tuple[float, ...]]
    sum: int
    count: int


@dataclass(frozen=True, slots=True)
class _SeriesSlots:
    """Where each value of one :class:`VllmSeries` sits among the page's sample values."""

    model_name: str
    engine: str
    scalar_fields: tuple[str, ...]
    scalars: Callable[[Sequence[float]], tuple[float, ...]]
    success: tuple[tuple[str, tuple[int, ...]], ...]
    histograms: tuple[_HistogramSlots, ...]

    @staticmethod
    def of(series: VllmSeries) -> _SeriesSlots:
        scalars: dict[str, int] = {}
        histograms: list[_HistogramSlots] = []
        for name in VllmSeries.__dataclass_fields__:
            value = getattr(series, name)
            if name in ("model_name", "engine", "request_success") or value is None:
                continue
            if isinstance(value, Histogram):
                bounds = tuple(le for le, _ in value.buckets)
                pick = _picker([_one(count) for _, count in value.buckets])
                histograms.append(
                    _HistogramSlots(name, bounds, pick, _one(value.sum), _one(value.count))
                )
            else:
                scalars[name] = _one(value)
        success = []
        for reason, total in series.request_success.items():
            if not isinstance(total, _Ref):
                raise _Unlearnable
            success.append((reason, total.indices))
        return _SeriesSlots(
            series.model_name,
            series.engine,
            tuple(scalars),
            _picker(list(scalars.values())),
            tuple(success),
            tuple(histograms),
        )

    def fill(self, values: Sequence[float]) -> VllmSeries:
        fields: dict[str, Any] = dict(zip(self.scalar_fields, self.scalars(values), strict=False))
        for h in self.histograms:  # bounds and picked counts have one length by construction
            buckets = tuple(zip(h.bounds, h.buckets(values), strict=False))
            fields[h.field] = Histogram(buckets, values[h.sum], values[h.count])
        success: dict[str, float] = {}
        for reason, indices in self.success:
            total = 0.0  # the same fold, in the same order, as normalization's
            for i in indices:
                total += values[i]
            success[reason] = total
        return VllmSeries(
            model_name=self.model_name,
            engine=self.engine,
            request_success=MappingProxyType(success),
            **fields,
        )


def _picker(indices: Sequence[int]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """``itemgetter`` that always answers a tuple (it answers a bare item for one index)."""
    if not indices:
        return lambda _: ()
    if len(indices) == 1:
        only = indices[0]
        return lambda items: (items[only],)
    return itemgetter(*indices)


@dataclass(frozen=True, slots=True)
class PageLayout:
    """See the module docstring. Immutable; :meth:`read` may run in any thread."""

    line_count: int
    comments: tuple[bytes, ...]  # every line that is not a sample line, as it was
    pick_comments: _Pick
    pick_samples: _Pick
    heads: list[bytes]  # each sample line up to the blank before its value
    series: tuple[_SeriesSlots, ...]
    version_hint: str

    def read(self, page: bytes) -> tuple[VllmSeries, ...] | None:
        """The page's series, or None where the page is not this layout with other
        values (then the caller parses it)."""
        lines = page.split(b"\n")
        if len(lines) != self.line_count or self.pick_comments(lines) != self.comments:
            return None
        parts = list(map(bytes.rpartition, self.pick_samples(lines), repeat(b" ")))
        if list(map(_HEAD, parts)) != self.heads:
            return None
        tokens = list(map(_TOKEN, parts))
        if b"".join(tokens).translate(None, _DIGITS):
            return None  # NaN, Inf, a timestamp, a blank...: the parser's business
        try:
            values = list(map(float, tokens))
        except ValueError:  # an empty token, "1e", "1.2.3"...
            return None
        return tuple(s.fill(values) for s in self.series)


def learn(
    page: bytes,
    expected: tuple[VllmSeries, ...],
    normalize: Normalize,
    *,
    max_samples: int,
) -> PageLayout | None:
    """The layout of ``page`` (already parsed and normalized to ``expected`` by the full
    path), or None where the page has none a reader could trust: a sample line whose
    value is not a plain decimal after a single blank, a timestamp, a ``pid`` label, or
    anything the check below refuses."""
    lines = page.split(b"\n")
    sample_at = [i for i, line in enumerate(lines) if line and not line.startswith(b"#")]
    if len(sample_at) > MAX_LEARNT_SAMPLES:
        return None
    comment_at = [i for i, line in enumerate(lines) if not line or line.startswith(b"#")]
    heads: list[bytes] = []
    tokens: list[bytes] = []
    for i in sample_at:
        head, blank, token = lines[i].rpartition(b" ")
        if not blank or not token or token.translate(None, _DIGITS):
            return None
        heads.append(head)
        tokens.append(token)
    # The same page with each value replaced by its sample line's position: what the
    # parser and normalization do with position k is what they do with that line's value.
    numbered = list(lines)
    for k, i in enumerate(sample_at):
        numbered[i] = b"%s %d" % (heads[k], k)
    text = b"\n".join(numbered)
    try:
        families = parse(text, max_bytes=len(text) + 1, max_samples=max_samples)
    except ExpositionError:
        return None
    refs = _as_refs(families, len(sample_at))
    if refs is None:
        return None
    try:
        series, hint = normalize(refs)
        slots = tuple(_SeriesSlots.of(s) for s in series)
        values = [float(t) for t in tokens]
    except (_Unlearnable, TypeError, ValueError):
        return None
    if tuple(s.fill(values) for s in slots) != expected:
        return None  # never trust a layout that does not reproduce its own page
    return PageLayout(
        line_count=len(lines),
        comments=tuple(lines[i] for i in comment_at),
        pick_comments=_picker(comment_at),
        pick_samples=_picker(sample_at),
        heads=heads,
        series=slots,
        version_hint=hint,
    )


def _as_refs(families: Mapping[str, MetricFamily], lines: int) -> dict[str, MetricFamily] | None:
    """The families with each value turned into a :class:`_Ref`, or None unless every
    sample line is exactly one sample (no timestamp, nothing after ``# EOF``) and no
    sample carries a ``pid`` label."""
    seen: set[float] = set()
    out: dict[str, MetricFamily] = {}
    for name, fam in families.items():
        samples: list[Sample] = []
        for s in fam.samples:
            if s.timestamp_ms is not None or _PID_LABEL in s.labels or s.value in seen:
                return None
            seen.add(s.value)
            samples.append(Sample(s.name, s.labels, _Ref.of((int(s.value),))))
        out[name] = MetricFamily(fam.name, fam.type, fam.help, samples)
    if seen != set(map(float, range(lines))):
        return None
    return out


_MAX_WAIT = 64  # pages: the longest an endpoint goes between two attempts to learn


class LayoutState:
    """One endpoint's layout and when to learn the next one (one scrape at a time).

    A page that did not match goes the full path, and its layout is learnt from it --
    unless learning has been failing: an unlearnable page (a multiprocess page, NaN
    values) or a layout that never served a page doubles the number of pages to wait
    before the next attempt (1, 2, 4 ... 64), so that a page whose layout keeps changing
    costs about one extra parse every 64 scrapes, not one per scrape. A layout that
    served pages and then stopped matching (a model loaded, a new finish reason) is
    replaced by the next page's at once.
    """

    __slots__ = ("hits", "layout", "wait", "waited")

    def __init__(self) -> None:
        self.layout: PageLayout | None = None
        self.hits = 0  # pages the current layout has read
        self.wait = 0  # pages to leave unlearnt after a failure
        self.waited = 0

    def read(self, page: bytes) -> tuple[tuple[VllmSeries, ...], str] | None:
        """The page's series and version hint if it has the learnt layout, else None."""
        layout = self.layout
        if layout is None:
            return None
        series = layout.read(page)
        if series is None:
            return None
        self.hits += 1
        return series, layout.version_hint

    def missed(
        self,
        page: bytes,
        series: tuple[VllmSeries, ...],
        normalize: Normalize,
        *,
        max_samples: int,
    ) -> None:
        """``page`` went the full path and gave ``series`` (an engine page, every value
        measured): learn its layout, or count down to the next attempt."""
        if self.layout is not None:
            served, self.layout = self.hits, None
            if served:
                self.wait = self.waited = 0
            else:
                self._back_off()
        if self.waited < self.wait:
            self.waited += 1
            return
        self.layout = learn(page, series, normalize, max_samples=max_samples)
        self.hits = self.waited = 0
        if self.layout is None:
            self._back_off()

    def _back_off(self) -> None:
        self.wait = min(max(1, self.wait * 2), _MAX_WAIT)
        self.waited = 0
