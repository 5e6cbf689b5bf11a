"""A strict, bounded parser for the Prometheus text exposition format (0.0.4).

Both dcgm-exporter and vLLM are read through this one parser. It exists rather than
``prometheus_client.parser`` for three reasons: that parser walks label text a character
at a time (several times slower on a 5,000-line vLLM page, see ``bench/``); it yields
partial results before failing, so a truncated page could half-update a snapshot; and it
has no size cap. Here the whole input is validated first and either every family comes
back or an :class:`ExpositionError` names the offending line -- nothing in between.

What is accepted: ``# HELP`` (with ``\\\\`` and ``\\n`` escapes), ``# TYPE``, other comments,
samples with optional labels (escapes ``\\\\``, ``\\"``, ``\\n``; a trailing comma allowed),
values including ``NaN``/``+Inf``/``-Inf``, an optional integer millisecond timestamp,
blank lines, ``\\r\\n`` line ends and an OpenMetrics ``# EOF``. Spaces and tabs may lead a
line, surround ``{``, ``}``, ``=`` and ``,`` in a label set, and separate the tokens.
Samples are grouped into the family declared by the nearest ``# TYPE`` whose name they
extend with a known suffix (``_total``, ``_created``, ``_bucket``, ``_sum``, ``_count``,
``_info``); any other sample starts (or joins) an ``untyped`` family of its own name.

Every regular expression here is written so that it cannot backtrack
catastrophically (no two adjacent sub-patterns can match the same character), so time is
linear in the input and memory linear in the number of samples. The input is capped at
``max_bytes`` UTF-8 bytes before any other work. The ``labels`` mapping of a sample may be
shared with other samples of the same page: treat it as read-only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import chain

DEFAULT_MAX_BYTES = 16 * 1024 * 1024

# Possessive quantifiers (*+, ++) wherever what follows can never start with what they
# repeat: the same language, but the engine keeps no backtracking state, which is what
# makes a 16 MiB label value with millions of escapes take a fraction of a second.
_METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*+"
_LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*+"
# A label value: only the three escapes of the format, written as an unrolled loop.
_LABEL_VALUE = r'[^"\\]*+(?:\\["\\n][^"\\]*+)*+'
_PAIR = rf'{_LABEL_NAME}[ \t]*+=[ \t]*+"{_LABEL_VALUE}"'
_LABEL_SET = rf"{_PAIR}(?:[ \t]*+,[ \t]*+{_PAIR})*+[ \t]*+(?:,[ \t]*+)?"
# A decimal float (what Go's and Python's parsers share, minus "_" and non-ASCII digits)
# or one of the format's special values.
_VALUE = r"[+-]?(?:[0-9]++(?:\.[0-9]*+)?|\.[0-9]++)(?:[eE][+-]?[0-9]++)?|[+-]?Inf|NaN"
_TIMESTAMP = r"-?[0-9]++"
# The whole sample-line grammar in one expression: the reference that parse()'s fast path
# (below, in parts, with caches) must agree with -- tests/fuzz/test_exposition_fuzz.py checks it.
_SAMPLE_RE = re.compile(
    rf"({_METRIC_NAME})(?:[ \t]*\{{[ \t]*({_LABEL_SET})?\}}[ \t]*|[ \t]+)"
    rf"({_VALUE})(?:[ \t]+({_TIMESTAMP}))?[ \t]*"
)
# The same grammar in parts, for the fast path in parse().
_PLAIN_HEAD_RE = re.compile(rf"({_METRIC_NAME})([ \t].*)")
_NAME_HEAD_RE = re.compile(rf"({_METRIC_NAME})[ \t]*")
_LABEL_BLOCK_RE = re.compile(rf"[ \t]*(?:{_LABEL_SET})?")
_REST_RE = re.compile(rf"[ \t]*({_VALUE})(?:[ \t]+({_TIMESTAMP}))?[ \t]*")
_LAST_PAIR_RE = re.compile(rf'[ \t]*+({_LABEL_NAME})[ \t]*+=[ \t]*+"({_LABEL_VALUE})"[ \t]*+')
_LABEL_PAIR_RE = re.compile(rf'({_LABEL_NAME})[ \t]*+=[ \t]*+"({_LABEL_VALUE})"')
_COMMENT_RE = re.compile(r"#[ \t]+(HELP|TYPE)(?![^ \t])")
_TYPE_RE = re.compile(rf"#[ \t]+TYPE[ \t]+({_METRIC_NAME})[ \t]+([^ \t]+)[ \t]*")
_HELP_RE = re.compile(rf"#[ \t]+HELP[ \t]+({_METRIC_NAME})(?:[ \t]+(.*))?")
_HELP_TEXT_RE = re.compile(r"[^\\]*+(?:\\[\\n][^\\]*+)*+")
# Diagnosis only (after _SAMPLE_RE refused a line): single tokens, each linear.
_NAME_AT = re.compile(_METRIC_NAME)
_LABEL_NAME_AT = re.compile(_LABEL_NAME)
_BLANKS_AT = re.compile(r"[ \t]*+")
_TOKEN_AT = re.compile(r"[^ \t]*+")
_QUOTED_AT = re.compile(r'"([^"\\]*+(?:\\.[^"\\]*+)*+)("?)')
_BAD_ESCAPE_RE = re.compile(r'\\[^"\\n]|\\$')
_VALUE_RE = re.compile(_VALUE)
_TIMESTAMP_RE = re.compile(_TIMESTAMP)

_INT64_MAX = 2**63 - 1
_CACHE_MAX = 4096
_TYPES = frozenset(
    {"counter", "gauge", "histogram", "summary", "untyped", "unknown", "info", "stateset",
     "gaugehistogram"}
)  # fmt: skip
_SUFFIXES: Mapping[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("_sum", "_count", "_created"),
    "info": ("_info",),
}
_CHUNK_CHARS = 1 << 18  # lines are split off this much text at a time


class ExpositionError(ValueError):
    """The text is not valid exposition; ``line`` is 1-based (0 for whole-input errors)."""

    def __init__(self, line: int, reason: str, text: str = "") -> None:
        self.line = line
        self.reason = reason
        snippet = text if len(text) <= 120 else text[:117] + "..."
        where = f"line {line}: " if line else ""
        super().__init__(f"{where}{reason}" + (f": {snippet!r}" if text else ""))


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float
    timestamp_ms: int | None = None


@dataclass(slots=True)
class MetricFamily:
    name: str
    type: str = "untyped"
    help: str = ""
    samples: list[Sample] = field(default_factory=list)


# Sample is frozen; building one through its slot descriptors skips the frozen
# __setattr__ that its generated __init__ goes through (a third of the per-line cost).
_SAMPLE_SETTERS = tuple(
    Sample.__dict__[f].__set__ for f in ("name", "labels", "value", "timestamp_ms")
)


def _unescape(raw: str) -> str:
    """Undo ``\\\\``, ``\\"`` and ``\\n`` in text already checked to hold no other escape.

    Backslashes pair up left to right, so splitting on ``\\\\`` leaves pieces whose
    every backslash starts a ``\\"`` or ``\\n``; no per-escape callback is needed.
    """
    pieces = raw.split("\\\\")
    for i, piece in enumerate(pieces):
        if "\\" in piece:
            pieces[i] = piece.replace('\\"', '"').replace("\\n", "\n")
    return "\\".join(pieces)


def _lines(text: str) -> Iterator[list[str]]:
    """``text.split("\\n")`` a chunk at a time, so no list of every line is held."""
    pos, size = 0, len(text)
    while pos < size:
        end = text.find("\n", pos + _CHUNK_CHARS)
        if end < 0:
            yield text[pos:].split("\n")
            return
        yield text[pos:end].split("\n")
        pos = end + 1


def _parse_labels(block: str, line_no: int, line: str) -> dict[str, str]:
    """Labels of a block already validated by ``_LABEL_BLOCK_RE``."""
    pairs = _LABEL_PAIR_RE.findall(block)
    labels = dict(pairs)
    if len(labels) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise ExpositionError(line_no, f"duplicate label {name!r}", line)
            seen.add(name)
    if "\\" in block:
        for name, raw in pairs:
            if "\\" in raw:
                labels[name] = _unescape(raw)
    return labels


def _skip_blanks(line: str, pos: int) -> int:
    m = _BLANKS_AT.match(line, pos)
    return pos if m is None else m.end()


def _new_labels(
    block: str, cache: dict[str, dict[str, str]], line_no: int, line: str
) -> dict[str, str]:
    """Labels of a label-set text not seen before on this page (and remember them).

    Histogram buckets differ from each other only in a last ``le`` pair, so when the text
    up to the last comma is a label set already seen (and validated) and ends with a
    closing quote, only the final pair is checked; otherwise the whole set is.
    """
    comma = block.rfind(",")
    base = cache.get(block[:comma]) if comma > 0 and block[comma - 1] == '"' else None
    m = None if base is None else _LAST_PAIR_RE.fullmatch(block, comma + 1)
    if base is not None and m is not None:
        name, raw = m.groups()
        if name in base:
            raise ExpositionError(line_no, f"duplicate label {name!r}", line)
        labels = base.copy()
        labels[name] = _unescape(raw) if "\\" in raw else raw
    elif _LABEL_BLOCK_RE.fullmatch(block) is None:
        raise _diagnose_sample(line, line_no)
    else:
        labels = _parse_labels(block, line_no, line)
    if len(cache) < _CACHE_MAX:
        cache[block] = labels
    return labels


def _diagnose_labels(line: str, pos: int, line_no: int) -> ExpositionError | int:
    """Walk a label set from just after its ``{``; an error, or the position after ``}``."""
    pos = _skip_blanks(line, pos)
    seen: set[str] = set()
    while not line.startswith("}", pos):
        if pos >= len(line):
            return ExpositionError(line_no, "unterminated label set", line)
        lm = _LABEL_NAME_AT.match(line, pos)
        if lm is None:
            return ExpositionError(line_no, "malformed label set: expected a label name", line)
        name = lm.group()
        pos = _skip_blanks(line, lm.end())
        if not line.startswith("=", pos):
            return ExpositionError(line_no, f"malformed label set: no '=' after {name!r}", line)
        qm = _QUOTED_AT.match(line, _skip_blanks(line, pos + 1))
        if qm is None:
            return ExpositionError(line_no, f"label {name!r} has an unquoted value", line)
        if not qm.group(2):
            return ExpositionError(line_no, f"unterminated label value for {name!r}", line)
        bad = _BAD_ESCAPE_RE.search(qm.group(1))
        if bad is not None:
            return ExpositionError(line_no, f"invalid escape {bad.group()!r} in label value", line)
        if name in seen:
            return ExpositionError(line_no, f"duplicate label {name!r}", line)
        seen.add(name)
        pos = _skip_blanks(line, qm.end())
        if line.startswith(",", pos):
            pos = _skip_blanks(line, pos + 1)
        elif pos >= len(line):
            return ExpositionError(line_no, "unterminated label set", line)
        elif not line.startswith("}", pos):
            return ExpositionError(line_no, "malformed label set: expected ',' or '}'", line)
    return pos + 1


def _diagnose_sample(line: str, line_no: int) -> ExpositionError:
    """Why ``_SAMPLE_RE`` refused ``line`` (not blank, not a comment, no leading blanks)."""
    m = _NAME_AT.match(line)
    if m is None:
        return ExpositionError(line_no, "invalid metric name", line)
    pos = _skip_blanks(line, m.end())
    if line.startswith("{", pos):
        after = _diagnose_labels(line, pos + 1, line_no)
        if isinstance(after, ExpositionError):
            return after
        pos = _skip_blanks(line, after)
    elif pos == m.end() and pos < len(line):
        return ExpositionError(line_no, "invalid metric name", line)
    tokens: list[str] = []
    while pos < len(line) and len(tokens) < 3:
        tm = _TOKEN_AT.match(line, pos)
        end = pos if tm is None else tm.end()
        tokens.append(line[pos:end])
        pos = _skip_blanks(line, end)
    if not tokens:
        return ExpositionError(line_no, "sample has no value", line)
    if not _VALUE_RE.fullmatch(tokens[0]):
        return ExpositionError(line_no, f"invalid sample value {tokens[0][:40]!r}", line)
    if len(tokens) > 1 and not _TIMESTAMP_RE.fullmatch(tokens[1]):
        return ExpositionError(line_no, f"invalid timestamp {tokens[1][:40]!r}", line)
    if len(tokens) > 2:
        return ExpositionError(line_no, "unexpected text after the timestamp", line)
    return ExpositionError(line_no, "malformed sample line", line)


def _timestamp(text: str, line_no: int, line: str) -> int:
    ts = int(text) if len(text) <= 20 else _INT64_MAX + 1
    if not -_INT64_MAX - 1 <= ts <= _INT64_MAX:
        raise ExpositionError(line_no, f"timestamp {text[:40]!r} out of range", line)
    return ts


def _utf8_length(text: str) -> int:
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def parse(text: str | bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, MetricFamily]:
    """Parse a whole exposition page into families keyed by family name.

    Raises :class:`ExpositionError` for input over ``max_bytes`` (checked before any
    work; a ``str`` is measured in UTF-8 bytes), undecodable bytes, or the first
    malformed line.
    """
    if len(text) > max_bytes or (isinstance(text, str) and _utf8_length(text) > max_bytes):
        size = len(text) if isinstance(text, bytes) else "over"
        raise ExpositionError(0, f"exposition is {size} bytes, over the {max_bytes}-byte cap")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ExpositionError(0, f"not UTF-8 at byte {exc.start}") from None

    families: dict[str, MetricFamily] = {}
    typed: dict[str, str] = {}  # declared family name -> type
    owner: dict[str, MetricFamily] = {}  # sample name -> the typed family it belongs to
    current_names: frozenset[str] = frozenset()
    current_append: Callable[[Sample], None] = list[Sample]().append
    plain_match = _PLAIN_HEAD_RE.fullmatch
    name_match = _NAME_HEAD_RE.fullmatch
    rest_match = _REST_RE.fullmatch
    names: dict[str, str] = {}  # text before "{" -> metric name
    labels_cache: dict[str, dict[str, str]] = {}  # text between "{" and "}" -> labels
    rest_cache: dict[str, tuple[float, int | None]] = {}  # text after "}" -> value, timestamp
    no_labels: dict[str, str] = {}
    new_sample = object.__new__
    set_name, set_labels, set_value, set_ts = _SAMPLE_SETTERS

    line_no = 0
    for line in chain.from_iterable(_lines(text)):
        line_no += 1
        if not line:
            continue
        if line[-1] == "\r":
            line = line[:-1]
            if not line:
                continue
        if line[0] == " " or line[0] == "\t":
            line = line.lstrip(" \t")
            if not line:
                continue
        if line[0] != "#":
            # Fast path. A name cannot hold "{" and a value or timestamp cannot hold "}", so
            # the first "{" opens the label set and the last "}" closes it. Each part is
            # validated once per distinct text (bounded caches) against the same grammar
            # as _SAMPLE_RE; anything refused is handed to _diagnose_sample.
            brace = line.find("{")
            if brace < 0:
                m = plain_match(line)
                if m is None:
                    raise _diagnose_sample(line, line_no)
                name, rest = m.group(1), m.group(2)
                name = names.setdefault(name, name) if len(names) < _CACHE_MAX else name
                labels: Mapping[str, str] | None = no_labels
            else:
                close = line.rfind("}")
                head = line[:brace]
                known = names.get(head)
                if known is None or close < brace:
                    m = name_match(head)
                    if m is None or close < brace:
                        raise _diagnose_sample(line, line_no)
                    known = m.group(1)
                    if len(names) < _CACHE_MAX:
                        names[head] = known
                name = known
                block = line[brace + 1 : close]
                labels = labels_cache.get(block)
                if labels is None:
                    labels = _new_labels(block, labels_cache, line_no, line)
                rest = line[close + 1 :]
            parsed = rest_cache.get(rest)
            if parsed is not None:
                value, ts = parsed
            else:
                m = rest_match(rest)
                if m is None:
                    raise _diagnose_sample(line, line_no)
                value_text, ts_text = m.groups()
                value = float(value_text)
                ts = None if ts_text is None else _timestamp(ts_text, line_no, line)
                if len(rest_cache) < _CACHE_MAX:
                    rest_cache[rest] = value, ts
            sample = new_sample(Sample)
            set_name(sample, name)
            set_labels(sample, labels)
            set_value(sample, value)
            set_ts(sample, ts)
            if name in current_names:
                current_append(sample)
                continue
            fam = owner.get(name)
            if fam is not None:
                raise ExpositionError(line_no, f"samples of {fam.name!r} are not contiguous", line)
            fam = families.get(name)
            if fam is None:
                fam = families[name] = MetricFamily(name)
            current_names = frozenset((name,))
            current_append = fam.samples.append
            current_append(sample)
            continue

        # A comment: HELP, TYPE, EOF or anything else.
        if line == "# EOF":
            break
        if _COMMENT_RE.match(line) is None:
            continue
        m = _TYPE_RE.fullmatch(line)
        if m is not None:
            name, mtype = m.group(1), m.group(2)
            if mtype not in _TYPES:
                raise ExpositionError(line_no, f"unknown metric type {mtype[:40]!r}", line)
            if name in typed:
                raise ExpositionError(line_no, f"second TYPE line for {name!r}", line)
            fam = families.get(name)
            if fam is not None and fam.samples:
                raise ExpositionError(line_no, f"TYPE for {name!r} after its samples", line)
            if fam is None:
                fam = families[name] = MetricFamily(name)
            typed[name] = mtype
            fam.type = "untyped" if mtype == "unknown" else mtype
            current_names = frozenset((name, *(name + s for s in _SUFFIXES.get(mtype, ()))))
            current_append = fam.samples.append
            for member in current_names:
                owner[member] = fam
            continue
        m = _HELP_RE.fullmatch(line)
        if m is not None:
            name, help_text = m.group(1), m.group(2) or ""
            if "\\" in help_text:
                if not _HELP_TEXT_RE.fullmatch(help_text):
                    raise ExpositionError(line_no, "invalid escape in HELP text", line)
                help_text = _unescape(help_text)
            fam = families.get(name)
            if fam is None:
                fam = families[name] = MetricFamily(name)
            fam.help = help_text
            continue
        raise ExpositionError(line_no, "malformed HELP/TYPE line", line)
    return families
