"""A reporter process for the restart tests: ``python -m tests.support.delivery_child
LEDGER_URL OUT_DIR SMTP_PORT MODE``.

``run-kill-recorded`` / ``run-kill-sent``: the scheduled run (October 2026's report of the
fixture ledger written, then delivered), the process killed with SIGKILL by the
delivery's hook at the first message's ``recorded`` (pending, nothing sent) or ``sent``
(the server said 250, the record not yet marked) stage. ``restart``: a reporter starting
as the agent starts it (the report is on disk, so its start resumes the delivery).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

from gpuledger.agent.reporter import Reporter
from gpuledger.chargeback.delivery.record import open_delivery_log
from gpuledger.chargeback.delivery.send import Deliverer, Job
from gpuledger.chargeback.ledger.store import open_store
from gpuledger.chargeback.report.config import ReportConfig
from tests.support import delivery as dv

NOW = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)  # the schedule has fired for October


def main(url: str, out_dir: Path, port: int, mode: str) -> int:
    delivery = dv.delivery_config(port)
    cfg = ReportConfig(
        formats=("csv", "json", "focus"), cost_centers=dv.COST_CENTERS, delivery=delivery
    )

    def hook(stage: str, job: Job) -> None:
        if mode == f"run-kill-{stage}":
            os.kill(os.getpid(), signal.SIGKILL)

    deliverer = Deliverer(delivery, open_delivery_log(url, cfg.fleet), fleet=cfg.fleet, hook=hook)
    reporter = Reporter(
        cfg,
        open_store(url),
        out_dir,
        clock=lambda: NOW,
        delivery=deliverer,
        cost_centers=lambda _month: dv.cost_center_map(),
    )
    if mode.startswith("run-"):
        reporter.run()
        return 0
    reporter.start()
    for thread in threading.enumerate():
        if thread.name in ("report-delivery-resume", "report-catch-up"):
            thread.join(60)
    reporter.stop()
    status = reporter.status()
    print(dict(status.deliveries))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
