"""Property-based tests (hypothesis) for gpuledger.collectors.textformat.parse.

* any text or bytes: a result or an ExpositionError, nothing else, within a deadline;
* the fast path in parse() accepts exactly the lines the one-regex grammar accepts, and
  the possessive quantifiers change no regular expression's language;
* round trip: families built with prometheus_client, rendered by generate_latest, come
  back sample for sample (labels with quotes, backslashes, newlines and unicode);
* truncated, byte-flipped and spliced valid pages fail only with ExpositionError.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bench.pages import dcgm_page, vllm_page
from gpuledger.collectors.textformat import parse as exposition
from gpuledger.collectors.textformat.parse import ExpositionError, MetricFamily, parse

FUZZ = settings(
    max_examples=300,
    deadline=timedelta(milliseconds=1000),
    suppress_health_check=[HealthCheck.too_slow],
)
ROUND_TRIP = settings(
    max_examples=80,
    deadline=timedelta(milliseconds=2000),
    suppress_health_check=[HealthCheck.too_slow],
)

# Characters that matter to the grammar, so random lines get past the first token.
GRAMMAR_ALPHABET = 'ab_:{}="\\n, \t#HELPTYPEcounter0123456789.+-eInfNa\r\u00e9'
grammar_text = st.text(alphabet=GRAMMAR_ALPHABET, max_size=120)


def _parse_or_error(data: str | bytes) -> dict[str, MetricFamily] | None:
    try:
        return parse(data)
    except ExpositionError as err:
        error = err
    assert error.line >= 0
    assert error.reason
    return None


@FUZZ
@given(st.text(max_size=400))
def test_any_text_gives_a_result_or_an_exposition_error(text: str) -> None:
    _parse_or_error(text)


@FUZZ
@given(st.binary(max_size=400))
def test_any_bytes_give_a_result_or_an_exposition_error(data: bytes) -> None:
    _parse_or_error(data)


@FUZZ
@given(st.lists(grammar_text, max_size=12))
def test_grammar_shaped_text_gives_a_result_or_an_exposition_error(lines: list[str]) -> None:
    result = _parse_or_error("\n".join(lines))
    if result is not None:
        for fam in result.values():
            for sample in fam.samples:
                assert isinstance(sample.value, float)
                assert all(
                    isinstance(k, str) and isinstance(v, str) for k, v in sample.labels.items()
                )


def _reference_accepts(line: str) -> bool:
    """The sample-line grammar as one regular expression, plus the two semantic checks."""
    m = exposition._SAMPLE_RE.fullmatch(line)
    if m is None:
        return False
    names = [name for name, _ in exposition._LABEL_PAIR_RE.findall(m.group(2) or "")]
    ts = m.group(4)
    return len(names) == len(set(names)) and (ts is None or -(2**63) <= int(ts) < 2**63)


value_pieces = st.lists(
    st.sampled_from(
        ["a", "é", "}", "{", ",", "=", " ", "\t", "\\\\", '\\"', "\\n"] * 3 + ["\\q", '"']
    ),
    max_size=5,
).map("".join)
label_pair = st.builds(
    lambda k, v, sp: f'{k}{sp}={sp}"{v}"',
    st.sampled_from(["x", "y", "le", "_z9", "9z"]),
    value_pieces,
    st.sampled_from(["", "", " ", "\t"]),
)
sample_like = st.builds(
    lambda name, labels, rest: name + labels + rest,
    st.sampled_from(["a", "a_b:c", "vllm:x_total", "1a", "", "a "]),
    st.one_of(
        st.just(""),
        st.builds(lambda body: "{" + body + "}", grammar_text),
        *[
            st.builds(
                lambda pairs, trail: "{" + ",".join(pairs) + trail + "}",
                st.lists(label_pair, max_size=4),
                st.sampled_from(["", "", ",", " , ", ",,"]),
            )
        ]
        * 2,
    ),
    st.one_of(
        grammar_text,
        *[
            st.builds(
                lambda sp, v, ts: sp + v + ts,
                st.sampled_from([" ", "\t", "", "  "]),
                st.sampled_from(
                    ["1", "-1.5e3", "NaN", "+Inf", "-Inf", "Inf", ".5", "inf", "1_0", "1e"]
                ),
                st.sampled_from(
                    ["", "", " 17", " -3", " 1.5", " 99999999999999999999", " 1 2", "  "]
                ),
            )
        ]
        * 3,
    ),
)


@settings(max_examples=600, deadline=timedelta(milliseconds=1000))
@given(sample_like)
def test_fast_path_accepts_exactly_the_reference_grammar(line: str) -> None:
    if not line.strip(" \t") or line.lstrip(" \t").startswith("#") or "\r" in line:
        return
    line = line.lstrip(" \t")
    assert (_parse_or_error(line) is not None) == _reference_accepts(line), line


def _reference_labels(line: str) -> dict[str, str]:
    """The labels of a line the reference grammar accepts, unescaped independently."""
    m = exposition._SAMPLE_RE.fullmatch(line)
    assert m is not None
    unescape = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}
    return {
        name: re.sub(r'\\[\\"n]', lambda e: unescape[e.group()], raw)
        for name, raw in exposition._LABEL_PAIR_RE.findall(m.group(2) or "")
    }


@settings(max_examples=600, deadline=timedelta(milliseconds=1000))
@given(st.lists(label_pair, min_size=1, max_size=3), label_pair, st.sampled_from(["", " "]))
def test_a_bucket_line_after_its_base_set_reads_as_the_reference(
    pairs: list[str], last: str, blank: str
) -> None:
    # The second line's label set is the first's plus one pair: parse() checks only that
    # pair (string operations for the plain form, _LAST_PAIR_RE otherwise).
    first = "h_bucket{" + ",".join(pairs) + "} 1"
    second = "h_bucket{" + ",".join([*pairs, last]) + blank + "} 2"
    if not _reference_accepts(first):
        return
    result = _parse_or_error(first + "\n" + second + "\n")
    assert (result is not None) == _reference_accepts(second), second
    if result is not None:
        got = [dict(s.labels) for fam in result.values() for s in fam.samples]
        assert got == [_reference_labels(first), _reference_labels(second)]


def _greedy(pattern: str) -> re.Pattern[str]:
    """The same pattern with its possessive quantifiers made ordinary."""
    return re.compile(re.sub(r"(?<!\\)([*+?}])\+", r"\1", pattern))


POSSESSIVE = [
    exposition._SAMPLE_RE,
    exposition._LABEL_BLOCK_RE,
    exposition._REST_RE,
    exposition._LAST_PAIR_RE,
    exposition._QUOTED_AT,
]


@settings(max_examples=400, deadline=timedelta(milliseconds=1000))
@given(st.text(alphabet=GRAMMAR_ALPHABET, max_size=60))
def test_possessive_quantifiers_change_no_language(text: str) -> None:
    for pattern in POSSESSIVE:
        greedy = _greedy(pattern.pattern)
        assert greedy.pattern != pattern.pattern
        ours, theirs = pattern.fullmatch(text), greedy.fullmatch(text)
        assert (ours is None) == (theirs is None), (pattern.pattern, text)
        if ours is not None and theirs is not None:
            assert ours.groups() == theirs.groups()


# ------------------------------------------------------------------------------ round trip

label_names = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True).filter(
    lambda n: n not in ("le", "quantile")
)
label_values = st.text(
    st.characters(exclude_categories=["Cs"], include_characters='"\\\n{},= '), max_size=12
)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
any_float = st.floats(width=64)

metric_spec = st.tuples(
    st.sampled_from(["gauge", "counter", "histogram"]),
    st.lists(label_names, max_size=3, unique=True),
    st.lists(st.lists(label_values, min_size=3, max_size=3), min_size=1, max_size=3),
    st.lists(any_float, min_size=1, max_size=4),
    # documentation: leading blanks separate it from the name and a trailing "\r" reads as
    # a CRLF line end, so neither survives any 0.0.4 parser; everything else must.
    label_values.map(lambda doc: doc.lstrip(" \t").rstrip("\r")),
)


def _build_registry(
    specs: list[tuple[str, list[str], list[list[str]], list[float], str]],
) -> CollectorRegistry:
    registry = CollectorRegistry()
    for i, (kind, names, label_sets, values, doc) in enumerate(specs):
        name = f"m{i}_{kind}" if i % 2 else f"vllm:m{i}_{kind}"
        if kind == "gauge":
            metric: Gauge | Counter | Histogram = Gauge(name, doc, names, registry=registry)
        elif kind == "counter":
            metric = Counter(name, doc, names, registry=registry)
        else:
            metric = Histogram(name, doc, names, buckets=(0.001, 0.5, 1.0, 2.5, 1e6),
                               registry=registry)  # fmt: skip
        for label_set in label_sets:
            child = metric.labels(*label_set[: len(names)]) if names else metric
            for value in values:
                if isinstance(child, Gauge):
                    child.set(value)
                elif isinstance(child, Counter):
                    if math.isfinite(value):
                        child.inc(abs(value))
                elif not math.isnan(value):
                    child.observe(value)
    return registry


Key = tuple[str, tuple[tuple[str, str], ...], object]


def _key(name: str, labels: dict[str, str], value: float) -> Key:
    return (name, tuple(sorted(labels.items())), "NaN" if math.isnan(value) else value)


@ROUND_TRIP
@given(st.lists(metric_spec, min_size=1, max_size=4))
def test_round_trip_through_prometheus_client(
    specs: list[tuple[str, list[str], list[list[str]], list[float], str]],
) -> None:
    registry = _build_registry(specs)
    page = generate_latest(registry)
    families = parse(page)

    expected: list[Key] = []
    for metric in registry.collect():
        family_name = metric.name + "_total" if metric.type == "counter" else metric.name
        created = [s for s in metric.samples if s.name == metric.name + "_created"]
        main = [s for s in metric.samples if s.name != metric.name + "_created"]
        fam = families[family_name]
        assert fam.type == metric.type
        assert fam.help == metric.documentation
        assert [_key(s.name, dict(s.labels), s.value) for s in fam.samples] == [
            _key(s.name, s.labels, s.value) for s in main
        ]
        if created:
            created_fam = families[metric.name + "_created"]
            assert created_fam.type == "gauge"
            assert [_key(s.name, dict(s.labels), s.value) for s in created_fam.samples] == [
                _key(s.name, s.labels, s.value) for s in created
            ]
        expected += [_key(s.name, s.labels, s.value) for s in metric.samples]
    ours = [_key(s.name, dict(s.labels), s.value) for f in families.values() for s in f.samples]
    assert sorted(ours, key=repr) == sorted(expected, key=repr)


# ------------------------------------------------------------------------------- mutations

VALID_PAGES = [dcgm_page(1).encode(), vllm_page(1, 1).encode()[:20_000]]


@FUZZ
@given(st.sampled_from(VALID_PAGES), st.data())
def test_truncated_pages(page: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(page)))
    _parse_or_error(page[:cut])


@FUZZ
@given(
    st.sampled_from(VALID_PAGES),
    st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 255)), min_size=1, max_size=8),
)
def test_byte_flipped_pages(page: bytes, flips: list[tuple[int, int]]) -> None:
    mutated = bytearray(page)
    for offset, byte in flips:
        mutated[offset % len(mutated)] = byte
    _parse_or_error(bytes(mutated))


@FUZZ
@given(st.sampled_from(VALID_PAGES), st.data())
def test_spliced_pages(page: bytes, data: st.DataObject) -> None:
    a = data.draw(st.integers(0, len(page)))
    b = data.draw(st.integers(0, len(page)))
    insert = data.draw(st.sampled_from([b"\n", b"{", b"}", b'"', b"\\", b"# TYPE x gauge\n", b""]))
    _parse_or_error(page[:a] + insert + page[b:])
