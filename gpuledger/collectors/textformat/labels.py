"""Label sets as the parser hands them out: a plain ``dict``, or, past a budget, a
:class:`LazyLabels` that keeps only the validated text of the label set.

Why two kinds: a ``dict`` of short strings costs several times the text it came from (a
``x="ab",`` pair is 7 bytes of page and ~60 bytes of Python objects), so a hostile 16 MiB
page of label-dense lines would cost well over 100 MiB as dicts. Every real page fits in
the parser's eager budget and gets plain dicts (the fastest to read); once a page has
spent the budget, further label sets are stored as their text (shared by identical
sets) and turned into a dict the first time they are read. Both are read-only
``Mapping[str, str]``: the parser validated the text either way, so reading a lazy set
cannot fail.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

_LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*+"
# A label value, as an unrolled loop: a backslash escapes any one character, as in
# Prometheus' lexer (promlex.l `\"(\\.|[^\\"])*\"`); unescape() undoes the three the
# format defines and keeps any other as written, as promparse.go's lvalReplacer does.
LABEL_VALUE = r'[^"\\]*+(?:\\.[^"\\]*+)*+'
LABEL_PAIR_RE = re.compile(rf'({_LABEL_NAME})[ \t]*+=[ \t]*+"({LABEL_VALUE})"')


def unescape(raw: str) -> str:
    """Undo ``\\\\``, ``\\"`` and ``\\n``; any other backslash is kept as written
    (``\\q`` stays ``\\q``), as Prometheus reads a label value.

    Backslashes pair up left to right, so splitting on ``\\\\`` leaves pieces in which
    no backslash is escaped; replacing ``\\"`` and ``\\n`` there is a left-to-right
    replacer's result, with no per-escape callback.
    """
    pieces = raw.split("\\\\")
    for i, piece in enumerate(pieces):
        if "\\" in piece:
            pieces[i] = piece.replace('\\"', '"').replace("\\n", "\n")
    return "\\".join(pieces)


def labels_of(block: str) -> tuple[dict[str, str], int]:
    """The labels of a label-set text that matched the label-set grammar, and how many
    pairs it held (more pairs than labels means a duplicate name)."""
    pairs = LABEL_PAIR_RE.findall(block)
    labels = dict(pairs)
    if "\\" in block:
        for name, raw in pairs:
            if "\\" in raw:
                labels[name] = unescape(raw)
    return labels, len(pairs)


def names_are_unique(block: str) -> bool:
    """Whether a label-set text that matched the label-set grammar names each label once.

    Without a backslash the text's quotes alternate name-part / value, so the names are
    in the even pieces of a split on '"': C-level string work instead of a regex match
    object per pair, for a lazily kept label set. Without blanks every such piece reads
    ``,name=`` (the first once given its comma), so the pieces compare as the names do.
    """
    if "\\" in block:
        names = [name for name, _ in LABEL_PAIR_RE.findall(block)]
    else:
        names = block.split('"')[:-1:2]
        if names:
            names[0] = "," + names[0]
            joined = "".join(names)
            if " " in joined or "\t" in joined:
                names = [piece.strip(" \t,=") for piece in names]
    return len(set(names)) == len(names)


class LazyLabels(Mapping[str, str]):
    """A validated label-set text, read into a dict on first use (then kept)."""

    __slots__ = ("_block", "_dict")

    def __init__(self, block: str) -> None:
        self._block = block
        self._dict: dict[str, str] | None = None

    def _labels(self) -> dict[str, str]:
        d = self._dict
        if d is None:
            d = self._dict = labels_of(self._block)[0]
        return d

    def __getitem__(self, key: str) -> str:
        return self._labels()[key]

    def get(self, key: str, default: object = None) -> str | object:  # type: ignore[override]
        return self._labels().get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._labels()

    def __iter__(self) -> Iterator[str]:
        return iter(self._labels())

    def __len__(self) -> int:
        return len(self._labels())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self._labels() == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # like dict: mutable-looking, unhashable

    def __repr__(self) -> str:
        return repr(self._labels())
