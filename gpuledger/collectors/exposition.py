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
blank lines, ``\\r\\n`` line ends and an OpenMetrics ``# EOF``. Samples are grouped into
the family declared by the nearest ``# TYPE`` whose name they extend with a known suffix
(``_total``, ``_created``, ``_bucket``, ``_sum``, ``_count``, ``_info``); any other
sample starts an ``untyped`` family of its own name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_MAX_BYTES = 16 * 1024 * 1024

_METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
_LABEL_VALUE = r'"(?:[^"\\\n]|\\.)*"'
_SAMPLE_RE = re.compile(rf"({_METRIC_NAME})[ \t]*(?:\{{(.*)\}})?[ \t]*(\S+)(?:[ \t]+(\S+))?[ \t]*")
_LABELS_BLOCK_RE = re.compile(
    rf"[ \t]*(?:{_LABEL_NAME}[ \t]*=[ \t]*{_LABEL_VALUE}[ \t]*,[ \t]*)*"
    rf"(?:{_LABEL_NAME}[ \t]*=[ \t]*{_LABEL_VALUE}[ \t]*)?"
)
_LABEL_PAIR_RE = re.compile(rf"({_LABEL_NAME})[ \t]*=[ \t]*\"((?:[^\"\\\n]|\\.)*)\"")
_TYPE_RE = re.compile(rf"#[ \t]+TYPE[ \t]+({_METRIC_NAME})[ \t]+([a-z]+)[ \t]*")
_HELP_RE = re.compile(rf"#[ \t]+HELP[ \t]+({_METRIC_NAME})(?:[ \t]+(.*))?")
_ESCAPE_RE = re.compile(r"\\(.)")
_TIMESTAMP_RE = re.compile(r"-?[0-9]+")

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
_SPECIAL_VALUES = {"NaN": float("nan"), "+Inf": float("inf"), "-Inf": float("-inf"),
                   "Inf": float("inf")}  # fmt: skip
_LABEL_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}
_HELP_ESCAPES = {"\\": "\\", "n": "\n"}


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


def _unescape(value: str, table: Mapping[str, str], line_no: int, line: str) -> str:
    def sub(m: re.Match[str]) -> str:
        ch = m.group(1)
        if ch in table:
            return table[ch]
        raise ExpositionError(line_no, f"invalid escape \\{ch}", line)

    return _ESCAPE_RE.sub(sub, value)


def _parse_value(text: str, line_no: int, line: str) -> float:
    special = _SPECIAL_VALUES.get(text)
    if special is not None:
        return special
    # float() also takes "1_000", "infinity" and " 1"; the format does not.
    if "_" in text or text[-1:].isalpha() or text.lower().lstrip("+-") in ("inf", "nan"):
        raise ExpositionError(line_no, f"invalid sample value {text!r}", line)
    try:
        return float(text)
    except ValueError:
        raise ExpositionError(line_no, f"invalid sample value {text!r}", line) from None


def _parse_labels(block: str, line_no: int, line: str) -> dict[str, str]:
    if not _LABELS_BLOCK_RE.fullmatch(block):
        raise ExpositionError(line_no, "malformed label set", line)
    labels: dict[str, str] = {}
    for name, raw in _LABEL_PAIR_RE.findall(block):
        if name in labels:
            raise ExpositionError(line_no, f"duplicate label {name!r}", line)
        labels[name] = _unescape(raw, _LABEL_ESCAPES, line_no, line) if "\\" in raw else raw
    return labels


def parse(text: str | bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, MetricFamily]:
    """Parse a whole exposition page into families keyed by family name.

    Raises :class:`ExpositionError` for input over ``max_bytes`` (checked before any
    work), undecodable bytes, or the first malformed line.
    """
    if len(text) > max_bytes:
        raise ExpositionError(0, f"exposition is {len(text)} bytes, over the {max_bytes}-byte cap")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ExpositionError(0, f"not UTF-8 at byte {exc.start}") from None

    families: dict[str, MetricFamily] = {}
    typed: dict[str, str] = {}  # declared family name -> type
    current: MetricFamily | None = None
    current_names: frozenset[str] = frozenset()
    sample_match = _SAMPLE_RE.fullmatch
    labels_cache: dict[str, dict[str, str]] = {}

    for line_no, line in enumerate(text.split("\n"), 1):
        if line.endswith("\r"):
            line = line[:-1]
        if not line or line.isspace():
            continue
        if line[0] == "#":
            if line.startswith("# EOF"):
                break
            m = _TYPE_RE.fullmatch(line)
            if m:
                name, mtype = m.group(1), m.group(2)
                if mtype not in _TYPES:
                    raise ExpositionError(line_no, f"unknown metric type {mtype!r}", line)
                if name in typed:
                    raise ExpositionError(line_no, f"second TYPE line for {name!r}", line)
                if name in families and families[name].samples:
                    raise ExpositionError(line_no, f"TYPE for {name!r} after its samples", line)
                typed[name] = mtype
                current = families.get(name) or MetricFamily(name)
                current.type = "untyped" if mtype == "unknown" else mtype
                families[name] = current
                current_names = frozenset(
                    (name, *(name + s for s in _SUFFIXES.get(mtype, ())))
                )
                continue
            m = _HELP_RE.fullmatch(line)
            if m:
                name, help_text = m.group(1), m.group(2) or ""
                fam = families.get(name)
                if fam is None:
                    fam = families[name] = MetricFamily(name)
                if "\\" in help_text:
                    help_text = _unescape(help_text, _HELP_ESCAPES, line_no, line)
                fam.help = help_text
                continue
            if line.startswith(("# HELP", "# TYPE")):
                raise ExpositionError(line_no, "malformed HELP/TYPE line", line)
            continue  # any other comment

        m = sample_match(line)
        if m is None:
            raise ExpositionError(line_no, "malformed sample line", line)
        name, block, value_text, ts_text = m.groups()
        if block is None:
            labels: Mapping[str, str] = {}
        else:
            cached = labels_cache.get(block)
            if cached is None:
                cached = _parse_labels(block, line_no, line)
                if len(labels_cache) < 4096:
                    labels_cache[block] = cached
            labels = cached
        value = _parse_value(value_text, line_no, line)
        ts: int | None = None
        if ts_text is not None:
            if not _TIMESTAMP_RE.fullmatch(ts_text):
                raise ExpositionError(line_no, f"invalid timestamp {ts_text!r}", line)
            ts = int(ts_text)
        sample = Sample(name, labels, value, ts)
        if current is not None and name in current_names:
            current.samples.append(sample)
            continue
        fam = families.get(name)
        if fam is None:
            fam = families[name] = MetricFamily(name)
        elif name in typed and fam is not current:
            raise ExpositionError(line_no, f"samples of {name!r} are not contiguous", line)
        fam.samples.append(sample)
        current, current_names = fam, frozenset((name,))
    return families
