"""The GPU sources' sections of the agent configuration: ``nvml:`` and ``dcgm:``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gpuledger.collectors.textformat.parse import DEFAULT_MAX_SAMPLES


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NvmlConfig(_Section):
    enabled: bool = True
    interval_seconds: float | None = Field(None, gt=0, le=3600)
    timeout_seconds: float = Field(5.0, gt=0, le=300)


class DcgmConfig(_Section):
    enabled: bool = False
    url: str = "http://127.0.0.1:9400/metrics"
    interval_seconds: float | None = Field(None, gt=0, le=3600)
    timeout_seconds: float = Field(5.0, gt=0, le=300)
    max_bytes: int = Field(16 * 1024 * 1024, gt=0)
    # samples (and families) a page may hold; one more and that source is down
    max_samples: int = Field(DEFAULT_MAX_SAMPLES, gt=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v
