"""``gpuledger demo``: a simulated fleet's month(s) in a ledger and the month's chargeback,
then the live agent on a simulated node, so a newcomer without GPUs sees every output.

The CLI parses the options and loads the config :meth:`Demo.config_overrides` describes;
everything after that is here, in the order a user sees it: fast-forward the months into
``<out>/state/ledger.db`` (:func:`~gpuledger.sim.month.simulate_month`), write the report
with the same monthly run the ``report`` command and the reporter role use, print where
everything went, then run the agent until Ctrl-C.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import Progress, TaskID

from gpuledger.chargeback.ledger.store.sqlite import SqliteLedgerStore
from gpuledger.chargeback.report.console import print_summary
from gpuledger.chargeback.report.model import Month, Report
from gpuledger.chargeback.report.monthly import findings_provider, run_report
from gpuledger.sim.month import DEMO_FLEET, simulate_month

if TYPE_CHECKING:
    from gpuledger.agent.config import AgentConfig


@dataclass(frozen=True, slots=True)
class Demo:
    """What one demo run simulates and where it puts it (the CLI's options)."""

    target: Month
    out: Path
    gpus: int
    seed: int
    host: str
    port: int
    history: int

    @property
    def state_dir(self) -> Path:
        return self.out / "state"

    @property
    def ledger_path(self) -> Path:
        return self.state_dir / "ledger.db"

    def config_overrides(self) -> dict[str, object]:
        """The agent config of the demo: both roles on one simulated node, its state and
        reports under ``out``, and short intervals so the live pages move while watched."""
        return {
            "state_dir": self.state_dir,
            "roles": ("node", "reporter"),
            "simulate.enabled": True,
            "simulate.gpus": self.gpus,
            "simulate.seed": self.seed,
            "listen.host": self.host,
            "listen.port": self.port,
            "collection.interval_seconds": 5.0,
            "ledger.flush_interval_seconds": 5.0,
            "report.out_dir": self.out / "reports",
        }

    def months(self) -> list[Month]:
        """The target month and the ``history`` months before it, oldest first (the
        report's trend needs them in the ledger)."""
        months = [self.target]
        for _ in range(self.history):
            months.insert(0, months[0].previous())
        return months


def run_demo(demo: Demo, cfg: AgentConfig, *, serve: bool) -> int:
    """The whole demo; returns the exit code (the agent's, when it is served)."""
    con = Console(soft_wrap=True)  # paths stay whole, to copy and paste
    fleet = ", ".join(f"{n.name} ({n.gpus}x {n.model})" for n in DEMO_FLEET)
    con.print(f"[bold]gpuledger demo[/]: a simulated fleet, {fleet}")
    months = demo.months()
    result, paths = fast_forward(demo, cfg, months)
    print_summary(result)
    con.print(f"  ledger:  {demo.ledger_path}  ({len(months)} simulated month(s))")
    con.print("  report:")
    for path in paths:
        con.print(f"    {path}")
    html = next((p for p in paths if p.suffix == ".html"), None)
    if html is not None:
        con.print(f"  open it: file://{html.resolve()}")
    if not serve:
        return 0
    return serve_live(demo, cfg, con)


def fast_forward(demo: Demo, cfg: AgentConfig, months: list[Month]) -> tuple[Report, list[Path]]:
    """Simulate ``months`` into the demo's SQLite ledger (idempotent: rows are running
    totals) and write the target month's report, with a progress bar on stderr."""
    demo.state_dir.mkdir(parents=True, exist_ok=True)
    target = demo.target
    err = Console(stderr=True)
    with SqliteLedgerStore(demo.ledger_path) as store:
        store.migrate()
        with Progress(console=err, transient=True) as bar:
            for m in months:
                day_task = bar.add_task(f"fast-forwarding {m.label}", total=m.hours // 24)

                def advanced(done: int, _total: int, t: TaskID = day_task) -> None:
                    bar.update(t, completed=done)

                simulate_month(store, m, seed=demo.seed, progress=advanced)
            task = bar.add_task(f"chargeback {target.label}", total=None)
            return run_report(
                store,
                cfg.report,
                target,
                cfg.reports_dir(),
                store_label=f"sqlite:///{demo.ledger_path}",
                progress=lambda what: bar.update(task, description=f"{target.label}: {what}"),
                findings=findings_provider(cfg.report),
            )


def serve_live(demo: Demo, cfg: AgentConfig, con: Console) -> int:
    """Run the agent (node and reporter roles) on the simulated node until stopped.

    The agent is imported here, not at the top: the agent's wiring imports the simulator,
    and the simulator needs the agent only for this last step."""
    from gpuledger.agent.main import run_agent

    host, port = demo.host, demo.port
    con.print(f"[bold]live agent[/] on a simulated node with {demo.gpus} GPUs (seed {demo.seed}):")
    con.print(f"  metrics:    http://{host}:{port}/metrics")
    con.print(f"  reports:    http://{host}:{port}/reports/")
    con.print(f"  report API: http://{host}:{port}/api/v1/reports/{demo.target.label}")
    con.print(f"  collectors: http://{host}:{port}/api/v1/collectors")
    con.print(f"  ledger:     http://{host}:{port}/api/v1/usage?from=<ISO time>&to=<ISO time>")
    con.print("  Ctrl-C stops it.")
    return run_agent(cfg)
