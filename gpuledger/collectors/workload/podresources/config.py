"""``podresources:`` in the agent's YAML."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from gpuledger.collectors.workload.podresources.client import DEFAULT_SOCKET


class PodResourcesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    socket: Path = DEFAULT_SOCKET
    interval_seconds: float | None = Field(None, gt=0, le=3600)
    timeout_seconds: float = Field(2.0, gt=0, le=60)
