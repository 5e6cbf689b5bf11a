"""Text cells that a spreadsheet must not run.

Finance opens the CSV and FOCUS files in Excel, LibreOffice or Google Sheets, which
evaluate a cell that starts with ``=``, ``+``, ``-`` or ``@`` (and, in some, a tab or
carriage return) as a formula. Service, namespace and model names come from the cluster
(pod labels, annotations, gateway tenants), so a name like ``=HYPERLINK(...)`` is
hostile input. Such a cell gets a leading ``'`` (OWASP's CSV-injection advice), which
spreadsheets show as text; a number, negative ones included, is left as it is.
"""

from __future__ import annotations

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def neutralize(text: str) -> str:
    """``text`` as a cell no spreadsheet evaluates."""
    if text.startswith(_FORMULA_START) and not _is_number(text):
        return "'" + text
    return text
