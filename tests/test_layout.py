"""The package layout keeps the pipeline's one-way shape (docs/architecture.md).

Sources (``collectors``) know nothing of what consumes them; chargeback runs attribution
→ ledger → report and never reaches back; the simulator is wired in only by the agent's
wiring and the CLI; the shared leaves (``schema``, ``redact``, ``yamlio``, ``cluster``)
depend on no part. These rules are easy to break by one convenient import, and a broken one shows up
only much later as an import cycle or a collector that drags the agent in, so every
import of every module is parsed here (with :mod:`ast`, nothing is imported) and checked.

An import counts wherever it is written: at module level, inside a function (a lazy
import), or under ``if TYPE_CHECKING:``. The cycle rule alone looks only at the imports
that run when a module is loaded (module level, not ``TYPE_CHECKING``), since a lazy or
type-only import is exactly how a genuine two-way need is resolved. An edge goes to the
module imported (``from a.b import c`` is ``a.b.c`` when that is a module, else ``a.b``),
not to its parent packages, as import-linter/grimp count them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "gpuledger"
MAX_LINES = 650

# Modules allowed over MAX_LINES, each because it is one concern that is long, not several
# concerns in one file. Keep this short; a module that shrinks under the limit must leave
# it (test_the_long_module_allow_list_is_not_stale).
LONG_MODULES: dict[str, str] = {
    # pynvml's API surface, call for call, with the driver's error behaviour: splitting it
    # would scatter one fake across files that only make sense together
    "gpuledger/sim/nvml_fake.py": "one fake of one library's API",
    # the report's one HTML page: its template and the charts drawn into it; the charts
    # share the page's palette, ids and escaping rules
    "gpuledger/chargeback/report/writers/html.py": "one writer: the page and its charts",
}

PARTS = (
    "agent", "alerts", "chargeback", "cli", "collectors", "dashboards", "deploy", "meter", "sim"
)  # fmt: skip
LEAVES = ("schema", "redact", "yamlio", "cluster")


@dataclass(frozen=True, slots=True)
class Import:
    importer: str
    target: str  # the module imported, resolved (a file that exists in the tree)
    line: int
    module_level: bool  # runs when the importer is loaded (not inside a function)
    type_checking: bool  # under ``if TYPE_CHECKING:``

    @property
    def at_load(self) -> bool:
        return self.module_level and not self.type_checking

    def __str__(self) -> str:
        where = "TYPE_CHECKING" if self.type_checking else "module" if self.module_level else "lazy"
        return f"{self.importer}:{self.line} -> {self.target} ({where})"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _modules(top: str) -> dict[str, Path]:
    """Every module under ``top`` (a folder of the repository), by dotted name."""
    base = ROOT / top
    return {
        _module_name(p): p
        for p in sorted(base.rglob("*.py"))
        if "__pycache__" not in p.parts and not p.name.startswith(".")
    }


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _walk(
    node: ast.AST, *, module_level: bool, type_checking: bool
) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool, bool]]:
    """Every import statement under ``node`` with where it sits."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, module_level, type_checking
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _walk(child, module_level=False, type_checking=type_checking)
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield from _walk_one(stmt, module_level, True)
            for stmt in child.orelse:
                yield from _walk_one(stmt, module_level, type_checking)
        else:
            yield from _walk(child, module_level=module_level, type_checking=type_checking)


def _walk_one(
    stmt: ast.stmt, module_level: bool, type_checking: bool
) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool, bool]]:
    wrapper = ast.Module(body=[stmt], type_ignores=[])
    yield from _walk(wrapper, module_level=module_level, type_checking=type_checking)


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is a module of the tree (None: not ours)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return None


def _base(importer: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names (relative levels resolved)."""
    if not node.level:
        return node.module or ""
    package = importer.split(".") if path.name == "__init__.py" else importer.split(".")[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join([*package, *([node.module] if node.module else [])])


@cache
def imports_of(top: str) -> tuple[Import, ...]:
    """Every import, at any level, from a module under ``top`` to a module of the
    repository (``gpuledger`` and ``tests``; third-party imports are not edges)."""
    known = {**_modules(PACKAGE), **_modules("tests")}
    out: list[Import] = []
    for importer, path in _modules(top).items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, module_level, type_checking in _walk(
            tree, module_level=True, type_checking=False
        ):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                base = _base(importer, path, node)
                names = [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]
                names = names or [base]
            for name in names:
                target = _resolve(name, known)
                if target is not None and target != importer:
                    out.append(Import(importer, target, node.lineno, module_level, type_checking))
    return tuple(dict.fromkeys(out))  # `from m import a, b` of one module: one edge


def _within(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _fail_if(broken: Iterable[Import], rule: str) -> None:
    """Fail naming every import that breaks ``rule`` (file:line -> target, and where)."""
    lines = sorted({str(i) for i in broken})
    if lines:
        pytest.fail(f"{rule}:\n  " + "\n  ".join(lines), pytrace=False)


# --- (a) no import cycle ------------------------------------------------------------------
def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One concrete cycle per strongly connected component with a cycle (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return [_one_cycle(component, edges) for component in components]


def _one_cycle(component: list[str], edges: dict[str, set[str]]) -> list[str]:
    """A shortest path from the component's first module back to itself."""
    members = set(component)
    start = component[0]
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for v in frontier:
            for w in sorted(edges.get(v, set()) & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w not in previous:
                    previous[w] = v
                    following.append(w)
        frontier = following
    return component


def test_no_import_cycle_at_load_time() -> None:
    edges: dict[str, set[str]] = {}
    for imp in imports_of(PACKAGE):
        if imp.at_load:
            edges.setdefault(imp.importer, set()).add(imp.target)
    cycles = _cycles(edges)
    if cycles:
        pytest.fail(
            "import cycles among gpuledger modules (module-level imports):\n  "
            + "\n  ".join(" -> ".join(c) for c in cycles),
            pytrace=False,
        )


# --- (b) no upward import -----------------------------------------------------------------
def _forbidden(importers: tuple[str, ...], targets: tuple[str, ...]) -> list[Import]:
    return [
        imp
        for imp in imports_of(PACKAGE)
        if _within(imp.importer, *importers) and _within(imp.target, *targets)
    ]


def _parts(*names: str) -> tuple[str, ...]:
    return tuple(f"{PACKAGE}.{n}" for n in names)


def test_collectors_import_nothing_downstream() -> None:
    upward = _parts("chargeback", "agent", "alerts", "dashboards", "deploy", "meter", "sim", "cli")
    _fail_if(_forbidden(_parts("collectors"), upward), "collectors import from a consumer")


def test_chargeback_imports_nothing_downstream() -> None:
    upward = _parts("agent", "alerts", "dashboards", "deploy", "meter", "sim", "cli")
    _fail_if(
        _forbidden(_parts("chargeback"), upward),
        "chargeback imports from the agent or a later part",
    )


def test_chargeback_stages_run_one_way() -> None:
    broken = _forbidden(
        _parts("chargeback.attribution"), _parts("chargeback.ledger", "chargeback.report")
    ) + _forbidden(_parts("chargeback.ledger"), _parts("chargeback.report"))
    _fail_if(broken, "a chargeback stage imports a later stage")


def test_only_the_agent_wiring_and_the_cli_import_the_simulator() -> None:
    allowed = _parts("agent.main", "cli", "sim")
    broken = [
        imp
        for imp in imports_of(PACKAGE)
        if _within(imp.target, f"{PACKAGE}.sim") and not _within(imp.importer, *allowed)
    ]
    _fail_if(broken, "gpuledger.sim imported outside agent.main, cli and sim itself")


def test_the_meter_stands_alone() -> None:
    """The meter is its own process: it reads the schema and the exposition writer, never
    the agent, the ledger or the report (and nothing but the CLI imports it)."""
    upward = _parts("agent", "alerts", "chargeback", "dashboards", "deploy", "sim", "cli")
    broken = _forbidden(_parts("meter"), upward) + [
        imp
        for imp in imports_of(PACKAGE)
        if _within(imp.target, f"{PACKAGE}.meter")
        and not _within(imp.importer, f"{PACKAGE}.meter", f"{PACKAGE}.cli")
    ]
    _fail_if(broken, "the meter imports a part above it, or a part other than cli imports it")


def test_shared_leaves_import_no_part() -> None:
    _fail_if(_forbidden(_parts(*LEAVES), _parts(*PARTS)), "schema/redact/yamlio import a part")


# --- (c) tests import helpers only ----------------------------------------------------------
def _importable_helper(module: str) -> bool:
    path = _modules("tests")[module]
    return (
        _within(module, "tests.support")
        or path.name in ("conftest.py", "__init__.py")  # a package or pytest's own helper
    )


def test_no_test_module_imports_another() -> None:
    broken = [
        imp
        for imp in imports_of("tests")
        if _within(imp.target, "tests") and not _importable_helper(imp.target)
    ]
    _fail_if(broken, "test modules import other test modules (shared parts go to tests/support/)")


# --- (d) module length ---------------------------------------------------------------------
def _lengths() -> dict[str, int]:
    return {
        str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines())
        for path in _modules(PACKAGE).values()
    }


def test_no_module_over_the_line_limit() -> None:
    long = {path: n for path, n in _lengths().items() if n > MAX_LINES and path not in LONG_MODULES}
    if long:
        pytest.fail(
            f"modules over {MAX_LINES} lines (split them by concern):\n  "
            + "\n  ".join(f"{path}: {n}" for path, n in sorted(long.items())),
            pytrace=False,
        )


def test_the_long_module_allow_list_is_not_stale() -> None:
    lengths = _lengths()
    stale = {path: lengths.get(path) for path in LONG_MODULES if lengths.get(path, 0) <= MAX_LINES}
    if stale:
        pytest.fail(
            f"allowed over {MAX_LINES} lines but no longer over it (or gone); remove them from "
            "LONG_MODULES:\n  " + "\n  ".join(f"{p}: {n}" for p, n in sorted(stale.items())),
            pytrace=False,
        )


# --- the checker itself --------------------------------------------------------------------
def test_the_checker_sees_every_kind_of_import() -> None:
    """A checker that finds nothing would pass every rule: make sure it sees lazy and
    TYPE_CHECKING imports, relative ones, and resolves ``from pkg import module``."""
    found = imports_of(PACKAGE)
    assert any(i.type_checking for i in found)
    assert any(not i.module_level for i in found)
    assert any(i.at_load for i in found)
    assert any(i.target == f"{PACKAGE}.schema" for i in found)
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
