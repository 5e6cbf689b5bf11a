"""The ``gpuledger`` command. Argument handling only; the work lives in the parts."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from gpuledger import __version__
from gpuledger.agent.config import ConfigError, redacted
from gpuledger.cli_budgets import budgets_app
from gpuledger.cli_report import findings, report, retention
from gpuledger.cli_support import (
    EXIT_CONFIG,
    err,
    load_or_exit,
    previous_month,
    require_report_packages,
    require_writable,
)

app = typer.Typer(
    name="gpuledger",
    help="GPU observability and cost-chargeback agent for self-hosted LLM inference.",
    no_args_is_help=True,
    add_completion=False,
)


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
    cfg = load_or_exit(config, overrides)
    try:
        code = run_agent(cfg)
    except ConfigError as exc:
        for key, message in exc.problems:
            err.print(f"[bold red]invalid configuration[/] [bold]{key}[/]: {escape(message)}")
        raise typer.Exit(EXIT_CONFIG) from None
    raise typer.Exit(code)


@app.command()
def meter(
    config: Annotated[Path, typer.Option("--config", "-c", help="The meter's YAML file.")],
) -> None:
    """Run the metering proxy: relay an OpenAI-compatible endpoint, count tokens per tenant
    (docs/meter.md)."""
    from gpuledger.meter.config import MeterConfigError, load_meter
    from gpuledger.meter.main import run

    try:
        loaded = load_meter(config)
    except MeterConfigError as exc:
        err.print(f"[bold red]invalid meter configuration[/] ({config}):")
        for key, message in exc.problems:
            err.print(f"  [bold]{key}[/]: {message}", markup=False, highlight=False)
        raise typer.Exit(EXIT_CONFIG) from None
    raise typer.Exit(run(loaded))


DEMO_DIR = Path("demo-out")


@app.command()
def demo(
    gpus: Annotated[int, typer.Option(help="Simulated GPUs on the live node.")] = 8,
    seed: Annotated[int, typer.Option(help="Simulation seed (same seed, same node).")] = 42,
    listen: Annotated[str, typer.Option(help="HOST:PORT to serve on.")] = "127.0.0.1:9835",
    month: Annotated[
        str | None,
        typer.Option("--month", help="YYYY-MM to fast-forward and report. Default: last month."),
    ] = None,
    history: Annotated[
        int, typer.Option("--history", min=0, max=12, help="Earlier months too (the trend).")
    ] = 2,
    out: Annotated[
        Path, typer.Option("--out", help="Where the demo's ledger, spool and reports live.")
    ] = DEMO_DIR,
    serve: Annotated[
        bool,
        typer.Option("--serve/--no-serve", help="Then run the live agent on a simulated node."),
    ] = True,
) -> None:
    """A simulated fleet's month in the ledger and its chargeback report, then the agent
    live on a simulated node (metrics, ledger and the report served), without GPUs."""
    from gpuledger.chargeback.report.model import Month
    from gpuledger.sim.demo import Demo, run_demo

    try:
        target = Month.parse(month or previous_month())
    except ValueError as exc:
        err.print(f"[bold red]--month[/]: {exc}")
        raise typer.Exit(EXIT_CONFIG) from None
    host, port = _split_listen(listen)
    plan = Demo(target=target, out=out, gpus=gpus, seed=seed, host=host, port=port, history=history)
    require_writable(out, "--out")
    cfg = load_or_exit(None, plan.config_overrides())
    require_report_packages(cfg)
    raise typer.Exit(run_demo(plan, cfg, serve=serve))


@app.command()
def healthcheck(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="The agent's YAML config file.")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds for the whole request.")] = 4.0,
) -> None:
    """Exit 0 when the agent of this config answers /healthz (plain HTTP, TLS or mutual
    TLS, from its own config): the container image's HEALTHCHECK."""
    import os

    from gpuledger.agent.healthcheck import check

    try:
        cfg = load_or_exit(config)
    except typer.Exit:
        # docker and podman read 1 as unhealthy and reserve 2 (EXIT_CONFIG elsewhere)
        raise typer.Exit(1) from None
    result = check(cfg, url=os.environ.get("HEALTHCHECK_URL") or None, timeout_s=timeout)
    typer.echo(result.message)
    raise typer.Exit(0 if result.healthy else 1)


@app.command("check-config")
def check_config(
    file: Annotated[Path, typer.Argument(help="YAML config file to validate.")],
) -> None:
    """Validate a config file (and GPULEDGER_* variables); print the effective config."""
    cfg = load_or_exit(file)
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
    from gpuledger.dashboards.output import write_dashboards

    for path in write_dashboards(out, as_configmap=configmap, namespace=namespace):
        typer.echo(str(path))


app.command()(report)
app.command()(findings)
app.command()(retention)
app.add_typer(budgets_app)


class ProbeApi(StrEnum):
    completions = "completions"
    chat = "chat"
    embeddings = "embeddings"
    rerank = "rerank"
    auto = "auto"  # completions, else embeddings, else rerank (docs/probes.md)


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

    from gpuledger.collectors.vllm.probe.client import endpoint_from_url
    from gpuledger.collectors.vllm.probe.runner import run_series
    from gpuledger.collectors.vllm.probe.statistics import summarize

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
    from gpuledger.alerts.rules import prometheus_rule, rules_document, to_yaml
    from gpuledger.chargeback.report.ratecard import load_rate_card

    cfg = load_or_exit(config)
    card = load_rate_card(cfg.report.rate_card)  # validated with the config already
    doc = (
        prometheus_rule(cfg.alerts, namespace=namespace, name=name, card=card)
        if prometheusrule
        else rules_document(cfg.alerts, card)
    )
    try:
        out.write_text(to_yaml(doc), encoding="utf-8")
    except OSError as exc:
        err.print(f"[bold red]cannot write {out}[/]: {exc.strerror}")
        raise typer.Exit(1) from None
    kind = "PrometheusRule" if prometheusrule else "rule file"
    err.print(f"[green]wrote {kind}[/] {out}")


@app.command()
def manifests(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write the YAML to.")],
    namespace: Annotated[
        str, typer.Option("--namespace", help="Namespace of the agent and the reporter.")
    ] = "gpuledger",
    image: Annotated[
        str | None,
        typer.Option(
            "--image",
            help=f"REGISTRY/gpuledger:TAG. Default: ghcr.io/gpuledger/gpuledger:{__version__}.",
        ),
    ] = None,
    reporter_image: Annotated[
        str | None,
        typer.Option(
            "--reporter-image",
            help="The reporter's image (docker build --target reporter). Default: the "
            "--image reference with -reporter after its tag.",
        ),
    ] = None,
    runtime_class: Annotated[
        str | None,
        typer.Option(
            "--runtime-class",
            help="runtimeClassName for the agent (e.g. nvidia), where the NVIDIA runtime "
            "is not the node's default.",
        ),
    ] = None,
    process_attribution: Annotated[
        bool,
        typer.Option(
            "--process-attribution/--no-process-attribution",
            help="hostPID and host /proc (read-only) to attribute GPU processes to pods.",
        ),
    ] = True,
    pod_resources: Annotated[
        bool,
        typer.Option(
            "--pod-resources/--no-pod-resources",
            help="Mount the kubelet pod-resources socket directory (read-only) and read "
            "it (podresources.enabled). The socket admits root only, so this runs the agent "
            "as uid 0 with no capabilities; off by default (non-root).",
        ),
    ] = False,
    dcgm_url: Annotated[
        str | None,
        typer.Option(
            "--dcgm-url",
            help="Enable the dcgm collector at this URL; $(HOST_IP) is the node's IP, "
            "e.g. 'http://$(HOST_IP):9400/metrics'. Default: dcgm off.",
        ),
    ] = None,
    metrics_require_token: Annotated[
        bool,
        typer.Option(
            "--metrics-require-token",
            help="Require the API token on /metrics too; the monitors then send it.",
        ),
    ] = False,
    priority_class: Annotated[
        str | None, typer.Option("--priority-class", help="priorityClassName of the agent.")
    ] = None,
    prometheus_label: Annotated[
        list[str] | None,
        typer.Option(
            "--prometheus-label",
            help="KEY=VALUE on the ServiceMonitor, PodMonitor and PrometheusRule "
            "(what the Prometheus selects on, e.g. release=kube-prometheus-stack). Repeatable.",
        ),
    ] = None,
    dashboards_namespace: Annotated[
        str | None,
        typer.Option("--dashboards-namespace", help="Namespace of the dashboard ConfigMaps."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="Agent config: its alerts: and report: sections (and rate card) are used.",
        ),
    ] = None,
) -> None:
    """Write kustomize-ready Kubernetes manifests, one object per file plus
    kustomization.yaml: the node agent's DaemonSet and RBAC, the reporter, the Prometheus
    monitors and rules, the dashboard ConfigMaps.

    NVML: the agent claims no GPU; NVIDIA_VISIBLE_DEVICES=all makes the NVIDIA container
    runtime inject the driver library and device nodes, so that runtime must run the pod
    (the node's default runtime, else --runtime-class nvidia). hostPID: NVML names GPU
    processes by their PID in the caller's PID namespace, so attributing them to pods
    needs the host's (--no-process-attribution drops hostPID and the /proc mount).

    Secrets are referenced, never generated: gpuledger-ledger (key url, the PostgreSQL
    DSN) and gpuledger-api-token (key token)."""
    from gpuledger.chargeback.report.ratecard import RateCardError
    from gpuledger.deploy.kubernetes.options import DEFAULT_IMAGE, ManifestOptions
    from gpuledger.deploy.kubernetes.output import write_manifests

    labels: list[tuple[str, str]] = []
    for item in prometheus_label or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            err.print(f"[bold red]--prometheus-label must be KEY=VALUE[/], got {item!r}")
            raise typer.Exit(EXIT_CONFIG)
        labels.append((key, value))
    cfg = load_or_exit(config)
    try:
        options = ManifestOptions.from_config(
            cfg,
            namespace=namespace,
            image=image or DEFAULT_IMAGE,
            reporter_image=reporter_image,
            runtime_class=runtime_class,
            process_attribution=process_attribution,
            pod_resources=pod_resources,
            dcgm_url=dcgm_url,
            metrics_require_token=metrics_require_token,
            priority_class=priority_class,
            prometheus_labels=tuple(labels),
            dashboards_namespace=dashboards_namespace,
        )
    except (ValueError, RateCardError, OSError) as exc:
        err.print(f"[bold red]cannot generate the manifests[/]: {exc}")
        raise typer.Exit(EXIT_CONFIG) from None
    try:
        paths = write_manifests(out, options)
    except OSError as exc:
        err.print(f"[bold red]cannot write {out}[/]: {exc.strerror}")
        raise typer.Exit(1) from None
    for path in paths:
        typer.echo(str(path))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
