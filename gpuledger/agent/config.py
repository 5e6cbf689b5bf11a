"""Agent configuration: one YAML file plus ``GPULEDGER_*`` environment variables.

Precedence: environment over file over defaults. Nested keys use ``__`` in the
environment (``GPULEDGER_DCGM__URL``). Everything is validated at start and a bad config
is refused with the offending key's path -- a typo such as ``dcgm.urll`` must not silently
fall back to a default and leave a node unmonitored. Unknown ``GPULEDGER_*`` variables are
refused too (pydantic-settings would ignore them).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from gpuledger.agent.otel_config import OtelConfig
from gpuledger.alerts.config import AlertsConfig
from gpuledger.chargeback.report_config import ReportConfig
from gpuledger.chargeback.resolver import AttributionConfig
from gpuledger.collectors.pgvector_config import PgvectorConfig
from gpuledger.collectors.vllm_discovery import VllmConfig

ENV_PREFIX = "GPULEDGER_"
Role = Literal["node", "reporter"]
"""node: collect this node's GPUs into the ledger; reporter: write the monthly chargeback
from the (fleet's) ledger on a schedule and serve it. One process may hold both."""
DEFAULT_PORT = 9835


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` lists ``(key path, message)``."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{k}: {m}" for k, m in problems))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ListenConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_PORT, ge=0, le=65535)


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


class CollectionConfig(_Section):
    interval_seconds: float = Field(15.0, gt=0, le=3600)


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

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v


class HttpConfig(_Section):
    api_token_file: Path | None = None  # bearer token required on /api/* and /reports when set
    metrics_require_token: bool = False
    # TLS: both files or neither (PEM). With client_ca_file, clients must present a
    # certificate it signed (mutual TLS, e.g. Prometheus' tls_config).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    # Every endpoint is a GET: a request body over this is refused with 413, unread.
    max_request_bytes: int = Field(64 * 1024, ge=0, le=16 * 1024 * 1024)
    # Connections served at once; beyond it uvicorn answers 503 instead of queueing.
    max_concurrent_connections: int = Field(128, ge=1, le=65536)

    @model_validator(mode="after")
    def _tls_pair(self) -> HttpConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both http.tls_cert_file and http.tls_key_file, or neither")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("http.tls_client_ca_file needs http.tls_cert_file/tls_key_file")
        for name in ("tls_cert_file", "tls_key_file", "tls_client_ca_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"http.{name}: no such file {path}")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None


class LedgerConfig(_Section):
    """The hourly GPU-seconds ledger finance is billed from."""

    enabled: bool = True
    # sqlite:///path or postgresql://user@host/db; default: sqlite in state_dir. A URL with
    # a password belongs in url_file (a mounted Secret) or GPULEDGER_LEDGER__URL.
    url: str | None = None
    url_file: Path | None = None
    spool_path: Path | None = None  # default: state_dir/spool.db
    flush_interval_seconds: float = Field(30.0, gt=0, le=3600)
    split_policy: Literal["usage", "equal"] = "usage"
    # An interval longer than this between observations is a gap (agent or sources away);
    # default: 4 x the NVML interval.
    max_gap_seconds: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_url(self) -> LedgerConfig:
        if self.url is not None and self.url_file is not None:
            raise ValueError("set ledger.url or ledger.url_file, not both")
        return self


class ProbesConfig(_Section):
    """Synthetic requests to every vLLM endpoint, validating what the engine reports."""

    enabled: bool = True  # only acts when vllm.enabled and there are endpoints
    interval_seconds: float = Field(60.0, gt=0, le=86400)
    timeout_seconds: float = Field(30.0, gt=0, le=600)
    max_tokens: int = Field(16, ge=2, le=4096)
    prompt: str = Field("Count from one to twenty in words:", min_length=1)
    api: Literal["completions", "chat"] = "completions"
    model: str | None = None  # default: the first model the endpoint lists in /v1/models
    # Skip the probe when the engine's waiting queue is longer than this: probes must
    # never add load to a saturated server.
    queue_threshold: float = Field(8.0, ge=0)


class SimulateConfig(_Section):
    """A simulated GPU node in place of NVML (``gpuledger demo``, ``agent --simulate``)."""

    enabled: bool = False
    gpus: int = Field(8, ge=1, le=512)  # large values exist for benchmarks
    seed: int = 42


def _default_node_name() -> str:
    return os.environ.get("NODE_NAME") or socket.gethostname()


def _default_state_dir() -> Path:
    """/var/lib/gpuledger for a system service (root, or the DaemonSet's hostPath),
    else the user's XDG state directory, so a developer's first run needs no sudo."""
    if os.geteuid() == 0:
        return Path("/var/lib/gpuledger")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "gpuledger"


class AgentConfig(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    roles: tuple[Role, ...] = ("node",)
    node_name: str = Field(default_factory=_default_node_name, min_length=1)
    state_dir: Path = Field(default_factory=_default_state_dir)
    listen: ListenConfig = ListenConfig()
    log: LogConfig = LogConfig()
    collection: CollectionConfig = CollectionConfig()
    nvml: NvmlConfig = NvmlConfig()
    dcgm: DcgmConfig = DcgmConfig()
    http: HttpConfig = HttpConfig()
    simulate: SimulateConfig = SimulateConfig()
    ledger: LedgerConfig = LedgerConfig()
    attribution: AttributionConfig = AttributionConfig()
    vllm: VllmConfig = VllmConfig()
    probes: ProbesConfig = ProbesConfig()
    pgvector: PgvectorConfig = PgvectorConfig()
    alerts: AlertsConfig = AlertsConfig()
    report: ReportConfig = ReportConfig()
    otel: OtelConfig = OtelConfig()

    @field_validator("roles")
    @classmethod
    def _roles(cls, v: tuple[Role, ...]) -> tuple[Role, ...]:
        if not v:
            raise ValueError("name at least one role: node, reporter")
        return tuple(dict.fromkeys(v))

    def has_role(self, role: Role) -> bool:
        return role in self.roles

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives through init_settings (see load_config), below the
        # environment: env > file > defaults.
        return (env_settings, init_settings)

    def interval_for(self, section: NvmlConfig | DcgmConfig | VllmConfig) -> float:
        return section.interval_seconds or self.collection.interval_seconds

    def ledger_url(self) -> str:
        """The store URL: ledger.url, else the first line of ledger.url_file, else SQLite
        in the state directory. Raises ConfigError when the file cannot be read."""
        if self.ledger.url:
            return self.ledger.url
        if self.ledger.url_file is not None:
            try:
                text = self.ledger.url_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError([("ledger.url_file", f"cannot read: {exc.strerror}")]) from None
            if not text:
                raise ConfigError([("ledger.url_file", "file is empty")])
            return text.splitlines()[0].strip()
        return f"sqlite:///{self.state_dir / 'ledger.db'}"

    def reports_dir(self) -> Path:
        return self.report.out_path(self.state_dir)

    def spool_path(self) -> Path:
        return self.ledger.spool_path or self.state_dir / "spool.db"

    def max_gap_s(self) -> float:
        return self.ledger.max_gap_seconds or 4 * self.interval_for(self.nvml)


def _format_loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _unknown_env_keys(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for key in environ:
        if not key.startswith(ENV_PREFIX):
            continue
        parts = key[len(ENV_PREFIX) :].lower().split("__")
        model: type[BaseModel] | None = AgentConfig
        for part in parts:
            fields = model.model_fields if model is not None else {}
            if part not in fields:
                problems.append((key, "no such setting"))
                break
            annotation = fields[part].annotation
            model = (
                annotation
                if isinstance(annotation, type) and issubclass(annotation, BaseModel)
                else None
            )
    return problems


def load_config(
    path: Path | None = None, *, environ: Mapping[str, str] | None = None
) -> AgentConfig:
    """Read, merge and validate; raise :class:`ConfigError` naming every bad key."""
    env = os.environ if environ is None else environ
    data: Any = {}
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([(str(path), f"cannot read: {exc.strerror}")]) from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}" if mark is not None else "?"
            detail = getattr(exc, "problem", None) or "not valid YAML"
            context = getattr(exc, "context_mark", None)
            if context is not None:
                detail += f" ({getattr(exc, 'context', 'started')} at line {context.line + 1})"
            raise ConfigError([(f"{path} {where}", f"not valid YAML: {detail}")]) from None
        if not isinstance(data, dict):
            raise ConfigError([(str(path), "top level must be a mapping of settings")])
    problems = _unknown_env_keys(env)
    if problems:
        raise ConfigError(problems)
    saved = dict(os.environ)
    try:
        if environ is not None:  # let tests pass an environment explicitly
            os.environ.clear()
            os.environ.update(environ)
        return AgentConfig(**data)
    except ValidationError as exc:
        raise ConfigError([(_format_loc(e["loc"]), e["msg"]) for e in exc.errors()]) from None
    finally:
        if environ is not None:
            os.environ.clear()
            os.environ.update(saved)


_SECRET_KEYS = ("password", "secret", "token", "api_key", "apikey", "authorization")
_URL_KEYS = ("url", "dsn", "endpoint")


def _redact(value: Any, key: str = "") -> Any:
    """Walk a dumped config: URLs and DSNs lose their passwords, values under secret-ish
    keys (and every header value) are masked; paths to secret files stay visible."""
    from gpuledger.chargeback.store import safe_url

    k = key.lower()
    if isinstance(value, dict):
        if k == "headers":
            return dict.fromkeys(value, "***")
        return {name: _redact(v, str(name)) for name, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, key) for v in value]
    if not isinstance(value, str) or not value or k.endswith(("_file", "_env")):
        return value
    if any(part in k for part in _SECRET_KEYS):
        return "***"
    if any(part in k for part in _URL_KEYS):
        return safe_url(value)
    return value


def redacted(config: AgentConfig) -> dict[str, Any]:
    """The effective config for display: paths to secrets are shown, never their content;
    a password written into any URL or DSN (ledger, pgvector, vLLM) is masked."""
    result: dict[str, Any] = _redact(config.model_dump(mode="json"))
    return result
