"""Running ``gpuledger meter`` for real in tests and benchmarks.

:class:`MeterThread` serves the meter's ASGI app with uvicorn in a thread on a socket
bound to 127.0.0.1:0 (the same server and app the CLI runs); :class:`MeterProcess` runs
``python -m gpuledger meter --config FILE`` as a subprocess with its logs captured, for
the exit codes and what the logs hold. :func:`meter_counters` reads the ``/metrics``
page with prometheus_client's parser (not the meter's own code).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gpuledger.meter.config import load_meter
from gpuledger.meter.main import build_app
from gpuledger.meter.proxy import MeterApp
from tests.support.paths import REPO_ROOT

Labels = frozenset[tuple[str, str]]


def write_config(directory: Path, upstream: str, **overrides: Any) -> Path:
    """A meter YAML in ``directory``: service ``chat``/``llm``, node ``n1``, ``overrides``
    merged over it (nested dicts replace their section)."""
    data: dict[str, Any] = {
        "node_name": "n1",
        "upstream": upstream,
        "service": "chat",
        "namespace": "llm",
        "listen": {"host": "127.0.0.1", "port": free_port()},
        "log_level": "info",
    }
    data.update(overrides)
    path = directory / "meter.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MeterThread:
    def __init__(self, config_path: Path) -> None:
        loaded = load_meter(config_path)
        self.app: MeterApp = build_app(loaded)
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="on",
                                server_header=False, date_header=False)  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def __enter__(self) -> MeterThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the meter did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self._sock.close()


class MeterProcess:
    """``with MeterProcess(cfg, log) as m:`` -- the CLI as a subprocess."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        self.args = [sys.executable, "-m", "gpuledger", "meter", "--config", str(config_path)]
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.config['listen']['port']}"

    def __enter__(self) -> MeterProcess:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(self.url + "/metrics", timeout=1).raise_for_status()
                return self
            except httpx.HTTPError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the meter did not start:\n{self.log()}") from None
                time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)


def meter_counters(base_url: str) -> dict[tuple[str, Labels], float]:
    """Every sample of the meter's /metrics: ``(sample name, labels) -> value``."""
    text = httpx.get(base_url + "/metrics", timeout=5).text
    out: dict[tuple[str, Labels], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def tenant_labels(tenant: str, model: str) -> Labels:
    return frozenset(
        {"cluster": "default", "node": "n1", "service": "chat", "namespace": "llm",
         "model_name": model, "tenant": tenant}.items()
    )  # fmt: skip


def uncounted_labels(reason: str) -> Labels:
    return frozenset(
        {
            "cluster": "default",
            "node": "n1",
            "service": "chat",
            "namespace": "llm",
            "reason": reason,
        }.items()
    )
