"""MIG profiles per GPU class (NVIDIA's MIG user guide, cited per class in
``mig_profiles.yaml``), and the per-class memory and relative throughput the rate card
keeps (``gpu_classes:`` in the card, :class:`~gpuledger.chargeback.report.ratecard.GpuClassSpec`).

The profiles are hardware facts, not prices, so they ship with the package rather than in
the rate card: a card cannot change what a GPU can be partitioned into.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import cache
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gpuledger.yamlio import safe_load

PROFILES_FILE = "mig_profiles.yaml"


class CatalogError(Exception):
    """The MIG profile file is malformed (a packaging bug, named by class and profile)."""


class _Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    memory_gib: float = Field(gt=0)
    memory_slices: int = Field(ge=1)
    compute_slices: int = Field(ge=1)


class _Class(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    section: str = Field(min_length=3)
    memory_slices: int = Field(ge=1)
    compute_slices: int = Field(ge=1)
    profiles: tuple[_Profile, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _within(self) -> _Class:
        for p in self.profiles:
            if p.memory_slices > self.memory_slices or p.compute_slices > self.compute_slices:
                raise ValueError(f"profile {p.name} has more slices than the GPU")
        return self


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(min_length=3)
    as_of: date
    classes: dict[str, _Class]


@dataclass(frozen=True, slots=True)
class MigProfile:
    """One MIG GPU-instance profile of a GPU class."""

    gpu_class: str
    name: str  # e.g. "1g.10gb"
    memory_gib: float
    compute_fraction: float  # its SM slices / the GPU's
    memory_fraction: float  # its memory slices / the GPU's
    source: str  # the user guide's section

    @property
    def gpu_share(self) -> float:
        """The share of one GPU the profile occupies: the larger of its compute and
        memory fractions (a 1g.20gb takes 1/7 of the SMs but 2/8 of the memory, so at
        most four fit: it costs a quarter of the GPU)."""
        return max(self.compute_fraction, self.memory_fraction)


def _parse(data: Any) -> dict[str, tuple[MigProfile, ...]]:
    try:
        parsed = _File.model_validate(data)
    except ValidationError as exc:
        where = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise CatalogError(f"{PROFILES_FILE}: {where}") from None
    out: dict[str, tuple[MigProfile, ...]] = {}
    for cls, spec in parsed.classes.items():
        out[cls] = tuple(
            sorted(
                (
                    MigProfile(
                        gpu_class=cls,
                        name=p.name,
                        memory_gib=p.memory_gib,
                        compute_fraction=p.compute_slices / spec.compute_slices,
                        memory_fraction=p.memory_slices / spec.memory_slices,
                        source=f"{parsed.source}; {spec.section}",
                    )
                    for p in spec.profiles
                ),
                key=lambda m: (m.gpu_share, m.memory_gib, m.name),
            )
        )
    return out


@cache
def mig_profiles() -> dict[str, tuple[MigProfile, ...]]:
    """GPU class → its MIG profiles, smallest share of the GPU first."""
    text = (
        resources.files("gpuledger.chargeback.findings")
        .joinpath(PROFILES_FILE)
        .read_text(encoding="utf-8")
    )
    return _parse(safe_load(text))


def profiles_for(gpu_class: str | None) -> tuple[MigProfile, ...]:
    """The MIG profiles of a rate-card GPU class; empty when it has none (or no class)."""
    return mig_profiles().get(gpu_class, ()) if gpu_class else ()
