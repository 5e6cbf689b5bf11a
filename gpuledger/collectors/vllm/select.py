"""Cut a vLLM ``/metrics`` page down to the families the collector reads, before parsing.

A vLLM page is mostly series gpuledger does not read (token-count histograms, ``_created``
gauges, process and HTTP metrics, spec-decode, LoRA): handing only the wanted part to the
strict exposition parser is most of what keeps a collection cycle cheap
(``bench/bench_vllm.py`` prints the parse and normalize costs apart).

prometheus_client -- what every vLLM generation prints its page with, single-process and
multiprocess alike -- writes each family as one block: a ``# HELP`` line, a ``# TYPE``
line, then its samples. :func:`select_families` therefore splits the page at ``# HELP``
lines (one C-level split, not a test per line) and keeps whole blocks by family name.
Where a newer spelling of a histogram is on the page, the deprecated one (printed beside
it with the same values during a deprecation window) is dropped unparsed. Anything before
the first ``# HELP`` line, and a page with no ``# HELP`` line at all (not prometheus_client
output), goes through :func:`select_lines`, the line-by-line selection. The kept text is
still parsed strictly; what is dropped is not validated.
"""

from __future__ import annotations

from gpuledger.collectors.vllm.spellings import (
    DISPATCH,
    OLDER_HISTOGRAM_SPELLINGS,
    READ_FAMILIES,
)

__all__ = ["select_families", "select_lines"]

_HELP = b"# HELP "
_SPLIT = b"\n" + _HELP


def _line_prefixes() -> tuple[bytes, ...]:
    prefixes: list[bytes] = []
    for name in DISPATCH:
        prefixes += [f"{name}{{".encode(), f"{name} ".encode()]
    for name in sorted(READ_FAMILIES):
        prefixes += [f"# HELP {name} ".encode(), f"# TYPE {name} ".encode()]
    return tuple(prefixes)


_LINE_PREFIXES = _line_prefixes()
_FAMILIES = frozenset(name.encode() for name in READ_FAMILIES)
_OLDER = {old.encode(): new.encode() for old, new in OLDER_HISTOGRAM_SPELLINGS.items()}


def select_lines(body: bytes) -> bytes:
    """Only the lines of a page that the collector reads (its samples, with their
    ``# HELP`` / ``# TYPE`` lines), in page order. Upstream prints every line from
    column 0; an indented line would not be selected."""
    return b"\n".join([line for line in body.split(b"\n") if line.startswith(_LINE_PREFIXES)])


def select_families(body: bytes) -> bytes:
    """The blocks of the families the collector reads, in page order (see the module
    docstring); equivalent to :func:`select_lines` on prometheus_client output."""
    if body.startswith(_HELP):
        head = b""
        blocks = body[len(_HELP) :].split(_SPLIT)
    else:
        head, *blocks = body.split(_SPLIT)
        if not blocks:
            return select_lines(body)
    kept: list[tuple[bytes, bytes]] = []
    names: set[bytes] = set()
    for block in blocks:
        end = block.find(b" ")
        name = block[:end] if end >= 0 else block
        if name in _FAMILIES:
            kept.append((name, block))
            names.add(name)
    parts = [select_lines(head)] if head else []
    for name, block in kept:
        newer = _OLDER.get(name)
        if newer is None or newer not in names:
            parts.append(_HELP + block)
    return b"\n".join(parts)
