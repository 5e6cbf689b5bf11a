"""brief(): a value a user wrote, quoted in an error, bounded whatever its size."""

from __future__ import annotations

import pytest

from gpuledger.brief import MAX_CHARS, brief


def _shared_tree(levels: int, width: int) -> list[object]:
    """What YAML aliases build: each level holds ``width`` references to the one below,
    so ``width ** levels`` leaves cost ``levels * width`` references."""
    node: list[object] = ["lol"] * width
    for _ in range(levels - 1):
        node = [node] * width
    return node


def test_a_billion_leaves_are_quoted_in_a_line() -> None:
    text = brief(_shared_tree(9, 10))
    assert len(text) <= MAX_CHARS
    assert text.startswith("[[[")
    assert "..." in text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("search-team", "'search-team'"),
        (12000, "12000"),
        (1.5, "1.5"),
        (None, "None"),
        (True, "True"),
        ({"a": 1}, "{'a': 1}"),
        (["x", "y"], "['x', 'y']"),
    ],
)
def test_small_values_read_as_repr(value: object, expected: str) -> None:
    assert brief(value) == expected == repr(value)


def test_long_strings_and_integers_are_cut() -> None:
    assert len(brief("x" * 10_000)) <= MAX_CHARS
    assert brief(10**5000) == "<an integer of 16610 bits>"
    assert brief([2**200]) == "[<an integer of 201 bits>]"
    assert brief("a" * 200).startswith("'aaa")
