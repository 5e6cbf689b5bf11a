"""The ``gateways:`` section: which gateway pages to read, and how their series map to
gpuledger's (namespace, service, model, tenant).

An endpoint names a ``preset`` (LiteLLM proxy, Envoy AI Gateway, ``gpuledger meter``;
see :mod:`.presets` and docs/upstream-gateways.md) or explicit ``metrics``, or both (a
kind given explicitly replaces the preset's). How a series finds its gpuledger service:
``models`` (the upstream model/deployment name → ``namespace/service``) first, then
``service_label`` (its value is the service, or a key of ``services``), then the fixed
``service``/``namespace``. A series none of these places is not counted and shows in
``gpuledger_tenant_unmapped_series``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gpuledger.collectors.textformat.parse import DEFAULT_MAX_SAMPLES

DEFAULT_MAX_BYTES = 16 * 1024 * 1024

Preset = Literal["litellm", "envoy-ai-gateway", "gpuledger-meter"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricRef(_Section):
    """One kind's upstream counter: sample names to try in order (the first present on
    the page is read: upstreams rename) and label values a sample must carry."""

    names: tuple[str, ...] = Field(min_length=1)
    match: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: object) -> object:
        if isinstance(value, str):  # `prompt: litellm_input_tokens_metric_total`
            return {"names": (value,)}
        if isinstance(value, list):
            return {"names": tuple(value)}
        return value

    @field_validator("names")
    @classmethod
    def _check_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not name or not all(c.isalnum() or c in "_:" for c in name) or name[0].isdigit():
                raise ValueError(f"{name!r} is not a Prometheus sample name")
        return value


class GatewayMetrics(_Section):
    """Per kind, the upstream counter (a histogram's ``_sum``/``_count`` sample works)."""

    requests: MetricRef | None = None
    prompt: MetricRef | None = None
    cached_prompt: MetricRef | None = None
    generation: MetricRef | None = None


class GatewayEndpointConfig(_Section):
    url: str
    preset: Preset | None = None
    metrics: GatewayMetrics = Field(default_factory=GatewayMetrics)
    tenant_labels: tuple[str, ...] | None = None  # None: the preset's
    tenant_join: str = "/"
    empty_values: tuple[str, ...] | None = None  # label values that mean "not set"
    model_label: str | None = None
    models: dict[str, str] = Field(default_factory=dict)  # model → "namespace/service"
    service_label: str | None = None
    namespace_label: str | None = None
    services: dict[str, str] = Field(default_factory=dict)  # label value → "[ns/]service"
    service: str | None = Field(None, min_length=1)
    namespace: str = ""
    # a page behind authentication (LiteLLM's require_auth_for_metrics_endpoint): sent as
    # "Authorization: Bearer <token>", read once at start, never logged or exported
    bearer_token_file: Path | None = None
    bearer_token_env: str | None = Field(None, min_length=1)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        try:
            url = httpx.URL(value)
        except (httpx.InvalidURL, TypeError) as exc:
            raise ValueError(f"not a URL: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("must be an http:// or https:// URL with a host")
        if url.userinfo:
            raise ValueError("must not carry credentials")
        return value

    @field_validator("models", "services")
    @classmethod
    def _check_targets(cls, value: dict[str, str]) -> dict[str, str]:
        for key, target in value.items():
            parts = target.split("/")
            if len(parts) > 2 or not parts[-1]:
                raise ValueError(f"{key!r}: {target!r} is not 'namespace/service' or 'service'")
        return value

    @model_validator(mode="after")
    def _complete(self) -> GatewayEndpointConfig:
        if self.bearer_token_file is not None and self.bearer_token_env is not None:
            raise ValueError("set bearer_token_file or bearer_token_env, not both")
        if self.preset is None:
            if not any(getattr(self.metrics, k) is not None for k in GatewayMetrics.model_fields):
                raise ValueError("set a preset or at least one of metrics.requests/prompt/"
                                 "cached_prompt/generation")  # fmt: skip
            if not self.tenant_labels:
                raise ValueError("without a preset, tenant_labels must name the label(s)")
            if self.model_label is None:
                raise ValueError("without a preset, model_label must name the model label")
        if self.preset != "gpuledger-meter" and not (
            self.models or self.service_label or self.service
        ):
            raise ValueError("map series to a service: set service, service_label or models")
        return self


class GatewayConfig(_Section):
    """The ``gateways:`` section of the agent configuration."""

    enabled: bool = False
    interval_seconds: float | None = Field(None, gt=0)  # None: the agent's interval
    timeout_seconds: float = Field(5.0, gt=0)
    max_bytes: int = Field(DEFAULT_MAX_BYTES, gt=0)
    # samples (and families) a page may hold; one more and that source is down
    max_samples: int = Field(DEFAULT_MAX_SAMPLES, gt=0)
    max_tenants_per_service: int = Field(100, ge=1)
    endpoints: list[GatewayEndpointConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _endpoints_when_enabled(self) -> GatewayConfig:
        if self.enabled and not self.endpoints:
            raise ValueError("enabled without endpoints: list at least one gateway")
        return self
