"""The cluster a ledger row belongs to: its name's rule and the default.

One fleet ledger (PostgreSQL) serves several clusters, and node names are unique only
within a cluster (two clusters may both have ``gpu-node-01``), so every ledger row is
keyed by ``cluster`` as well as by node. The name travels into SQL DDL as a literal (the
migration that gives existing rows the configured cluster cannot bind a parameter in
``ADD COLUMN … DEFAULT``), into label values and file names, so it is held to the rule a
Kubernetes object name keeps (RFC 1123 label, up to 63 characters, plus ``.`` and ``_``
which operators use in cluster names): nothing that needs quoting anywhere.
"""

from __future__ import annotations

import re

DEFAULT_CLUSTER = "default"
"""The cluster of a config that names none, and of rows written before clusters existed
(unless the migration is told another)."""

_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")


def check_cluster_name(name: str) -> str:
    """``name`` when it is a valid cluster name, else ValueError saying the rule."""
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        shown = name if isinstance(name, str) and len(name) <= 80 else f"{str(name)[:80]}…"
        raise ValueError(
            f"cluster name {shown!r} is not valid: 1-63 letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit"
        )
    return name


def sql_literal(name: str) -> str:
    """``name`` as an SQL string literal, for the DDL that cannot take a parameter. The
    name is checked first, so it holds no quote; the quoting is there all the same."""
    return "'" + check_cluster_name(name).replace("'", "''") + "'"
