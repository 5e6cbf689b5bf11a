"""parse(..., cache=ParseCache()): the same families as without a cache, page after page,
with label sets and names looked up instead of read again, and the cache bounded."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.pages import dcgm_page, vllm_page
from bench.vllm_busy import BusyVllmPage
from gpuledger.collectors.textformat.parse import ExpositionError, ParseCache, parse

FIXTURES = Path(__file__).parents[2] / "support" / "fixtures"


def _pages() -> list[bytes]:
    """Upstream pages of several exporters and generations, then a busy engine's page
    scraped five times (values move, label sets stay)."""
    pages = [p.read_bytes() for p in sorted((FIXTURES / "vllm").glob("*.prom"))]
    pages += [p.read_bytes() for p in sorted((FIXTURES / "dcgm").glob("*")) if p.is_file()]
    pages += [dcgm_page().encode(), vllm_page(2, 3).encode()]
    busy = BusyVllmPage(2, 3, seed=1)
    for _ in range(5):
        busy.advance()
        pages.append(busy.render().encode())
    return pages


def test_a_shared_cache_gives_the_same_families_page_after_page() -> None:
    cache = ParseCache()
    pages = _pages()
    assert len(pages) > 10
    for _ in range(2):  # the second round finds every label set in the cache
        for page in pages:
            assert parse(page, cache=cache) == parse(page)


def test_label_sets_are_looked_up_on_the_next_parse() -> None:
    busy = BusyVllmPage(2, 3, seed=2)
    cache = ParseCache()
    first = parse(busy.render(), cache=cache)
    busy.advance()
    second = parse(busy.render(), cache=cache)
    name = "vllm:time_to_first_token_seconds"
    before, after = first[name].samples, second[name].samples
    assert [s.value for s in before] != [s.value for s in after]  # the page moved
    assert all(a.labels is b.labels for a, b in zip(before, after, strict=True))
    # without a cache every parse reads its label sets anew
    fresh = parse(busy.render())
    assert not any(a.labels is b.labels for a, b in zip(after, fresh[name].samples, strict=True))


def test_a_refused_label_set_is_refused_again_with_the_cache() -> None:
    cache = ParseCache()
    good = 'a{x="1"} 1\na{x="1",y="2"} 2\n'
    parse(good, cache=cache)
    for _ in range(2):
        with pytest.raises(ExpositionError, match=r"line 2: duplicate label 'x'"):
            parse('a{x="1"} 1\na{x="1",x="2"} 2\n', cache=cache)
        with pytest.raises(ExpositionError, match=r"line 1: .*unquoted value"):
            parse("a{x=1} 1\n", cache=cache)


def test_the_cache_is_bounded_and_results_stay_the_same() -> None:
    cache = ParseCache()
    wide = "".join(f'a{{i="{i}"}} {i}\n' for i in range(6000))  # more sets than the bound
    narrow = "".join(f'b{{i="{i}"}} {i}\n' for i in range(10))
    for text in (wide, narrow, wide, wide, narrow):
        assert parse(text, cache=cache) == parse(text)
        assert len(cache.labels) <= 4096
        assert len(cache.names) <= 4096
    parse(narrow, cache=cache)  # a full cache is emptied before the next parse
    assert len(cache.labels) == 10


def test_families_cap_and_line_numbers_are_worked_out_afresh() -> None:
    cache = ParseCache()
    typed = '# TYPE a counter\na_total 1\na_total{x="1"} 2\n'
    parse(typed, cache=cache)
    # the same sample lines without their TYPE: an untyped family of their own name
    untyped = parse('a_total 1\na_total{x="1"} 2\n', cache=cache)
    assert untyped == parse('a_total 1\na_total{x="1"} 2\n')
    assert untyped["a_total"].type == "untyped"
    # the sample cap counts a looked-up line like any other
    with pytest.raises(ExpositionError, match=r"line 3: more than 2 samples"):
        parse(typed, cache=cache, max_samples=2)
    # an error after looked-up lines names its own line
    with pytest.raises(ExpositionError, match=r"line 4: invalid sample value"):
        parse(typed + 'a_total{x="2"} x\n', cache=cache)
