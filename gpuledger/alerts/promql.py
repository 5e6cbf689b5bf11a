"""A small PromQL lexer: which metric names does an expression use?

Used by the one-source-of-truth tests of the alert rules and the dashboards: every name
a query selects must be a schema series, a recording rule gpuledger defines, or a
Prometheus built-in. It is not a parser; it knows enough of the grammar to tell a metric
name from a function, an aggregation, a keyword, a label name or a literal:

- string literals, numbers, durations and ``[...]`` range/subquery selectors are skipped;
- identifiers inside ``{...}`` are label names, except the value of ``__name__="x"``
  (and ``__name__=~"re"``, returned verbatim, so a regex never passes for a schema name);
- the label lists after ``by``, ``without``, ``on``, ``ignoring``, ``group_left`` and
  ``group_right`` are skipped;
- an identifier followed by ``(`` is a function call; aggregation operators and binary
  keywords are skipped by name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

AGGREGATIONS = frozenset(
    {
        "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
        "bottomk", "topk", "quantile", "limitk", "limit_ratio",
    }
)  # fmt: skip
KEYWORDS = frozenset({"and", "or", "unless", "atan2", "bool", "offset", "inf", "nan"})
_GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<number>(?:0[xX][0-9a-fA-F]+|[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)[a-zA-Z0-9_]*)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<range>\[[^\]]*\])
  | (?P<matchop>=~|!~|!=|==|=)
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)


def _tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for m in _TOKEN.finditer(expr):
        kind = m.lastgroup or "other"
        if kind in ("ws", "comment"):
            continue
        out.append((kind, m.group()))
    return out


def _unquote(literal: str) -> str:
    body = literal[1:-1]
    if literal[0] == "`":
        return body
    return re.sub(r"\\(.)", r"\1", body)


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects (by bare name or ``{__name__="..."}``)."""
    toks = _tokens(expr)
    names: set[str] = set()
    brace_depth = 0
    label_list = False  # inside by (...), on (...) etc.
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else ("", "")
        if text == "{" and kind == "other":
            brace_depth += 1
        elif text == "}" and kind == "other":
            brace_depth = max(0, brace_depth - 1)
        elif brace_depth:
            if kind == "ident" and text == "__name__" and nxt[0] == "matchop":
                value = toks[i + 2] if i + 2 < len(toks) else ("", "")
                if nxt[1] in ("=", "=~") and value[0] == "string":
                    names.add(_unquote(value[1]))
        elif label_list:
            if text == ")":
                label_list = False
        elif kind == "ident":
            lowered = text.lower()
            if lowered in _GROUPING:
                if nxt[1] == "(":
                    label_list = True
                    i += 1
            elif lowered in KEYWORDS or text in AGGREGATIONS or nxt[1] == "(":
                pass
            else:
                names.add(text)
        i += 1
    return names


def unknown_metric_names(expr: str, known: Iterable[str]) -> set[str]:
    """Names ``expr`` selects that are not in ``known``."""
    return metric_names(expr) - set(known)
