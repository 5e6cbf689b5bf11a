"""The parser's bounds: the sample cap, chunked decoding, and label sets kept as text once
a page has spent the eager budget (issue 16 item 3). Time and memory figures of whole
hostile pages are in bench/bench_parser.py; here, what each bound does."""

from __future__ import annotations

import tracemalloc

import pytest

from gpuledger.collectors.textformat import parse as exposition
from gpuledger.collectors.textformat.labels import LazyLabels, names_are_unique
from gpuledger.collectors.textformat.parse import ExpositionError, parse

MiB = 1024 * 1024


def error_of(text: str | bytes, **kwargs: int) -> ExpositionError:
    with pytest.raises(ExpositionError) as info:
        parse(text, **kwargs)
    return info.value


# --------------------------------------------------------------------------- sample cap


def test_cap_counts_samples_and_families() -> None:
    page = "a 1\n" * 10  # one family and ten samples: 11 against the cap
    assert len(parse(page, max_samples=11)["a"].samples) == 10
    err = error_of(page, max_samples=10)
    assert err.line == 10
    assert err.reason == "more than 10 samples and families, over the sample cap"


def test_cap_stops_the_parse_at_the_first_sample_over() -> None:
    # A malformed line after the cap is never reached: the parse stopped before it.
    page = "# TYPE a gauge\n" + 'a{i="x"} 1\n' * 5_000 + "a{ broken\n"
    err = error_of(page, max_samples=1_000)
    assert (err.line, "sample cap" in err.reason) == (1_001, True)  # the TYPE counts too


def test_type_lines_alone_count_against_the_cap() -> None:
    page = "".join(f"# TYPE a{i} gauge\n# HELP a{i} Help.\n" for i in range(20))
    assert len(parse(page, max_samples=20)) == 20
    err = error_of(page, max_samples=10)
    assert (err.line, "sample cap" in err.reason) == (21, True)


def test_cap_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_samples"):
        parse("a 1\n", max_samples=0)


def test_default_cap_reads_a_dcgm_page_of_the_documented_largest_size() -> None:
    # docs/upstream-prometheus-text.md: 8 GPUs x (board + 7 MIG instances) x 200 fields.
    page = "".join(
        f"# HELP F{f} Field {f}.\n# TYPE F{f} gauge\n"
        + "".join(f'F{f}{{gpu="{g}",GPU_I_ID="{m}"}} {f}\n' for g in range(8) for m in range(8))
        for f in range(200)
    )
    fams = parse(page)
    assert sum(len(fam.samples) for fam in fams.values()) == 12_800
    assert fams["F7"].samples[9].labels == {"gpu": "1", "GPU_I_ID": "1"}


# ------------------------------------------------------------------------------ decoding


def test_bad_utf8_in_a_later_chunk_names_its_byte() -> None:
    head = b"a 1\n" * (exposition._CHUNK_CHARS // 4 + 10)  # past the first chunk
    err = error_of(head + b'b{x="\xff"} 2\n')
    assert err.line == 0
    assert err.reason == f"not UTF-8 at byte {len(head) + 5}"  # after b{x="


def test_multibyte_text_across_chunk_boundaries() -> None:
    line = 'a{x="é✓ü"} 1\n'
    page = line * (exposition._CHUNK_CHARS // len(line.encode()) * 3)
    fams = parse(page.encode())
    assert len(fams["a"].samples) == page.count("\n")
    assert all(s.labels == {"x": "é✓ü"} for s in fams["a"].samples)


# ------------------------------------------------------------------------- lazy labels


def _dense_page(lines: int) -> str:
    """Label sets of 18 short pairs, each line's distinct: ~120 characters of label text
    a line, so a page of 10,000 lines passes the eager budget."""
    return "".join(
        "d{" + ",".join(f'{chr(97 + j)}="{(i >> j) & 1}{j}"' for j in range(18)) + "} 1\n"
        for i in range(lines)
    )


def _expected(i: int) -> dict[str, str]:
    return {chr(97 + j): f"{(i >> j) & 1}{j}" for j in range(18)}


def test_label_sets_past_the_budget_are_kept_as_text_and_read_the_same() -> None:
    n = 12_000
    samples = parse(_dense_page(n))["d"].samples
    kinds = [type(s.labels) for s in samples]
    assert kinds[0] is dict
    assert kinds[-1] is LazyLabels
    first_lazy = kinds.index(LazyLabels)
    block_chars = len(_dense_page(1)) - len("d{} 1\n")
    assert first_lazy == -(-exposition._EAGER_LABEL_CHARS // block_chars)
    for i in (first_lazy - 1, first_lazy, n - 1):
        labels = samples[i].labels
        assert labels == _expected(i)
        assert dict(labels) == _expected(i)
        assert list(labels) == list(_expected(i))
        assert (labels["c"], labels.get("r"), labels.get("zz"), "a" in labels) == (
            _expected(i)["c"], _expected(i)["r"], None, True
        )  # fmt: skip
        assert len(labels) == 18


def test_lazy_label_sets_are_still_checked() -> None:
    page = _dense_page(10_000)
    err = error_of(page + 'd{a="1",b="2",a="3"} 1\n')
    assert (err.line, "duplicate label 'a'" in err.reason) == (10_001, True)
    err = error_of(page + 'd{a="1} 1\n')
    assert (err.line, "unterminated label value" in err.reason) == (10_001, True)
    fams = parse(page + 'd{a="x\\"y\\\\z\\n",b="\\\\",c="\\q"} 1\n')
    last = fams["d"].samples[-1].labels
    assert isinstance(last, LazyLabels)
    assert last == {"a": 'x"y\\z\n', "b": "\\", "c": "\\q"}


def _peak(page: bytes) -> int:
    tracemalloc.start()
    try:
        parse(page)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_label_dense_page_costs_a_few_times_its_size(monkeypatch: pytest.MonkeyPatch) -> None:
    # As dicts, 18 two-character values a line cost ~10x the page (the issue's ~290 MB
    # for 16 MiB); past the eager budget each line keeps only its text.
    page = _dense_page(40_000).encode()
    bounded = _peak(page)
    assert bounded < 4.5 * len(page), (bounded, len(page))
    monkeypatch.setattr(exposition, "_EAGER_LABEL_CHARS", 10 * len(page))
    all_dicts = _peak(page)
    assert all_dicts > 2 * bounded, (all_dicts, bounded)


@pytest.mark.parametrize(
    ("block", "unique"),
    [
        ('a="1",b="2"', True),
        ('a="1",a="2"', False),
        ('a="1", a="2"', False),  # blanks do not hide a repeated name
        ('a="1"\t,\ta="2"', False),
        (' a = "1" , b="2" ,', True),
        ("", True),
        ('a="x,a=",b="2"', True),  # a name inside a value is not a name
        ('a="1",b="\\\\",a="3"', False),  # with a backslash: the regex path
        ('ab="1",a="2",b="3"', True),
    ],
)
def test_duplicate_names_in_a_lazy_label_set(block: str, unique: bool) -> None:
    assert names_are_unique(block) is unique
