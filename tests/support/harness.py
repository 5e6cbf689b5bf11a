"""Real processes for end-to-end tests: the agent, and Debian's Prometheus server.

Both bind 127.0.0.1 on a free port, live in a temporary directory and are stopped by
the context manager (SIGTERM, then SIGKILL), so a failing test leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.support.standins import wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(
    url: str, timeout: float = 5.0, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class AgentProcess:
    """``gpuledger agent`` as a subprocess with a config written from a dict."""

    def __init__(
        self, workdir: Path, config: dict[str, Any], *, env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        config = {
            "state_dir": str(workdir / "state"),  # never the host's /var/lib/gpuledger
            **config,
            "listen": {"host": "127.0.0.1", "port": self.port},
        }
        self.config_path = workdir / "agent.yaml"
        self.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.log_path = workdir / "agent.log"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(
        self, ready: Callable[[AgentProcess], bool] | None = None, timeout: float = 20.0
    ) -> AgentProcess:
        """Start the agent and wait until ``ready(self)`` (default: plain-HTTP ``/healthz``
        answers 200; a TLS agent passes its own check). ``OSError`` (``ssl.SSLError``
        included) from ``ready`` means not yet."""
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gpuledger", "agent", "--config", str(self.config_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )

        def healthy() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited {self.proc.returncode}: {self.log()}")
            try:
                if ready is not None:
                    return ready(self)
                return http_get(self.url + "/healthz", timeout=1)[0] == 200
            except OSError:
                return False

        wait_until(healthy, timeout=timeout)
        return self

    def metrics(self) -> str:
        status, body = http_get(self.url + "/metrics")
        assert status == 200, status
        return body.decode()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> float:
        """Send ``sig`` and return how long the process took to exit."""
        assert self.proc is not None
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return time.monotonic() - t0

    def __enter__(self) -> AgentProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


class PrometheusServer:
    """Debian's prometheus on 127.0.0.1 with a temporary TSDB, scraping given targets."""

    def __init__(
        self,
        workdir: Path,
        targets: list[str],
        scrape_interval: str = "1s",
        rule_files: list[Path] | None = None,
    ) -> None:
        binary = prometheus_binary()
        if binary is None:
            raise RuntimeError("prometheus is not installed (make test installs Debian's package)")
        self.binary = binary
        self.port = free_port()
        self.dir = workdir / "prometheus"
        self.dir.mkdir()
        cfg = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "scrape_configs": [
                {"job_name": "gpuledger", "static_configs": [{"targets": targets}]},
            ],
        }
        if rule_files:
            cfg["rule_files"] = [str(p) for p in rule_files]
        self.config_path = self.dir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> PrometheusServer:
        self._log = (self.dir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

        def ready() -> bool:
            try:
                return http_get(self.url + "/-/ready", timeout=1)[0] == 200
            except OSError:
                return False

        wait_until(ready, timeout=30)
        return self

    def query(self, expr: str) -> list[dict[str, Any]]:
        q = urllib.parse.urlencode({"query": expr})
        status, body = http_get(f"{self.url}/api/v1/query?{q}")
        doc = json.loads(body)
        assert status == 200, doc
        assert doc["status"] == "success", doc
        return list(doc["data"]["result"])

    def rules_health(self) -> list[dict[str, Any]]:
        _, body = http_get(self.url + "/api/v1/rules")
        return [r for g in json.loads(body)["data"]["groups"] for r in g["rules"]]

    def targets_up(self) -> bool:
        _, body = http_get(self.url + "/api/v1/targets")
        active = json.loads(body)["data"]["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
