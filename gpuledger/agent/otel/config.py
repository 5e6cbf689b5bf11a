"""The agent's ``otel:`` section: optional OTLP/HTTP export of the metric schema and of
one span per synthetic probe (see ``docs/otel.md``).

``endpoint`` is the OTLP/HTTP base URL, as ``OTEL_EXPORTER_OTLP_ENDPOINT`` is: metrics go
to ``<endpoint>/v1/metrics`` and spans to ``<endpoint>/v1/traces``. ``metrics_endpoint``
and ``traces_endpoint`` are full signal URLs used as they are (as
``OTEL_EXPORTER_OTLP_{METRICS,TRACES}_ENDPOINT`` are); an ``endpoint`` that already ends in
``/v1/metrics`` or ``/v1/traces`` is taken as its base.

Request headers come from ``headers`` (plain values, e.g. a tenant id) and
``headers_file`` (secrets such as ``Authorization: Bearer ...``: a mounted Secret), read
once at start. Header values never appear in a ``repr``, an error message or a log line.

This module does not import opentelemetry: a config without ``otel.enabled`` loads, and
the agent runs, without the ``otel`` extra.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Literal

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

Signal = Literal["metrics", "traces"]
_SIGNAL_PATHS: dict[Signal, str] = {"metrics": "/v1/metrics", "traces": "/v1/traces"}
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_LINE = re.compile(r"\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*:(.*)")
SDK_MODULES = ("opentelemetry.sdk.metrics", "opentelemetry.exporter.otlp.proto.http")


def _check_url(value: str) -> str:
    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ValueError(f"not a URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an http:// or https:// URL with a host")
    if url.userinfo:
        raise ValueError("must not carry credentials; put them in otel.headers_file")
    if url.query or url.fragment:
        raise ValueError("must not carry a query string or fragment")
    return value


def _config_error(key: str, message: str) -> Exception:
    from gpuledger.agent.config import ConfigError  # config.py imports this module

    return ConfigError([(key, message)])


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def parse_headers_text(text: str) -> dict[str, str]:
    """``Name: value`` lines (blank lines and ``#`` comments skipped; the value is what
    follows the first colon, trimmed, surrounding quotes removed), or else a YAML mapping
    of names to strings. Raises ValueError with a message that quotes no value."""
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1)]
    meaningful = [
        (n, line) for n, line in lines if line.strip() and not line.lstrip().startswith("#")
    ]
    matches = [(n, _HEADER_LINE.fullmatch(line)) for n, line in meaningful]
    if all(m is not None for _, m in matches):
        return {m.group(1): _unquote(m.group(2)) for _, m in matches if m is not None}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        bad = next(n for n, m in matches if m is None)
        raise ValueError(
            f"line {bad} is not 'Name: value' (and the file is no YAML mapping)"
        ) from None
    if not isinstance(data, dict):
        raise ValueError("must hold 'Name: value' lines or a YAML mapping")
    out: dict[str, str] = {}
    for name, value in data.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise ValueError("a header name is not a valid HTTP header name")
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ValueError(f"header {name}: the value must be a string")
        out[name] = str(value)
    return out


class OtelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    endpoint: str = "http://127.0.0.1:4318"
    metrics_endpoint: str | None = None  # full URL; default <endpoint>/v1/metrics
    traces_endpoint: str | None = None  # full URL; default <endpoint>/v1/traces
    interval_seconds: float = Field(60.0, gt=0, le=86400)
    timeout_seconds: float = Field(10.0, gt=0, le=300)
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    headers_file: Path | None = None
    resource_attributes: dict[str, str] = Field(default_factory=dict)
    probe_spans: bool = True
    compression: Literal["gzip", "none"] = "gzip"

    @field_validator("endpoint")
    @classmethod
    def _base(cls, value: str) -> str:
        return _check_url(value)

    @field_validator("metrics_endpoint", "traces_endpoint")
    @classmethod
    def _signal(cls, value: str | None) -> str | None:
        return None if value is None else _check_url(value)

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, secret in value.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
            if any(c in secret.get_secret_value() for c in "\r\n\0"):
                raise ValueError(f"header {name}: the value holds a line break")
        return value

    def signal_url(self, signal: Signal) -> str:
        explicit = self.metrics_endpoint if signal == "metrics" else self.traces_endpoint
        if explicit is not None:
            return explicit
        base = self.endpoint.rstrip("/")
        for path in _SIGNAL_PATHS.values():  # a full signal URL given as the base
            if base.endswith(path):
                base = base[: -len(path)]
                break
        return base + _SIGNAL_PATHS[signal]

    def resolved_headers(self) -> dict[str, str]:
        """``headers`` merged with ``headers_file`` (the file wins, names compared without
        case). Raises ConfigError naming ``otel.headers_file``; never quotes a value."""
        out = {name: secret.get_secret_value() for name, secret in self.headers.items()}
        if self.headers_file is None:
            return out
        try:
            text = self.headers_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise _config_error("otel.headers_file", f"cannot read: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise _config_error("otel.headers_file", "not UTF-8 text") from None
        try:
            from_file = parse_headers_text(text)
        except ValueError as exc:
            raise _config_error("otel.headers_file", str(exc)) from None
        if not from_file:
            raise _config_error("otel.headers_file", "holds no header")
        for name, value in from_file.items():
            if any(c in value for c in "\r\n\0"):
                raise _config_error("otel.headers_file", f"header {name}: a line break")
            for existing in [k for k in out if k.lower() == name.lower()]:
                del out[existing]
            out[name] = value
        return out


def require_sdk() -> None:
    """Raise ConfigError naming ``otel.enabled`` when the ``otel`` extra is missing."""
    for module in SDK_MODULES:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            missing = exc.name or module
            raise _config_error(
                "otel.enabled",
                f"needs the OpenTelemetry SDK ({missing} is not installed): "
                "install gpuledger[otel]",
            ) from None
