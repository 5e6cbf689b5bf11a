"""Property-based tests (hypothesis) for gpuledger.agent.config.load_config.

* any YAML document (structures of dicts, lists and scalars keyed by the real settings'
  names and by random ones), any text, YAML-shaped token soup: an ``AgentConfig`` or a
  ``ConfigError`` whose ``problems`` are non-empty ``(key, message)`` strings, and every
  unknown key is named; ``os.environ`` is as it was afterwards;
* alias bombs ("billion laughs", lists and mappings) placed under any setting: refused or
  loaded within a time and memory bound (``yaml.safe_load`` shares aliased nodes, and
  validation stops at the first level whose type is wrong);
* any ``GPULEDGER_*`` environment: only ``ConfigError``, unknown variables named;
* round trip: valid configs built from the model's fields load as written, and
  ``model_dump(mode="json")`` → YAML → ``load_config`` gives an equal config; the same
  scalar settings given through the environment give the same config (env over file).

The bugs these properties found (C1..C9) are pinned by the regression tests at the end,
one per cause, each asserting the ConfigError and what it names; the broad generators
cover those inputs too (keys that are no strings, upper-case spellings, non-UTF-8 files,
GPULEDGER_* values that are no JSON, lower-case prefixes).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import tracemalloc
import types
import typing
from collections.abc import Iterator
from datetime import timedelta
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from gpuledger.agent.config import ENV_PREFIX, AgentConfig, ConfigError, load_config
from gpuledger.chargeback.report.model import IDLE_POLICIES
from gpuledger.chargeback.report.writers.files import FORMATS
from tests.support.paths import REPO_ROOT

FUZZ = settings(
    max_examples=200,
    deadline=timedelta(milliseconds=1500),
    suppress_health_check=[HealthCheck.too_slow],
)
ROUND_TRIP = settings(
    max_examples=80,
    deadline=timedelta(milliseconds=2000),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
)
REGRESSION = settings(max_examples=10, deadline=None)


# ------------------------------------------------------------------------- the model's keys


def _inner_models(annotation: Any) -> Iterator[type[BaseModel]]:
    """Models reachable through an annotation (list items, dict values, optionals)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for arg in typing.get_args(annotation):
        yield from _inner_models(arg)


def _is_complex(annotation: Any) -> bool:
    """What pydantic-settings reads from the environment as JSON."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, dict, set, frozenset):
        return True
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        return any(_is_complex(a) for a in typing.get_args(annotation) if a is not type(None))
    return False


def _optional_section(annotation: Any) -> bool:
    """``Model | None``: a section unset by default (simulate.lose_gpu, report.delivery)."""
    args = typing.get_args(annotation)
    return (
        typing.get_origin(annotation) in (typing.Union, types.UnionType)
        and type(None) in args
        and any(isinstance(a, type) and issubclass(a, BaseModel) for a in args)
    )


def _walk(
    model: type[BaseModel], prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every setting an environment variable can name: sections and their fields."""
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        yield path, field.annotation
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _walk(annotation, path)


ENV_PATHS: dict[tuple[str, ...], Any] = dict(_walk(AgentConfig))
COMPLEX_PATHS = {p for p, a in ENV_PATHS.items() if _is_complex(a)}
ENV_NAMES = sorted(ENV_PREFIX + "__".join(p).upper() for p in ENV_PATHS)


def _all_key_names() -> list[str]:
    seen: set[type[BaseModel]] = set()
    names: set[str] = set()
    todo: list[type[BaseModel]] = [AgentConfig]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, field in model.model_fields.items():
            names.add(name)
            todo.extend(_inner_models(field.annotation))
    return sorted(names)


KEY_NAMES = _all_key_names()
TOP_KEYS = sorted(AgentConfig.model_fields)
SECTIONS: dict[str, type[BaseModel]] = {
    name: f.annotation
    for name, f in AgentConfig.model_fields.items()
    if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)
}
SHIPPED_CARD = Path(
    str(resources.files("gpuledger.chargeback.report").joinpath("ratecards/default.yaml"))
)


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("config-fuzz")


def _check_problems(err: ConfigError) -> list[str]:
    assert isinstance(err.problems, list)
    assert err.problems, "a ConfigError must say what is wrong"
    for problem in err.problems:
        key, message = problem
        assert isinstance(key, str)
        assert key
        assert isinstance(message, str)
        assert message
    assert str(err)
    return [k for k, _ in err.problems]


def _load(
    workdir: Path | None, text: str | bytes | None, environ: dict[str, str] | None = None
) -> AgentConfig | list[str]:
    """The config, or the keys its ConfigError names. Anything else escapes."""
    path: Path | None = None
    if workdir is not None and text is not None:
        path = workdir / "agent.yaml"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
    before = dict(os.environ)
    try:
        cfg = load_config(path, environ={} if environ is None else environ)
    except ConfigError as err:
        return _check_problems(err)
    finally:
        assert dict(os.environ) == before, "load_config must restore the process environment"
    assert isinstance(cfg, AgentConfig)
    return cfg


def _dump(doc: Any) -> str:
    # allow_unicode=False: PyYAML writes a key holding U+0085 (NEL) in a form that reads
    # back as a space when unicode is allowed; escaped, every string round-trips.
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=False)


def _format_key(*parts: object) -> str:
    return ".".join(str(p) for p in parts) or "(top level)"


def _unknown_keys(doc: dict[Any, Any]) -> list[str]:
    """Keys of the document the model does not have, as load_config names them.

    Every key is matched exactly: ``NODE_NAME:`` is no setting (see C9 at the end), and a
    top-level key that is no string is named as ``str(key)`` (C1). Nested keys that are no
    strings are named by pydantic (``listen.datetime.date(2024, 1, 1)``): left out here."""
    unknown: list[str] = []
    for key, value in doc.items():
        if not isinstance(key, str) or key not in AgentConfig.model_fields:
            unknown.append(_format_key(key))
        elif key in SECTIONS and isinstance(value, dict):
            fields = SECTIONS[key].model_fields
            unknown += [
                _format_key(key, k) for k in value if isinstance(k, str) and k not in fields
            ]
    return unknown


# ---------------------------------------------------------------------- arbitrary documents

VALUE_HINTS = [
    "node", "reporter", "debug", "json", "text", "usage", "equal", "chat", "completions",
    "http://127.0.0.1:9400/metrics", "https://vllm:8000", "ftp://x", "10m", "1h30m", "0",
    "0 2 1 * *", "* * *", "csv", "html", "separate", "gzip", "none", "/proc", "", " ",
    "true", "yes", "off", "-1", "3600", "1e400", "[", "{a", ".*", "(", "http://",
]  # fmt: skip
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(VALUE_HINTS),
    st.dates(),
)
non_string_keys = st.one_of(
    st.integers(-3, 3), st.none(), st.booleans(), st.dates(), st.floats(allow_nan=False)
)
nested_keys = st.one_of(
    st.sampled_from(KEY_NAMES), st.text(max_size=10), st.integers(-3, 3), st.none()
)
trees = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(nested_keys, inner, max_size=4),
    max_leaves=25,
)
section_like = st.dictionaries(
    st.one_of(st.sampled_from(KEY_NAMES), st.text(max_size=8)), trees, max_size=6
)
documents = st.dictionaries(
    st.one_of(
        st.sampled_from(TOP_KEYS),
        st.sampled_from(KEY_NAMES),
        st.text(max_size=10),
        st.sampled_from(TOP_KEYS).map(str.upper),  # another spelling of a setting (C9)
        non_string_keys,  # C1
    ),
    st.one_of(trees, section_like),
    max_size=8,
)


@settings(FUZZ, max_examples=150)
@given(documents)
def test_any_document_gives_a_config_or_a_config_error(workdir: Path, doc: dict[str, Any]) -> None:
    text = _dump(doc)
    result = _load(workdir, text)
    unknown = _unknown_keys(yaml.safe_load(text) or {})
    if unknown:
        assert isinstance(result, list), "an unknown key was accepted"
        for key in unknown:
            assert key in result, (key, result)


# YAML-shaped text: anchors, aliases, tags, flow and block collections, documents.
YAML_TOKENS = [
    "listen", "port", "node_name", "roles", "dcgm", "url", "vllm", "endpoints", "report",
    ":", ": ", " ", "\n", "\n  ", "\n    ", "- ", "[", "]", "{", "}", ", ", "&a ", "*a",
    "&b ", "*b", "<<: ", "!!str ", "!!int ", "!!binary ", "!!set ", "!!python/name:os.system",
    "'", '"', "#", "---\n", "...\n", "|\n", ">\n", "? ", "%YAML 1.1\n", "\t", "\x00",
    "~", "1", "-1.5e3", ".inf", ".nan", "0x1F", "0o17", "1_000", "2024-01-01", "yes",
    "\ufeff", "\u2028", "\x85", "\\",
]  # fmt: skip
yaml_soup = st.lists(st.sampled_from(YAML_TOKENS), max_size=80).map("".join)


@FUZZ
@given(st.one_of(st.text(max_size=1000), yaml_soup))
@example("?")  # the mapping {None: None}
@example("[" * 1000)
@example("node_name: 2024-02-30")
def test_any_text_gives_a_config_or_a_config_error(workdir: Path, text: str) -> None:
    _load(workdir, text)


@FUZZ
@given(st.text(max_size=300))
def test_utf8_bytes_with_or_without_a_bom(workdir: Path, text: str) -> None:
    for data in (text.encode("utf-8"), b"\xef\xbb\xbf" + text.encode("utf-8")):
        _load(workdir, data)


@FUZZ
@given(st.binary(max_size=300))
@example(b"node_name: caf\xe9\n")
def test_any_bytes_give_a_config_or_a_config_error(workdir: Path, data: bytes) -> None:
    _load(workdir, data)


@pytest.mark.parametrize("kind", ["missing", "directory", "dangling link", "link loop"])
def test_unreadable_config_paths_are_config_errors(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "agent.yaml"
    if kind == "directory":
        path.mkdir()
    elif kind == "dangling link":
        path.symlink_to(tmp_path / "nowhere")
    elif kind == "link loop":
        path.symlink_to(path)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert _check_problems(info.value) == [str(path)]


def test_a_huge_document_is_linear(workdir: Path) -> None:
    # 5000 unknown keys and a 1 MB string: refused, in a bounded time.
    doc = {f"k{i}": i for i in range(5_000)} | {"node_name": "x" * 1_000_000}
    start = time.perf_counter()
    result = _load(workdir, _dump(doc))
    assert time.perf_counter() - start < 20
    assert isinstance(result, list)
    assert len(result) == 5_000


# ------------------------------------------------------------------------------ alias bombs


def _bomb(levels: int, width: int, kind: str) -> str:
    """Anchors l0..l{levels-1} under an unknown top-level key ``bombs``; ``*top`` is the
    last level (``width ** levels`` leaves once expanded)."""
    lines = ["bombs:"]
    leaf = ", ".join(f"k{j}: lol" for j in range(width)) if kind == "dict" else ""
    lines.append(
        f"  - &l0 {{{leaf}}}" if kind == "dict" else f"  - &l0 [{', '.join(['lol'] * width)}]"
    )
    for i in range(1, levels):
        refs = [f"*l{i - 1}"] * width
        if kind == "dict":
            body = ", ".join(f"k{j}: {r}" for j, r in enumerate(refs))
            lines.append(f"  - &l{i} {{{body}}}")
        else:
            lines.append(f"  - &l{i} [{', '.join(refs)}]")
    return "\n".join(lines) + "\n"


def _place(path: tuple[str, ...], levels: int) -> str:
    """YAML putting ``*l{levels-1}`` at ``path`` (nested block mappings)."""
    out = []
    for depth, part in enumerate(path[:-1]):
        out.append("  " * depth + f"{part}:")
    out.append("  " * (len(path) - 1) + f"{path[-1]}: *l{levels - 1}")
    return "\n".join(out) + "\n"


def _bounded(fn: Any) -> tuple[Any, float, int]:
    tracemalloc.start()
    start = time.perf_counter()
    try:
        result = fn()
        return result, time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


BOMB_TARGETS = [*sorted(ENV_PATHS), ("nosuchkey",), ("attribution", "static", "gpus", "x")]


# Every target, both kinds, in a child process whose address space is capped: a setting
# that walks the expanded tree (as a ``{value!r}`` in report.budgets' row errors once did,
# and a sample of 60 targets did not always draw) fails here with its name instead of
# taking the machine's memory from the whole suite.
_BOMB_CHILD = """
import json, resource, sys, time, tracemalloc
resource.setrlimit(resource.RLIMIT_AS, (2 * 1024**3, 2 * 1024**3))
from pathlib import Path
from tests.fuzz.test_config_fuzz import BOMB_TARGETS, _bomb, _load, _place
workdir = Path(sys.argv[1])
bad = []
for target in BOMB_TARGETS:
    for kind in ("list", "dict"):
        text = _bomb(9, 10, kind) + _place(target, 9)
        tracemalloc.start()
        start = time.perf_counter()
        try:
            result = _load(workdir, text)
            outcome = "refused" if isinstance(result, list) and "bombs" in result else repr(result)
        except MemoryError:
            outcome = "MemoryError"
        except Exception as exc:
            outcome = repr(exc)[:200]
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        if outcome != "refused" or elapsed > 3 or peak > 32 * 1024 * 1024:
            bad.append([".".join(target), kind, outcome[:200], round(elapsed, 2), peak])
print(json.dumps({"checked": len(BOMB_TARGETS) * 2, "bad": bad}))
"""


def test_alias_bombs_are_refused_within_bounds_at_every_setting(workdir: Path) -> None:
    # 10 ** 9 leaves once expanded, from 700 bytes of YAML, at each setting in turn.
    done = subprocess.run(
        [sys.executable, "-c", _BOMB_CHILD, str(workdir)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["checked"] == 2 * len(BOMB_TARGETS) > 300
    assert answer["bad"] == []


def test_an_alias_bomb_in_a_budget_row_is_named_without_expanding_it() -> None:
    from gpuledger.chargeback.budgets.config import BudgetError, parse_rows

    # 10 ** 6 leaves: a message that quoted it whole would be 8 MB (safe to fail here).
    bomb = yaml.safe_load(_bomb(6, 10, "list"))["bombs"][-1]
    tracemalloc.start()
    try:
        with pytest.raises(BudgetError) as caught:
            parse_rows([bomb], "report.budgets")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    ((row, message),) = caught.value.problems
    assert row.startswith("report.budgets row 1")
    assert "a row is a mapping" in message
    assert "..." in message
    assert len(message) < 300
    assert peak < 1024 * 1024


# ------------------------------------------------------------------------------ environment

_env_text = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=20
)
json_trees = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats() | _env_text
    | st.sampled_from(VALUE_HINTS),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_env_text, inner, max_size=3),
    max_leaves=10,
)  # fmt: skip


def _mixed_case(name: str, data: st.DataObject) -> str:
    suffix = name[len(ENV_PREFIX) :]
    flips = data.draw(st.lists(st.booleans(), min_size=len(suffix), max_size=len(suffix)))
    return ENV_PREFIX + "".join(c.lower() if f else c for c, f in zip(suffix, flips, strict=True))


def _env_path(key: str) -> tuple[str, ...] | None:
    """The setting an environment variable names, or None when it names none. Names are
    read without case, the prefix too, as pydantic-settings reads them."""
    if not _is_ours(key):
        return None
    path = tuple(key.lower()[len(ENV_PREFIX) :].split("__"))
    return path if path in ENV_PATHS else None


def _is_ours(key: str) -> bool:
    return key.lower().startswith(ENV_PREFIX.lower())


@st.composite
def environments(draw: st.DrawFn) -> dict[str, str]:
    data = draw(st.data())
    env: dict[str, str] = {}
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["real", "real", "mixed case", "typo", "random", "other"]))
        name = draw(st.sampled_from(ENV_NAMES))
        if kind == "mixed case":
            name = _mixed_case(name, data)
        elif kind == "typo":
            name = name + draw(st.sampled_from(["X", "_", "__", "__X", "S"]))
        elif kind == "random":
            name = ENV_PREFIX + draw(st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789", max_size=14))
        elif kind == "other":  # not ours: ignored
            name = draw(st.sampled_from(["PATH", "HOME", "NODE_NAME", "GPULEDGER", "XGPULEDGER_A"]))
        if kind != "other" and draw(st.integers(0, 3)) == 0:  # the prefix in another case
            name = draw(st.sampled_from(["gpuledger_", "Gpuledger_"])) + name[len(ENV_PREFIX) :]
        path = _env_path(name)
        if path in COMPLEX_PATHS:  # read as JSON: JSON, or not (C4), or too deep (C4)
            env[name] = draw(
                st.one_of(
                    json_trees.map(json.dumps),
                    _env_text,
                    st.sampled_from(VALUE_HINTS),
                    st.integers(1, 5000).map(lambda d: "[" * d + "]" * d),
                )
            )
        else:
            env[name] = draw(st.one_of(_env_text, st.sampled_from(VALUE_HINTS)))
    return env


@FUZZ
@given(environments())
def test_any_environment_gives_a_config_or_a_config_error(environ: dict[str, str]) -> None:
    result = _load(None, None, environ)
    unknown = [k for k in environ if _is_ours(k) and _env_path(k) is None]
    if unknown:
        assert isinstance(result, list), "an unknown GPULEDGER_ variable was accepted"
        assert sorted(result) == sorted(unknown)
    elif isinstance(result, AgentConfig):
        # A string setting given once, with no section above it set too, is taken as is.
        for key, value in environ.items():
            path = _env_path(key)
            if path is None or ENV_PATHS[path] is not str:
                continue
            same = [
                k
                for k in environ
                if _env_path(k) in (path, *[path[:i] for i in range(1, len(path))])
            ]
            if len(same) == 1:
                obj: Any = result
                for part in path:
                    obj = getattr(obj, part)
                assert obj == value, (key, value, obj)


@settings(FUZZ, max_examples=100)
@given(documents, environments())
def test_any_document_and_environment_together(
    workdir: Path, doc: dict[str, Any], environ: dict[str, str]
) -> None:
    _load(workdir, _dump(doc), environ)


# ------------------------------------------------------------------------------ round trip


def _pos(hi: float) -> st.SearchStrategy[float]:
    return st.floats(min_value=0, max_value=hi, exclude_min=True)


def _opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


def _section(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


text_ = st.text(max_size=16)
nonempty = st.text(min_size=1, max_size=16)
paths = st.text(min_size=1, max_size=24).map(lambda t: str(PurePosixPath(t)))
durations = st.from_regex(r"([0-9]{1,3}(ms|s|m|h|d|w|y)){1,3}", fullmatch=True)
hosts = st.sampled_from(
    ["127.0.0.1", "localhost", "vllm.llm.svc", "10.0.0.5", "[::1]", "b\u00fccher.de"]
)
urls = st.builds(
    lambda scheme, host, port, path: f"{scheme}://{host}{port}{path}",
    st.sampled_from(["http", "https"]),
    hosts,
    st.sampled_from(["", ":8000", ":9400"]),
    st.sampled_from(["", "/metrics", "/v1", "/a%20b"]),
)
label_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True).filter(
    lambda n: not n.startswith("__") and n not in ("severity", "alertname")
)
CRONTABS = ["0 2 1 * *", "*/5 * * * *", "0 0 * * mon-fri", "30 6 1,15 * *", "0 0 1 jan *"]
REGEXES = ["python.*vllm", "^ollama$", "(a|b)+", r"\d{2,}", "[^/]+/serve"]


@st.composite
def ledgers(draw: st.DrawFn) -> dict[str, Any]:
    doc = draw(
        _section(
            enabled=st.booleans(),
            spool_path=_opt(paths),
            flush_interval_seconds=_pos(3600),
            split_policy=st.sampled_from(["usage", "equal", "declared"]),
            max_gap_seconds=_opt(_pos(1e9)),
        )
    )
    source = draw(st.sampled_from(["none", "url", "url_file"]))
    if source == "url":
        doc["url"] = draw(st.one_of(text_, st.just("sqlite:///var/lib/gpuledger/ledger.db")))
    elif source == "url_file":
        doc["url_file"] = draw(paths)
    return doc


@st.composite
def pgvectors(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(nonempty, max_size=3, unique=True))
    dbs = [
        {"name": n, "dsn": draw(nonempty.filter(str.strip)), "all_tables": draw(st.booleans())}
        for n in names
    ]
    doc = draw(
        _section(
            interval_seconds=_pos(86400),
            growth_window_days=_pos(366),
            growth_min_samples=st.integers(2, 1000),
        )
    )
    doc["enabled"] = bool(dbs) and draw(st.booleans())
    doc["databases"] = dbs
    return doc


endpoint = st.builds(
    lambda url, service, ns, path, key: {
        "url": url, "service": service, "namespace": ns, "metrics_path": path, **key
    },
    urls.map(lambda u: u.rstrip("/")),
    nonempty,
    text_,
    text_.map(lambda t: "/" + t),
    st.one_of(st.just({}), nonempty.map(lambda e: {"api_key_env": e}),
              paths.map(lambda p: {"api_key_file": p})),
)  # fmt: skip

valid_docs = st.fixed_dictionaries(
    {},
    optional={
        "roles": st.lists(st.sampled_from(["node", "reporter"]), min_size=1, max_size=4),
        "node_name": nonempty,
        "state_dir": paths,
        "listen": _section(host=text_, port=st.integers(0, 65535)),
        "log": _section(
            level=st.sampled_from(["debug", "info", "warning", "error"]),
            format=st.sampled_from(["text", "json"]),
        ),
        "collection": _section(interval_seconds=_pos(3600)),
        "nvml": _section(
            enabled=st.booleans(), interval_seconds=_opt(_pos(3600)), timeout_seconds=_pos(300)
        ),
        "dcgm": _section(
            enabled=st.booleans(),
            url=st.sampled_from(["http://", "https://"]).flatmap(lambda s: text_.map(s.__add__)),
            interval_seconds=_opt(_pos(3600)),
            timeout_seconds=_pos(300),
            max_bytes=st.integers(1, 2**40),
        ),
        "http": _section(
            api_token_file=_opt(paths),
            metrics_require_token=st.booleans(),
            max_request_bytes=st.integers(0, 16 * 1024 * 1024),
            max_concurrent_connections=st.integers(1, 65536),
        ),
        "simulate": _section(
            enabled=st.booleans(), gpus=st.integers(1, 512), seed=st.integers(-(2**63), 2**63)
        ),
        "ledger": ledgers(),
        "attribution": _section(
            proc_root=_opt(paths),
            label_keys=st.lists(text_, max_size=4),
            kubernetes=_section(
                enabled=st.booleans(),
                kubeconfig=_opt(paths),
                resync_seconds=_pos(3600),
                watch=st.booleans(),
            ),
            static=_section(
                gpus=st.dictionaries(
                    text_, st.fixed_dictionaries({"service": nonempty, "namespace": text_}),
                    max_size=3,
                ),
                processes=st.lists(
                    st.fixed_dictionaries(
                        {
                            "pattern": st.one_of(st.sampled_from(REGEXES), nonempty.map(re.escape)),
                            "service": nonempty,
                            "namespace": text_,
                        }
                    ),
                    max_size=3,
                ),
            ),
        ),
        "vllm": _section(
            enabled=st.booleans(),
            interval_seconds=_opt(_pos(1e6)),
            timeout_seconds=_pos(1e6),
            max_bytes=st.integers(1, 2**40),
            endpoints=st.lists(endpoint, max_size=3),
            discovery=_section(
                enabled=st.booleans(),
                annotation_port=nonempty,
                annotation_path=nonempty,
                annotation_scheme=nonempty,
            ),
        ),
        "probes": _section(
            enabled=st.booleans(),
            interval_seconds=_pos(86400),
            timeout_seconds=_pos(600),
            max_tokens=st.integers(2, 4096),
            prompt=nonempty,
            api=st.sampled_from(["completions", "chat"]),
            model=_opt(text_),
            queue_threshold=st.floats(0, 1e6),
        ),
        "pgvector": pgvectors(),
        "alerts": _section(
            ttft_p99_seconds=_pos(1e6),
            ttft_for=durations,
            e2e_for=durations,
            gpu_underutilized_ratio=st.floats(0, 1, exclude_min=True),
            requests_waiting=st.floats(0, 1e6),
            alerting_interval=_opt(durations),
            agent_job_regex=nonempty,
            runbook_base_url=nonempty,
            extra_labels=st.dictionaries(label_names, text_, max_size=3),
            gpu_hourly_rates_usd=st.dictionaries(nonempty, st.floats(0, 1e4), max_size=3),
            service_overrides=st.dictionaries(
                text_, _section(ttft_p99_seconds=_opt(_pos(100)), e2e_p99_seconds=_pos(1e4)),
                max_size=2,
            ),
        ),
        "report": _section(
            rate_card=_opt(st.just(str(SHIPPED_CARD))),
            idle_policy=st.sampled_from(IDLE_POLICIES),
            out_dir=_opt(paths),
            schedule=st.sampled_from(CRONTABS),
            formats=st.lists(st.sampled_from(FORMATS), min_size=1, max_size=5),
            fleet=nonempty,
            min_probe_success_ratio=st.floats(0, 1),
            max_disagree_ratio=st.floats(0, 1),
            trend_months=st.integers(1, 36),
            keep_months=st.integers(0, 10_000),
        ),
        "otel": _section(
            enabled=st.booleans(),
            endpoint=urls,
            metrics_endpoint=_opt(urls),
            traces_endpoint=_opt(urls),
            interval_seconds=_pos(86400),
            timeout_seconds=_pos(300),
            # headers: SecretStr values dump as "**********" by design, so they are left out.
            headers_file=_opt(paths),
            resource_attributes=st.dictionaries(text_, text_, max_size=3),
            probe_spans=st.booleans(),
            compression=st.sampled_from(["gzip", "none"]),
        ),
    },
)  # fmt: skip

_DEDUPED = {"roles", "formats"}  # duplicates are dropped, first occurrence kept


def _assert_written(doc: Any, dumped: Any, key: str = "") -> None:
    """Everything the document says is in the loaded config, value for value."""
    if isinstance(doc, dict):
        assert isinstance(dumped, dict), key
        for k, v in doc.items():
            assert k in dumped, f"{key}.{k}"
            _assert_written(v, dumped[k], f"{key}.{k}")
    elif isinstance(doc, list):
        expected = list(dict.fromkeys(doc)) if key.rsplit(".", 1)[-1] in _DEDUPED else doc
        assert isinstance(dumped, list), key
        assert len(dumped) == len(expected), key
        for i, (a, b) in enumerate(zip(expected, dumped, strict=True)):
            _assert_written(a, b, f"{key}[{i}]")
    else:
        assert dumped == doc, (key, doc, dumped)
        assert type(dumped) is type(doc) or {type(dumped), type(doc)} <= {int, float}, key


@ROUND_TRIP
@given(valid_docs)
def test_valid_configs_round_trip(workdir: Path, doc: dict[str, Any]) -> None:
    cfg = _load(workdir, _dump(doc))
    assert isinstance(cfg, AgentConfig), cfg  # every generated document is valid
    dumped = cfg.model_dump(mode="json")
    _assert_written(doc, dumped)
    again = _load(workdir, _dump(dumped))
    assert isinstance(again, AgentConfig), again
    assert again == cfg
    assert again.model_dump(mode="json") == dumped


SCALAR_PATHS = sorted(
    p
    for p, a in ENV_PATHS.items()
    if not _is_complex(a) and all(q in ENV_PATHS for q in [p[:i] for i in range(1, len(p))])
)


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


@settings(ROUND_TRIP, max_examples=60)
@given(valid_docs, st.sets(st.sampled_from(SCALAR_PATHS), max_size=8))
def test_the_environment_gives_the_same_config_as_the_file(
    workdir: Path, doc: dict[str, Any], moved: set[tuple[str, ...]]
) -> None:
    """Scalar settings moved from the file into GPULEDGER_* variables: same config."""
    cfg = _load(workdir, _dump(doc))
    assert isinstance(cfg, AgentConfig)
    full = cfg.model_dump(mode="json")
    environ: dict[str, str] = {}
    for path in sorted(moved):
        parent: Any = full
        for part in path[:-1]:
            parent = parent[part]
        value = parent[path[-1]]
        if value is None or (isinstance(value, str) and "\x00" in value):
            continue  # unset, or a value no environment can hold
        environ[ENV_PREFIX + "__".join(path).upper()] = _env_value(value)
        del parent[path[-1]]  # the file no longer says it: the environment must
    from_env = _load(workdir, _dump(full), environ)
    assert isinstance(from_env, AgentConfig), (environ, from_env)
    assert from_env == cfg


# ----------------------------------------------------------------- regressions (C1..C9)
# Each bug the properties above found, pinned with the ConfigError it now gives.


def _problems(
    workdir: Path | None, text: str | bytes | None, environ: dict[str, str] | None = None
) -> list[tuple[str, str]]:
    """The problems of the ConfigError loading ``text`` (with ``environ``) raises."""
    result = _load(workdir, text, environ)
    assert isinstance(result, list), "accepted"
    path = workdir / "agent.yaml" if workdir is not None and text is not None else None
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={} if environ is None else environ)
    return info.value.problems


@REGRESSION
@given(
    st.sampled_from(
        [("1: 2\n", "1"), ("~: x\n", "None"), ("true: 1\n", "True"),
         ("2024-01-01: x\n", "2024-01-01"), ("1.5: a\n", "1.5")]
    )
)  # fmt: skip
@example(("1: 2\n", "1"))
def test_c1_a_top_level_key_that_is_no_string_is_named(
    workdir: Path, case: tuple[str, str]
) -> None:
    text, key = case
    (problem,) = _problems(workdir, text)
    assert problem[0] == key
    assert "text" in problem[1]
    # With a valid setting beside it, and an unknown one: all named, the setting checked.
    keys = [k for k, _ in _problems(workdir, text + "nosuch: 1\nlisten: {port: -1}\n")]
    assert sorted(keys) == sorted([key, "nosuch", "listen.port"])


def test_c1_nested_keys_that_are_no_strings_are_named(workdir: Path) -> None:
    keys = [k for k, _ in _problems(workdir, "listen: {1: 2, ~: 3, port: 5}\n")]
    assert sorted(keys) == ["listen.1", "listen.None"]


def test_c1_a_huge_integer_key_is_named(workdir: Path) -> None:
    # PyYAML reads 0x... of any length; str() of an int over 4300 digits raises.
    ((key, message),) = _problems(workdir, "? 0x" + "f" * 5000 + "\n: 1\n")
    assert key == "<an integer of 20000 bits>"
    assert "text" in message


def test_c1_settings_options_are_no_settings(workdir: Path) -> None:
    # pydantic-settings reads _env_prefix, _case_sensitive, ... given to the constructor
    # as its own options: from a file they are unknown keys like any other.
    text = "_env_prefix: X_\n_case_sensitive: true\n_cli_parse_args: true\n"
    assert sorted(k for k, _ in _problems(workdir, text)) == [
        "_case_sensitive", "_cli_parse_args", "_env_prefix"
    ]  # fmt: skip


@REGRESSION
@given(st.integers(256, 2000))
@example(256)
def test_c2_a_tls_path_too_long_is_named(workdir: Path, n: int) -> None:
    (problem,) = _problems(workdir, f"http: {{tls_cert_file: {'a' * n}, tls_key_file: b}}\n")
    assert problem[0] == "http"
    assert "http.tls_cert_file" in problem[1]
    assert "too long" in problem[1]
    assert len(problem[1]) < 300  # the path is cut short


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any directory")
def test_c2_a_tls_path_below_an_unreadable_directory_is_named(
    workdir: Path, tmp_path: Path
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "cert.pem").write_text("x", encoding="utf-8")
    locked.chmod(0)
    try:
        text = f"http: {{tls_cert_file: {locked / 'cert.pem'}, tls_key_file: {locked / 'k'}}}\n"
        (problem,) = _problems(workdir, text)
    finally:
        locked.chmod(0o700)
    assert problem[0] == "http"
    assert "http.tls_cert_file" in problem[1]


@settings(max_examples=4, deadline=None)  # ~3 s each: PyYAML's recursion
@given(st.integers(1000, 3000), st.booleans())
@example(1000, False)
def test_c3_deeply_nested_yaml_is_refused(workdir: Path, depth: int, closed: bool) -> None:
    problems = _problems(workdir, "[" * depth + ("]" * depth if closed else ""))
    assert problems == [(str(workdir / "agent.yaml"), "not valid YAML: nested too deeply")]


# Texts that made yaml.safe_load's constructor fail with something else than YAMLError.
YAML_CONSTRUCTOR_CRASHES = [
    "node_name: 2024-02-30\n",  # ValueError: day is out of range for month
    "node_name: 2024-13-01\n",  # ValueError: month must be in 1..12
    "node_name: 0000-01-01\n",  # ValueError: year 0 is out of range
    "simulate: {seed: " + "9" * 4301 + "}\n",  # ValueError: int max str digits
    "simulate: {seed: !!int x}\n",  # ValueError: invalid literal for int()
    "simulate: {seed: !!int}\n",  # IndexError: string index out of range
    "collection: {interval_seconds: !!float}\n",  # IndexError
    "nvml: {enabled: !!bool x}\n",  # KeyError: 'x'
    "node_name: !!timestamp x\n",  # AttributeError: 'NoneType' ... 'groupdict'
]


@REGRESSION
@given(st.sampled_from(YAML_CONSTRUCTOR_CRASHES), st.integers(0, 3))
@example("node_name: 2024-02-30\n", 0)
def test_c5_yaml_constructor_errors_name_the_line(workdir: Path, text: str, above: int) -> None:
    ((where, message),) = _problems(workdir, "# comment\n" * above + text)
    assert where == f"{workdir / 'agent.yaml'} line {above + 1}"
    assert message.startswith("not valid YAML: ")
    assert len(message) < 400


@REGRESSION
@given(st.integers(2**32, 2**80))
@example(2**32)
def test_c6_a_regex_repeat_overflow_is_named(workdir: Path, count: int) -> None:
    text = f"attribution: {{static: {{processes: [{{pattern: 'a{{{count}}}', service: s}}]}}}}\n"
    ((where, message),) = _problems(workdir, text)
    assert where == "attribution.static.processes.0.pattern"
    assert "regular expression" in message


@REGRESSION
@given(st.integers(1000, 3000))
@example(1000)
def test_c6_regex_nesting_is_named(workdir: Path, depth: int) -> None:
    pattern = "(" * depth + ")" * depth
    text = f"attribution: {{static: {{processes: [{{pattern: '{pattern}', service: s}}]}}}}\n"
    ((where, message),) = _problems(workdir, text)
    assert where == "attribution.static.processes.0.pattern"
    assert "nested too deeply" in message


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@REGRESSION
@given(st.binary(min_size=1, max_size=200).filter(lambda b: not _is_utf8(b)))
@example(b"node_name: caf\xe9\n")
@example(b"node_name: caf\xc3\xa9\nlog: \xff\n")  # line 2, after a valid multi-byte
def test_c7_a_non_utf8_file_names_the_line(workdir: Path, data: bytes) -> None:
    ((where, message),) = _problems(workdir, data)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
    assert where == f"{workdir / 'agent.yaml'} line {line}"
    assert message.startswith("not UTF-8 text: ")


@REGRESSION
@given(st.sampled_from(sorted(COMPLEX_PATHS)), st.sampled_from(["node", "", "{bad", "a,b"]))
@example(("roles",), "node")
@example(("listen",), "{bad")
def test_c4_a_complex_env_value_that_is_no_json_is_named(path: tuple[str, ...], value: str) -> None:
    name = ENV_PREFIX + "__".join(path).upper()
    problems = _problems(None, None, {name: value, "GPULEDGER_NODE_NAME": "n"})
    if len(path) > 1 and (not value or _optional_section(ENV_PATHS[path])):
        # pydantic-settings decodes no empty nested value, nor one for an optional nested
        # section: validation refuses it, naming the setting's path.
        assert [k for k, _ in problems] == [".".join(path)]
    else:
        assert [k for k, _ in problems] == [name]
        assert "JSON" in problems[0][1]


@REGRESSION
@given(st.integers(3000, 6000))
@example(3000)
def test_c4_deep_json_in_the_environment_is_named(depth: int) -> None:
    name = "GPULEDGER_REPORT__FORMATS"
    assert _problems(None, None, {name: "[" * depth + "]" * depth}) == [
        (name, "not valid JSON: nested too deeply")
    ]


@REGRESSION
@given(st.sampled_from(["gpuledger_nosuch", "Gpuledger_Listen__Prot", "gpuledger_dcgm__urll"]))
@example("gpuledger_nosuch")
def test_c8_lower_case_prefix_typos_are_refused(name: str) -> None:
    assert _problems(None, None, {name: "1"}) == [(name, "no such setting")]


def test_c8_lower_case_prefixes_are_honoured() -> None:
    cfg = load_config(None, environ={"gpuledger_listen__port": "7", "Gpuledger_Node_Name": "n"})
    assert (cfg.listen.port, cfg.node_name) == (7, "n")


@REGRESSION
@given(st.sampled_from(["node_name", "listen", "roles"]), st.booleans())
@example("node_name", True)
def test_c9_a_top_level_key_is_spelled_one_way(workdir: Path, key: str, both: bool) -> None:
    values = {"node_name": ("a", "b"), "listen": ({"port": 1}, {"port": 2}),
              "roles": (["node"], ["reporter"])}[key]  # fmt: skip
    doc = {key.upper(): values[0], key: values[1]} if both else {key.upper(): values[0]}
    ((where, message),) = _problems(workdir, _dump(doc))
    assert where == key.upper()
    assert key in message  # the spelling to use
    # The environment is read without case, as before.
    env = {f"gpuledger_{key}": json.dumps(values[0]) if key != "node_name" else "a"}
    assert isinstance(_load(workdir, _dump({key: values[1]}), env), AgentConfig)
