"""One endpoint's configuration with its preset applied, and how one upstream sample
becomes a :class:`~.types.CounterSample`: its kind, its gpuledger (namespace, service,
model) and its tenant, under the per-service tenant cap."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from gpuledger.collectors.gateway.config import GatewayEndpointConfig, MetricRef
from gpuledger.collectors.gateway.presets import PRESETS
from gpuledger.collectors.gateway.types import KINDS, OTHER, UNTENANTED
from gpuledger.collectors.http import redact_url
from gpuledger.collectors.textformat.parse import MetricFamily, Sample

MAX_TENANT_CHARS = 200
"""A longer tenant name is cut and suffixed with a hash of the whole (still unique)."""
RESERVED = frozenset({UNTENANTED, OTHER})


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An endpoint as the collector uses it: every setting resolved."""

    name: str  # the URL, credentials and query redacted
    url: str
    metrics: tuple[tuple[str, MetricRef], ...]  # (kind, ref) for the kinds it counts
    tenant_labels: tuple[str, ...]
    tenant_join: str
    empty_values: frozenset[str]
    model_label: str
    models: Mapping[str, tuple[str, str]]
    service_label: str | None
    namespace_label: str | None
    services: Mapping[str, tuple[str, str | None]]
    service: str | None
    namespace: str


def _target(text: str) -> tuple[str, str]:
    ns, _, svc = text.rpartition("/")
    return ns, svc


def resolve(cfg: GatewayEndpointConfig) -> Endpoint:
    preset = PRESETS[cfg.preset] if cfg.preset is not None else None
    metrics = []
    for kind in KINDS:
        ref = getattr(cfg.metrics, kind)
        if ref is None and preset is not None:
            ref = getattr(preset.metrics, kind)
        if ref is not None:
            metrics.append((kind, ref))
    tenant_labels = cfg.tenant_labels or (preset.tenant_labels if preset else ())
    model_label = cfg.model_label or (preset.model_label if preset else "")
    empty = cfg.empty_values if cfg.empty_values is not None else (
        preset.empty_values if preset else ("",)
    )  # fmt: skip
    return Endpoint(
        name=redact_url(cfg.url),
        url=cfg.url,
        metrics=tuple(metrics),
        tenant_labels=tuple(tenant_labels),
        tenant_join=cfg.tenant_join,
        empty_values=frozenset(empty),
        model_label=model_label,
        models={m: _target(t) for m, t in cfg.models.items()},
        service_label=cfg.service_label or (preset.service_label if preset else None),
        namespace_label=cfg.namespace_label or (preset.namespace_label if preset else None),
        services={
            v: (t.rpartition("/")[2], t.rpartition("/")[0] if "/" in t else None)
            for v, t in cfg.services.items()
        },
        service=cfg.service,
        namespace=cfg.namespace,
    )


def matching_samples(
    families: Mapping[str, MetricFamily], ep: Endpoint
) -> Iterator[tuple[str, Sample]]:
    """(kind, sample) for every sample a kind reads: of each kind's names the first that
    the page has, and only samples carrying the kind's ``match`` labels."""
    by_name: dict[str, list[Sample]] = {}
    wanted = {n for _, ref in ep.metrics for n in ref.names}
    for family in families.values():
        for s in family.samples:
            if s.name in wanted:
                by_name.setdefault(s.name, []).append(s)
    for kind, ref in ep.metrics:
        name = next((n for n in ref.names if n in by_name), None)
        if name is None:
            continue
        for s in by_name[name]:
            if all(s.labels.get(k) == v for k, v in ref.match.items()):
                yield kind, s


def series_id(ep: Endpoint, sample: Sample) -> str:
    """A short stable identity of an upstream series (its endpoint, name and labels)."""
    text = "\x00".join(
        [ep.url, sample.name, *(f"{k}={v}" for k, v in sorted(sample.labels.items()))]
    )
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def placement(ep: Endpoint, labels: Mapping[str, str]) -> tuple[str, str, str] | None:
    """(namespace, service, model_name) of a sample, or None when no mapping places it."""
    model = labels.get(ep.model_label, "")
    if model in ep.empty_values:
        model = ""
    if model in ep.models:
        ns, svc = ep.models[model]
        return ns, svc, model
    if ep.service_label is not None:
        value = labels.get(ep.service_label, "")
        if value and value not in ep.empty_values:
            service, namespace = ep.services.get(value, (value, None))
            if namespace is None and ep.namespace_label is not None:
                namespace = labels.get(ep.namespace_label, "")
            return (namespace if namespace is not None else ep.namespace), service, model
    if ep.service is not None:
        return ep.namespace, ep.service, model
    return None


def tenant_of(ep: Endpoint, labels: Mapping[str, str]) -> str:
    """The tenant labels' non-empty values joined; ``__untenanted__`` when none is set."""
    parts = [v for k in ep.tenant_labels if (v := labels.get(k, "")) not in ep.empty_values]
    if not parts:
        return UNTENANTED
    tenant = ep.tenant_join.join(parts)
    if len(tenant) > MAX_TENANT_CHARS:
        digest = hashlib.sha256(tenant.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        tenant = f"{tenant[: MAX_TENANT_CHARS - 13]}~{digest}"
    return tenant


class TenantCap:
    """At most ``limit`` tenants per (namespace, service), in the order first seen; the
    others are folded into ``__other__``. ``__untenanted__`` and ``__other__`` (which a
    ``gpuledger meter`` page already carries) never count against the cap."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._admitted: dict[tuple[str, str], set[str]] = {}
        self._folded: dict[tuple[str, str], set[str]] = {}

    def apply(self, namespace: str, service: str, tenant: str) -> str:
        if tenant in RESERVED:
            return tenant
        key = (namespace, service)
        admitted = self._admitted.setdefault(key, set())
        if tenant in admitted:
            return tenant
        if len(admitted) < self.limit:
            admitted.add(tenant)
            return tenant
        self._folded.setdefault(key, set()).add(tenant)
        return OTHER

    def folded(self) -> tuple[tuple[str, str, int], ...]:
        return tuple((ns, svc, len(t)) for (ns, svc), t in sorted(self._folded.items()))
