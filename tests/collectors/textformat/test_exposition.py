"""Unit tests for gpuledger.collectors.textformat.parse (Prometheus text format 0.0.4)."""

from __future__ import annotations

import math
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterable, Mapping

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.pages import dcgm_page, vllm_page
from gpuledger.collectors.textformat.parse import (
    DEFAULT_MAX_BYTES,
    ExpositionError,
    MetricFamily,
    Sample,
    parse,
)

MiB = 1024 * 1024


def samples(families: dict[str, MetricFamily]) -> list[Sample]:
    return [s for fam in families.values() for s in fam.samples]


def only_sample(text: str) -> Sample:
    got = samples(parse(text))
    assert len(got) == 1, got
    return got[0]


def error_of(text: str | bytes, **kwargs: int) -> ExpositionError:
    with pytest.raises(ExpositionError) as info:
        parse(text, **kwargs)
    return info.value


# ----------------------------------------------------------------------------- features


def test_help_type_and_samples_make_one_family() -> None:
    fams = parse(
        "# HELP DCGM_FI_DEV_GPU_TEMP GPU temperature (in C).\n"
        "# TYPE DCGM_FI_DEV_GPU_TEMP gauge\n"
        'DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-1"} 41\n'
        'DCGM_FI_DEV_GPU_TEMP{gpu="1",UUID="GPU-2"} 43.5\n'
    )
    assert list(fams) == ["DCGM_FI_DEV_GPU_TEMP"]
    fam = fams["DCGM_FI_DEV_GPU_TEMP"]
    assert (fam.name, fam.type, fam.help) == (
        "DCGM_FI_DEV_GPU_TEMP",
        "gauge",
        "GPU temperature (in C).",
    )
    assert fam.samples == [
        Sample("DCGM_FI_DEV_GPU_TEMP", {"gpu": "0", "UUID": "GPU-1"}, 41.0),
        Sample("DCGM_FI_DEV_GPU_TEMP", {"gpu": "1", "UUID": "GPU-2"}, 43.5),
    ]
    assert all(s.timestamp_ms is None for s in fam.samples)


def test_empty_input_has_no_families() -> None:
    assert parse("") == {}
    assert parse(b"") == {}
    assert parse("\n\n  \n\t\n") == {}


def test_bytes_and_str_give_the_same_result() -> None:
    text = '# TYPE a gauge\na{x="é ✓"} 1\n'
    assert parse(text) == parse(text.encode())
    assert only_sample(text).labels == {"x": "é ✓"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (r"plain", "plain"),
        (r"back\\slash", "back\\slash"),
        (r"quote\"d", 'quote"d'),
        (r"new\nline", "new\nline"),
        (r"\\n", "\\n"),  # an escaped backslash followed by a plain n
        (r"\\\"", '\\"'),
        (r"\\\\\n", "\\\\\n"),
        (r"a}b{c,d=e", "a}b{c,d=e"),  # braces, commas and '=' are plain text in a value
        ("tab\there", "tab\there"),
        # Any other escape is kept as written, as Prometheus does (promlex.l takes any
        # backslash pair; promparse.go's lvalReplacer undoes only the three above).
        (r"c\q", "c\\q"),
        (r"C:\temp", "C:\\temp"),
        (r"\q\"", '\\q"'),
        (r"\\\q", "\\\\q"),
        ("", ""),
    ],
)
def test_label_value_escapes(raw: str, expected: str) -> None:
    assert only_sample(f'a{{x="{raw}"}} 1\n').labels == {"x": expected}


def test_label_values_with_escapes_in_a_histogram_bucket_series() -> None:
    # The cached "prefix + last pair" path must unescape the last pair too.
    fams = parse(
        "# TYPE h histogram\n"
        'h_bucket{m="a\\\\b",le="0.5"} 1\n'
        'h_bucket{m="a\\\\b",le="x\\"y"} 2\n'
        'h_bucket{m="a\\\\b",le="+Inf"} 3\n'
    )
    assert [dict(s.labels) for s in fams["h"].samples] == [
        {"m": "a\\b", "le": "0.5"},
        {"m": "a\\b", "le": 'x"y'},
        {"m": "a\\b", "le": "+Inf"},
    ]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (r"plain help", "plain help"),
        (r"a\\b", "a\\b"),
        (r"line\nbreak", "line\nbreak"),
        # Prometheus undoes only \\ and \n in HELP (promparse.go helpReplacer) and keeps
        # every other backslash as written: \" is not a HELP escape, nor is \q.
        (r'quotes " stay \"as is', 'quotes " stay \\"as is'),
        (r"bad \escape", "bad \\escape"),
        ("trailing backslash \\", "trailing backslash \\"),
        (r"\\\n", "\\\n"),  # an escaped backslash, then an escaped newline
        (r"\\n", "\\n"),  # an escaped backslash, then a plain n
        ("trailing  ", "trailing  "),
    ],
)
def test_help_escapes(raw: str, expected: str) -> None:
    text = f"# HELP a {raw}\n# TYPE a gauge\na 1\n"
    assert parse(text)["a"].help == expected


def test_help_without_text_and_help_before_type() -> None:
    fams = parse("# HELP a\n# TYPE a counter\na 1\n# HELP b   \nb 2\n")
    assert fams["a"].help == ""
    assert fams["a"].type == "counter"
    assert fams["b"].help == ""
    assert fams["b"].type == "untyped"


@pytest.mark.parametrize(
    ("text", "check"),
    [
        ("NaN", math.isnan),
        ("+Inf", lambda v: v == math.inf),
        ("Inf", lambda v: v == math.inf),
        ("-Inf", lambda v: v == -math.inf),
        ("0", lambda v: v == 0.0),
        ("-0.5", lambda v: v == -0.5),
        ("+3", lambda v: v == 3.0),
        (".5", lambda v: v == 0.5),
        ("5.", lambda v: v == 5.0),
        ("1e3", lambda v: v == 1000.0),
        ("1.5E-3", lambda v: v == 0.0015),
        ("1.7321165e+09", lambda v: v == 1.7321165e09),
        ("1e999", lambda v: v == math.inf),
        # What Go's strconv.ParseFloat also reads, so Prometheus ingests them:
        ("inf", lambda v: v == math.inf),
        ("-INF", lambda v: v == -math.inf),
        ("+Infinity", lambda v: v == math.inf),
        ("infinity", lambda v: v == math.inf),
        ("nan", math.isnan),
        ("NAN", math.isnan),
    ],
)
def test_values(text: str, check: object) -> None:
    value = only_sample(f"a {text}\n").value
    assert isinstance(value, float)
    assert check(value)  # type: ignore[operator]


@pytest.mark.parametrize(
    ("line", "ts"),
    [
        ("a 1 1732116545123", 1732116545123),
        ("a 1 -1", -1),
        ("a 1 0", 0),
        ('a{b="c"} NaN 1700000000000', 1700000000000),
        ("a 1 9223372036854775807", 2**63 - 1),
        ("a 1 -9223372036854775808", -(2**63)),
        ("a 1", None),
    ],
)
def test_timestamps(line: str, ts: int | None) -> None:
    assert only_sample(line + "\n").timestamp_ms == ts


def test_comments_and_blank_lines_are_skipped() -> None:
    fams = parse(
        "# just a comment\n"
        "#\n"
        "#no space after the hash\n"
        "# HELPER is not HELP\n"
        "# TYPED is not TYPE\n"
        "#HELP without a blank is a comment\n"
        "\n"
        "   \n"
        "\t\n"
        "a 1\n"
        "\n"
    )
    assert list(fams) == ["a"]
    assert fams["a"].help == ""


def test_crlf_line_ends() -> None:
    text = '# HELP a Help.\r\n# TYPE a gauge\r\na{b="c"} 1\r\n\r\na 2 17\r\n'
    fams = parse(text)
    assert fams["a"].help == "Help."
    assert [(dict(s.labels), s.value, s.timestamp_ms) for s in fams["a"].samples] == [
        ({"b": "c"}, 1.0, None),
        ({}, 2.0, 17),
    ]


@pytest.mark.parametrize(
    "line",
    [
        'a{b="c",d="e"} 1',
        'a{b="c",d="e",} 1',  # trailing comma
        'a{b="c",d="e" , } 1',
        'a {b="c",d="e"} 1',
        'a{ b = "c" , d = "e" } 1',
        'a\t{\tb\t=\t"c"\t,\td="e"\t}\t1\t',
        'a{b="c",d="e"}1',  # no blank needed after "}"
        '  a{b="c",d="e"} 1',  # leading blanks
        '\ta{b="c",d="e"}   1   ',
    ],
)
def test_whitespace_variants(line: str) -> None:
    assert only_sample(line + "\n") == Sample("a", {"b": "c", "d": "e"}, 1.0)


@pytest.mark.parametrize("line", ["a{} 1", "a{ } 1", "a 1", "a\t1", "  a   1  "])
def test_no_labels(line: str) -> None:
    assert only_sample(line) == Sample("a", {}, 1.0)


def test_eof_ends_the_page() -> None:
    fams = parse("a 1\n# EOF\nthis is { not parsed\n")
    assert samples(fams) == [Sample("a", {}, 1.0)]
    # "# EOF" must be the whole line; anything longer is an ordinary comment.
    assert len(samples(parse("a 1\n# EOF and more\nb 2\n"))) == 2


def test_counter_groups_total_and_created() -> None:
    fams = parse(
        "# HELP req Requests.\n"
        "# TYPE req counter\n"
        'req_total{code="200"} 10\n'
        'req_created{code="200"} 1.7e9\n'
        'req{code="500"} 1\n'
    )
    assert list(fams) == ["req"]
    assert fams["req"].type == "counter"
    assert [s.name for s in fams["req"].samples] == ["req_total", "req_created", "req"]


def test_prometheus_client_style_counter_and_created_family() -> None:
    # What prometheus_client (and so vLLM) prints for a Counter named "vllm:prompt_tokens".
    fams = parse(
        "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.\n"
        "# TYPE vllm:prompt_tokens_total counter\n"
        'vllm:prompt_tokens_total{engine="0",model_name="m"} 12345.0\n'
        "# HELP vllm:prompt_tokens_created Number of prefill tokens processed.\n"
        "# TYPE vllm:prompt_tokens_created gauge\n"
        'vllm:prompt_tokens_created{engine="0",model_name="m"} 1.732116545e+09\n'
    )
    assert fams["vllm:prompt_tokens_total"].type == "counter"
    assert [s.value for s in fams["vllm:prompt_tokens_total"].samples] == [12345.0]
    assert fams["vllm:prompt_tokens_created"].type == "gauge"
    assert fams["vllm:prompt_tokens_created"].samples[0].value == 1.732116545e09


def test_histogram_grouping() -> None:
    fams = parse(
        "# HELP vllm:e2e_request_latency_seconds Latency.\n"
        "# TYPE vllm:e2e_request_latency_seconds histogram\n"
        'vllm:e2e_request_latency_seconds_bucket{model_name="m",le="0.3"} 1.0\n'
        'vllm:e2e_request_latency_seconds_bucket{model_name="m",le="+Inf"} 2.0\n'
        'vllm:e2e_request_latency_seconds_count{model_name="m"} 2.0\n'
        'vllm:e2e_request_latency_seconds_sum{model_name="m"} 0.9\n'
        "# HELP vllm:e2e_request_latency_seconds_created Latency.\n"
        "# TYPE vllm:e2e_request_latency_seconds_created gauge\n"
        'vllm:e2e_request_latency_seconds_created{model_name="m"} 1.7e9\n'
        "vllm:num_requests_running 3\n"
    )
    hist = fams["vllm:e2e_request_latency_seconds"]
    assert hist.type == "histogram"
    assert [s.name.rsplit("_", 1)[1] for s in hist.samples] == ["bucket", "bucket", "count", "sum"]
    assert hist.samples[1].labels == {"model_name": "m", "le": "+Inf"}
    assert fams["vllm:e2e_request_latency_seconds_created"].type == "gauge"
    running = fams["vllm:num_requests_running"]
    assert (running.type, running.samples) == ("untyped", [Sample(running.name, {}, 3.0)])


def test_summary_grouping() -> None:
    fams = parse(
        "# TYPE rpc summary\n"
        'rpc{quantile="0.5"} 0.1\n'
        'rpc{quantile="0.99"} NaN\n'
        "rpc_sum 5\n"
        "rpc_count 50\n"
        "rpc_created 1.7e9\n"
    )
    assert list(fams) == ["rpc"]
    assert fams["rpc"].type == "summary"
    assert len(fams["rpc"].samples) == 5
    assert math.isnan(fams["rpc"].samples[1].value)


def test_untyped_samples() -> None:
    fams = parse('x 1\ny{a="b"} 2\nx 3\n# TYPE z untyped\nz 4\n# TYPE w unknown\nw 5\n')
    assert {name: fam.type for name, fam in fams.items()} == {
        "x": "untyped",
        "y": "untyped",
        "z": "untyped",
        "w": "untyped",
    }
    assert [s.value for s in fams["x"].samples] == [1.0, 3.0]


def test_suffix_of_a_gauge_is_its_own_family() -> None:
    fams = parse("# TYPE g gauge\ng 1\ng_total 2\n")
    assert [s.name for s in fams["g"].samples] == ["g"]
    assert fams["g_total"].type == "untyped"


def test_vllm_names_with_colons() -> None:
    fams = parse(
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B"} 4.0\n'
        ":leading_colon 1\n"
    )
    assert fams["vllm:num_requests_running"].samples[0].labels == {
        "engine": "0",
        "model_name": "meta-llama/Llama-3.1-8B",
    }
    assert ":leading_colon" in fams


def test_samples_are_frozen() -> None:
    s = only_sample("a 1")
    with pytest.raises(AttributeError):
        s.value = 2.0  # type: ignore[misc]


# --------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        # label sets
        ("a{b} 1", "label"),
        ("a{b=} 1", "unquoted"),
        ("a{b=c} 1", "unquoted"),
        ('a{b="c"d="e"} 1', "label set"),
        ("a{,} 1", "label"),
        ('a{b="c",,} 1', "label"),
        ('a{b="c" 1', "label"),
        ('a{b="c"', "unterminated label set"),
        ('a{1b="c"} 1', "label"),
        ('a{b-c="d"} 1', "label"),
        ('a{b="c"}} 1', "value"),
        ('a{b="c} 1', "unterminated label value"),
        ('a{b="c\\"} 1', "unterminated label value"),
        ('a{b="c\\', "unterminated"),
        ('a{b="1",b="2"} 1', "duplicate label 'b'"),
        ('a{b="1", c="2",b="1"} 1', "duplicate label 'b'"),
        # values
        ("a 1_000", "invalid sample value"),
        ("a +NaN", "invalid sample value"),  # Go's ParseFloat: no sign before NaN
        ("a -nan", "invalid sample value"),
        ("a infin", "invalid sample value"),  # "inf" or "infinity", nothing between
        ("a Infinityy", "invalid sample value"),
        ("a 1e", "invalid sample value"),
        ("a 0x10", "invalid sample value"),
        ("a 1.2.3", "invalid sample value"),
        ("a --1", "invalid sample value"),
        ("a \u0661", "invalid sample value"),  # ARABIC-INDIC DIGIT ONE: float() takes it
        ("a \uff11", "invalid sample value"),  # FULLWIDTH DIGIT ONE
        ("a", "no value"),
        ('a{b="c"}', "no value"),
        ("a ", "no value"),
        # timestamps
        ("a 1 1.5", "invalid timestamp"),
        ("a 1 abc", "invalid timestamp"),
        ("a 1 +5", "invalid timestamp"),
        ("a 1 1e3", "invalid timestamp"),
        ("a 1 9223372036854775808", "out of range"),
        ("a 1 " + "9" * 5000, "out of range"),  # would trip int()'s digit limit
        ("a 1 2 3", "unexpected text"),
        # names
        ("1a 1", "invalid metric name"),
        ("a-b 1", "invalid metric name"),
        ("é 1", "invalid metric name"),
        ('{b="c"} 1', "invalid metric name"),
        # HELP / TYPE
        ("# TYPE a Counter", "unknown metric type 'Counter'"),
        ("# TYPE a bogus", "unknown metric type 'bogus'"),
        ("# TYPE a", "malformed HELP/TYPE"),
        ("# TYPE a gauge extra", "malformed HELP/TYPE"),
        ("# TYPE 1a gauge", "malformed HELP/TYPE"),
        ("# HELP 1a text", "malformed HELP/TYPE"),
    ],
)
def test_malformed_line_is_named(bad_line: str, reason: str) -> None:
    text = "# HELP ok A fine family.\n# TYPE ok gauge\nok 1\n\n" + bad_line + "\nlater 2\n"
    err = error_of(text)
    assert err.line == 5, err
    assert reason in err.reason, err
    assert str(err).startswith("line 5: ")


def test_error_line_counts_crlf_blank_and_comment_lines() -> None:
    err = error_of("# c\r\n\r\n   \r\na 1\r\nb{ 1\r\n")
    assert err.line == 5


def test_a_second_type_line_with_the_same_type_resumes_the_family() -> None:
    fams = parse("# TYPE a gauge\na 1\n# TYPE b gauge\nb 2\n# TYPE a gauge\na 3\n")
    assert list(fams) == ["a", "b"]
    assert (fams["a"].type, [s.value for s in fams["a"].samples]) == ("gauge", [1.0, 3.0])
    assert [s.value for s in fams["b"].samples] == [2.0]


def test_conflicting_type_lines_are_named() -> None:
    err = error_of("# TYPE a gauge\na 1\n# TYPE a counter\na_total 2\n")
    assert err.line == 3
    assert "conflicting TYPE lines for 'a': gauge, then counter" in err.reason


def test_type_after_samples_types_them() -> None:
    fams = parse("a 1\n# TYPE a gauge\na 2\n")
    assert list(fams) == ["a"]
    assert (fams["a"].type, [s.value for s in fams["a"].samples]) == ("gauge", [1.0, 2.0])


def test_type_after_suffixed_samples_takes_them_in() -> None:
    # c_total and c_created were read as untyped families of their own until the TYPE.
    fams = parse("c_total 1\nc_created 5\n# TYPE c counter\nc_total 2\n")
    assert list(fams) == ["c"]
    assert fams["c"].type == "counter"
    assert [(s.name, s.value) for s in fams["c"].samples] == [
        ("c_total", 1.0),
        ("c_created", 5.0),
        ("c_total", 2.0),
    ]


def test_samples_of_a_family_split_across_the_page_are_merged() -> None:
    # prometheus/common's TextToMetricFamilies files samples under their family wherever
    # they appear (setOrCreateCurrentMF); Prometheus ingests every series of such a page.
    fams = parse(
        '# HELP a Counts.\n# TYPE a counter\na_total{x="1"} 1\n'
        "# TYPE b gauge\nb 1\n"
        'a_total{x="2"} 2\n'
        "u 1\nb 2\nu 2\n"
        '# TYPE h histogram\nh_bucket{le="1"} 1\nh_count 1\nb 3\nh_sum 0.5\n'
    )
    assert list(fams) == ["a", "b", "u", "h"]
    assert [(dict(s.labels), s.value) for s in fams["a"].samples] == [
        ({"x": "1"}, 1.0),
        ({"x": "2"}, 2.0),
    ]
    assert (fams["a"].type, fams["a"].help) == ("counter", "Counts.")
    assert [s.value for s in fams["b"].samples] == [1.0, 2.0, 3.0]
    assert [s.value for s in fams["u"].samples] == [1.0, 2.0]
    assert [s.name for s in fams["h"].samples] == ["h_bucket", "h_count", "h_sum"]


def test_a_second_help_line_replaces_the_first() -> None:
    fams = parse("# HELP a One.\n# TYPE a gauge\na 1\n# HELP a Two.\na 2\n")
    assert (fams["a"].help, len(fams["a"].samples)) == ("Two.", 2)


@pytest.mark.parametrize("line", ["# HELP", "# TYPE", "# HELP   ", "#\tTYPE\t", "# HELP\r"])
def test_bare_help_and_type_lines_are_comments(line: str) -> None:
    # promlex.l: "HELP" needs a blank after it to start a metadata line; without one the
    # lexer's fallback consumes the line as a comment.
    fams = parse(f"a 1\n{line}\nb 2\n")
    assert {name: [s.value for s in fam.samples] for name, fam in fams.items()} == {
        "a": [1.0],
        "b": [2.0],
    }


def test_error_message_is_bounded_for_huge_lines() -> None:
    err = error_of("a " + "x" * 100_000)
    assert len(str(err)) < 400


def test_invalid_utf8() -> None:
    err = error_of(b'a 1\nb{x="\xff"} 2\n')
    assert err.line == 0
    assert "not UTF-8 at byte 9" in err.reason


def test_size_cap_bytes() -> None:
    page = b"a 1\n" * 10
    assert len(samples(parse(page, max_bytes=len(page)))) == 10
    err = error_of(page, max_bytes=len(page) - 1)
    assert err.line == 0
    assert "cap" in err.reason


def test_size_cap_counts_utf8_bytes_of_a_str() -> None:
    text = 'a{x="' + "é" * 10 + '"} 1\n'  # 20 characters, 30 bytes
    assert len(text) <= 25 < len(text.encode())
    assert "cap" in error_of(text, max_bytes=25).reason
    assert parse(text, max_bytes=len(text.encode()))


def test_size_cap_is_checked_before_any_work() -> None:
    # Invalid UTF-8 and malformed lines would be errors too; the cap must win, and fast.
    huge = b"\xff{{{ not a sample\n" * (DEFAULT_MAX_BYTES // 16)
    assert len(huge) > DEFAULT_MAX_BYTES
    start = time.perf_counter()
    err = error_of(huge)
    assert time.perf_counter() - start < 0.5
    assert (err.line, "cap" in err.reason) == (0, True)
    err = error_of("x" * (DEFAULT_MAX_BYTES + 1))
    assert (err.line, "cap" in err.reason) == (0, True)


# ------------------------------------------------------------------ pathological inputs


def _bounded(text: str, limit_s: float = 10.0) -> tuple[float, dict[str, MetricFamily] | None]:
    """Parse, returning (seconds, families or None for an ExpositionError)."""
    start = time.perf_counter()
    try:
        result: dict[str, MetricFamily] | None = parse(text)
    except ExpositionError:
        result = None
    elapsed = time.perf_counter() - start
    assert elapsed < limit_s, f"took {elapsed:.1f}s"
    return elapsed, result


SIXTEEN = DEFAULT_MAX_BYTES - 64


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        pytest.param("a" * SIXTEEN + " 1", True, id="16MiB-name"),
        pytest.param("a " + "1" * SIXTEEN, True, id="16MiB-value"),
        pytest.param('a{b="' + "x" * SIXTEEN + '"} 1', True, id="16MiB-label-value"),
        pytest.param('a{b="' + "x" * SIXTEEN, False, id="16MiB-unterminated-value"),
        pytest.param("a{" + "}" * SIXTEEN + " x y z", False, id="16MiB-closing-braces"),
        pytest.param("a{" + '"' * SIXTEEN, False, id="16MiB-quotes"),
        pytest.param('a{b="c"' + " " * SIXTEEN + "x} 1", False, id="16MiB-blanks-in-labels"),
        pytest.param('a{b="c",' + " \t" * (SIXTEEN // 2) + "} 1 x", False, id="blanks-comma"),
        pytest.param("a" + "\t" * SIXTEEN + "1", True, id="16MiB-tabs"),
        pytest.param("a 1 " + "9" * SIXTEEN, False, id="16MiB-timestamp"),
        pytest.param('a{b="' + "\\\\" * (SIXTEEN // 2) + '"} 1', True, id="8M-escapes"),
        pytest.param('a{b="' + "\\\\" * (SIXTEEN // 2) + '\\q"} 1', True, id="8M-escapes-odd"),
        pytest.param('a{b="' + '\\"' * (SIXTEEN // 2) + '"} 1', True, id="8M-escaped-quotes"),
        pytest.param("# HELP a " + "\\n" * (SIXTEEN // 2), True, id="8M-help-escapes"),
        pytest.param("# HELP a " + "\\\\" * (SIXTEEN // 2) + "\\x", True, id="help-odd-end"),
        pytest.param("\n" * SIXTEEN, True, id="16M-newlines"),
        pytest.param("# c\n" * (SIXTEEN // 4), True, id="4M-comments"),
    ],
)
def test_pathological_inputs_finish_quickly(text: str, ok: bool) -> None:
    _, result = _bounded(text)
    assert (result is not None) is ok


def test_100k_labels() -> None:
    block = ",".join(f'label_{i}="value {i}"' for i in range(100_000))
    _, result = _bounded("a{" + block + "} 1\n")
    assert result is not None
    assert len(result["a"].samples[0].labels) == 100_000
    _, result = _bounded("a{" + block + ',label_7="again"} 1\n')
    assert result is None
    _, result = _bounded("a{" + block + ",,} 1\n")
    assert result is None


def test_escape_heavy_label_value_is_unescaped_correctly() -> None:
    raw = '\\\\\\"\\n' * 100_000
    _, result = _bounded('a{b="' + raw + '"} 1')
    assert result is not None
    assert result["a"].samples[0].labels["b"] == '\\"\n' * 100_000


def test_time_grows_linearly() -> None:
    """A quadratic regex would make 8x the input cost ~64x the time."""

    def cost(n: int) -> float:
        text = "a{" + "}" * n + " x y z"  # the shape that broke a greedy `\{(.*)\}`
        return min(_bounded(text)[0] for _ in range(3))

    small, large = cost(250_000), cost(2_000_000)
    assert large < 30 * max(small, 1e-4)


def _peak_bytes(text: str) -> int:
    """Peak memory allocated while parsing ``text`` (the text itself not counted)."""
    tracemalloc.start()
    try:
        parse(text)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_is_bounded_by_the_input() -> None:
    # One huge line: the line, its label value and the chunk list -- a few times the input.
    assert _peak_bytes('a{b="' + "x" * MiB + '"} 1') < 5 * MiB
    # Empty lines are split a chunk at a time: 1 Mi of them need far less than the 8 MiB
    # that a list of every line would.
    assert _peak_bytes("\n" * MiB) < 4 * MiB
    # The densest page there is, a sample every 4 bytes: what stays is ~80 bytes a sample
    # (plus, here, the current chunk's lines).
    n = 65_536
    assert _peak_bytes("a 1\n" * n) < 160 * n


# ------------------------------------------------------------- differential vs prometheus


Key = tuple[str, tuple[tuple[str, str], ...], object]


def _key(family_type: str, name: str, labels: Mapping[str, str], value: float) -> Key:
    # prometheus_client renames a counter's samples to end in _total (and strips _total
    # from the family name); compare counter samples without the suffix on both sides.
    if family_type == "counter":
        name = name.removesuffix("_total")
    return (name, tuple(sorted(labels.items())), "NaN" if math.isnan(value) else float(value))


def _theirs(text: str) -> Counter[Key]:
    return Counter(
        _key(fam.type, s.name, s.labels, s.value)
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    )


def _ours(fams: Iterable[MetricFamily]) -> Counter[Key]:
    return Counter(_key(fam.type, s.name, s.labels, s.value) for fam in fams for s in fam.samples)


TRICKY_PAGE = """\
# HELP tricky A help with a \\\\ backslash and a \\n newline.
# TYPE tricky gauge
tricky{path="C:\\\\dir\\\\file",quote="say \\"hi\\"",nl="a\\nb",brace="}{",u="ünï ✓"} 1.5
tricky{path="x"} NaN
tricky{path="y"} -Inf
tricky{path="z"} +Inf
# TYPE rpc summary
rpc{quantile="0.5"} 0.25
rpc_sum 10
rpc_count 40
untyped_thing 7
"""


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(dcgm_page(), id="dcgm-8xH100"),
        pytest.param(dcgm_page(2, seed=1, hostname="other"), id="dcgm-2"),
        pytest.param(vllm_page(), id="vllm-5000"),
        pytest.param(vllm_page(1, 1, seed=3), id="vllm-small"),
        pytest.param(TRICKY_PAGE, id="tricky"),
    ],
)
def test_same_samples_as_prometheus_client(text: str) -> None:
    ours = _ours(parse(text).values())
    assert sum(ours.values()) > 0
    assert ours == _theirs(text)


def test_bench_pages_are_realistic() -> None:
    dcgm = parse(dcgm_page())
    assert len(dcgm) >= 30
    assert all(fam.help and fam.type in ("gauge", "counter") for fam in dcgm.values())
    assert all(len(fam.samples) == 8 for fam in dcgm.values())
    labels = dcgm["DCGM_FI_DEV_GPU_UTIL"].samples[0].labels
    assert list(labels) == [
        "gpu",
        "UUID",
        "pci_bus_id",
        "device",
        "modelName",
        "Hostname",
        "DCGM_FI_DRIVER_VERSION",
        "container",
        "namespace",
        "pod",
    ]
    page = vllm_page()
    assert 4_800 <= page.count("\n") <= 5_500
    vllm = parse(page)
    assert vllm["vllm:time_to_first_token_seconds"].type == "histogram"
    assert vllm["vllm:prompt_tokens_total"].type == "counter"
    assert vllm["vllm:prompt_tokens_created"].type == "gauge"
    assert len({s.labels["model_name"] for s in vllm["vllm:num_requests_running"].samples}) > 1
    assert page == vllm_page()  # deterministic
    assert dcgm_page() == dcgm_page()
