"""The ``gpuledger`` command. Argument handling only; the work lives in the parts."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

from gpuledger import __version__
from gpuledger.agent.config import AgentConfig, ConfigError, load_config, redacted

if TYPE_CHECKING:
    from gpuledger.alerts.config import AlertsConfig

app = typer.Typer(
    name="gpuledger",
    help="GPU observability and cost-chargeback agent for self-hosted LLM inference.",
    no_args_is_help=True,
    add_completion=False,
)
err = Console(stderr=True)

EXIT_CONFIG = 2


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gpuledger {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """GPU observability and cost-chargeback agent for self-hosted LLM inference."""


def _load_or_exit(path: Path | None, overrides: dict[str, object] | None = None) -> AgentConfig:
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
            err.print(f"  [bold]{key}[/]: {message}")
        raise typer.Exit(EXIT_CONFIG) from None
    return cfg


def _split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        err.print(f"[bold red]--listen must be HOST:PORT[/], got {listen!r}")
        raise typer.Exit(EXIT_CONFIG)
    return host or "127.0.0.1", int(port)


@app.command()
def agent(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")] = None,
    simulate: Annotated[
        bool, typer.Option("--simulate", help="Use a simulated GPU node instead of NVML.")
    ] = False,
    listen: Annotated[
        str | None, typer.Option("--listen", help="HOST:PORT, overrides listen.*")
    ] = None,
) -> None:
    """Run the node agent (serves /metrics, /healthz, /readyz, /api/v1)."""
    from gpuledger.agent.main import run_agent

    overrides: dict[str, object] = {}
    if simulate:
        overrides["simulate.enabled"] = True
    if listen:
        host, port = _split_listen(listen)
        overrides["listen.host"], overrides["listen.port"] = host, port
    cfg = _load_or_exit(config, overrides)
    try:
        code = run_agent(cfg)
    except ConfigError as exc:
        for key, message in exc.problems:
            err.print(f"[bold red]invalid configuration[/] [bold]{key}[/]: {message}")
        raise typer.Exit(EXIT_CONFIG) from None
    raise typer.Exit(code)


@app.command()
def demo(
    gpus: Annotated[int, typer.Option(help="Simulated GPUs on the node.")] = 8,
    seed: Annotated[int, typer.Option(help="Simulation seed (same seed, same node).")] = 42,
    listen: Annotated[str, typer.Option(help="HOST:PORT to serve on.")] = "127.0.0.1:9835",
) -> None:
    """Run the agent on a simulated GPU node, so you can see it work without GPUs."""
    from gpuledger.agent.main import run_agent

    host, port = _split_listen(listen)
    cfg = _load_or_exit(
        None,
        {
            "simulate.enabled": True,
            "simulate.gpus": gpus,
            "simulate.seed": seed,
            "listen.host": host,
            "listen.port": port,
            "collection.interval_seconds": 5.0,
            "ledger.flush_interval_seconds": 5.0,
        },
    )
    out = Console()
    out.print(f"[bold]gpuledger demo[/]: a simulated node with {gpus} GPUs (seed {seed})")
    out.print(f"  metrics:    http://{host}:{port}/metrics")
    out.print(f"  readiness:  http://{host}:{port}/readyz")
    out.print(f"  collectors: http://{host}:{port}/api/v1/collectors")
    out.print(f"  ledger:     http://{host}:{port}/api/v1/usage?from=<ISO time>&to=<ISO time>")
    out.print("  Ctrl-C stops it.")
    raise typer.Exit(run_agent(cfg))


@app.command("check-config")
def check_config(
    file: Annotated[Path, typer.Argument(help="YAML config file to validate.")],
) -> None:
    """Validate a config file (and GPULEDGER_* variables); print the effective config."""
    cfg = _load_or_exit(file)
    typer.echo(json.dumps(redacted(cfg), indent=2, sort_keys=True))
    err.print("[green]configuration is valid[/]")


@app.command()
def dashboards(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the dashboards to.")],
    configmap: Annotated[
        bool,
        typer.Option(
            "--configmap",
            help='Write Kubernetes ConfigMaps (label grafana_dashboard: "1") instead of JSON.',
        ),
    ] = False,
    namespace: Annotated[
        str, typer.Option("--namespace", help="Namespace of the ConfigMaps.")
    ] = "monitoring",
) -> None:
    """Write the Grafana dashboards as JSON files, or as ConfigMaps for the Grafana sidecar."""
    from gpuledger.dashboards.build import write_dashboards

    for path in write_dashboards(out, as_configmap=configmap, namespace=namespace):
        typer.echo(str(path))


class ProbeApi(StrEnum):
    completions = "completions"
    chat = "chat"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f} ms"


@app.command()
def probe(
    url: Annotated[str, typer.Argument(help="vLLM server base URL, e.g. http://10.0.0.5:8000")],
    n: Annotated[int, typer.Option("--n", min=1, help="Number of probes, one at a time.")] = 20,
    model: Annotated[
        str | None, typer.Option("--model", help="Model to ask for (default: first in /v1/models).")
    ] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=2, help="Tokens per probe.")] = 16,
    api: Annotated[ProbeApi, typer.Option("--api", help="OpenAI API to probe.")] = (
        ProbeApi.completions
    ),
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.001, help="Seconds allowed per probe.")
    ] = 30.0,
    api_key_env: Annotated[
        str | None,
        typer.Option("--api-key-env", help="Environment variable holding the API key."),
    ] = None,
) -> None:
    """Send N streaming probes and print TTFT / TPOT / e2e percentiles and tokens/s."""
    import os

    from rich.progress import Progress
    from rich.table import Table

    from gpuledger.collectors.probe import endpoint_from_url, run_series, summarize

    api_key: str | None = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            err.print(f"[bold red]--api-key-env[/]: environment variable {api_key_env} is not set")
            raise typer.Exit(EXIT_CONFIG)
    try:
        endpoint = endpoint_from_url(url, api_key=api_key)
    except ValueError as exc:
        err.print(f"[bold red]URL[/]: {exc}")
        raise typer.Exit(EXIT_CONFIG) from None

    with Progress(console=err, transient=True) as progress:
        task = progress.add_task(f"probing {endpoint.name}", total=n)
        results = run_series(
            endpoint,
            n=n,
            model=model,
            max_tokens=max_tokens,
            timeout_s=timeout,
            api=api.value,
            on_result=lambda _r: progress.advance(task),
        )
    summary = summarize(results)

    out = Console()
    models = sorted({r.model_name for r in results if r.model_name})
    out.print(f"[bold]{summary.successes}/{summary.total} probes succeeded[/]")
    out.print(
        f"{endpoint.name}, {api.value} API, model {', '.join(models) or '?'}, "
        f"max_tokens {max_tokens}"
    )
    if summary.successes:
        table = Table(title="latency")
        for column in ("metric", "p50", "p90", "p99"):
            table.add_column(column, justify="left" if column == "metric" else "right")
        for label, q in (("TTFT", summary.ttft), ("TPOT", summary.tpot), ("e2e", summary.e2e)):
            table.add_row(label, _seconds(q.p50), _seconds(q.p90), _seconds(q.p99))
        t = summary.tokens_per_s
        table.add_row(
            "output tokens/s",
            *("-" if v is None else f"{v:.1f}" for v in (t.p50, t.p90, t.p99)),
        )
        out.print(table)
    if summary.failures:
        failures = Table(title="failures")
        failures.add_column("reason")
        failures.add_column("count", justify="right")
        failures.add_column("first detail")
        for reason, count in sorted(summary.failures.items()):
            failures.add_row(reason, str(count), summary.failure_examples.get(reason, ""))
        out.print(failures)
    raise typer.Exit(1 if summary.all_failed else 0)


@app.command()
def alerts(
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write the rules to.")],
    prometheusrule: Annotated[
        bool,
        typer.Option(
            "--prometheusrule", help="Write a PrometheusRule object (prometheus-operator)."
        ),
    ] = False,
    namespace: Annotated[
        str, typer.Option("--namespace", help="Namespace of the PrometheusRule.")
    ] = "monitoring",
    name: Annotated[str, typer.Option("--name", help="Name of the PrometheusRule.")] = "gpuledger",
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Agent config file; its alerts: section is used."),
    ] = None,
) -> None:
    """Write Prometheus recording and alert rules (YAML rule file or PrometheusRule)."""
    from gpuledger.alerts.config import AlertsConfig
    from gpuledger.alerts.rules import prometheus_rule, rules_document, to_yaml

    alerts_cfg = AlertsConfig()
    if config is not None and "alerts" in AgentConfig.model_fields:
        section = getattr(_load_or_exit(config), "alerts", None)
        alerts_cfg = section if isinstance(section, AlertsConfig) else alerts_cfg
    elif config is not None:
        alerts_cfg = _alerts_section(config)
    doc = (
        prometheus_rule(alerts_cfg, namespace=namespace, name=name)
        if prometheusrule
        else rules_document(alerts_cfg)
    )
    try:
        out.write_text(to_yaml(doc), encoding="utf-8")
    except OSError as exc:
        err.print(f"[bold red]cannot write {out}[/]: {exc.strerror}")
        raise typer.Exit(1) from None
    kind = "PrometheusRule" if prometheusrule else "rule file"
    err.print(f"[green]wrote {kind}[/] {out}")


def _alerts_section(path: Path) -> AlertsConfig:
    """The file's alerts: section, read on its own while AgentConfig does not mount it."""
    import yaml

    from gpuledger.alerts.config import AlertsConfig

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        err.print(f"[bold red]invalid configuration[/] ({path}): {exc}")
        raise typer.Exit(EXIT_CONFIG) from None
    section = data.get("alerts") if isinstance(data, dict) else None
    try:
        return AlertsConfig.model_validate(section or {})
    except ValidationError as exc:
        err.print(f"[bold red]invalid configuration[/] ({path}):")
        for e in exc.errors():
            err.print(f"  [bold]alerts.{'.'.join(map(str, e['loc']))}[/]: {e['msg']}")
        raise typer.Exit(EXIT_CONFIG) from None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
