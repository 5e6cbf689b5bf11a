"""The ``probes:`` section of the agent configuration."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ProbesConfig(BaseModel):
    """Synthetic requests to every vLLM endpoint, validating what the engine reports."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True  # only acts when vllm.enabled and there are endpoints
    interval_seconds: float = Field(60.0, gt=0, le=86400)
    timeout_seconds: float = Field(30.0, gt=0, le=600)
    max_tokens: int = Field(16, ge=2, le=4096)
    prompt: str = Field("Count from one to twenty in words:", min_length=1)
    # auto: completions, else embeddings, else rerank -- what the endpoint serves
    # (docs/probes.md); a fixed kind is always sent as asked
    api: Literal["auto", "completions", "chat", "embeddings", "rerank"] = "auto"
    model: str | None = None  # default: the first model the endpoint lists in /v1/models
    # Skip the probe when the engine's waiting queue is longer than this: probes must
    # never add load to a saturated server.
    queue_threshold: float = Field(8.0, ge=0)
