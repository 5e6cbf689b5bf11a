"""What every ``gpuledger`` command shares: the error console, the config exit status, and
loading the config or exiting with each bad key named."""

from __future__ import annotations

from pathlib import Path

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from gpuledger.agent.config import AgentConfig, ConfigError, load_config

err = Console(stderr=True)

EXIT_CONFIG = 2
EXIT_NO_DATA = 1
EXIT_STORE = 3


def load_or_exit(path: Path | None, overrides: dict[str, object] | None = None) -> AgentConfig:
    try:
        cfg = load_config(path)
        if overrides:
            data = cfg.model_dump()
            for dotted, value in overrides.items():
                section, _, key = dotted.rpartition(".")
                target = data[section] if section else data
                target[key] = value
            try:
                cfg = AgentConfig.model_validate(data)
            except ValidationError as exc:
                raise ConfigError(
                    [(".".join(map(str, e["loc"])), e["msg"]) for e in exc.errors()]
                ) from None
    except ConfigError as exc:
        err.print(f"[bold red]invalid configuration[/] ({path or 'defaults'}):")
        for key, message in exc.problems:
            err.print(f"  [bold]{key}[/]: {escape(message)}")
        raise typer.Exit(EXIT_CONFIG) from None
    return cfg


def require_writable(path: Path, option: str) -> None:
    from gpuledger.agent.preflight import writable_problem

    why = writable_problem(path)
    if why is not None:
        err.print(
            f"[bold red]{option}[/]: {escape(str(path))} is not writable ({why}); pass {option} a "
            "writable directory (in a read-only container: a volume or a tmpfs, e.g. "
            f"{option} /tmp/gpuledger-demo with --tmpfs /tmp)",
            highlight=False,
        )
        raise typer.Exit(EXIT_CONFIG)


def previous_month() -> str:
    from datetime import UTC, datetime

    from gpuledger.chargeback.report.model import Month

    return Month.of(datetime.now(UTC)).previous().label


def require_report_packages(cfg: AgentConfig) -> None:
    """The report's formats need packages of the ``report`` extra: say which, and how to
    get them, before any work."""
    from gpuledger.chargeback.report.writers.files import ReportDependencyError, require_packages

    try:
        require_packages(cfg.report.formats)
    except ReportDependencyError as exc:
        err.print(f"[bold red]cannot write the report[/]: {escape(str(exc))}", highlight=False)
        raise typer.Exit(EXIT_CONFIG) from None
