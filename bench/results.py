"""One shape for every benchmark's figures, and the summary table ``python -m bench`` prints.

Each bench module's ``main(argv)`` prints its own section and returns a list of
:data:`Row`: what was measured (``benchmark``), the figure with its unit (``figure``) and
as a number (``value``), the target it is held to (``target``, ``None`` where there is
none) and whether it met it (``pass``), the peer measured in the same run where there is
one (``peer``, ``peer_value``) with the ratio, and the command that reproduces it.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from typing import TypedDict

Row = TypedDict(
    "Row",
    {
        "benchmark": str,
        "figure": str,
        "value": float,
        "target": str | None,
        "pass": bool | None,
        "peer": str | None,
        "peer_value": float | None,
        "ratio": str | None,
        "command": str,
    },
)

HEADER = ("benchmark", "figure", "target", "pass", "peer (same run)", "ratio", "command")


def row(
    benchmark: str,
    figure: str,
    value: float,
    *,
    command: str,
    target: str | None = None,
    passed: bool | None = None,
    peer: str | None = None,
    peer_value: float | None = None,
    ratio: str | None = None,
) -> Row:
    return {
        "benchmark": benchmark,
        "figure": figure,
        "value": float(value),
        "target": target,
        "pass": passed,
        "peer": peer,
        "peer_value": None if peer_value is None else float(peer_value),
        "ratio": ratio,
        "command": command,
    }


def command(module: str, argv: Sequence[str] | None) -> str:
    """How to run ``module`` alone with the arguments it was given (``None``: this
    process's own command line, as argparse reads it)."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python -m", module, *(shlex.quote(a) for a in args)])


def verdict(passed: bool | None) -> str:
    return "—" if passed is None else ("PASS" if passed else "FAIL")


def _cells(r: Row) -> tuple[str, ...]:
    return (
        r["benchmark"],
        r["figure"],
        r["target"] or "—",
        verdict(r["pass"]),
        r["peer"] or "—",
        r["ratio"] or "—",
        r["command"],
    )


def table(rows: Sequence[Row]) -> str:
    """The rows aligned for a terminal."""
    cells = [HEADER, *(_cells(r) for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells[1:]
    ]
    return "\n".join(lines)


def markdown(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table (docs/performance.md's summary)."""

    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    out = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in rows:
        c = list(_cells(r))
        c[-1] = f"`{c[-1]}`"
        out.append("| " + " | ".join(esc(x) for x in c) + " |")
    return "\n".join(out)
