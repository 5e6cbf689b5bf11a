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
    # How long the kubelet's last answer keeps deciding after a failed call, counted from
    # when it was read: a kubelet restart or one slow List must not send allocated
    # devices to __idle__; 0 drops the allocations at the first failure.
    keep_last_seconds: float = Field(60.0, ge=0, le=3600)
