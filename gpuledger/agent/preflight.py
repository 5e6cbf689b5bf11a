"""Checks before the agent builds anything, each failing as a ConfigError naming its key.

They exist for the container as users run it (issue 16): with ``--read-only`` and no
volume on the state directory the spool failed deep inside SQLite with a message that
did not say which path or how to move it, and ``--simulate`` died in a traceback; in a
plain container the node label was the container's id, which every upgrade changes, so
one machine's ledger rows were spread over a new node name per upgrade.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from gpuledger.agent.config import ENV_PREFIX, AgentConfig, ConfigError
from gpuledger.chargeback.report.writers.files import ReportDependencyError, require_packages

__all__ = [
    "check_delivery_secrets",
    "check_node_name",
    "check_report_packages",
    "check_writable_dirs",
    "in_container",
    "preflight",
    "writable_problem",
]

# The image's state directory as a named volume: what the docs and the Dockerfile name.
VOLUME_HINT = "-v gpuledger-state:/var/lib/gpuledger"
# docker and podman name a container's host after the first 12 hex digits of its id.
_CONTAINER_ID = re.compile(r"[0-9a-f]{12}|[0-9a-f]{64}")


def _env_name(key: str) -> str:
    return ENV_PREFIX + key.upper().replace(".", "__")


def writable_problem(path: Path) -> str | None:
    """Why ``path`` (a directory, created if missing) cannot take a new file, else None."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".gpuledger-write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def _needed_dirs(cfg: AgentConfig) -> list[tuple[str, Path]]:
    """(the config key that moves it, directory) for every directory this run writes."""
    dirs: list[tuple[str, Path]] = []
    if cfg.has_role("node") and cfg.simulate.enabled:
        dirs.append(("state_dir", cfg.state_dir))
    if cfg.has_role("node") and cfg.ledger.enabled:
        key = "ledger.spool_path" if cfg.ledger.spool_path is not None else "state_dir"
        dirs.append((key, cfg.spool_path().parent))
    if cfg.has_role("reporter"):
        key = "report.out_dir" if cfg.report.out_dir is not None else "state_dir"
        dirs.append((key, cfg.reports_dir()))
    return dirs


def check_writable_dirs(cfg: AgentConfig) -> None:
    problems: list[tuple[str, str]] = []
    seen: set[Path] = set()
    for key, path in _needed_dirs(cfg):
        if path in seen:
            continue
        seen.add(path)
        why = writable_problem(path)
        if why is not None:
            problems.append(
                (
                    key,
                    f"{path} is not writable ({why}). Mount a writable directory there (in a "
                    f"container with a read-only root: {VOLUME_HINT}), or move it with "
                    f"{key}: in the config file or the {_env_name(key)} variable",
                )
            )
    if problems:
        raise ConfigError(problems)


def in_container(root: Path = Path("/"), environ: Mapping[str, str] | None = None) -> bool:
    """docker writes ``/.dockerenv``, podman ``/run/.containerenv`` and ``container=``."""
    env = os.environ if environ is None else environ
    return (
        (root / ".dockerenv").exists()
        or (root / "run" / ".containerenv").exists()
        or bool(env.get("container"))
    )


def check_node_name(
    cfg: AgentConfig,
    *,
    hostname: Callable[[], str] = socket.gethostname,
    containerized: Callable[[], bool] = in_container,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Refuse a node label that is this container's id: it was not chosen, and the next
    container (every upgrade) would report the same GPUs under another node."""
    env = os.environ if environ is None else environ
    if not cfg.has_role("node") or cfg.simulate.enabled or env.get("NODE_NAME"):
        return
    host = hostname()
    if cfg.node_name != host or not _CONTAINER_ID.fullmatch(host) or not containerized():
        return
    raise ConfigError(
        [
            (
                "node_name",
                f"would be this container's hostname {host}, its id, which changes with "
                "every new container (an upgrade would start a new node in the ledger). "
                f'Name the machine: -e {_env_name("node_name")}="$(hostname)", node_name: '
                "in the config file, or run the container with --hostname",
            )
        ]
    )


def check_report_packages(cfg: AgentConfig) -> None:
    if not cfg.has_role("reporter"):
        return
    try:
        require_packages(cfg.report.formats)
    except ReportDependencyError as exc:
        raise ConfigError([("report.formats", str(exc))]) from None


def check_delivery_secrets(cfg: AgentConfig) -> None:
    """The report delivery's secret and CA files are readable (``report.delivery``)."""
    if not cfg.has_role("reporter") or cfg.report.delivery is None:
        return
    from gpuledger.chargeback.delivery.secrets import secret_problems

    problems = secret_problems(cfg.report.delivery)
    if problems:
        raise ConfigError(problems)


def preflight(cfg: AgentConfig) -> None:
    """Every check, in the order a user fixes them."""
    check_node_name(cfg)
    check_report_packages(cfg)
    check_writable_dirs(cfg)
    check_delivery_secrets(cfg)
