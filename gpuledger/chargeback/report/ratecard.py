"""Rate cards: what a GPU-hour costs in the cloud, what a token costs from an API, and what
a GPU-hour costs to own. Every figure in a chargeback report is traceable to one row here,
and every row carries its source and the date it was read.

A card is one YAML file. The package ships a dated default (``ratecards/default.yaml``);
a user's own file either replaces it or, with ``extends: default``, is laid over it row by
row (a user row replaces the default row with the same key). Validation names the row
that is wrong (``gpu_rental[3] (H100-80GB/AWS/p5.48xlarge): usd_per_gpu_hour: …``), never
just the field, so a finance analyst editing the card can find it.

Matching is by shell-style globs, case-insensitive: the ledger's ``gpu_model`` (the name
NVML and dcgm-exporter report, e.g. ``NVIDIA H100 80GB HBM3``) to a GPU class, and a
vLLM ``model_name`` (``meta-llama/Llama-3.1-8B-Instruct``) to a token-price class. The
first class whose pattern matches wins, so put narrow patterns before broad ones.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from fnmatch import fnmatchcase
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gpuledger.yamlio import safe_load

HOURS_PER_YEAR = 8760.0
"""365 days: the amortization and colocation-month conversions use the calendar year."""
MONTHS_PER_YEAR = 12.0

DEFAULT_CARD = "default.yaml"

ProviderKind = Literal["hyperscaler", "specialist"]


class RateCardError(Exception):
    """The card is invalid; ``problems`` lists ``(row, message)`` pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(f"{row}: {msg}" for row, msg in problems))


class _Row(BaseModel):
    # allow_inf_nan=False: ``.inf`` would price every GPU-hour or token at infinity.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _Sourced(_Row):
    source: str = Field(min_length=3)
    as_of: date


class GpuClass(_Row):
    """A rate-card GPU class and the reported model names that belong to it."""

    name: str = Field(min_length=1)
    match: tuple[str, ...] = Field(min_length=1)


class GpuRental(_Sourced):
    """An on-demand cloud price per GPU-hour (instance price / GPUs in the instance)."""

    gpu: str = Field(min_length=1)
    provider: str = Field(min_length=1)
    provider_kind: ProviderKind
    offering: str = Field(min_length=1)  # instance type or product
    usd_per_gpu_hour: float = Field(gt=0)  # the figure the counterfactual uses
    usd_per_gpu_hour_high: float | None = Field(None, gt=0)  # top of a published range

    @model_validator(mode="after")
    def _range(self) -> GpuRental:
        if self.usd_per_gpu_hour_high is not None and (
            self.usd_per_gpu_hour_high < self.usd_per_gpu_hour
        ):
            raise ValueError("usd_per_gpu_hour_high is below usd_per_gpu_hour")
        return self

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.gpu, self.provider, self.offering)


class ModelClass(_Row):
    """A class of served models that API providers price alike (``llama-3.1-8b``)."""

    name: str = Field(min_length=1)
    match: tuple[str, ...] = Field(min_length=1)


class TokenPrice(_Sourced):
    """A serverless API's list price per 1M input and output tokens for a model class."""

    model_class: str = Field(min_length=1, alias="class")
    provider: str = Field(min_length=1)
    usd_per_1m_input: float = Field(ge=0)
    usd_per_1m_output: float = Field(ge=0)

    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True
    )

    @property
    def key(self) -> tuple[str, str]:
        return (self.model_class, self.provider)


class Tco(_Sourced):
    """What one GPU of a class costs to own and run, and the figures that make it up."""

    gpu: str = Field(min_length=1)
    capex_usd_per_gpu: float = Field(gt=0)  # the GPU's share of the server's purchase price
    amortization_years: float = Field(gt=0, le=20)
    residual_value_ratio: float = Field(0.0, ge=0, lt=1)  # of capex, at the end of life
    power_kw_per_gpu: float = Field(gt=0)  # provisioned power (the node's / its GPUs)
    electricity_usd_per_kwh: float = Field(ge=0)
    pue: float = Field(ge=1, le=3)
    colocation_usd_per_kw_month: float = Field(ge=0)
    operations_overhead_ratio: float = Field(0.0, ge=0, le=5)  # staff, support, network

    @model_validator(mode="after")
    def _finite_rates(self) -> Tco:
        # Each figure is finite, but a huge capex over a tiny amortization (or a huge
        # colocation fee x power) can still overflow to an infinite rate.
        if not math.isfinite(self.capacity_usd_per_gpu_hour):
            raise ValueError("the capacity rate (capex and colocation per GPU-hour) overflows")
        if not math.isfinite(self.energy_usd_per_kwh):
            raise ValueError("the energy rate (electricity_usd_per_kwh x pue) overflows")
        return self

    @property
    def amortized_capex_usd_per_hour(self) -> float:
        return (
            self.capex_usd_per_gpu
            * (1.0 - self.residual_value_ratio)
            / (self.amortization_years * HOURS_PER_YEAR)
        )

    @property
    def colocation_usd_per_hour(self) -> float:
        return (
            self.colocation_usd_per_kw_month * self.power_kw_per_gpu * MONTHS_PER_YEAR
        ) / HOURS_PER_YEAR

    @property
    def capacity_usd_per_gpu_hour(self) -> float:
        """Charged on allocated GPU-hours: (amortized capex + colocation share) × (1 +
        overhead). Energy is charged apart, on what was measured."""
        return (self.amortized_capex_usd_per_hour + self.colocation_usd_per_hour) * (
            1.0 + self.operations_overhead_ratio
        )

    @property
    def energy_usd_per_kwh(self) -> float:
        """Per kWh measured at the GPU: the facility's overhead (PUE) included."""
        return self.electricity_usd_per_kwh * self.pue


class GpuClassSpec(_Sourced):
    """What findings need to know of a GPU class to move a service onto it: its memory and
    its throughput relative to the H100 (1.0), with the benchmark or datasheet figure it
    rests on (``docs/findings.md``, "GPU classes")."""

    name: str = Field(min_length=1)  # a gpu_models class
    memory_gib: float = Field(gt=0, le=4096)
    relative_throughput: float = Field(gt=0, le=100)  # H100-80GB = 1.0
    basis: str = Field(min_length=3)  # which figure the factor is a ratio of


class _CardFile(_Row):
    version: str = Field(min_length=1)
    currency: Literal["USD"] = "USD"
    description: str = ""
    extends: Literal["default"] | None = None
    gpu_models: tuple[GpuClass, ...] = ()
    gpu_rental: tuple[GpuRental, ...] = ()
    model_classes: tuple[ModelClass, ...] = ()
    token_api: tuple[TokenPrice, ...] = ()
    tco: tuple[Tco, ...] = ()
    gpu_classes: tuple[GpuClassSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class RateCard:
    """A validated card. Look-ups return None for "not on the card", never a zero."""

    version: str
    currency: str
    source: str  # the file(s) it was read from
    digest: str  # sha256 of the file(s), first 12 hex digits: which card priced a report
    gpu_models: tuple[GpuClass, ...]
    gpu_rental: tuple[GpuRental, ...]
    model_classes: tuple[ModelClass, ...]
    token_api: tuple[TokenPrice, ...]
    tco: tuple[Tco, ...]
    gpu_classes: tuple[GpuClassSpec, ...] = ()
    # A model's class (pattern matching) and its TCO row, answered once per model name:
    # a bill, a forecast's days and a refresh price the same few models on thousands of
    # lines (at 1,000 GPUs, 11 k lines a refresh: 1.9 s of 2.1 s was these look-ups).
    # The card is immutable, so an answer never goes stale; the names are the fleet's
    # GPU models, and past MEMO_LIMIT of them a look-up is computed, not kept.
    _memo: dict[tuple[str, str], Any] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    MEMO_LIMIT = 4096

    def _remember(self, kind: str, gpu_model: str, value: Any) -> Any:
        if len(self._memo) < self.MEMO_LIMIT:
            self._memo[(kind, gpu_model)] = value
        return value

    def gpu_class(self, gpu_model: str) -> str | None:
        """The class of a reported GPU model name (first matching pattern wins)."""
        key = ("class", gpu_model)
        if key in self._memo:
            return self._memo[key]  # type: ignore[no-any-return]
        name = gpu_model.strip().lower()
        for cls in self.gpu_models:
            if any(fnmatchcase(name, p.lower()) for p in cls.match):
                return self._remember("class", gpu_model, cls.name)  # type: ignore[no-any-return]
        return self._remember("class", gpu_model, None)  # type: ignore[no-any-return]

    def tco_for(self, gpu_model: str) -> Tco | None:
        key = ("tco", gpu_model)
        if key in self._memo:
            return self._memo[key]  # type: ignore[no-any-return]
        cls = self.gpu_class(gpu_model)
        row = next((t for t in self.tco if t.gpu == cls), None) if cls else None
        return self._remember("tco", gpu_model, row)  # type: ignore[no-any-return]

    def rentals_for(self, gpu_model: str) -> tuple[GpuRental, ...]:
        cls = self.gpu_class(gpu_model)
        return tuple(r for r in self.gpu_rental if r.gpu == cls) if cls else ()

    def cheapest_rental(self, gpu_model: str, kind: ProviderKind) -> GpuRental | None:
        """The lowest on-demand rate of ``kind`` for the model; ties broken by provider
        name so the choice is stable between runs."""
        key = (f"cheapest {kind}", gpu_model)
        if key in self._memo:
            return self._memo[key]  # type: ignore[no-any-return]
        rows = [r for r in self.rentals_for(gpu_model) if r.provider_kind == kind]
        best = min(rows, key=lambda r: (r.usd_per_gpu_hour, r.provider, r.offering), default=None)
        return self._remember(f"cheapest {kind}", gpu_model, best)  # type: ignore[no-any-return]

    def model_class(self, model_name: str) -> str | None:
        """The token-price class of a served model name. Hugging Face ids are matched
        whole and by their last path part (``meta-llama/Llama-3.1-8B`` → ``llama-3.1-8b``)."""
        name = model_name.strip().lower()
        tail = name.rsplit("/", 1)[-1]
        for cls in self.model_classes:
            for pattern in cls.match:
                p = pattern.lower()
                if fnmatchcase(name, p) or fnmatchcase(tail, p):
                    return cls.name
        return None

    def class_spec(self, gpu_class: str | None) -> GpuClassSpec | None:
        """The ``gpu_classes`` row of a class (memory, relative throughput), or None."""
        return next((c for c in self.gpu_classes if c.name == gpu_class), None)

    def token_prices(self, model_class: str) -> tuple[TokenPrice, ...]:
        return tuple(t for t in self.token_api if t.model_class == model_class)


# -- loading ---------------------------------------------------------------------------------


LABEL_PART_CHARS = 60


def _label_part(value: Any) -> str | None:
    """A row field as shown in its label: scalars only (an aliased structure would be
    printed in full), cut short."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        text = str(value)
    except ValueError:  # an int over 4300 digits (PyYAML reads 0x... of any length)
        return None
    return text if len(text) <= LABEL_PART_CHARS else text[: LABEL_PART_CHARS - 3] + "..."


def _row_label(section: str, index: int, raw: Any) -> str:
    """``gpu_rental[3] (H100-80GB/AWS/p5.48xlarge)``: where a finance user looks."""
    label = f"{section}[{index}]"
    if isinstance(raw, dict):
        parts = [
            part
            for k in ("name", "gpu", "class", "provider", "offering")
            if (part := _label_part(raw.get(k))) is not None
        ]
        if parts:
            label += f" ({'/'.join(parts)})"
    return label


def _problems(exc: ValidationError, data: dict[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for e in exc.errors():
        loc = list(e["loc"])
        if len(loc) >= 2 and isinstance(loc[0], str) and isinstance(loc[1], int):
            rows = data.get(loc[0])
            raw = rows[loc[1]] if isinstance(rows, list) and loc[1] < len(rows) else None
            where = _row_label(loc[0], loc[1], raw)
            field = ".".join(str(p) for p in loc[2:]) or "(row)"
            out.append((where, f"{field}: {e['msg']}"))
        else:
            out.append((".".join(str(p) for p in loc) or "(top level)", e["msg"]))
    return out


def _parse(text: str, source: str) -> _CardFile:
    try:
        data = safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(file)"
        raise RateCardError(
            source, [(where, f"not valid YAML: {getattr(exc, 'problem', exc)}")]
        ) from None
    if not isinstance(data, dict):
        raise RateCardError(source, [("(top level)", "must be a mapping with version: and rows")])
    for section in ("gpu_models", "gpu_rental", "model_classes", "token_api", "tco", "gpu_classes"):
        if section in data and not isinstance(data[section], list):
            raise RateCardError(source, [(section, "must be a list of rows")])
    try:
        return _CardFile.model_validate(data)
    except ValidationError as exc:
        raise RateCardError(source, _problems(exc, data)) from None


def _overlay(base: tuple[Any, ...], top: tuple[Any, ...], key: Any) -> tuple[Any, ...]:
    """``base`` with every row of ``top`` replacing the base row of the same key (or
    appended); ``top``'s rows come first so that its match patterns win."""
    top_keys = {key(r) for r in top}
    return tuple(top) + tuple(r for r in base if key(r) not in top_keys)


def _check_references(card: _CardFile, source: str) -> None:
    problems: list[tuple[str, str]] = []
    gpu_names = [c.name for c in card.gpu_models]
    model_names = [c.name for c in card.model_classes]
    for section, names in (("gpu_models", gpu_names), ("model_classes", model_names)):
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            problems.append((section, f"class defined twice: {', '.join(dupes)}"))
    for i, r in enumerate(card.gpu_rental):
        if r.gpu not in gpu_names:
            problems.append(
                (_row_label("gpu_rental", i, r.model_dump()), f"gpu: no gpu_models class {r.gpu!r}")
            )
    for i, t in enumerate(card.tco):
        if t.gpu not in gpu_names:
            problems.append(
                (_row_label("tco", i, t.model_dump()), f"gpu: no gpu_models class {t.gpu!r}")
            )
    for i, c in enumerate(card.gpu_classes):
        if c.name not in gpu_names:
            problems.append(
                (
                    _row_label("gpu_classes", i, c.model_dump()),
                    f"name: no gpu_models class {c.name!r}",
                )
            )
    spec_names = [c.name for c in card.gpu_classes]
    dupes_spec = sorted({n for n in spec_names if spec_names.count(n) > 1})
    if dupes_spec:
        problems.append(("gpu_classes", f"more than one row for {', '.join(dupes_spec)}"))
    tco_gpus = [t.gpu for t in card.tco]
    dupes = sorted({g for g in tco_gpus if tco_gpus.count(g) > 1})
    if dupes:
        problems.append(("tco", f"more than one row for {', '.join(dupes)}"))
    for i, p in enumerate(card.token_api):
        if p.model_class not in model_names:
            label = _row_label("token_api", i, {"class": p.model_class, "provider": p.provider})
            problems.append((label, f"class: no model_classes entry {p.model_class!r}"))
    for section, keys in (
        ("gpu_rental", [r.key for r in card.gpu_rental]),
        ("token_api", [t.key for t in card.token_api]),
    ):
        twice = [k for k, n in Counter(keys).items() if n > 1]
        if twice:
            shown = ", ".join(sorted("/".join(k) for k in twice))
            problems.append((section, f"row given twice: {shown}"))
    if problems:
        raise RateCardError(source, problems)


def _digest(*texts: str) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
    return h.hexdigest()[:12]


def default_card_text() -> str:
    return (
        resources.files("gpuledger.chargeback.report")
        .joinpath("ratecards", DEFAULT_CARD)
        .read_text(encoding="utf-8")
    )


def parse_rate_card(text: str, source: str = "<text>") -> RateCard:
    """A card from YAML text (``extends: default`` lays it over the shipped default)."""
    card = _parse(text, source)
    texts = [text]
    sources = [source]
    if card.extends == "default":
        base_text = default_card_text()
        base = _parse(base_text, f"default ({DEFAULT_CARD})")
        texts.insert(0, base_text)
        sources.insert(0, f"default {base.version}")
        card = _CardFile(
            version=f"{base.version}+{card.version}",
            currency=card.currency,
            description=card.description or base.description,
            gpu_models=_overlay(base.gpu_models, card.gpu_models, lambda r: r.name),
            gpu_rental=_overlay(base.gpu_rental, card.gpu_rental, lambda r: r.key),
            model_classes=_overlay(base.model_classes, card.model_classes, lambda r: r.name),
            token_api=_overlay(base.token_api, card.token_api, lambda r: r.key),
            tco=_overlay(base.tco, card.tco, lambda r: r.gpu),
            gpu_classes=_overlay(base.gpu_classes, card.gpu_classes, lambda r: r.name),
        )
    _check_references(card, " + ".join(sources))
    return RateCard(
        version=card.version,
        currency=card.currency,
        source=" + ".join(sources),
        digest=_digest(*texts),
        gpu_models=card.gpu_models,
        gpu_rental=card.gpu_rental,
        model_classes=card.model_classes,
        token_api=card.token_api,
        tco=card.tco,
        gpu_classes=card.gpu_classes,
    )


def load_rate_card(path: Path | None = None) -> RateCard:
    """The card at ``path``, or the shipped default. RateCardError names the bad row."""
    if path is None:
        return parse_rate_card(default_card_text(), f"default ({DEFAULT_CARD})")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RateCardError(str(path), [("(file)", f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise RateCardError(
            str(path), [(f"line {line}", f"not UTF-8 text: {exc.reason}")]
        ) from None
    return parse_rate_card(text, str(path))
