"""Pieces of the soak run (``tests/e2e/test_soak.py``): background samplers, fault injectors
and the arithmetic of the checks, each small enough to read on its own.

- :class:`Scraper` GETs the agent's ``/metrics`` every 0.5 s, parses every answer with
  prometheus_client and keeps the few series the checks need;
- :class:`RssSampler` reads the agent's ``VmRSS`` every second;
- :class:`DcgmCycler` switches a dcgm-exporter stand-in between a healthy page and its
  faults (garbage, HTTP 500, a hang past the agent's timeout);
- :class:`RecordingVllm` is the vLLM stand-in that remembers every ``/metrics`` page it
  served (the token counters the agent saw) and can restart with a downtime;
- :class:`VllmLoad` sends it streaming completions, so its counters move;
- :class:`Faketime` steps the wall clock of the agent process for real (libfaketime),
  leaving its monotonic clock alone.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support.harness import http_get
from tests.support.standins import Behaviour, StandIn
from tests.support.vllm_standin import VllmBehaviour, VllmStandIn

MIB = 1024 * 1024
Labels = frozenset[tuple[str, str]]


# --- /metrics, every half second ---------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Scrape:
    t0: float  # monotonic, request sent
    t1: float  # monotonic, answer read (or given up)
    status: int | None  # None: no HTTP answer at all
    error: str | None  # transport or parse error; None for a 200 that parsed
    values: Mapping[tuple[str, Labels], float]  # the kept series (``node`` label dropped)

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None

    def get(self, name: str, **labels: str) -> float | None:
        want = set(labels.items())
        hits = [v for (n, lab), v in self.values.items() if n == name and want <= lab]
        return hits[0] if len(hits) == 1 else None


def parse_exposition(text: str, keep: Iterable[str]) -> dict[tuple[str, Labels], float]:
    """Every sample parsed (a parse error raises); only those named in ``keep`` kept."""
    wanted = frozenset(keep)
    out: dict[tuple[str, Labels], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in wanted:
                labels = frozenset(
                    (k, v) for k, v in s.labels.items() if k not in ("cluster", "node")
                )
                out[(s.name, labels)] = float(s.value)
    return out


class _Periodic(threading.Thread):
    def __init__(self, period_s: float, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.period_s = period_s
        self._halt = threading.Event()

    def tick(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        due = time.monotonic()
        while not self._halt.wait(max(0.0, due - time.monotonic())):
            self.tick()
            due = max(due + self.period_s, time.monotonic())

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


class Scraper(_Periodic):
    def __init__(self, url: str, keep: Iterable[str], period_s: float = 0.5) -> None:
        super().__init__(period_s, "soak-scraper")
        self.url = url
        self.keep = tuple(keep)
        self.scrapes: list[Scrape] = []
        self.hooks: list[Callable[[Scrape], None]] = []  # called with each new scrape
        self._lock = threading.Lock()

    def tick(self) -> None:
        t0 = time.monotonic()
        status: int | None = None
        error: str | None = None
        values: dict[tuple[str, Labels], float] = {}
        try:
            status, body = http_get(self.url, timeout=5.0)
            if status == 200:
                values = parse_exposition(body.decode("utf-8"), self.keep)
            else:
                error = f"HTTP {status}"
        except Exception as exc:  # a refused connection, a reset, a timeout, a bad page
            error = f"{type(exc).__name__}: {exc}"
        scrape = Scrape(t0, time.monotonic(), status, error, values)
        with self._lock:
            self.scrapes.append(scrape)
        for hook in self.hooks:
            hook(scrape)

    def snapshot(self) -> list[Scrape]:
        with self._lock:
            return list(self.scrapes)

    def latest(self) -> Scrape | None:
        with self._lock:
            return next((s for s in reversed(self.scrapes) if s.ok), None)

    def wait_for(
        self, predicate: Callable[[Scrape], bool], timeout: float, after: float = 0.0
    ) -> Scrape | None:
        """The first good scrape sent after ``after`` (monotonic) that satisfies it."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            scrapes = self.snapshot()
            for s in scrapes[seen:]:
                if s.ok and s.t0 >= after and predicate(s):
                    return s
            seen = len(scrapes)
            time.sleep(0.1)
        return None


# --- RSS, every second -------------------------------------------------------------------
def rss_kib(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


class RssSampler(_Periodic):
    def __init__(self, pid: Callable[[], int | None], period_s: float = 1.0) -> None:
        super().__init__(period_s, "soak-rss")
        self._pid = pid
        self.samples: list[tuple[float, int, int]] = []  # (monotonic, pid, KiB)

    def tick(self) -> None:
        pid = self._pid()
        if pid is None:
            return
        kib = rss_kib(pid)
        if kib is not None:
            self.samples.append((time.monotonic(), pid, kib))


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) in value per minute."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    sxx = sum((t - mx) ** 2 for t, _ in points)
    sxy = sum((t - mx) * (v - my) for t, v in points)
    return 60.0 * sxy / sxx if sxx > 0 else 0.0


# --- dcgm-exporter: healthy, garbage, 500, hang ------------------------------------------
_GARBAGE: tuple[tuple[str, Callable[[bytes], Behaviour]], ...] = (
    ("garbage: binary", lambda page: Behaviour(body=bytes(range(256)) * 64)),
    ("garbage: HTML with 200", lambda page: Behaviour(body=b"<html><body>502 Bad gateway")),
    ("garbage: truncated page", lambda page: Behaviour(body=page[: len(page) // 2 + 17])),
)


class DcgmCycler(_Periodic):
    """healthy -> garbage -> healthy -> HTTP 500 -> healthy -> hang -> ..., one step per
    period; the garbage changes kind every round. ``drop_gpu(uuid)`` removes a GPU from
    the healthy page (dcgm-exporter stops seeing a GPU that fell off the bus too).

    While ``hold`` is set (an agent starting), the healthy page is replaced by HTTP 500:
    the agent must have NVML's first reading before it gets DCGM's, else its first
    interval would be billed from DCGM alone -- the fixture's workload labels, not the
    simulated node's pods (by design in the agent; wrong for this test's ground truth)."""

    def __init__(self, standin: StandIn, page: bytes, period_s: float, hang_s: float) -> None:
        super().__init__(period_s, "soak-dcgm")
        self.standin = standin
        self.page = page
        self.hang_s = hang_s
        self.steps: list[tuple[float, str]] = []  # (monotonic, mode)
        self._n = 0
        self._hold = False
        self._mode = "healthy"
        self._step_lock = threading.Lock()
        standin.behaviour = Behaviour(body=page)

    @property
    def hold(self) -> bool:
        return self._hold

    @hold.setter
    def hold(self, value: bool) -> None:
        with self._step_lock:
            self._hold = value
            if self._mode == "healthy":
                self._serve("healthy")

    def drop_gpu(self, uuid: str) -> None:
        with self._step_lock:
            lines = self.page.decode().splitlines(keepends=True)
            self.page = "".join(line for line in lines if uuid not in line).encode()
            if self._mode == "healthy":
                self._serve("healthy")

    def _serve(self, mode: str) -> None:
        if mode == "healthy" and self._hold:
            behaviour = Behaviour(body=b"not ready", status=500)
        elif mode == "healthy":
            behaviour = Behaviour(body=self.page)
        elif mode == "HTTP 500":
            behaviour = Behaviour(body=b"oops", status=500)
        elif mode == "hang":
            behaviour = Behaviour(body=self.page, delay_s=self.hang_s)
        else:
            behaviour = dict(_GARBAGE)[mode](self.page)
        self._mode = mode
        self.standin.behaviour = behaviour

    def tick(self) -> None:
        n, self._n = self._n, self._n + 1
        if n % 2 == 0:
            mode = "healthy"
        else:
            k = (n // 2) % 3
            if k == 0:
                mode = _GARBAGE[(n // 6) % len(_GARBAGE)][0]
            else:
                mode = "HTTP 500" if k == 1 else "hang"
        with self._step_lock:
            self._serve(mode)
        self.steps.append((time.monotonic(), mode))


def dcgm_page_for(uuids: list[str], fixture: Path) -> bytes:
    """The dcgm-exporter fixture with its GPU UUIDs replaced by ``uuids`` (in order)."""
    text = fixture.read_text(encoding="utf-8")
    found = list(dict.fromkeys(re.findall(r'UUID="(GPU-[0-9a-f-]+)"', text)))
    if len(found) != len(uuids):
        raise ValueError(f"fixture has {len(found)} GPUs, the node {len(uuids)}")
    for old, new in zip(found, uuids, strict=True):
        text = text.replace(old, new)
    return text.encode()


# --- vLLM: a stand-in that remembers what it served, and traffic for it ------------------
_COUNTER_RE = re.compile(
    r"^vllm:(prompt_tokens_total|generation_tokens_total|generation_tokens_created)"
    r"\{[^}]*\} (\S+)$",
    re.M,
)


@dataclass(frozen=True, slots=True)
class Render:
    t: float  # monotonic
    epoch: float  # the engine's start time (its _created value): one per engine life
    prompt: float
    generation: float


class RecordingVllm(VllmStandIn):
    """Every ``/metrics`` page served is recorded (its token counters and the engine's
    start time); :meth:`restart_engine` takes the engine down for a while (``/metrics``
    resets the connection, completions get 503), then starts it with zeroed counters."""

    def __init__(self, behaviour: VllmBehaviour | None = None) -> None:
        super().__init__(behaviour)
        self.renders: list[Render] = []
        self.down = False
        self.restarts: list[dict[str, float]] = []

    def render_metrics(self) -> str:
        if self.down:
            raise ConnectionResetError("engine restarting")  # no answer at all
        text = super().render_metrics()
        got = {m.group(1): float(m.group(2)) for m in _COUNTER_RE.finditer(text)}
        self.renders.append(
            Render(
                time.monotonic(),
                got["generation_tokens_created"],
                got["prompt_tokens_total"],
                got["generation_tokens_total"],
            )
        )
        return text

    def restart_engine(self, down_s: float) -> None:
        self.down = True
        self.behaviour.status = 503
        time.sleep(down_s)  # requests in flight finish on the old engine
        before = self.series()
        last = self.renders[-1] if self.renders else None
        self.restart()
        self.behaviour.status = 200
        self.down = False
        self.restarts.append(
            {
                "t": time.monotonic(),
                "final_generation": float(before.generation_tokens or 0.0),
                "final_prompt": float(before.prompt_tokens or 0.0),
                "last_seen_generation": last.generation if last else 0.0,
                "last_seen_prompt": last.prompt if last else 0.0,
            }
        )

    def expected_tokens(self) -> tuple[float, float]:
        """(prompt, generation) tokens a correct ledger holds: for each engine life, the
        last value the agent read, less the first value it ever read (the baseline).
        Tokens served after the last read of a life are lost with it, by design."""
        if not self.renders:
            return 0.0, 0.0
        last: dict[float, Render] = {}
        for r in self.renders:
            last[r.epoch] = r
        first = self.renders[0]
        return (
            sum(r.prompt for r in last.values()) - first.prompt,
            sum(r.generation for r in last.values()) - first.generation,
        )


class VllmLoad(_Periodic):
    def __init__(self, url: str, model: str, period_s: float = 0.15, max_tokens: int = 8) -> None:
        super().__init__(period_s, "soak-vllm-load")
        self.url = url + "/v1/completions"
        self.body = json.dumps(
            {"model": model, "prompt": "soak test prompt", "max_tokens": max_tokens,
             "stream": True}
        ).encode()  # fmt: skip
        self.ok = 0
        self.failed = 0

    def tick(self) -> None:
        req = urllib.request.Request(
            self.url, data=self.body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                resp.read()
            self.ok += 1
        except Exception:  # 503 while the engine restarts
            self.failed += 1


# --- the wall clock of the agent process -------------------------------------------------
LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")

# libfaketime 0.9.10 (Debian 12) mistranslates clock_nanosleep(CLOCK_MONOTONIC,
# TIMER_ABSTIME) when FAKETIME_DONT_FAKE_MONOTONIC=1 and the kernel answers EINVAL
# (wolfcw/libfaketime#426); Python >= 3.11's time.sleep is exactly that call. Where the
# self-check finds it broken, the agent gets this sitecustomize: time.sleep waits on a lock
# (sem_clockwait, which libfaketime does not intercept) -- same semantics, no faked clock.
_SLEEP_SHIM = '''"""From tests/support/soak_tools.py: a time.sleep that libfaketime cannot break."""
import threading
import time


def _sleep(seconds):
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    threading.Event().wait(seconds)


time.sleep = _sleep
'''

_PROBE = """
import json, time
w, m = time.time(), time.monotonic()
try:
    time.sleep(0.01)
    sleep_ok = True
except OSError:
    sleep_ok = False
print(json.dumps({"wall": w, "mono": m, "sleep_ok": sleep_ok}))
"""


@dataclass
class Faketime:
    """Writes the agent's wall-clock offset (seconds) to a file libfaketime re-reads on
    every call; the monotonic clock is not faked, so only the wall clock jumps."""

    dir: Path
    offsets: list[tuple[float, float, float]] = field(default_factory=list)  # mono, wall, off
    shim: bool = False

    @property
    def file(self) -> Path:
        return self.dir / "faketime-offset"

    def set(self, offset_s: float) -> None:
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(f"{offset_s:+.0f}\n", encoding="ascii")
        tmp.replace(self.file)  # atomic: the agent never reads half a line
        self.offsets.append((time.monotonic(), time.time(), offset_s))

    def offset_at(self, mono: float) -> float:
        current = 0.0
        for t, _, off in self.offsets:
            if t <= mono:
                current = off
        return current

    def env(self) -> dict[str, str]:
        env = {
            "LD_PRELOAD": str(LIBFAKETIME),
            "FAKETIME_TIMESTAMP_FILE": str(self.file),
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "NO_FAKE_STAT": "1",  # file times stay real (pyc checks, SQLite)
        }
        if self.shim:
            shim_dir = self.dir / "faketime-shim"
            shim_dir.mkdir(exist_ok=True)
            (shim_dir / "sitecustomize.py").write_text(_SLEEP_SHIM, encoding="utf-8")
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(shim_dir), os.environ.get("PYTHONPATH", "")) if p
            )
        return env

    def self_check(self) -> str | None:
        """Runs a tiny Python under libfaketime at +3600 s. Returns why it cannot step the
        wall clock, or None (and decides whether the sleep shim is needed)."""
        if not LIBFAKETIME.exists():
            return f"{LIBFAKETIME} is missing (Debian package faketime)"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.file.write_text("+3600\n", encoding="ascii")
        try:
            for shim in (False, True):
                self.shim = shim
                env = {**os.environ, **self.env()}
                wall, mono = time.time(), time.monotonic()
                out = subprocess.run(
                    [sys.executable, "-c", _PROBE],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=True,
                ).stdout
                got: dict[str, Any] = json.loads(out)
                if abs(got["wall"] - wall - 3600) > 30:
                    return f"the wall clock did not move by +3600 s ({got['wall'] - wall:+.1f} s)"
                if abs(got["mono"] - mono) > 30:
                    return f"the monotonic clock moved too ({got['mono'] - mono:+.1f} s)"
                if got["sleep_ok"]:
                    return None
        except (subprocess.SubprocessError, ValueError) as exc:
            return f"python under libfaketime failed: {exc!r}"
        finally:
            self.file.write_text("+0\n", encoding="ascii")
        return "time.sleep fails under libfaketime, even with the sleep shim"
