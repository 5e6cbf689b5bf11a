"""Agent configuration: one YAML file plus ``GPULEDGER_*`` environment variables.

Precedence: environment over file over defaults. Nested keys use ``__`` in the
environment (``GPULEDGER_DCGM__URL``). Everything is validated at start and a bad config
is refused with the offending key's path -- a typo such as ``dcgm.urll`` must not silently
fall back to a default and leave a node unmonitored. Unknown ``GPULEDGER_*`` variables are
refused too (pydantic-settings would ignore them).
"""

from __future__ import annotations

import json
import os
import re
import socket
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from gpuledger.agent.otel.config import OtelConfig
from gpuledger.alerts.config import AlertsConfig
from gpuledger.brief import brief
from gpuledger.chargeback.attribution.resolver import AttributionConfig
from gpuledger.chargeback.report.config import ReportConfig
from gpuledger.cluster import DEFAULT_CLUSTER, check_cluster_name
from gpuledger.collectors import registry
from gpuledger.collectors.source import AnySource, ConfigT, Source
from gpuledger.yamlio import safe_load

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
            try:
                is_file = path is None or path.is_file()
            except OSError as exc:  # ENAMETOOLONG, EACCES: is_file() only hides ENOENT & co.
                shown = str(path) if len(str(path)) <= 80 else str(path)[:80] + "..."
                raise ValueError(f"http.{name}: cannot read {shown}: {exc.strerror}") from None
            if not is_file:
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
    split_policy: Literal["usage", "equal", "declared"] = "usage"
    # An interval longer than this between observations is a gap (agent or sources away);
    # default: 4 x the NVML interval.
    max_gap_seconds: float | None = Field(None, gt=0)
    # Retention (`gpuledger retention`): keep the current month and this many full months
    # before it; older months are archived to archive_dir (default state_dir/ledger-archive)
    # as gzip CSV, then dropped. None (the default) keeps everything.
    retention_months: int | None = Field(None, ge=1)
    archive_dir: Path | None = None

    @model_validator(mode="after")
    def _one_url(self) -> LedgerConfig:
        if self.url is not None and self.url_file is not None:
            raise ValueError("set ledger.url or ledger.url_file, not both")
        return self


class LoseGpuConfig(_Section):
    """A simulated GPU that falls off the bus: from ``after_seconds`` after the agent
    started (monotonic clock) every NVML call naming it raises GpuIsLost, until the
    process ends. For fault-injection runs (``tests/e2e/test_soak.py``); 0 = lost at start."""

    index: int = Field(ge=0)
    after_seconds: float = Field(0.0, ge=0)


class SimulateConfig(_Section):
    """A simulated GPU node in place of NVML (``gpuledger demo``, ``agent --simulate``)."""

    enabled: bool = False
    gpus: int = Field(8, ge=1, le=512)  # large values exist for benchmarks
    seed: int = 42
    lose_gpu: LoseGpuConfig | None = None

    @model_validator(mode="after")
    def _lost_gpu_exists(self) -> SimulateConfig:
        if self.lose_gpu is not None and self.lose_gpu.index >= self.gpus:
            raise ValueError(f"simulate.lose_gpu.index must be below simulate.gpus ({self.gpus})")
        return self


def _default_node_name() -> str:
    return os.environ.get("NODE_NAME") or socket.gethostname()


def _default_state_dir() -> Path:
    """/var/lib/gpuledger for a system service (root, or the DaemonSet's hostPath),
    else the user's XDG state directory, so a developer's first run needs no sudo."""
    if os.geteuid() == 0:
        return Path("/var/lib/gpuledger")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "gpuledger"


class _Interval(Protocol):
    @property
    def interval_seconds(self) -> float | None: ...


def source_fields(sources: Iterable[AnySource]) -> dict[str, Any]:
    """One top-level section per source, under its config key, defaulting to its model's
    defaults: the fields :func:`pydantic.create_model` adds for them."""
    return {s.config_key: (s.config_model, Field(default_factory=s.config_model)) for s in sources}


# The sources' sections come from the registry; the agent's own, below, are typed fields.
# (mypy sees the plain base: a source's section is read through AgentConfig.section.)
if TYPE_CHECKING:
    _SourceSections = BaseSettings
else:
    _SourceSections = create_model(
        "_SourceSections", __base__=BaseSettings, **source_fields(registry.sources())
    )


class AgentConfig(_SourceSections):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    roles: tuple[Role, ...] = ("node",)
    node_name: str = Field(default_factory=_default_node_name, min_length=1)
    cluster: str = DEFAULT_CLUSTER
    """The cluster this agent's node belongs to (``GPULEDGER_CLUSTER``): every ledger row
    it writes and every series it exports carries it, so one fleet ledger serves several
    clusters whose node names repeat. See docs/deploy.md."""
    state_dir: Path = Field(default_factory=_default_state_dir)
    listen: ListenConfig = ListenConfig()
    log: LogConfig = LogConfig()
    collection: CollectionConfig = CollectionConfig()
    http: HttpConfig = HttpConfig()
    simulate: SimulateConfig = SimulateConfig()
    ledger: LedgerConfig = LedgerConfig()
    attribution: AttributionConfig = AttributionConfig()
    alerts: AlertsConfig = AlertsConfig()
    report: ReportConfig = ReportConfig()
    otel: OtelConfig = OtelConfig()

    @field_validator("roles")
    @classmethod
    def _roles(cls, v: tuple[Role, ...]) -> tuple[Role, ...]:
        if not v:
            raise ValueError("name at least one role: node, reporter")
        return tuple(dict.fromkeys(v))

    @field_validator("cluster")
    @classmethod
    def _cluster(cls, v: str) -> str:
        return check_cluster_name(v)

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

    def section(self, source: Source[ConfigT, Any]) -> ConfigT:
        """``source``'s section of this config (its defaults when the file has none)."""
        value = getattr(self, source.config_key, None)
        if not isinstance(value, source.config_model):
            raise KeyError(f"no {source.config_key}: section for source {source.name!r}")
        return value

    def interval_for(self, section: _Interval) -> float:
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
        """ledger.max_gap_seconds, else 4 intervals of the source that paces the ledger's
        observations (NVML's), else of the agent's collection interval."""
        if self.ledger.max_gap_seconds:
            return self.ledger.max_gap_seconds
        pace = next((s for s in registry.sources() if s.paces_ledger), None)
        if pace is None:
            return 4 * self.collection.interval_seconds
        return 4 * self.interval_for(self.section(pace))


def _check_source_keys() -> None:
    """A source whose key is one of the agent's own sections would be silently shadowed."""
    for source in registry.sources():
        field = AgentConfig.model_fields.get(source.config_key)
        if field is None or field.annotation is not source.config_model:
            raise RuntimeError(f"source {source.name!r}: {source.config_key}: is the agent's")


_check_source_keys()


def _format_loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _env_parts(key: str) -> list[str] | None:
    """The setting path a variable names, read as pydantic-settings reads it (without case:
    ``gpuledger_listen__port`` sets listen.port), or None for a variable not ours."""
    name = key.lower()
    if not name.startswith(ENV_PREFIX.lower()):
        return None
    return name[len(ENV_PREFIX) :].split("__")


def _env_annotation(parts: list[str]) -> Any:
    """The annotation of the setting at ``parts``; KeyError when there is none."""
    model: type[BaseModel] | None = AgentConfig
    annotation: Any = None
    for part in parts:
        fields = dict(model.model_fields) if model is not None else {}
        # a key spelled by its alias in YAML (``from``) is spelled so in a variable too
        fields.update({f.alias: f for f in list(fields.values()) if f.alias})
        if part not in fields:
            raise KeyError(part)
        annotation = fields[part].annotation
        model = _section_model(annotation)
    return annotation


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The model of a section, also when it is optional (``DeliveryConfig | None``: unset
    by default, its keys still settable one by one from the environment)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [
            a for a in typing.get_args(annotation)
            if isinstance(a, type) and issubclass(a, BaseModel)
        ]  # fmt: skip
        if len(models) == 1:
            return models[0]
    return None


def _unknown_env_keys(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for key in environ:
        parts = _env_parts(key)
        if parts is None:
            continue
        try:
            _env_annotation(parts)
        except KeyError:
            problems.append((key, "no such setting"))
    return problems


def _is_complex(annotation: Any) -> bool:
    """A setting pydantic-settings reads from the environment as JSON."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, dict, set, frozenset):
        return True
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        return any(_is_complex(a) for a in typing.get_args(annotation) if a is not type(None))
    return False


def _env_json_problems(
    environ: Mapping[str, str], exc: SettingsError | RecursionError
) -> list[tuple[str, str]]:
    """The variables behind a SettingsError (or RecursionError) from the environment
    source: list, mapping and section settings are decoded as JSON, and the error names
    only the top-level field."""
    found = re.search(r'field "([^"]+)"', str(exc)) if isinstance(exc, SettingsError) else None
    field = found.group(1) if found else None
    candidates: list[str] = []
    problems: list[tuple[str, str]] = []
    for key, value in environ.items():
        parts = _env_parts(key)
        if parts is None or (field is not None and parts[0] != field):
            continue
        candidates.append(key)
        try:
            complex_ = _is_complex(_env_annotation(parts))
        except KeyError:
            continue
        if not complex_ or (len(parts) > 1 and not value):  # nested and empty: not decoded
            continue
        try:
            json.loads(value)
        except RecursionError:
            problems.append((key, "not valid JSON: nested too deeply"))
        except ValueError as err:
            problems.append(
                (key, f"not valid JSON ({err}): a list, mapping or section is given as JSON")
            )
    if problems:
        return problems
    cause = exc.__cause__ if isinstance(exc, SettingsError) else exc
    message = f"cannot read: {cause or exc}"
    return [(key, message) for key in candidates] or [("(environment)", message)]


def _file_settings(data: dict[Any, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The file's top-level settings, and its keys that name none. Only exact setting
    names go on to the model: pydantic-settings' init source would take ``NODE_NAME:``
    for node_name (two spellings in one file silently, the first winning), reads
    ``_env_prefix:``-style keys as its own options, and a key that is no string is a
    TypeError."""
    settings: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    for key, value in data.items():
        if isinstance(key, str) and key in AgentConfig.model_fields:
            settings[key] = value
        elif not isinstance(key, str):
            try:
                name = str(key)
            except ValueError:  # an int over 4300 digits (PyYAML reads 0x... of any length)
                name = brief(key)
            problems.append((name, f"a setting's name is text, not {type(key).__name__}"))
        elif key.lower() in AgentConfig.model_fields:
            problems.append((key, f"Extra inputs are not permitted (write {key.lower()})"))
        else:
            problems.append((_format_loc((key,)), "Extra inputs are not permitted"))
    return settings, problems


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
        except UnicodeDecodeError as exc:
            line = exc.object[: exc.start].count(b"\n") + 1
            raise ConfigError([(f"{path} line {line}", f"not UTF-8 text: {exc.reason}")]) from None
        try:
            data = safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path} line {mark.line + 1}" if mark is not None else str(path)
            detail = getattr(exc, "problem", None) or "not valid YAML"
            context = getattr(exc, "context_mark", None)
            if context is not None:
                detail += f" ({getattr(exc, 'context', 'started')} at line {context.line + 1})"
            raise ConfigError([(where, f"not valid YAML: {detail}")]) from None
        if not isinstance(data, dict):
            raise ConfigError([(str(path), "top level must be a mapping of settings")])
    problems = _unknown_env_keys(env)
    if problems:
        raise ConfigError(problems)
    settings, problems = _file_settings(data)
    saved = dict(os.environ)
    try:
        if environ is not None:  # let tests pass an environment explicitly
            os.environ.clear()
            os.environ.update(environ)
        config = AgentConfig(**settings)
    except ValidationError as exc:
        problems = [(_format_loc(e["loc"]), e["msg"]) for e in exc.errors()] + problems
    except (SettingsError, RecursionError) as exc:  # a GPULEDGER_* value that is no JSON
        raise ConfigError(_env_json_problems(env, exc)) from None
    finally:
        if environ is not None:
            os.environ.clear()
            os.environ.update(saved)
    if problems:
        raise ConfigError(problems)
    return config


_SECRET_KEYS = ("password", "secret", "token", "api_key", "apikey", "authorization")
_URL_KEYS = ("url", "dsn", "endpoint")


def _redact(value: Any, key: str = "") -> Any:
    """Walk a dumped config: URLs and DSNs lose their passwords, values under secret-ish
    keys (and every header value) are masked; paths to secret files stay visible."""
    from gpuledger.redact import safe_url

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
