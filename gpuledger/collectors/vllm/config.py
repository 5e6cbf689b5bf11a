"""The ``vllm:`` section of the agent configuration: static endpoints and discovery.

Which endpoints these settings yield is :mod:`gpuledger.collectors.vllm.discovery`'s job;
API keys are only named here (a file or a variable), read once when the source is built.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gpuledger.collectors.textformat.parse import DEFAULT_MAX_SAMPLES

DEFAULT_MAX_BYTES = 16 * 1024 * 1024


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VllmEndpointConfig(_Section):
    """One statically configured vLLM server."""

    url: str  # base URL: http(s)://host:port (metrics at metrics_path, API at /v1/...)
    service: str = Field(min_length=1)
    namespace: str = ""
    metrics_path: str = "/metrics"
    api_key_file: Path | None = None
    api_key_env: str | None = Field(None, min_length=1)

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
            raise ValueError("must not carry credentials; use api_key_file or api_key_env")
        if url.query:
            raise ValueError("must not carry a query string")
        return value.rstrip("/")

    @field_validator("metrics_path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> VllmEndpointConfig:
        if self.api_key_file is not None and self.api_key_env is not None:
            raise ValueError("set api_key_file or api_key_env, not both")
        return self


class VllmDiscoveryConfig(_Section):
    """Kubernetes discovery: pods of this node annotated with a vLLM port."""

    enabled: bool = False
    annotation_port: str = Field("gpuledger.io/vllm-port", min_length=1)
    annotation_path: str = Field("gpuledger.io/vllm-path", min_length=1)
    annotation_scheme: str = Field("gpuledger.io/vllm-scheme", min_length=1)


class VllmConfig(_Section):
    """The ``vllm:`` section of the agent configuration."""

    enabled: bool = False
    interval_seconds: float | None = Field(None, gt=0)  # None: the agent's interval
    timeout_seconds: float = Field(5.0, gt=0)
    max_bytes: int = Field(DEFAULT_MAX_BYTES, gt=0)
    # samples (and families) a page may hold; one more and that source is down
    max_samples: int = Field(DEFAULT_MAX_SAMPLES, gt=0)
    endpoints: list[VllmEndpointConfig] = Field(default_factory=list)
    discovery: VllmDiscoveryConfig = Field(default_factory=VllmDiscoveryConfig)
