"""A strict, bounded parser for the Prometheus text exposition format (0.0.4).

Both dcgm-exporter and vLLM are read through this one parser. It exists rather than
``prometheus_client.parser`` for three reasons: that parser walks label text a character
at a time (about ten times slower on a 5,000-line vLLM page, see ``bench/``); it yields
partial results before failing, so a truncated page could half-update a snapshot; and it
has no caps. Here either every family comes back or an :class:`ExpositionError` names
the offending line -- nothing in between.

It reads what Prometheus' own scrape parser reads (``model/textparse/promparse.go``), with
the differences listed, each with its upstream reference, in
``docs/upstream-prometheus-text.md``. Accepted: ``# HELP`` (``\\\\`` and ``\\n`` undone,
any other backslash kept as written, as Prometheus does), ``# TYPE``, other comments (a
bare ``# HELP`` or ``# TYPE`` is one), samples with optional labels (escapes ``\\\\``,
``\\"``, ``\\n`` undone, any other kept as written; a trailing comma allowed), values
including ``NaN``/``+Inf``/``-Inf`` (and Go's other spellings of them, which Prometheus
reads), an optional integer millisecond timestamp, blank lines, ``\\r\\n`` line ends and
an OpenMetrics ``# EOF``. Spaces and tabs may lead a line, surround ``{``, ``}``, ``=`` and
``,`` in a label set, and separate the tokens.

Samples are grouped into the family declared by the latest ``# TYPE`` whose name they
extend with a known suffix (``_total``, ``_created``, ``_bucket``, ``_sum``, ``_count``,
``_info``); any other sample starts (or joins) an ``untyped`` family of its own name. A
family whose samples are split across the page is merged, as prometheus/common's
``TextToMetricFamilies`` does; a repeated ``# TYPE`` with the same type, or one after the
family's first samples, is merged too (Prometheus ingests both).

Bounded: the input is capped at ``max_bytes`` UTF-8 bytes before any other work, and at
``max_samples`` samples while parsing (the parse stops at the first sample over). Bytes
are decoded and split a chunk at a time, so no copy or line list of the whole page is
held. Every regular expression is written so that it cannot backtrack catastrophically
(no two adjacent sub-patterns can match the same character), so time is linear in the
input. Label sets are plain dicts until a page has spent ``_EAGER_LABEL_CHARS`` of
label text on them; further ones are kept as their text (:mod:`.labels`), so memory stays
near the size of the input on a hostile page. The ``labels`` mapping of a sample may be
shared with other samples of the same page, and with samples of earlier pages parsed with
the same :class:`ParseCache`: treat it as read-only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from gpuledger.collectors.textformat.labels import (
    LABEL_PAIR_RE,
    LABEL_VALUE,
    LazyLabels,
    labels_of,
    names_are_unique,
    unescape,
)

DEFAULT_MAX_BYTES = 16 * 1024 * 1024
# The largest real pages: dcgm-exporter, 8 GPUs x (board + 7 MIG instances) x 200 fields
# = 12,800 samples; vLLM, 8 engines x 4 model names ~ 10,600; a LiteLLM gateway, 100
# tenants x 10 models x ~20 ~ 20,000 (docs/upstream-prometheus-text.md). 100,000 is 5x the
# largest, and keeps the worst page within both caps under 64 MiB (bench/bench_parser.py).
DEFAULT_MAX_SAMPLES = 100_000

# Possessive quantifiers (*+, ++) wherever what follows can never start with what they
# repeat: the same language, but the engine keeps no backtracking state, which is what
# makes a 16 MiB label value with millions of escapes take a fraction of a second.
_METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*+"
_LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*+"
_LABEL_VALUE = LABEL_VALUE
_PAIR = rf'{_LABEL_NAME}[ \t]*+=[ \t]*+"{_LABEL_VALUE}"'
_LABEL_SET = rf"{_PAIR}(?:[ \t]*+,[ \t]*+{_PAIR})*+[ \t]*+(?:,[ \t]*+)?"
# A decimal float (what Go's and Python's parsers share, minus "_" and non-ASCII digits)
# or a special value as Prometheus reads it: Go's strconv.ParseFloat takes "inf" and
# "infinity" in any case with an optional sign, and "nan" in any case without one
# (promparse.go parseFloat; docs/upstream-prometheus-text.md).
_VALUE = (
    r"[+-]?(?:[0-9]++(?:\.[0-9]*+)?|\.[0-9]++)(?:[eE][+-]?[0-9]++)?"
    r"|[+-]?[iI][nN][fF](?:[iI][nN][iI][tT][yY])?+|[nN][aA][nN]"
)
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
_LABEL_PAIR_RE = LABEL_PAIR_RE
_COMMENT_RE = re.compile(r"#[ \t]+(HELP|TYPE)(?![^ \t])")
_TYPE_RE = re.compile(rf"#[ \t]+TYPE[ \t]+({_METRIC_NAME})[ \t]+([^ \t]+)[ \t]*")
_HELP_RE = re.compile(rf"#[ \t]+HELP[ \t]+({_METRIC_NAME})(?:[ \t]+(.*))?")
# Diagnosis only (after a fast-path check refused a line): single tokens, each linear.
_NAME_AT = re.compile(_METRIC_NAME)
_LABEL_NAME_AT = re.compile(_LABEL_NAME)
_BLANKS_AT = re.compile(r"[ \t]*+")
_TOKEN_AT = re.compile(r"[^ \t]*+")
_QUOTED_AT = re.compile(r'"([^"\\]*+(?:\\.[^"\\]*+)*+)("?)')
_VALUE_RE = re.compile(_VALUE)
_TIMESTAMP_RE = re.compile(_TIMESTAMP)

_INT64_MAX = 2**63 - 1
_CACHE_MAX = 4096
# Label text a page may spend on eager dicts (~9 bytes of objects per byte of text at
# worst) before further label sets are kept as text; every real page stays under it.
_EAGER_LABEL_CHARS = 1 << 20
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
# Text made only of these that float() reads is a value in the format's grammar, with
# blanks around it: float() reads exactly [+-](digits[.digits]|.digits)[e[+-]digits]
# between blanks over this alphabet (no "_", no inf/nan spelling, no non-ASCII digit).
NUMBER_CHARS = " 0123456789.eE+-"


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


class ParseCache:
    """What one parse learnt about a source's page that the next parse of it can reuse:
    metric names by the text before ``{`` and label sets by the text inside ``{...}``,
    each validated when first seen (a collector keeps one per endpoint).

    A page's label-set texts are the same from one scrape to the next even where every
    value moves (a histogram bucket's labels are fixed; its count is not), so with a
    cache kept from the last scrape a page's label sets are looked up instead of read
    again: about a third of the parse of a vLLM page. The results are the same with or
    without it (a cached entry is what reading its text again would give). Bounded:
    each table is emptied before a parse that finds it full (``_CACHE_MAX`` entries,
    the bound a single parse already had), so a page whose label sets keep changing
    costs no more than without a cache. Not thread-safe: one parse at a time.
    """

    __slots__ = ("labels", "names")

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.labels: dict[str, Mapping[str, str]] = {}


def _unescape_help(raw: str) -> str:
    """HELP text as Prometheus reads it: ``\\\\`` and ``\\n`` undone, any other backslash
    (``\\"`` included) kept as written (promparse.go's ``helpReplacer``)."""
    pieces = raw.split("\\\\")
    for i, piece in enumerate(pieces):
        if "\\n" in piece:
            pieces[i] = piece.replace("\\n", "\n")
    return "\\".join(pieces)


def _chunks(text: str | bytes) -> Iterator[str]:
    """The text a chunk of whole lines at a time (the ``\\n`` between chunks dropped), so
    neither a decoded copy nor a list of every line of the page is ever held. A chunk of
    bytes is decoded alone: ``\\n`` never occurs inside a UTF-8 sequence."""
    pos, size = 0, len(text)
    if isinstance(text, str):
        while pos < size:
            end = text.find("\n", pos + _CHUNK_CHARS)
            if end < 0:
                end = size
            yield text[pos:end]
            pos = end + 1
        return
    while pos < size:
        end = text.find(b"\n", pos + _CHUNK_CHARS)
        if end < 0:
            end = size
        try:
            yield text[pos:end].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ExpositionError(0, f"not UTF-8 at byte {pos + exc.start}") from None
        pos = end + 1


def _plain_pair(tail: str) -> tuple[str, str] | None:
    """``name="value"`` in its plain form (no blank, no backslash: how every exporter
    writes a bucket's ``le``), read by string operations; None for any other text, which
    then goes through _LAST_PAIR_RE. ``isidentifier`` on ASCII text is exactly the label
    name grammar ``[a-zA-Z_][a-zA-Z0-9_]*``."""
    eq = tail.find('="')
    if eq <= 0 or len(tail) < eq + 3 or tail[-1] != '"':
        return None
    name, value = tail[:eq], tail[eq + 2 : -1]
    if not (name.isascii() and name.isidentifier()) or '"' in value or "\\" in value:
        return None
    return name, value


def _line_no(lines: list[str], line: str, base: int) -> int:
    """The 1-based number of ``line`` (an element of ``lines``, the chunk that starts after
    line ``base``): found by identity, so the hot loop keeps no counter. A one-character
    line may be a shared object, but an identical earlier line would have failed first."""
    for i, candidate in enumerate(lines):
        if candidate is line:
            return base + i + 1
    return base + lines.index(line) + 1


def _skip_blanks(line: str, pos: int) -> int:
    m = _BLANKS_AT.match(line, pos)
    return pos if m is None else m.end()


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


def parse(
    text: str | bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    cache: ParseCache | None = None,
) -> dict[str, MetricFamily]:
    """Parse a whole exposition page into families keyed by family name.

    ``cache``, if given, is read and extended (see :class:`ParseCache`); the families
    are the same either way.

    Raises :class:`ExpositionError` for input over ``max_bytes`` (checked before any
    work; a ``str`` is measured in UTF-8 bytes), a page of more than ``max_samples``
    samples (raised at the first one over), undecodable bytes, or the first malformed
    line.
    """
    if max_samples <= 0:
        raise ValueError("max_samples must be positive")
    if len(text) > max_bytes or (isinstance(text, str) and _utf8_length(text) > max_bytes):
        size = len(text) if isinstance(text, bytes) else "over"
        raise ExpositionError(0, f"exposition is {size} bytes, over the {max_bytes}-byte cap")
    page = _Page(max_samples, cache)
    base = 0
    for chunk in _chunks(text):
        lines = chunk.split("\n")
        if "\r" in chunk:
            lines = [line[:-1] if line[-1:] == "\r" else line for line in lines]
        if not page.lines(lines, base):
            break
        base += len(lines)
        del chunk, lines  # before the next chunk is read: one chunk's lines held at a time
    return page.families


class _Page:
    """The state of one parse: families, the family samples currently go to, caches."""

    def __init__(self, max_samples: int, cache: ParseCache | None = None) -> None:
        self.families: dict[str, MetricFamily] = {}
        self.typed: dict[str, str] = {}  # declared family name -> declared type
        self.owner: dict[str, MetricFamily] = {}  # sample name -> its typed family
        self.members: dict[str, tuple[str, ...]] = {}  # typed family -> its sample names
        self.current_names: tuple[str, ...] = ()
        self.current_append: Callable[[Sample], None] = list[Sample]().append
        self.max_samples = max_samples
        self.left = max_samples  # samples and families still allowed under the cap
        if cache is None:
            cache = ParseCache()
        elif len(cache.names) >= _CACHE_MAX or len(cache.labels) >= _CACHE_MAX:
            cache.names.clear()
            cache.labels.clear()
        self.names = cache.names  # text before "{" -> metric name (and plain names)
        self.labels_cache = cache.labels  # text in "{...}" -> labels
        self.no_labels: dict[str, str] = {}
        self.eager_left = _EAGER_LABEL_CHARS

    def lines(self, lines: list[str], base: int) -> bool:
        """Parse ``lines`` (line ``base + 1`` onwards); False once ``# EOF`` is read.

        The fast path: a name cannot hold "{" and a value or timestamp cannot hold "}",
        so the first "{" opens the label set and the last "}" closes it (``partition``
        and ``rpartition``: two C calls for the three parts of the line). The name and the
        label set are validated once per distinct text (bounded caches) against the
        grammar of _SAMPLE_RE; the value is read by ``float`` and accepted only in the
        alphabet where both grammars agree (NUMBER_CHARS); anything else takes
        the careful path, whose refusals _diagnose_sample explains.
        """
        current_names, current_append = self.current_names, self.current_append
        names, labels_cache, no_labels = self.names, self.labels_cache, self.no_labels
        plain_match = _PLAIN_HEAD_RE.fullmatch
        new_sample, sample_type, number_chars = object.__new__, Sample, NUMBER_CHARS
        set_name, set_labels, set_value, set_ts = _SAMPLE_SETTERS
        left = self.left
        labels: Mapping[str, str] | None
        for line in filter(None, lines):  # blank lines skipped in C
            if line[0] in "# \t":
                if line[0] == "#" and not ("HELP" in line or "TYPE" in line or "EOF" in line):
                    continue  # a plain comment, without a method call
                self.current_names, self.current_append, self.left = (
                    current_names, current_append, left
                )  # fmt: skip
                if not self._other(line, lines, base):
                    return False
                current_names, current_append, left = (
                    self.current_names, self.current_append, self.left
                )  # fmt: skip
                continue
            head, brace, tail = line.partition("{")
            if not brace:
                m = plain_match(line)
                if m is None:
                    raise _diagnose_sample(line, _line_no(lines, line, base))
                name, rest = m.groups()
                name = names.setdefault(name, name) if len(names) < _CACHE_MAX else name
                labels = no_labels
            else:
                block, close, rest = tail.rpartition("}")
                name = names.get(head)
                if name is None or not close:
                    name = self._name(head, not close, line, lines, base)
                labels = labels_cache.get(block)
                if labels is None:
                    labels = self._new_labels(block, line, lines, base)
            try:
                value = float(rest)
            except ValueError:
                value, ts = self._rest(rest, line, lines, base)
            else:
                ts = None
                if rest.strip(number_chars):  # a letter, "_", a tab, non-ASCII...
                    value, ts = self._rest(rest, line, lines, base)
            left -= 1
            if left < 0:
                raise self._over_cap(line, lines, base)
            sample = new_sample(sample_type)
            set_name(sample, name)
            set_labels(sample, labels)
            set_value(sample, value)
            set_ts(sample, ts)
            if name in current_names:
                current_append(sample)
                continue
            self.left = left
            current_names, current_append = self._family_for(name, line, lines, base)
            left = self.left
            current_append(sample)
        self.current_names, self.current_append, self.left = current_names, current_append, left
        return True

    def _over_cap(self, line: str, lines: list[str], base: int) -> ExpositionError:
        return ExpositionError(
            _line_no(lines, line, base),
            f"more than {self.max_samples} samples and families, over the sample cap",
        )

    def _name(self, head: str, unclosed: bool, line: str, lines: list[str], base: int) -> str:
        """The metric name in the text before "{" (cached), or the line's error."""
        m = None if unclosed else _NAME_HEAD_RE.fullmatch(head)
        if m is None:
            raise _diagnose_sample(line, _line_no(lines, line, base))
        name: str = m.group(1)
        if len(self.names) < _CACHE_MAX:
            self.names[head] = name
        return name

    def _rest(self, rest: str, line: str, lines: list[str], base: int) -> tuple[float, int | None]:
        """Value and timestamp of the text after the labels, the careful way."""
        m = _REST_RE.fullmatch(rest)
        if m is None:
            raise _diagnose_sample(line, _line_no(lines, line, base))
        value_text, ts_text = m.groups()
        if ts_text is None:
            return float(value_text), None
        return float(value_text), _timestamp(ts_text, _line_no(lines, line, base), line)

    def _new_labels(self, block: str, line: str, lines: list[str], base: int) -> Mapping[str, str]:
        """Labels of a label-set text not seen before on this page (and remember them).

        Histogram buckets differ from each other only in a last ``le`` pair, so when the
        text up to the last comma is a label set already seen (and validated) and ends with
        a closing quote, only the final pair is checked; otherwise the whole set is.
        """
        cache = self.labels_cache
        labels: Mapping[str, str]
        comma = block.rfind(",")
        base_labels = cache.get(block[:comma]) if comma > 0 and block[comma - 1] == '"' else None
        pair = None
        if isinstance(base_labels, dict) and self.eager_left > 0:
            pair = _plain_pair(block[comma + 1 :])
            if pair is None:
                m = _LAST_PAIR_RE.fullmatch(block, comma + 1)
                if m is not None:
                    name, raw = m.groups()
                    pair = name, unescape(raw) if "\\" in raw else raw
        if base_labels is not None and pair is not None:
            name, value = pair
            if name in base_labels:
                raise ExpositionError(
                    _line_no(lines, line, base), f"duplicate label {name!r}", line
                )
            eager = dict(base_labels)
            eager[name] = value
            labels = eager
        elif _LABEL_BLOCK_RE.fullmatch(block) is None:
            raise _diagnose_sample(line, _line_no(lines, line, base))
        elif self.eager_left > 0:
            eager, pairs = labels_of(block)
            if len(eager) != pairs:
                raise _diagnose_sample(line, _line_no(lines, line, base))
            labels = eager
        elif names_are_unique(block):
            labels = LazyLabels(block)
        else:
            raise _diagnose_sample(line, _line_no(lines, line, base))
        if self.eager_left > 0:
            self.eager_left -= len(block)
        if len(cache) < _CACHE_MAX:
            cache[block] = labels
        return labels

    def _family_for(
        self, name: str, line: str, lines: list[str], base: int
    ) -> tuple[tuple[str, ...], Callable[[Sample], None]]:
        """Where samples named ``name`` go from now on: the typed family that owns the
        name (wherever on the page it was declared), else the untyped family of that
        name. Samples of one family split across the page are merged."""
        fam = self.owner.get(name)
        if fam is not None:
            return self.members[fam.name], fam.samples.append
        fam = self.families.get(name)
        if fam is None:
            fam = self._new_family(name, line, lines, base)
        return (name,), fam.samples.append

    def _new_family(self, name: str, line: str, lines: list[str], base: int) -> MetricFamily:
        """A family not seen before. Families count against the sample cap too: a page of
        nothing but ``# TYPE`` lines would otherwise hold ~350 bytes per 17-byte line."""
        self.left -= 1
        if self.left < 0:
            raise ExpositionError(
                _line_no(lines, line, base),
                f"more than {self.max_samples} samples and families, over the sample cap",
            )
        fam = self.families[name] = MetricFamily(name)
        return fam

    def _other(self, line: str, lines: list[str], base: int) -> bool:
        """A line that starts with "#" or a blank; False for ``# EOF``."""
        if line[0] != "#":
            stripped = line.lstrip(" \t")
            return not stripped or self.lines([stripped], _line_no(lines, line, base) - 1)
        if line == "# EOF":
            return False
        m = _COMMENT_RE.match(line)
        if m is None or not line[m.end() :].strip(" \t"):
            return True  # a comment, or a bare "# HELP" / "# TYPE" (one to Prometheus too)
        m = _TYPE_RE.fullmatch(line)
        if m is not None:
            self._type(m.group(1), m.group(2), line, lines, base)
            return True
        m = _HELP_RE.fullmatch(line)
        if m is None:
            raise ExpositionError(_line_no(lines, line, base), "malformed HELP/TYPE line", line)
        name, help_text = m.group(1), m.group(2) or ""
        fam = self.families.get(name)
        if fam is None:
            fam = self._new_family(name, line, lines, base)
        fam.help = _unescape_help(help_text) if "\\" in help_text else help_text
        return True

    def _type(self, name: str, mtype: str, line: str, lines: list[str], base: int) -> None:
        """A ``# TYPE`` line: declare (or, with the same type again, resume) a family.

        Samples its names had before the declaration are moved into it, so a family
        typed after its first samples is one family, as Prometheus reads it.
        """
        if mtype not in _TYPES:
            raise ExpositionError(
                _line_no(lines, line, base), f"unknown metric type {mtype[:40]!r}", line
            )
        declared = self.typed.get(name)
        if declared is not None and declared != mtype:
            raise ExpositionError(
                _line_no(lines, line, base),
                f"conflicting TYPE lines for {name!r}: {declared}, then {mtype}",
                line,
            )
        families = self.families
        fam = families.get(name)
        if fam is None:
            fam = self._new_family(name, line, lines, base)
        if declared is None:
            self.typed[name] = mtype
            fam.type = "untyped" if mtype == "unknown" else mtype
            members = (name, *(name + s for s in _SUFFIXES.get(mtype, ())))
            self.members[name] = members
            for member in members:
                self.owner[member] = fam
                early = families.get(member) if member != name else None
                if early is not None and member not in self.typed:
                    fam.samples.extend(families.pop(member).samples)
        elif self.owner.get(name) is not fam:  # re-declared after a later TYPE took a name
            for member in self.members[name]:
                self.owner[member] = fam
        self.current_names = self.members[name]
        self.current_append = fam.samples.append
