"""Property-based tests (hypothesis) for gpuledger.chargeback.report.ratecard.

* any text, YAML-shaped token soup, UTF-8 files, unreadable paths: a ``RateCard`` or a
  ``RateCardError`` whose problems are non-empty and each name a row
  (``gpu_rental[3] (H100/AWS/p5)``), a section, a top-level key, a line or the file;
* broken rows (a field missing, of the wrong type or out of range, an unknown field, a
  row that is no mapping, a dangling class reference, duplicates) are refused naming
  that row (or its section, for duplicates);
* round trip: generated valid cards dumped to YAML parse back row for row, and the
  parsed card dumped again parses to the same rows;
* look-ups (``gpu_class``, ``rentals_for``, ``cheapest_rental``, ``tco_for``,
  ``model_class``) agree with a small independent reimplementation (globs matched
  without case, first match wins; a served model also by its last path part), and
  patterns full of ``[ ] \\ * ? !`` never raise;
* ``extends: default``: the user's rows first, then the default's rows whose key the
  user did not give: no key twice;
* the capacity rate is the documented formula, never negative, non-decreasing in capex,
  colocation, power and overhead, non-increasing in amortization years and residual value;
* alias bombs are refused within bounds wherever the row label does not print them.

The bugs these properties found (R1..R6) are pinned by the regression tests at the end,
each asserting the RateCardError and the row or line it names; the broad properties cover
those inputs too (any bytes, infinite figures, duplicate token rows, bombs in labels).
"""

from __future__ import annotations

import fnmatch
import math
import re
import time
import tracemalloc
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gpuledger.chargeback.report.ratecard import (
    GpuClass,
    GpuRental,
    ModelClass,
    RateCard,
    RateCardError,
    Tco,
    TokenPrice,
    default_card_text,
    load_rate_card,
    parse_rate_card,
)

FUZZ = settings(
    max_examples=250,
    deadline=timedelta(milliseconds=1000),
    suppress_health_check=[HealthCheck.too_slow],
)
CARDS = settings(
    max_examples=120,
    deadline=timedelta(milliseconds=2000),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
)
REGRESSION = settings(max_examples=10, deadline=None)

SECTIONS = ("gpu_models", "gpu_rental", "model_classes", "token_api", "tco")
ROW_LABEL = re.compile(
    r"(gpu_models|gpu_rental|model_classes|token_api|tco)\[\d+\]( \(.*\))?", re.S
)
CARD_FIELDS = ("version", "currency", "description", "extends")
ROW_KEYS = [
    "name", "match", "gpu", "provider", "offering", "provider_kind", "usd_per_gpu_hour",
    "usd_per_gpu_hour_high", "class", "source", "as_of", "capex_usd_per_gpu", "pue",
    "amortization_years", "usd_per_1m_input",
]  # fmt: skip
DEFAULT_DOC: dict[str, Any] = yaml.safe_load(default_card_text())


def _dump(doc: Any) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=False)


def _check_error(err: RateCardError, data: Any = None, source: str | None = None) -> list[str]:
    """Every problem names where it is; returns the row labels."""
    assert err.source
    assert source is None or err.source == source
    assert isinstance(err.problems, list)
    assert err.problems, "a RateCardError must say what is wrong"
    # pydantic names a key that is no string by its repr (datetime.date(2026, 1, 1)).
    top_keys = {f(k) for k in data for f in (str, repr)} if isinstance(data, dict) else set()
    labels = []
    for problem in err.problems:
        where, message = problem
        assert isinstance(where, str)
        assert where
        assert isinstance(message, str)
        assert message
        assert (
            ROW_LABEL.fullmatch(where)
            or where in SECTIONS
            or where in ("(top level)", "(file)")
            or re.fullmatch(r"line \d+", where)
            or where in top_keys
            or where in CARD_FIELDS
        ), (where, err.problems)
        labels.append(where)
    assert str(err)
    return labels


def _parse(text: str, data: Any = None) -> RateCard | list[str]:
    """The card, or the labels its RateCardError names. Anything else escapes."""
    try:
        card = parse_rate_card(text, "fuzz.yaml")
    except RateCardError as err:
        return _check_error(err, data)
    assert isinstance(card, RateCard)
    assert len(card.digest) == 12
    return card


# ------------------------------------------------------------------------- arbitrary input

CARD_TOKENS = [
    "version", "currency", "USD", "extends", "default", "gpu_models", "gpu_rental",
    "model_classes", "token_api", "tco", "name", "match", "gpu", "provider", "offering",
    "provider_kind", "hyperscaler", "usd_per_gpu_hour", "usd_per_gpu_hour_high", "class",
    "source", "as_of", "capex_usd_per_gpu", "pue", "amortization_years", ":", ": ", " ",
    "\n", "\n  ", "\n  - ", "- ", "[", "]", "{", "}", ", ", "&a ", "*a", "'", '"', "#",
    "---\n", "1", "0", "-1", ".inf", ".nan", "1e3", "2026-11-01", "'NVIDIA H100*'", "~",
    "!!str ", "!!set ", "\t", "\\", "\x00", "\u2028",
]  # fmt: skip
card_soup = st.lists(st.sampled_from(CARD_TOKENS), max_size=80).map("".join)


@FUZZ
@given(st.one_of(st.text(max_size=1000), card_soup))
@example("[" * 1000)
@example("version: 2026-02-30")
def test_any_text_gives_a_card_or_a_rate_card_error(text: str) -> None:
    _parse(text, _safe_data(text))


def _safe_data(text: str) -> Any:
    """The document as plain PyYAML reads it, or None where it cannot."""
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError, ValueError, LookupError, AttributeError):
        return None


@settings(FUZZ, max_examples=150)
@given(
    st.dictionaries(
        st.one_of(st.sampled_from([*CARD_FIELDS, *SECTIONS]), st.text(max_size=8)),
        st.recursive(
            st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=12)
            | st.dates(),
            lambda inner: st.lists(inner, max_size=4)
            | st.dictionaries(st.sampled_from(ROW_KEYS) | st.text(max_size=6), inner,
                              max_size=5),
            max_leaves=30,
        ),
        max_size=7,
    )
)  # fmt: skip
def test_any_card_shaped_document(doc: dict[str, Any]) -> None:
    text = _dump(doc)
    _parse(text, yaml.safe_load(text))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ratecard-fuzz")


@FUZZ
@given(st.one_of(st.text(max_size=400), card_soup))
def test_load_rate_card_from_any_utf8_file(workdir: Path, text: str) -> None:
    path = workdir / "card.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_rate_card(path)
    except RateCardError as err:
        _check_error(err, _safe_data(text), source=str(path))


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=400),
        st.tuples(card_soup, st.binary(max_size=4), card_soup).map(
            lambda t: t[0].encode("utf-8") + t[1] + t[2].encode("utf-8")
        ),
    )
)
@example(b"version: '1'\ndescription: caf\xe9\n")
def test_load_rate_card_from_any_bytes(workdir: Path, data: bytes) -> None:
    path = workdir / "bytes.yaml"
    path.write_bytes(data)
    try:
        load_rate_card(path)
    except RateCardError as err:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = ""
        _check_error(err, _safe_data(text), source=str(path))


@pytest.mark.parametrize("kind", ["missing", "directory", "dangling link", "link loop", "long"])
def test_unreadable_card_paths(tmp_path: Path, kind: str) -> None:
    path = tmp_path / ("x" * 300 if kind == "long" else "card.yaml")
    if kind == "directory":
        path.mkdir()
    elif kind == "dangling link":
        path.symlink_to(tmp_path / "nowhere")
    elif kind == "link loop":
        path.symlink_to(path)
    with pytest.raises(RateCardError) as info:
        load_rate_card(path)
    assert _check_error(info.value) == ["(file)"]


# ------------------------------------------------------------------------ generated cards

names = st.text(min_size=1, max_size=10)
sources = st.text(min_size=3, max_size=20)
dates = st.dates(min_value=date(1990, 1, 1), max_value=date(2100, 12, 31))
as_of = st.one_of(dates, dates.map(date.isoformat))  # a YAML date, or a quoted string
GLOB_ALPHABET = "abAB01 -_./*?[]!^\\\u00e9\u00c9"
patterns = st.one_of(
    st.text(alphabet=GLOB_ALPHABET, max_size=10),
    st.sampled_from([p for m in DEFAULT_DOC["gpu_models"] for p in m["match"]]),
    st.sampled_from([p for m in DEFAULT_DOC["model_classes"] for p in m["match"]]),
)


def _rows(
    draw: st.DrawFn, strategy: st.SearchStrategy[dict[str, Any]], key: Callable[[Any], Any]
) -> list[dict[str, Any]]:
    return draw(st.lists(strategy, max_size=6, unique_by=key))


@st.composite
def rental_rows(draw: st.DrawFn, gpus: Sequence[str], providers: st.SearchStrategy[str],
                offerings: st.SearchStrategy[str]) -> dict[str, Any]:  # fmt: skip
    rate = draw(st.floats(min_value=1e-4, max_value=1e4))
    row = {
        "gpu": draw(st.sampled_from(gpus)),
        "provider": draw(providers),
        "provider_kind": draw(st.sampled_from(["hyperscaler", "specialist"])),
        "offering": draw(offerings),
        "usd_per_gpu_hour": rate,
        "source": draw(sources),
        "as_of": draw(as_of),
    }
    if draw(st.booleans()):
        row["usd_per_gpu_hour_high"] = rate * (1.0 + draw(st.floats(0, 10)))
    return row


def tco_row(gpu: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "gpu": st.just(gpu),
            "capex_usd_per_gpu": st.floats(min_value=1e-3, max_value=1e7),
            "amortization_years": st.floats(min_value=0.01, max_value=20),
            "power_kw_per_gpu": st.floats(min_value=1e-3, max_value=100),
            "electricity_usd_per_kwh": st.floats(0, 10),
            "pue": st.floats(1, 3),
            "colocation_usd_per_kw_month": st.floats(0, 1e4),
            "source": sources,
            "as_of": as_of,
        },
        optional={
            "residual_value_ratio": st.floats(0, 0.99),
            "operations_overhead_ratio": st.floats(0, 5),
        },
    )


@st.composite
def cards(
    draw: st.DrawFn,
    base_gpus: Sequence[str] = (),
    base_models: Sequence[str] = (),
    providers: st.SearchStrategy[str] = names,
    offerings: st.SearchStrategy[str] = names,
) -> dict[str, Any]:
    """A valid card document; ``base_*`` are classes an ``extends`` base defines."""
    gpu_pool = st.one_of(names, *([st.sampled_from(base_gpus)] if base_gpus else []))
    model_pool = st.one_of(names, *([st.sampled_from(base_models)] if base_models else []))
    gpu_names = draw(st.lists(gpu_pool, unique=True, max_size=5))
    model_names = draw(st.lists(model_pool, unique=True, max_size=5))
    doc: dict[str, Any] = {"version": draw(names)}
    if draw(st.booleans()):
        doc["currency"] = "USD"
    if draw(st.booleans()):
        doc["description"] = draw(st.text(max_size=30))
    doc["gpu_models"] = [
        {"name": n, "match": draw(st.lists(patterns, min_size=1, max_size=3))} for n in gpu_names
    ]
    doc["model_classes"] = [
        {"name": n, "match": draw(st.lists(patterns, min_size=1, max_size=3))} for n in model_names
    ]
    gpus = sorted(set(gpu_names) | set(base_gpus))
    models = sorted(set(model_names) | set(base_models))
    doc["gpu_rental"] = (
        _rows(draw, rental_rows(gpus, providers, offerings),
              lambda r: (r["gpu"], r["provider"], r["offering"]))
        if gpus else []
    )  # fmt: skip
    # token_api rows are unique by (class, provider): a row given twice is refused.
    doc["token_api"] = (
        _rows(
            draw,
            st.fixed_dictionaries(
                {
                    "class": st.sampled_from(models),
                    "provider": providers,
                    "usd_per_1m_input": st.floats(0, 1e3),
                    "usd_per_1m_output": st.floats(0, 1e3),
                    "source": sources,
                    "as_of": as_of,
                }
            ),
            lambda r: (r["class"], r["provider"]),
        )
        if models
        else []
    )
    tco_gpus = draw(st.lists(st.sampled_from(gpus), unique=True, max_size=4)) if gpus else []
    doc["tco"] = [draw(tco_row(g)) for g in tco_gpus]
    for section in SECTIONS:  # an empty section is as good as none
        if not doc[section] and draw(st.booleans()):
            del doc[section]
    return doc


def _expected(doc: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    models: dict[str, type[Any]] = {
        "gpu_models": GpuClass, "gpu_rental": GpuRental, "model_classes": ModelClass,
        "token_api": TokenPrice, "tco": Tco,
    }  # fmt: skip
    return {s: tuple(models[s].model_validate(r) for r in doc.get(s, [])) for s in SECTIONS}


def _sections(card: RateCard) -> dict[str, tuple[Any, ...]]:
    return {s: getattr(card, s) for s in SECTIONS}


def _card_doc(card: RateCard) -> dict[str, Any]:
    """A parsed card written back as a card file."""
    doc: dict[str, Any] = {"version": card.version, "currency": card.currency}
    for s in SECTIONS:
        doc[s] = [r.model_dump(mode="json", by_alias=True) for r in getattr(card, s)]
    return doc


@CARDS
@given(cards())
def test_valid_cards_round_trip(doc: dict[str, Any]) -> None:
    card = _parse(_dump(doc))
    assert isinstance(card, RateCard), card  # every generated card is valid
    assert card.version == doc["version"]
    assert _sections(card) == _expected(doc)
    for row, raw in zip(card.gpu_rental, doc.get("gpu_rental", []), strict=True):
        assert row.usd_per_gpu_hour == raw["usd_per_gpu_hour"]  # floats exact through YAML
        assert row.as_of == date.fromisoformat(str(raw["as_of"]))
    again = _parse(_dump(_card_doc(card)))
    assert isinstance(again, RateCard), again
    assert _sections(again) == _sections(card)
    assert again.version == card.version


@settings(CARDS, max_examples=40)
@given(cards())
def test_load_rate_card_reads_what_parse_rate_card_parses(
    workdir: Path, doc: dict[str, Any]
) -> None:
    path = workdir / "valid.yaml"
    text = _dump(doc)
    path.write_text(text, encoding="utf-8")
    loaded = load_rate_card(path)
    parsed = parse_rate_card(text, str(path))
    assert loaded == parsed
    assert loaded.source == str(path)


# --------------------------------------------------------------------------------- look-ups


def _wildcard(name: str, pattern: str) -> bool:
    """``*`` and ``?`` globbing, every other character literal (backslash included)."""
    n = p = 0
    star, mark = -1, 0
    while n < len(name):
        if p < len(pattern) and pattern[p] == "*":
            star, mark, p = p, n, p + 1
        elif p < len(pattern) and pattern[p] in ("?", name[n]):
            n, p = n + 1, p + 1
        elif star >= 0:
            mark += 1
            n, p = mark, star + 1
        else:
            return False
    return all(c == "*" for c in pattern[p:])


def _glob(name: str, pattern: str) -> bool:
    # Sets ([...], [!...]) follow fnmatch's rules, which the card documents; the rest is
    # matched by hand.
    return fnmatch.fnmatchcase(name, pattern) if "[" in pattern else _wildcard(name, pattern)


Classes = list[tuple[str, list[str]]]


def _ref_gpu_class(classes: Classes, gpu_model: str) -> str | None:
    name = gpu_model.strip().lower()
    for cls, pats in classes:
        for p in pats:
            if _glob(name, p.lower()):
                return cls
    return None


def _ref_model_class(classes: Classes, model: str) -> str | None:
    name = model.strip().lower()
    tail = name.split("/")[-1]
    for cls, pats in classes:
        for p in pats:
            if _glob(name, p.lower()) or _glob(tail, p.lower()):
                return cls
    return None


def _classes(rows: Sequence[GpuClass | ModelClass]) -> Classes:
    return [(r.name, list(r.match)) for r in rows]


@st.composite
def queries(draw: st.DrawFn, pats: Sequence[str]) -> str:
    """A name made to match one of the patterns (or nearly), or anything."""
    if not pats or draw(st.integers(0, 3)) == 0:
        return draw(st.text(alphabet=GLOB_ALPHABET + "xyzXYZ", max_size=12))
    out = []
    for c in draw(st.sampled_from(pats)):
        if c == "*":
            out.append(draw(st.text(alphabet="aAb/- x", max_size=4)))
        elif c == "?":
            out.append(draw(st.sampled_from("aZ9/ ")))
        else:
            out.append(c)
    name = "".join(out)
    if draw(st.booleans()):
        name = name.swapcase()
    if draw(st.booleans()):
        name = draw(st.sampled_from(["", "org/", "/models/", "a/b/"])) + name
    return draw(st.sampled_from(["", " ", "\t"])) + name + draw(st.sampled_from(["", " ", "\n"]))


def _check_lookups(card: RateCard, data: st.DataObject) -> None:
    gpu_classes = _classes(card.gpu_models)
    model_classes = _classes(card.model_classes)
    pats = [p for _, ps in gpu_classes + model_classes for p in ps]
    for _ in range(6):
        q = data.draw(queries(pats))
        cls = _ref_gpu_class(gpu_classes, q)
        assert card.gpu_class(q) == cls, q
        rentals = tuple(r for r in card.gpu_rental if r.gpu == cls) if cls else ()
        assert card.rentals_for(q) == rentals
        for kind in ("hyperscaler", "specialist"):
            rows = sorted(
                (r for r in rentals if r.provider_kind == kind),
                key=lambda r: (r.usd_per_gpu_hour, r.provider, r.offering),
            )
            assert card.cheapest_rental(q, kind) == (rows[0] if rows else None)
        tco = next((t for t in card.tco if t.gpu == cls), None) if cls else None
        assert card.tco_for(q) == tco
        assert card.model_class(q) == _ref_model_class(model_classes, q), q


@CARDS
@given(cards(), st.data())
def test_lookups_agree_with_a_reference(doc: dict[str, Any], data: st.DataObject) -> None:
    card = _parse(_dump(doc))
    assert isinstance(card, RateCard)
    _check_lookups(card, data)


def test_the_shipped_card_agrees_with_the_reference() -> None:
    card = load_rate_card()
    served = ["meta-llama/Llama-3.1-8B-Instruct", "/models/llama-3.1-8b-awq", "x/y/Mistral-7B"]
    for q in [
        "NVIDIA H100 80GB HBM3",
        "nvidia l4",
        "NVIDIA A100-SXM4-40GB",
        " NVIDIA L40S\n",
        *served,
    ]:
        assert card.gpu_class(q) == _ref_gpu_class(_classes(card.gpu_models), q)
        assert card.model_class(q) == _ref_model_class(_classes(card.model_classes), q)


SPECIAL = "[]\\*?!^-az/."


@settings(FUZZ, max_examples=300)
@given(
    st.lists(st.text(alphabet=SPECIAL, max_size=12), min_size=1, max_size=4),
    st.lists(st.text(alphabet=SPECIAL + "AZ ", max_size=20), max_size=6),
)
@example(["[", "]", "[]", "[!]", "[]]", "[!]]", "[z-a]", "\\", "[\\]", "*[", "?*?*?*"], ["[", "]"])
def test_special_characters_in_patterns_never_raise(pats: list[str], names_: list[str]) -> None:
    text = _dump(
        {
            "version": "1",
            "gpu_models": [{"name": "G", "match": pats}],
            "model_classes": [{"name": "M", "match": pats}],
        }
    )
    card = _parse(text)
    assert isinstance(card, RateCard)
    for name in [*names_, *pats]:
        expected = "G" if any(_glob(name.strip().lower(), p.lower()) for p in pats) else None
        assert card.gpu_class(name) == expected, (name, pats)
        assert card.model_class(name) in ("M", None)
        assert card.tco_for(name) is None
        assert card.cheapest_rental(name, "specialist") is None


def test_many_stars_do_not_backtrack() -> None:
    pats = ["*a" * 30 + "b", "*?" * 40 + "*", "*[a]*[a]*[a]*[a]*[a]*[a]*[a]*[a]*c"]
    card = parse_rate_card(_dump({"version": "1", "gpu_models": [{"name": "G", "match": pats}]}))
    start = time.perf_counter()
    assert card.gpu_class("a" * 5000) == "G"  # the second pattern
    assert card.gpu_class("a" * 39) is None  # one short of the second pattern's 40
    assert time.perf_counter() - start < 5


# ----------------------------------------------------------------------------- broken rows

REQUIRED = {
    "gpu_models": ["name", "match"],
    "gpu_rental": ["gpu", "provider", "provider_kind", "offering", "usd_per_gpu_hour", "source",
                   "as_of"],
    "model_classes": ["name", "match"],
    "token_api": ["class", "provider", "usd_per_1m_input", "usd_per_1m_output", "source",
                  "as_of"],
    "tco": ["gpu", "capex_usd_per_gpu", "amortization_years", "power_kw_per_gpu",
            "electricity_usd_per_kwh", "pue", "colocation_usd_per_kw_month", "source", "as_of"],
}  # fmt: skip
OUT_OF_RANGE: dict[str, list[Any]] = {
    "usd_per_gpu_hour": [0, -1, "abc", None, math.inf, math.nan],
    "usd_per_1m_input": [-0.01, "free", math.inf],
    "usd_per_1m_output": [-1, math.inf, math.nan],
    "capex_usd_per_gpu": [0, -5, math.inf],
    "amortization_years": [0, 21, -1, math.nan],
    "residual_value_ratio": [1, 1.5, -0.1, math.nan],
    "power_kw_per_gpu": [0, math.inf],
    "electricity_usd_per_kwh": [-0.1, math.inf],
    "pue": [0.5, 3.5, math.nan],
    "colocation_usd_per_kw_month": [-1, math.inf],
    "operations_overhead_ratio": [6, -1, math.inf],
    "provider_kind": ["cloud", "", 1],
    "source": ["ab", "", 7],
    "as_of": ["last week", "2026-13-01", "2026-02-30", 3.5, "2026-11-01T10:00:00"],
    "match": [[], "NVIDIA*", None, [1]],
    "name": ["", None, ["a"]],
    "gpu": ["", {"a": 1}],
    "class": [""],
    "provider": ["", [1, 2]],
    "offering": [""],
}
WRONG_TYPES = [None, [1, 2], {"a": 1}, True, "x" * 3]


@st.composite
def broken_cards(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A card with one thing wrong, and the label (prefix) the error must name."""
    doc = draw(cards())
    with_rows = [s for s in SECTIONS if doc.get(s)]
    kind = draw(st.sampled_from(["row", "row", "row", "row", "section", "top"]))
    if kind == "row" and with_rows:
        section = draw(st.sampled_from(with_rows))
        i = draw(st.integers(0, len(doc[section]) - 1))
        row = doc[section][i]
        how = draw(st.sampled_from(["missing", "value", "unknown", "not a mapping", "ref"]))
        if how == "missing":
            del row[draw(st.sampled_from(REQUIRED[section]))]
        elif how == "value":
            field = draw(st.sampled_from(sorted(set(row) | {"usd_per_gpu_hour_high"})))
            if field == "usd_per_gpu_hour_high" and section == "gpu_rental":
                row[field] = row["usd_per_gpu_hour"] / 2  # below the low end
            elif field in OUT_OF_RANGE:
                row[field] = draw(st.sampled_from(OUT_OF_RANGE[field]))
            else:
                row[field] = draw(st.sampled_from(WRONG_TYPES[:3]))  # an unknown field
        elif how == "unknown":
            row[draw(st.sampled_from(["priice", "Name", "usd", " gpu"]))] = 1
        elif how == "not a mapping":
            doc[section][i] = draw(st.sampled_from(WRONG_TYPES))
        elif section in ("gpu_rental", "tco"):
            row["gpu"] = "no such class \u2603"
        elif section == "token_api":
            row["class"] = "no such class \u2603"
        else:  # a class's name changed under its rows: its rows dangle, or nothing does
            return doc, ""
        return doc, f"{section}[{i}]"
    if kind == "section" or (kind == "row" and not with_rows):
        section = draw(st.sampled_from(SECTIONS))
        rows = doc.get(section, [])
        if (
            rows
            and section in ("gpu_models", "model_classes", "gpu_rental", "token_api")
            and draw(st.booleans())
        ):
            doc[section] = [*rows, dict(rows[0])]  # given twice
            return doc, section
        if section == "tco" and rows:
            doc["tco"] = [*rows, dict(rows[0], capex_usd_per_gpu=1.0)]
            return doc, "tco"
        doc[section] = draw(st.sampled_from([{"a": 1}, "rows", 3, True]))
        return doc, section
    what = draw(st.sampled_from(["no version", "currency", "extends", "unknown", "version type"]))
    if what == "no version":
        del doc["version"]
        return doc, "version"
    if what == "currency":
        doc["currency"] = draw(st.sampled_from(["EUR", "usd", 1]))
        return doc, "currency"
    if what == "extends":
        doc["extends"] = draw(st.sampled_from(["defaults", "", "other.yaml", True]))
        return doc, "extends"
    if what == "version type":
        doc["version"] = draw(st.sampled_from(["", 1.5, None, ["1"]]))
        return doc, "version"
    key = draw(st.sampled_from(["gpu_model", "rates", "Version", "tcos"]))
    doc[key] = []
    return doc, key


@CARDS
@given(broken_cards())
def test_broken_cards_name_the_row(case: tuple[dict[str, Any], str]) -> None:
    doc, where = case
    text = _dump(doc)
    result = _parse(text, yaml.safe_load(text))
    if not where:
        return  # the mutation may or may not break the card; only the error's form counts
    assert isinstance(result, list), f"accepted a card with {where} broken"
    assert any(label == where or label.startswith(where + " (") for label in result), (
        where,
        result,
    )


# --------------------------------------------------------------------------------- extends

DEFAULT = parse_rate_card(default_card_text())
DEFAULT_GPUS = [c.name for c in DEFAULT.gpu_models]
DEFAULT_MODELS = [c.name for c in DEFAULT.model_classes]
KEYS: dict[str, Callable[[Any], Any]] = {
    "gpu_models": lambda r: r.name,
    "gpu_rental": lambda r: r.key,
    "model_classes": lambda r: r.name,
    "token_api": lambda r: r.key,
    "tco": lambda r: r.gpu,
}
# Providers and offerings drawn partly from the default card, so that user rows replace
# default rows as often as they add new ones.
providers_mixed = st.one_of(
    names, st.sampled_from(sorted({r.provider for r in DEFAULT.gpu_rental + DEFAULT.token_api}))
)
offerings_mixed = st.one_of(
    names, st.sampled_from(sorted({r.offering for r in DEFAULT.gpu_rental}))
)


@settings(CARDS, max_examples=60)
@given(
    cards(DEFAULT_GPUS, DEFAULT_MODELS, providers_mixed, offerings_mixed),
    st.data(),
)
def test_extends_default_overlays_without_duplicates(
    doc: dict[str, Any], data: st.DataObject
) -> None:
    doc = {"extends": "default", **doc}
    card = _parse(_dump(doc))
    assert isinstance(card, RateCard), card
    assert card.version == f"{DEFAULT.version}+{doc['version']}"
    top = _expected(doc)
    for section, key in KEYS.items():
        rows = getattr(card, section)
        keys = [key(r) for r in rows]
        assert len(keys) == len(set(keys)), (section, keys)
        mine = {key(r) for r in top[section]}
        assert rows == top[section] + tuple(
            r for r in getattr(DEFAULT, section) if key(r) not in mine
        )
    gpu_names = {c.name for c in card.gpu_models}
    assert all(r.gpu in gpu_names for r in (*card.gpu_rental, *card.tco))
    assert {t.model_class for t in card.token_api} <= {c.name for c in card.model_classes}
    _check_lookups(card, data)


# ------------------------------------------------------------------------------------- TCO

TCO_FIELDS: dict[str, st.SearchStrategy[float]] = {
    "capex_usd_per_gpu": st.floats(min_value=1e-3, max_value=1e7),
    "amortization_years": st.floats(min_value=0.01, max_value=20),
    "residual_value_ratio": st.floats(0, 0.99),
    "power_kw_per_gpu": st.floats(min_value=1e-3, max_value=100),
    "electricity_usd_per_kwh": st.floats(0, 10),
    "pue": st.floats(1, 3),
    "colocation_usd_per_kw_month": st.one_of(st.just(0.0), st.floats(0, 1e4)),
    "operations_overhead_ratio": st.floats(0, 5),
}
# field -> (upper bound, +1 when the rate rises with it, -1 when it falls)
DIRECTION = {
    "capex_usd_per_gpu": (1e7, 1),
    "amortization_years": (20.0, -1),
    "residual_value_ratio": (0.99, -1),
    "power_kw_per_gpu": (100.0, 1),
    "colocation_usd_per_kw_month": (1e4, 1),
    "operations_overhead_ratio": (5.0, 1),
}


def _tco(fields: dict[str, float]) -> Tco:
    return Tco(gpu="G", source="purchase order", as_of=date(2026, 1, 1), **fields)


def _formula(f: dict[str, float]) -> float:
    capex = f["capex_usd_per_gpu"] * (1 - f["residual_value_ratio"])
    capex /= f["amortization_years"] * 365 * 24
    colo = f["colocation_usd_per_kw_month"] * f["power_kw_per_gpu"] * 12 / (365 * 24)
    return (capex + colo) * (1 + f["operations_overhead_ratio"])


@settings(max_examples=400, deadline=timedelta(milliseconds=500))
@given(
    st.fixed_dictionaries(TCO_FIELDS),
    st.sampled_from(sorted(DIRECTION)),
    st.floats(0, 1),
)
def test_capacity_rate_is_the_formula_and_monotonic(
    fields: dict[str, float], which: str, step: float
) -> None:
    tco = _tco(fields)
    rate = tco.capacity_usd_per_gpu_hour
    assert math.isfinite(rate)
    assert rate >= 0
    assert rate == pytest.approx(_formula(fields), rel=1e-12, abs=1e-300)
    assert tco.energy_usd_per_kwh == pytest.approx(
        fields["electricity_usd_per_kwh"] * fields["pue"], rel=1e-12
    )
    assert tco.energy_usd_per_kwh >= 0
    high, sign = DIRECTION[which]
    more = dict(fields, **{which: fields[which] + (high - fields[which]) * step})
    new_rate = _tco(more).capacity_usd_per_gpu_hour
    if sign > 0:
        assert new_rate >= rate, (which, fields[which], more[which])
    else:
        assert new_rate <= rate, (which, fields[which], more[which])
    # Strictly, where the capex share cannot be swamped by rounding.
    if which in ("capex_usd_per_gpu", "amortization_years") and (
        fields["colocation_usd_per_kw_month"] == 0 and more[which] > fields[which] * (1 + 1e-6)
    ):
        assert (new_rate > rate) if sign > 0 else (new_rate < rate)


# -------------------------------------------------------------------------------- bombs


def _bomb(levels: int, width: int = 10) -> str:
    lines = ["bombs:", f"  - &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"  - &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _bounded(fn: Callable[[], Any]) -> tuple[Any, float, int]:
    tracemalloc.start()
    start = time.perf_counter()
    try:
        result = fn()
        return result, time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


_ROW = (
    "{gpu: G, provider: P, provider_kind: specialist, offering: O, usd_per_gpu_hour: 1, "
    "source: abc, as_of: 2026-01-01}"
)
# Where a bomb lands: nowhere is it printed, a row's label included (R4).
BOUNDED_PLACEMENTS = {
    "name": "version: '1'\ngpu_models: [{name: *TOP, match: ['*']}]\n",
    "gpu": f"version: '1'\ngpu_rental: [{_ROW.replace('gpu: G', 'gpu: *TOP')}]\n",
    "provider": f"version: '1'\ngpu_rental: [{_ROW.replace('provider: P', 'provider: *TOP')}]\n",
    "offering": f"version: '1'\ngpu_rental: [{_ROW.replace('offering: O', 'offering: *TOP')}]\n",
    "class": "version: '1'\ntoken_api: [{class: *TOP, provider: P}]\n",
    "top level": "version: '1'\nx: *TOP\n",
    "section": "version: '1'\ngpu_models: *TOP\n",
    "version": "version: *TOP\n",
    "row": "version: '1'\ngpu_rental: [*TOP]\n",
    "match": "version: '1'\ngpu_models: [{name: G, match: *TOP}]\n",
    "source": "version: '1'\ngpu_models: [{name: G, match: ['*']}]\n"
    f"gpu_rental: [{_ROW.replace('source: abc', 'source: *TOP')}]\n",
    "price": "version: '1'\ngpu_models: [{name: G, match: ['*']}]\n"
    f"gpu_rental: [{_ROW.replace('usd_per_gpu_hour: 1', 'usd_per_gpu_hour: *TOP')}]\n",
    "as_of": "version: '1'\ngpu_models: [{name: G, match: ['*']}]\n"
    f"gpu_rental: [{_ROW.replace('as_of: 2026-01-01', 'as_of: *TOP')}]\n",
}  # fmt: skip


@pytest.mark.parametrize("where", sorted(BOUNDED_PLACEMENTS))
def test_alias_bombs_are_refused_within_bounds(where: str) -> None:
    # 10 ** 9 leaves once expanded.
    text = _bomb(9) + BOUNDED_PLACEMENTS[where].replace("*TOP", "*l8")
    result, elapsed, peak = _bounded(lambda: _parse(text, yaml.safe_load(text)))
    assert isinstance(result, list)
    assert elapsed < 3, elapsed
    assert peak < 32 * 1024 * 1024, peak


# ----------------------------------------------------------------- regressions (R1..R6)
# Each bug the properties above found, pinned with the RateCardError it now gives.


def _problems(text: str) -> list[tuple[str, str]]:
    """The problems of the RateCardError parsing ``text`` raises (each checked)."""
    with pytest.raises(RateCardError) as info:
        parse_rate_card(text, "fuzz.yaml")
    _check_error(info.value, _safe_data(text))
    return info.value.problems


@settings(max_examples=4, deadline=None)  # ~3 s each: PyYAML's recursion
@given(st.integers(1000, 3000), st.booleans())
@example(1000, False)
def test_r1_deeply_nested_yaml_is_refused(depth: int, closed: bool) -> None:
    text = "[" * depth + ("]" * depth if closed else "")
    assert _problems(text) == [("(file)", "not valid YAML: nested too deeply")]


# Cards that made yaml.safe_load's constructor fail with something else than YAMLError,
# and the line of the bad scalar.
_CARD = "version: '1'\nmodel_classes: [{name: M, match: ['*']}]\n"
YAML_CONSTRUCTOR_CRASHES = [
    # ValueError: a finance user's typo in an unquoted date
    (_CARD + "token_api: [{class: M, provider: P, usd_per_1m_input: 1, usd_per_1m_output: 1, "
     "source: abc, as_of: 2026-02-30}]\n", 3),
    ("version: 2026-13-01\n", 1),  # ValueError: month must be in 1..12
    ("version: '1'\ndescription: " + "9" * 4301 + "\n", 2),  # ValueError: int max str digits
    ("version: !!int\n", 1),  # IndexError
    ("version: !!bool x\n", 1),  # KeyError
    ("version: !!timestamp x\n", 1),  # AttributeError
]  # fmt: skip


@REGRESSION
@given(st.sampled_from(YAML_CONSTRUCTOR_CRASHES))
@example(YAML_CONSTRUCTOR_CRASHES[0])
def test_r2_yaml_constructor_errors_name_the_line(case: tuple[str, int]) -> None:
    text, line = case
    ((where, message),) = _problems(text)
    assert where == f"line {line}"
    assert message.startswith("not valid YAML: ")
    assert len(message) < 400


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@REGRESSION
@given(st.binary(min_size=1, max_size=200).filter(lambda b: not _is_utf8(b)))
@example(b"version: '1'\ndescription: caf\xe9\n")
@example(b"version: '1'\ndescription: caf\xc3\xa9\n  \xff\n")  # line 3
def test_r3_a_non_utf8_card_names_the_line(workdir: Path, data: bytes) -> None:
    path = workdir / "latin1.yaml"
    path.write_bytes(data)
    with pytest.raises(RateCardError) as info:
        load_rate_card(path)
    _check_error(info.value, source=str(path))
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
    ((where, message),) = info.value.problems
    assert where == f"line {line}"
    assert message.startswith("not UTF-8 text: ")


@REGRESSION
@given(st.sampled_from(["name", "gpu", "class", "provider", "offering"]))
@example("gpu")
def test_r4_an_alias_bomb_in_a_row_label_is_not_printed(field: str) -> None:
    section = "gpu_models" if field == "name" else "token_api" if field == "class" else "gpu_rental"
    text = _bomb(5) + f"version: '1'\n{section}: [{{{field}: *l4}}]\n"
    result, _, peak = _bounded(lambda: _parse(text, yaml.safe_load(text)))
    assert isinstance(result, list)
    # The bound every other placement meets at 9 levels (10 ** 9 leaves), here at 5.
    assert peak < 8 * 1024 * 1024, f"{peak / 1e6:.0f} MB for {len(text)} bytes of YAML"
    assert max(len(label) for label in result) < 10_000, "the label prints the expansion"
    assert all(label == f"{section}[0]" for label in result if label.startswith(section))


def test_r4_long_label_parts_are_cut_short() -> None:
    text = _dump({"version": "1", "gpu_rental": [{"gpu": "G" * 5000, "provider": 12345}]})
    labels = {where for where, _ in _problems(text)}
    assert labels == {f"gpu_rental[0] ({'G' * 57}.../12345)"}


def test_r4_a_huge_integer_in_a_label_field_is_left_out() -> None:
    # PyYAML reads 0x... of any length; str() of an int over 4300 digits raises.
    text = "version: '1'\ngpu_rental: [{gpu: 0x" + "f" * 5000 + ", provider: P}]\n"
    labels = {where for where, _ in _problems(text)}
    assert labels == {"gpu_rental[0] (P)"}


@REGRESSION
@given(
    st.sampled_from(
        ["capex_usd_per_gpu", "power_kw_per_gpu", "colocation_usd_per_kw_month",
         "electricity_usd_per_kwh", "usd_per_gpu_hour", "usd_per_gpu_hour_high",
         "usd_per_1m_input", "usd_per_1m_output"]
    ),
    st.sampled_from([math.inf, math.nan]),
)  # fmt: skip
@example("capex_usd_per_gpu", math.inf)
def test_r5_infinite_figures_are_refused(field: str, value: float) -> None:
    tco = {"gpu": "G", "capex_usd_per_gpu": 40000, "amortization_years": 4,
           "power_kw_per_gpu": 1.2, "electricity_usd_per_kwh": 0.1, "pue": 1.3,
           "colocation_usd_per_kw_month": 200, "source": "po 1", "as_of": "2026-01-01"}  # fmt: skip
    rental = {"gpu": "G", "provider": "P", "provider_kind": "specialist", "offering": "O",
              "usd_per_gpu_hour": 2.0, "source": "abc", "as_of": "2026-01-01"}  # fmt: skip
    token = {"class": "M", "provider": "P", "usd_per_1m_input": 0.1, "usd_per_1m_output": 0.2,
             "source": "abc", "as_of": "2026-01-01"}  # fmt: skip
    labels = {"tco": "tco[0] (G)", "rental": "gpu_rental[0] (G/P/O)", "token": "token_api[0] (M/P)"}
    (row_name, row) = next(
        (n, r) for n, r in (("tco", tco), ("rental", rental), ("token", token))
        if field in r or (n == "rental" and field == "usd_per_gpu_hour_high")
    )  # fmt: skip
    row[field] = value
    doc = {"version": "1", "gpu_models": [{"name": "G", "match": ["*"]}],
           "model_classes": [{"name": "M", "match": ["*"]}],
           "gpu_rental": [rental], "token_api": [token], "tco": [tco]}  # fmt: skip
    ((where, message),) = _problems(_dump(doc))
    assert where == labels[row_name]
    assert message.startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("fields", "what"),
    [
        ({"capex_usd_per_gpu": 1.7e308, "amortization_years": 1e-300}, "capacity"),
        ({"colocation_usd_per_kw_month": 1e308, "power_kw_per_gpu": 1e308}, "capacity"),
        ({"capex_usd_per_gpu": 1e308, "amortization_years": 0.0001,
          "operations_overhead_ratio": 5}, "capacity"),
        ({"electricity_usd_per_kwh": 1e308, "pue": 3}, "energy"),
    ],
)  # fmt: skip
def test_r5_a_derived_rate_that_overflows_is_refused(fields: dict[str, float], what: str) -> None:
    tco = {"gpu": "G", "capex_usd_per_gpu": 40000, "amortization_years": 4,
           "power_kw_per_gpu": 1.2, "electricity_usd_per_kwh": 0.1, "pue": 1.3,
           "colocation_usd_per_kw_month": 200, "source": "po 1", "as_of": "2026-01-01",
           **fields}  # fmt: skip
    doc = {"version": "1", "gpu_models": [{"name": "G", "match": ["*"]}], "tco": [tco]}
    ((where, message),) = _problems(_dump(doc))
    assert where == "tco[0] (G)"
    assert what in message
    assert "overflows" in message


@REGRESSION
@given(st.booleans(), st.booleans())
@example(False, False)
def test_r6_duplicate_token_rows_are_refused(extends: bool, default_key: bool) -> None:
    # default_key: the row given twice has a key the default card has too.
    key = DEFAULT.token_api[0].key if default_key else ("M", "P")
    row = {"class": key[0], "provider": key[1], "usd_per_1m_input": 1.0,
           "usd_per_1m_output": 1.0, "source": "abc", "as_of": "2026-01-01"}  # fmt: skip
    doc: dict[str, Any] = {"version": "1", "model_classes": [{"name": key[0], "match": ["m*"]}],
                           "token_api": [row, dict(row, usd_per_1m_input=2.0)]}  # fmt: skip
    if extends:
        doc["extends"] = "default"
    assert _problems(_dump(doc)) == [("token_api", f"row given twice: {'/'.join(key)}")]
