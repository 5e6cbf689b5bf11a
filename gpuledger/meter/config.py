"""The meter's configuration: its own YAML file (``gpuledger meter --config FILE``).

Its own file rather than a section of the agent's: the meter runs as a separate process
(a sidecar, or a Deployment in front of an endpoint's Service), usually in another pod
than the node agent, and one meter serves exactly one upstream. Every model forbids
unknown keys, so a typo is refused at start naming its path, never silently defaulted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gpuledger.cluster import DEFAULT_CLUSTER, check_cluster_name
from gpuledger.meter.keys import KeyFileError, load_api_keys

TenantMethod = Literal["api_key", "header", "user"]


class MeterConfigError(Exception):
    """Problems with the configuration: ``(key path, message)`` pairs, never a secret."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{k}: {m}" for k, m in problems))
        self.problems = problems


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Listen(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=9840, ge=1, le=65535)


class TenantConfig(_Strict):
    order: tuple[TenantMethod, ...] = ("api_key", "header", "user")
    header: str = "X-Tenant"
    api_keys_file: Path | None = None
    max_tenants_per_service: int = Field(default=100, ge=1)
    max_name_length: int = Field(default=128, ge=1, le=1024)

    @field_validator("order")
    @classmethod
    def _no_repeats(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("each method may appear once")
        return value


class Timeouts(_Strict):
    connect_seconds: float = Field(default=5.0, gt=0)
    # from the request sent to the upstream's status line: past it the client gets a 504
    response_seconds: float = Field(default=300.0, gt=0)
    # the longest silence between two pieces of a response body: past it the stream is
    # cut (the client sees a truncated stream, as from a proxy that gave up)
    read_seconds: float = Field(default=300.0, gt=0)
    # how long an idle client connection is kept open; a client that reuses a connection
    # just as the server closes it sees a read error, so longer than uvicorn's 5 s
    keep_alive_seconds: float = Field(default=75.0, gt=0)


class MeterConfig(_Strict):
    node_name: str | None = None
    # the cluster label on every series (issue 18), as the node agent's `cluster:`
    cluster: str = DEFAULT_CLUSTER
    listen: Listen = Listen()
    upstream: str
    service: str = Field(min_length=1)
    namespace: str = Field(min_length=1)
    tenant: TenantConfig = TenantConfig()
    timeouts: Timeouts = Timeouts()
    upstream_api_key_file: Path | None = None
    max_request_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    # concurrent connections to the upstream (a stream holds one for its whole length)
    upstream_max_connections: int = Field(default=1024, ge=1)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("cluster")
    @classmethod
    def _cluster(cls, v: str) -> str:
        return check_cluster_name(v)

    @field_validator("upstream")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// base URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _key_file_when_keys_named(self) -> MeterConfig:
        # the default order tries api_key first and finds nothing without a key file; an
        # order the operator wrote that names api_key without a file is a mistake
        named = "order" in self.tenant.model_fields_set and "api_key" in self.tenant.order
        if named and self.tenant.api_keys_file is None:
            raise ValueError("tenant.order names api_key but tenant.api_keys_file is not set")
        return self


class LoadedMeter:
    """The configuration plus what it points at, read once at start."""

    def __init__(
        self, config: MeterConfig, key_hashes: dict[str, str], upstream_key: str | None
    ) -> None:
        self.config = config
        self.key_hashes = key_hashes  # sha256 hex of an API key -> tenant
        self.upstream_key = upstream_key


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    return [(".".join(map(str, e["loc"])) or "(root)", e["msg"]) for e in exc.errors()]


def parse_config(data: Any) -> MeterConfig:
    if not isinstance(data, dict):
        raise MeterConfigError([("(root)", "the file must hold a YAML mapping")])
    try:
        return MeterConfig.model_validate(data)
    except ValidationError as exc:
        raise MeterConfigError(_problems(exc)) from None


def load_meter(path: Path) -> LoadedMeter:
    """Read and check the file and the files it names; :class:`MeterConfigError` naming
    the key on any problem (a missing or malformed API-key file included)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MeterConfigError([("--config", f"cannot read {path}: {exc.strerror}")]) from None
    except yaml.YAMLError as exc:
        raise MeterConfigError([("--config", f"not valid YAML: {exc}")]) from None
    config = parse_config(data)
    hashes: dict[str, str] = {}
    if config.tenant.api_keys_file is not None:
        try:
            hashes = load_api_keys(config.tenant.api_keys_file)
        except KeyFileError as exc:
            raise MeterConfigError([("tenant.api_keys_file", str(exc))]) from None
    upstream_key: str | None = None
    if config.upstream_api_key_file is not None:
        try:
            upstream_key = config.upstream_api_key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            problem = f"cannot read {config.upstream_api_key_file}: {exc.strerror}"
            raise MeterConfigError([("upstream_api_key_file", problem)]) from None
        if not upstream_key:
            raise MeterConfigError([("upstream_api_key_file", "the file is empty")])
    return LoadedMeter(config, hashes, upstream_key)
