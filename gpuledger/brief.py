"""A bounded ``repr`` of a value read from a user's file, for error messages.

YAML aliases let 700 bytes stand for 10**9 leaves (a "billion laughs" document): the
loader shares the nested objects, so the document costs little until something walks it,
and a plain ``{value!r}`` in an error message walks every leaf. Every message that quotes
a value a user wrote quotes it through :func:`brief`, which stops after a few levels and
items (``reprlib``) and cuts the text, whatever the value's size or depth.
"""

from __future__ import annotations

import reprlib

MAX_CHARS = 120


class _Brief(reprlib.Repr):
    def repr_int(self, x: int, level: int) -> str:
        # str() of an int over 4300 digits raises; its size is what a reader needs
        bits = abs(x).bit_length()
        return repr(x) if bits <= 128 else f"<an integer of {bits} bits>"


_REPR = _Brief()
_REPR.maxlevel = 3
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxdict = 4
_REPR.maxstring = _REPR.maxother = 80


def brief(value: object) -> str:
    """``repr(value)``, cut to a few levels and items and at most ``MAX_CHARS`` characters."""
    text = _REPR.repr(value)
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 3] + "..."
