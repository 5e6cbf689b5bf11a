"""Page layouts (``collectors/vllm/layout.py``): a page that differs from a learnt one only in
its values is read without the parser, and the answer is the full path's, always.

Every expected value here is the full path's own answer on the same bytes -- the strict
parser, then normalization -- computed apart from the layout; the property tests throw
value changes and byte edits at learnt pages and require the layout either to step aside
(None) or to agree.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.pages import vllm_page
from gpuledger.collectors.textformat.parse import ExpositionError, parse
from gpuledger.collectors.vllm import layout as layout_module
from gpuledger.collectors.vllm import scrape as scrape_module
from gpuledger.collectors.vllm.layout import LayoutState, PageLayout, learn
from gpuledger.collectors.vllm.scrape import VllmCollector, _series_and_hint, select_families
from gpuledger.collectors.vllm.types import VllmEndpoint, VllmSeries
from tests.support import paths as support_paths
from tests.support.standins import Behaviour, StandIn

FIXTURES = support_paths.FIXTURES / "vllm"
SINGLE_PROCESS = [
    "vllm-0.8-engine-v0.prom",
    "vllm-0.10-engine-v1.prom",  # both spellings of the renamed metrics on one page
    "vllm-0.11-dp2.prom",
]
MULTIPROCESS = sorted(p.name for p in FIXTURES.glob("*api-servers2*.prom"))
MAX_SAMPLES = 100_000
# a value token as the exposition grammar writes a decimal: what a layout reads itself
DECIMAL = re.compile(rb"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _selected(name: str) -> bytes:
    return select_families((FIXTURES / name).read_bytes())


def _full(page: bytes) -> tuple[VllmSeries, ...]:
    """The full path: the strict parser, then normalization."""
    return _series_and_hint(parse(page))[0]


def _learnt(page: bytes) -> PageLayout:
    found = learn(page, _full(page), _series_and_hint, max_samples=MAX_SAMPLES)
    assert found is not None
    return found


def _sample_lines(page: bytes) -> list[int]:
    lines = page.split(b"\n")
    return [i for i, line in enumerate(lines) if line and not line.startswith(b"#")]


def _with_values(page: bytes, tokens: Iterator[bytes]) -> bytes:
    """The page with each sample line's value replaced by the next token."""
    lines = page.split(b"\n")
    for i in _sample_lines(page):
        head, _, _ = lines[i].rpartition(b" ")
        lines[i] = head + b" " + next(tokens)
    return b"\n".join(lines)


def _random_decimal(rng: random.Random) -> bytes:
    kind = rng.randrange(5)
    if kind == 0:
        return str(rng.randrange(10**9)).encode()
    if kind == 1:
        return repr(rng.uniform(-1e6, 1e6)).encode()
    if kind == 2:
        return f"{rng.uniform(0, 9):.3f}e{rng.randrange(-30, 30):+d}".encode()
    if kind == 3:
        return rng.choice([b"0", b"-0", b"+1", b".5", b"5.", b"1E3", b"0.0"])
    return f"{rng.random()}".encode()


def _pages() -> list[tuple[str, bytes]]:
    pages = [(name, _selected(name)) for name in SINGLE_PROCESS]
    pages.append(("bench 2x3", select_families(vllm_page(2, 3).encode())))
    # a finish reason printed on two lines (request_success totals them, in page order)
    dup = _selected("vllm-0.11-dp2.prom")
    first = next(ln for ln in dup.split(b"\n") if ln.startswith(b"vllm:request_success_total{"))
    pages.append(("repeated reason", dup + b"\n" + first.rpartition(b" ")[0] + b" 7"))
    return pages


PAGES = _pages()


@pytest.mark.parametrize(("name", "page"), PAGES, ids=[n for n, _ in PAGES])
def test_a_learnt_page_with_other_values_reads_as_the_full_path_reads_it(
    name: str, page: bytes
) -> None:
    layout = _learnt(page)
    assert layout.read(page) == _full(page)
    rng = random.Random(name)
    for _ in range(25):
        moved = _with_values(page, iter(lambda: _random_decimal(rng), None))
        got = layout.read(moved)
        assert got is not None, "a page with only its values changed must be read"
        assert got == _full(moved)


@pytest.mark.parametrize("name", MULTIPROCESS)
def test_pages_with_per_process_gauges_are_never_learnt(name: str) -> None:
    """Which of a multiprocess page's per-process gauges is read depends on whether its
    processes agree: on values, so not something a layout may decide. Multiprocess pages
    without them (0.33: every gauge "mostrecent") are learnt like any other."""
    page = _selected(name)
    found = learn(page, _full(page), _series_and_hint, max_samples=MAX_SAMPLES)
    if b'pid="' in page:
        assert found is None
        return
    assert found is not None
    rng = random.Random(name)
    moved = _with_values(page, iter(lambda: _random_decimal(rng), None))
    assert found.read(moved) == _full(moved)


def _edits(page: bytes) -> list[tuple[str, bytes]]:
    lines = page.split(b"\n")
    at = _sample_lines(page)
    one = lines[at[3]]
    head, _, value = one.rpartition(b" ")

    def line_set(new: bytes) -> bytes:
        return b"\n".join([*lines[: at[3]], new, *lines[at[3] + 1 :]])

    help_at = next(i for i, line in enumerate(lines) if line.startswith(b"# HELP"))
    return [
        ("NaN", line_set(head + b" NaN")),
        ("+Inf", line_set(head + b" +Inf")),
        ("timestamp", line_set(one + b" 1700000000000")),
        ("tab before the value", line_set(head + b"\t" + value)),
        ("two blanks", line_set(head + b"  " + value)),
        ("trailing blank", line_set(one + b" ")),
        ("no value", line_set(head + b" ")),
        ("half a number", line_set(head + b" 1e")),
        ("two points", line_set(head + b" 1.2.3")),
        ("underscore", line_set(head + b" 1_000")),
        ("CRLF", page.replace(b"\n", b"\r\n")),
        ("a label value", line_set(one.replace(b'engine="', b'engine="9', 1))),
        ("a line more", line_set(one + b"\n" + one)),
        ("a line less", b"\n".join(lines[: at[3]] + lines[at[3] + 1 :])),
        ("help text", b"\n".join([*lines[:help_at], lines[help_at] + b"!", *lines[help_at + 1 :]])),
        ("# EOF early", b"\n".join([*lines[: at[5]], b"# EOF", *lines[at[5] :]])),
        ("not UTF-8", line_set(one.replace(b"vllm:", b"vllm:\xff", 1))),
    ]


@pytest.mark.parametrize(("name", "page"), PAGES[2:4], ids=[n for n, _ in PAGES[2:4]])
def test_anything_but_a_plain_value_change_goes_to_the_parser(name: str, page: bytes) -> None:
    layout = _learnt(page)
    for what, edited in _edits(page):
        assert layout.read(edited) is None, what


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_layout_never_answers_what_the_full_path_would_not(data: st.DataObject) -> None:
    """Random value tokens (grammar or not) and random byte edits on a learnt page: the
    layout reads it exactly as the parser and normalization do, or leaves it to them."""
    name, page = data.draw(st.sampled_from(PAGES[:4]))
    layout = _learnt(page)
    decimal = st.from_regex(DECIMAL, fullmatch=True)
    anything = st.text(alphabet="0123456789.eE+-_ \tnaNIif", max_size=6).map(str.encode)
    token = decimal if data.draw(st.booleans()) else st.one_of(decimal, anything)
    tokens = data.draw(st.lists(token, min_size=1, max_size=50))
    moved = _with_values(page, itertools.cycle(tokens))
    for _ in range(data.draw(st.integers(0, 3))):
        pos = data.draw(st.integers(0, len(moved)))
        cut = data.draw(st.integers(0, 3))
        moved = moved[:pos] + data.draw(st.binary(max_size=3)) + moved[pos + cut :]
    got = layout.read(moved)
    try:
        want = _full(moved)
    except ExpositionError:
        assert got is None, f"{name}: the parser refuses this page"
        return
    assert got is None or got == want, name


class _Counting:
    """Counts how often the collector parses and learns (to show the layout is used)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.parses = 0
        self.learns = 0
        real_parse, real_learn = scrape_module.parse, layout_module.learn

        def parse(*args: object, **kw: object) -> object:
            self.parses += 1
            return real_parse(*args, **kw)  # type: ignore[arg-type]

        def learn(*args: object, **kw: object) -> object:
            self.learns += 1
            return real_learn(*args, **kw)  # type: ignore[arg-type]

        monkeypatch.setattr(scrape_module, "parse", parse)
        monkeypatch.setattr(layout_module, "learn", learn)


def test_the_collector_reads_a_busy_page_without_the_parser_and_the_same_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cycle after cycle a busy page (values moved) is read through its layout; a page
    whose structure changed (a model loaded) goes through the parser and is learnt again;
    a malformed page is down with the parser's reason, whatever the layout knew."""
    counting = _Counting(monkeypatch)
    page = _selected("vllm-0.11-dp2.prom")
    rng = random.Random(7)
    collector = VllmCollector(lambda: endpoints, timeout_s=5.0)
    try:
        with StandIn(Behaviour(body=page)) as s:
            endpoints = [VllmEndpoint(url=s.url.removesuffix("/metrics"), service="llm")]
            pages = [page] + [
                _with_values(page, iter(lambda: _random_decimal(rng), None)) for _ in range(5)
            ]
            for served in pages:
                s.behaviour = Behaviour(body=served)
                got = collector.collect().endpoints[0]
                assert got.up
                assert got.series == _full(served)
                assert got.version_hint == "v1"
            assert counting.parses == 1  # the first page only; the others through its layout
            assert counting.learns == 1
            bigger = select_families(vllm_page(2, 3).encode())
            for _ in range(3):
                s.behaviour = Behaviour(body=bigger)
                assert collector.collect().endpoints[0].series == _full(bigger)
            assert (counting.parses, counting.learns) == (2, 2)
            broken = page.replace(b"vllm:num_requests_running{", b"vllm:num_requests_running{{")
            s.behaviour = Behaviour(body=broken)
            with pytest.raises(Exception, match="unreadable page"):
                collector.collect()
    finally:
        collector.close()


def test_learning_backs_off_while_pages_keep_changing_shape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A page whose structure changes every scrape: layouts are learnt ever more rarely
    (1, 2, 4 ... pages apart, at most 64), and every page still reads as the parser does."""
    counting = _Counting(monkeypatch)
    state = LayoutState()
    base = _selected("vllm-0.11-dp2.prom")
    learnt_at: list[int] = []
    for k in range(40):
        page = base + b"\n# scrape %d" % k  # a comment that differs every time
        if state.read(page) is None:
            before = counting.learns
            state.missed(page, _full(page), _series_and_hint, max_samples=MAX_SAMPLES)
            if counting.learns > before:
                learnt_at.append(k)
    assert learnt_at == [0, 2, 5, 10, 19, 36]  # waits of 1, 2, 4, 8, 16 pages


def test_a_layout_that_served_pages_is_replaced_at_once() -> None:
    state = LayoutState()
    a = _selected("vllm-0.11-dp2.prom")
    b = _selected("vllm-0.10-engine-v1.prom")
    state.missed(a, _full(a), _series_and_hint, max_samples=MAX_SAMPLES)
    assert state.read(a) == (_full(a), "v1")
    assert state.read(b) is None
    state.missed(b, _full(b), _series_and_hint, max_samples=MAX_SAMPLES)
    assert state.read(b) == (_full(b), "v1")


def test_pages_over_the_learning_cap_are_left_to_the_parser(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    page = _selected("vllm-0.11-dp2.prom")
    lines = len(_sample_lines(page))
    monkeypatch.setattr(layout_module, "MAX_LEARNT_SAMPLES", lines - 1)
    assert learn(page, _full(page), _series_and_hint, max_samples=MAX_SAMPLES) is None
    monkeypatch.setattr(layout_module, "MAX_LEARNT_SAMPLES", lines)
    assert learn(page, _full(page), _series_and_hint, max_samples=MAX_SAMPLES) is not None
