"""The single-server install: ``deploy/systemd/gpuledger.service`` and its ``agent.yaml``.

The unit is parsed (configparser, ``strict=False``, no interpolation, repeated keys kept
as lists) and its structure checked: what it runs, restart and stop behaviour, the
sandboxing, and the exceptions NVML and process attribution need (GPU device nodes
reachable, other users' ``/proc/PID`` visible). Where ``systemd-analyze`` exists it also
verifies the unit and rates its exposure. The example config loads with the agent's own
loader, in the environment the unit gives it. Every check runs on broken copies too.
"""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

import pytest

from gpuledger.agent.config import ConfigError, load_config
from tests.support.paths import REPO_ROOT

ROOT = REPO_ROOT
UNIT = ROOT / "deploy" / "systemd" / "gpuledger.service"
AGENT_YAML = ROOT / "deploy" / "systemd" / "agent.yaml"
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
STATE_BASE = "/var/lib"  # %S for a system unit

# (key, the value it must have): the sandboxing that does not get in NVML's way.
REQUIRED = {
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "NoNewPrivileges": "yes",
    "PrivateTmp": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectControlGroups": "yes",
    "Restart": "on-failure",
    "StateDirectory": "gpuledger",
}
# (key, values that would break the agent on a GPU server, why)
FORBIDDEN = {
    "PrivateDevices": ({"yes", "true", "on", "1"}, "hides /dev/nvidia*: NVML cannot open a GPU"),
    "ProtectProc": ({"invisible", "noaccess"}, "hides other users' /proc/PID: no attribution"),
    "ProcSubset": ({"pid"}, "hides /proc/driver/nvidia and /proc/devices"),
}
FAMILIES = {"AF_INET", "AF_INET6", "AF_UNIX"}


# --- reading a unit ---------------------------------------------------------------------
class _MultiDict(dict[str, object]):
    """configparser's section storage, keeping every value of a repeated key."""

    def __setitem__(self, key: str, value: object) -> None:
        if isinstance(value, list) and key in self:
            existing = super().__getitem__(key)
            if isinstance(existing, list):
                existing.extend(value)
                return
        super().__setitem__(key, value)


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """``{section: {key: [values in order]}}``. An empty assignment resets a list setting
    (``DeviceAllow=`` drops the earlier ones), as systemd reads it; it stays as ``""``."""
    parser = configparser.ConfigParser(
        strict=False,
        interpolation=None,
        dict_type=_MultiDict,  # type: ignore[arg-type]
        empty_lines_in_values=False,
        comment_prefixes=("#", ";"),
        delimiters=("=",),
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    out: dict[str, dict[str, list[str]]] = {}
    for section in parser.sections():
        out[section] = {}
        for key in parser.options(section):
            values: list[str] = []
            for value in parser.get(section, key, raw=True).split("\n"):
                value = value.strip()
                # an empty value resets the list; it stays as "" while nothing follows
                values = [""] if value == "" else [*(v for v in values if v), value]
            out[section][key] = values
    return out


def _one(unit: Mapping[str, Mapping[str, list[str]]], key: str, section: str = "Service") -> str:
    values = unit.get(section, {}).get(key, [])
    return values[-1] if values else ""


def _seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s|sec|min|m)?", value.strip())
    if m is None:
        raise ValueError(f"not a time span: {value!r}")
    scale = {"ms": 0.001, "min": 60, "m": 60}.get(m.group(2) or "s", 1)
    return float(m.group(1)) * scale


def unit_environment(unit: Mapping[str, Mapping[str, list[str]]], creds: Path) -> dict[str, str]:
    """The unit's Environment=, with %d (the credentials directory) and %S expanded."""
    env: dict[str, str] = {}
    for line in unit.get("Service", {}).get("Environment", []):
        for word in shlex.split(line):
            key, _, value = word.partition("=")
            env[key] = value.replace("%d", str(creds)).replace("%S", STATE_BASE)
    return env


def unit_problems(text: str) -> list[str]:
    unit = parse_unit(text)
    service = unit.get("Service", {})
    problems: list[str] = []
    # what it runs
    starts = service.get("ExecStart", [])
    if len(starts) != 1:
        problems.append(f"ExecStart: exactly one command expected, got {starts}")
    else:
        argv = shlex.split(starts[0].lstrip("-@:+!"))
        program = PurePosixPath(argv[0]) if argv else PurePosixPath()
        if not program.is_absolute() or program.name not in SCRIPTS:
            problems.append(f"ExecStart: {argv[:1]} is not an absolute path to {list(SCRIPTS)}")
        if argv[1:2] != ["agent"]:
            problems.append(f"ExecStart: runs {argv[1:2]}, not `gpuledger agent`")
        if "--config" not in argv or not argv[-1].startswith("/etc/gpuledger/"):
            problems.append("ExecStart: no --config /etc/gpuledger/...")
    if _one(unit, "Type") not in ("exec", "simple", ""):
        problems.append(f"Type={_one(unit, 'Type')}: the agent does not fork or notify")
    stop = _one(unit, "TimeoutStopSec")
    if not stop or not 5 <= _seconds(stop) <= 10:
        problems.append(f"TimeoutStopSec={stop}: the agent exits within 5 s; want 5..10 s")
    # who it runs as
    user = _one(unit, "User")
    if _one(unit, "DynamicUser") != "yes" and (not user or user in ("root", "0")):
        problems.append("runs as root: set DynamicUser=yes or a dedicated User=")
    # the sandbox
    for key, want in REQUIRED.items():
        if _one(unit, key) != want:
            problems.append(f"{key}={_one(unit, key)}, want {want}")
    for key, (bad, why) in FORBIDDEN.items():
        if _one(unit, key).lower() in bad:
            problems.append(f"{key}={_one(unit, key)}: {why}")
    caps = service.get("CapabilityBoundingSet", [])
    if caps != [""]:
        problems.append(f"CapabilityBoundingSet={caps}: want it empty (no capability)")
    families = {f for line in service.get("RestrictAddressFamilies", []) for f in line.split()}
    if families != FAMILIES:
        problems.append(f"RestrictAddressFamilies={sorted(families)}, want {sorted(FAMILIES)}")
    problems += _device_problems(service)
    problems += _credential_problems(unit)
    if "multi-user.target" not in " ".join(unit.get("Install", {}).get("WantedBy", [])):
        problems.append("[Install] WantedBy=multi-user.target missing")
    return problems


def _device_problems(service: Mapping[str, list[str]]) -> list[str]:
    """With a device allow-list in force, NVML's nodes must be on it (the 195 group under
    both of its /proc/devices names, nvidiactl), and nothing NVML does not need."""
    allows = {}
    for line in service.get("DeviceAllow", []):
        spec, _, access = line.partition(" ")
        allows[spec] = access.strip() or "rwm"
    policy = service.get("DevicePolicy", ["auto"])[-1]
    if policy == "auto" and not allows:
        return []  # no device restriction at all
    problems = []
    for spec in ("char-nvidia-frontend", "char-nvidia"):  # before / since driver 545
        if "r" not in allows.get(spec, "") or "w" not in allows.get(spec, ""):
            problems.append(f"DeviceAllow={spec} rw missing: NVML opens /dev/nvidia0..N")
    if not any("rw" in allows.get(s, "") for s in ("char-nvidiactl", "/dev/nvidiactl")) and (
        "char-nvidia-frontend" not in allows
    ):
        problems.append("DeviceAllow: /dev/nvidiactl not allowed")
    for spec in allows:
        if "uvm" in spec or "modeset" in spec:
            problems.append(f"DeviceAllow={spec}: NVML does not need it")
    return problems


def _credential_problems(unit: Mapping[str, Mapping[str, list[str]]]) -> list[str]:
    """Each GPULEDGER_*_FILE=%d/NAME names a credential the unit loads."""
    service = unit.get("Service", {})
    loaded = {line.split(":", 1)[0] for line in service.get("LoadCredential", [])}
    problems = []
    env = unit_environment(unit, Path("/CREDS"))
    for key, value in env.items():
        if key.startswith("GPULEDGER_") and value.startswith("/CREDS/"):
            name = value.removeprefix("/CREDS/")
            if name not in loaded:
                problems.append(f"{key}={value}: no LoadCredential={name}:...")
    if "GPULEDGER_HTTP__API_TOKEN_FILE" not in env:
        problems.append("the API token is not passed (GPULEDGER_HTTP__API_TOKEN_FILE)")
    return problems


def config_problems(yaml_text: str, unit_text: str, tmp: Path) -> list[str]:
    """The example config, loaded as the unit would start it: the unit's environment
    (credential paths under a stand-in credentials directory)."""
    unit = parse_unit(unit_text)
    path = tmp / "agent.yaml"
    path.write_text(yaml_text, encoding="utf-8")
    creds = tmp / "credentials"
    env = unit_environment(unit, creds)
    try:
        cfg = load_config(path, environ=env)
    except ConfigError as exc:
        return [f"agent.yaml does not load: {exc}"]
    problems = []
    if not {"node", "reporter"} <= set(cfg.roles):
        problems.append(f"roles {list(cfg.roles)}: a single server is node and reporter")
    state = f"{STATE_BASE}/{_one(unit, 'StateDirectory')}"
    if str(cfg.state_dir) != state:
        problems.append(f"state_dir {cfg.state_dir} is not the unit's StateDirectory {state}")
    if cfg.listen.host not in ("127.0.0.1", "::1", "localhost") and not (
        cfg.http.metrics_require_token and cfg.http.api_token_file is not None
    ):
        problems.append(f"listen.host {cfg.listen.host} without a token on /metrics")
    if cfg.http.api_token_file is None or not str(cfg.http.api_token_file).startswith(str(creds)):
        problems.append("http.api_token_file is not the api-token credential")
    if (
        "GPULEDGER_LEDGER__URL_FILE" not in env
        and cfg.ledger_url() != f"sqlite:///{state}/ledger.db"
    ):
        problems.append(f"ledger {cfg.ledger_url()}: want SQLite in the state directory")
    return problems


# --- the unit ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def unit_text() -> str:
    return UNIT.read_text(encoding="utf-8")


def test_unit_parser_keeps_repeated_keys_and_resets() -> None:
    unit = parse_unit(
        "[Service]\n# c\nDeviceAllow=a rw\nDeviceAllow=b r\nCapabilityBoundingSet=\n"
        "SystemCallFilter=@x\nSystemCallFilter=\nSystemCallFilter=@y\nEnvironment=A=1 B=2\n"
    )
    assert unit["Service"]["DeviceAllow"] == ["a rw", "b r"]
    assert unit["Service"]["CapabilityBoundingSet"] == [""]
    assert unit["Service"]["SystemCallFilter"] == ["@y"]
    assert unit_environment(unit, Path("/c")) == {"A": "1", "B": "2"}


def test_unit_structure(unit_text: str) -> None:
    assert unit_problems(unit_text) == []


def test_unit_runs_the_agent_with_the_example_config(unit_text: str) -> None:
    """ExecStart's --config is where the unit's own install notes put agent.yaml."""
    (start,) = parse_unit(unit_text)["Service"]["ExecStart"]
    argv = shlex.split(start)
    assert argv[:2] == ["/opt/gpuledger/venv/bin/gpuledger", "agent"]
    config = argv[argv.index("--config") + 1]
    assert f"install -m 0644 deploy/systemd/agent.yaml {config}" in unit_text


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("NoNewPrivileges=yes\n", "", "NoNewPrivileges="),
        ("ProtectSystem=strict", "ProtectSystem=full", "ProtectSystem=full"),
        ("ProtectHome=yes", "ProtectHome=read-only", "ProtectHome="),
        ("PrivateTmp=yes\n", "PrivateTmp=yes\nPrivateDevices=yes\n", "PrivateDevices=yes"),
        ("PrivateTmp=yes\n", "PrivateTmp=yes\nProtectProc=invisible\n", "ProtectProc=invisible"),
        ("PrivateTmp=yes\n", "PrivateTmp=yes\nProcSubset=pid\n", "ProcSubset=pid"),
        ("ProtectControlGroups=yes\n", "", "ProtectControlGroups="),
        ("ProtectKernelTunables=yes\n", "", "ProtectKernelTunables="),
        ("CapabilityBoundingSet=\n", "CapabilityBoundingSet=CAP_SYS_ADMIN\n", "Capability"),
        ("AF_INET AF_INET6 AF_UNIX", "AF_INET AF_UNIX", "RestrictAddressFamilies"),
        ("AF_INET AF_INET6 AF_UNIX", "AF_INET AF_INET6 AF_UNIX AF_PACKET", "AF_PACKET"),
        ("gpuledger agent --config", "gpuledger report --config", "not `gpuledger agent`"),
        ("venv/bin/gpuledger agent", "venv/bin/gpuledgerd agent", "not an absolute path"),
        ("TimeoutStopSec=10", "TimeoutStopSec=90", "TimeoutStopSec=90"),
        ("Restart=on-failure", "Restart=no", "Restart=no"),
        ("DynamicUser=yes", "User=root", "runs as root"),
        ("StateDirectory=gpuledger\n", "", "StateDirectory="),
        ("DeviceAllow=char-nvidia rw\n", "", "char-nvidia rw missing"),
        ("DeviceAllow=char-nvidia-frontend rw\n", "", "char-nvidia-frontend rw missing"),
        ("DeviceAllow=char-nvidia rw\n", "DeviceAllow=char-nvidia r\n", "char-nvidia rw"),
        (
            "DeviceAllow=char-nvidia-caps r\n",
            "DeviceAllow=char-nvidia-caps r\nDeviceAllow=char-nvidia-uvm rw\n",
            "does not need",
        ),
        ("LoadCredential=api-token:", "LoadCredential=token:", "no LoadCredential=api-token"),
        ("Environment=GPULEDGER_HTTP__API_TOKEN_FILE=%d/api-token\n", "", "token is not passed"),
        ("WantedBy=multi-user.target", "WantedBy=default.target", "WantedBy"),
    ],
)
def test_unit_check_fails_on(unit_text: str, old: str, new: str, expected: str) -> None:
    assert old in unit_text
    problems = unit_problems(unit_text.replace(old, new, 1))
    assert any(expected in p for p in problems), problems


def test_device_policy_auto_without_allow_list_is_unrestricted() -> None:
    assert _device_problems({}) == []
    assert _device_problems({"DevicePolicy": ["closed"]}) != []


# --- systemd-analyze ----------------------------------------------------------------------
def _systemd_analyze() -> str | None:
    return shutil.which("systemd-analyze")


needs_systemd_analyze = pytest.mark.skipif(
    _systemd_analyze() is None, reason="systemd-analyze is not installed (Debian: systemd)"
)


def verify_problems(text: str, tmp: Path) -> list[str]:
    """``systemd-analyze verify`` on a copy whose ExecStart is an existing binary; its
    warnings (an unknown or misspelt key, a bad value) count as problems: systemd only
    logs them and starts the unit without the setting."""
    binary = Path(sys.executable).with_name("gpuledger")
    if not binary.is_file():
        binary = Path(shutil.which("true") or "/bin/true")
    copy = tmp / "gpuledger.service"
    copy.write_text(
        re.sub(r"^ExecStart=\S+", f"ExecStart={binary}", text, flags=re.M), encoding="utf-8"
    )
    analyze = _systemd_analyze()
    assert analyze is not None
    proc = subprocess.run(
        [analyze, "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    ours = [line for line in proc.stderr.splitlines() if copy.name in line or str(copy) in line]
    if proc.returncode != 0 and not ours:
        # nothing about this unit: the machine cannot run verify (no unit search path, ...)
        pytest.skip(f"systemd-analyze verify does not work here: {proc.stderr.strip()[:300]}")
    return ours


@needs_systemd_analyze
def test_systemd_analyze_verify(unit_text: str, tmp_path: Path) -> None:
    assert verify_problems(unit_text, tmp_path) == []


@needs_systemd_analyze
@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("ProtectSystem=strict", "ProtectSytem=strict"),  # a typo systemd would skip
        ("Type=exec", "Type=forky"),
        ("DevicePolicy=closed", "DevicePolicy=sometimes"),
    ],
)
def test_systemd_analyze_verify_catches(unit_text: str, tmp_path: Path, old: str, new: str) -> None:
    assert verify_problems(unit_text.replace(old, new), tmp_path) != []


def exposure(text: str, tmp: Path) -> float | None:
    """``systemd-analyze security --offline`` overall exposure (0 best .. 10 worst)."""
    copy = tmp / "gpuledger.service"
    copy.write_text(text, encoding="utf-8")
    analyze = _systemd_analyze()
    assert analyze is not None
    proc = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", proc.stdout)
    return float(m.group(1)) if m else None


@needs_systemd_analyze
def test_exposure_stays_low(unit_text: str, tmp_path: Path) -> None:
    level = exposure(unit_text, tmp_path)
    if level is None:
        pytest.skip("this systemd-analyze has no `security --offline` (systemd < 250)")
    assert level <= 3.0  # "OK"; what is left is PrivateNetwork, the devices and /proc
    hardening = re.compile(
        r"^(Protect|Private|Restrict|System|Capability|NoNew|Lock)\w*=.*\n", re.M
    )
    loose = exposure(hardening.sub("", unit_text), tmp_path)
    assert loose is not None
    assert loose > 6.0


# --- the example config -------------------------------------------------------------------
def test_example_config_loads_for_a_single_server(unit_text: str, tmp_path: Path) -> None:
    yaml_text = AGENT_YAML.read_text(encoding="utf-8")
    assert config_problems(yaml_text, unit_text, tmp_path) == []


def test_example_config_with_postgresql(unit_text: str, tmp_path: Path) -> None:
    """Uncommenting the unit's two ledger-url lines is all a switch to PostgreSQL takes:
    the config still loads (no ledger.url beside url_file) and the DSN comes from the
    credential."""
    pg_unit = unit_text.replace("#LoadCredential=ledger-url:", "LoadCredential=ledger-url:")
    pg_unit = pg_unit.replace(
        "#Environment=GPULEDGER_LEDGER__URL_FILE", "Environment=GPULEDGER_LEDGER__URL_FILE"
    )
    assert pg_unit != unit_text
    assert unit_problems(pg_unit) == []
    yaml_text = AGENT_YAML.read_text(encoding="utf-8")
    assert config_problems(yaml_text, pg_unit, tmp_path) == []
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "ledger-url").write_text("postgresql://gpuledger:pw@db/gpuledger\n", encoding="utf-8")
    path = tmp_path / "agent.yaml"
    cfg = load_config(path, environ=unit_environment(parse_unit(pg_unit), creds))
    assert cfg.ledger_url() == "postgresql://gpuledger:pw@db/gpuledger"
    # a ledger.url written into agent.yaml as well is refused, not silently preferred
    both = yaml_text.replace(
        "  flush_interval_seconds: 30", "  url: sqlite:////tmp/x.db\n  flush_interval_seconds: 30"
    )
    assert any("not both" in p for p in config_problems(both, pg_unit, tmp_path))


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("roles: [node, reporter]", "roles: [node]", "node and reporter"),
        ("state_dir: /var/lib/gpuledger", "state_dir: /srv/gpuledger", "StateDirectory"),
        ("  host: 127.0.0.1", "  host: 0.0.0.0", "without a token on /metrics"),
        ("  enabled: false\n  url: http://127.0.0.1:9400", "  enabeld: false\n  url: x", "load"),
    ],
)
def test_example_config_check_fails_on(
    unit_text: str, tmp_path: Path, old: str, new: str, expected: str
) -> None:
    yaml_text = AGENT_YAML.read_text(encoding="utf-8")
    assert old in yaml_text
    problems = config_problems(yaml_text.replace(old, new), unit_text, tmp_path)
    assert any(expected in p for p in problems), problems


# --- the Slurm drop-in (docs/slurm.md) ------------------------------------------------------
SLURM_DROP_IN = ROOT / "deploy" / "systemd" / "gpuledger.service.d" / "slurm.conf"


def test_slurm_drop_in_keeps_the_sandbox(unit_text: str) -> None:
    drop_in = SLURM_DROP_IN.read_text(encoding="utf-8")
    merged = parse_unit(unit_text + "\n" + drop_in)
    assert unit_problems(unit_text + "\n" + drop_in) == []
    assert "munge.service" in " ".join(merged["Unit"]["Wants"])
    assert "munge.service" in " ".join(merged["Unit"]["After"])
    # the PrivateData=jobs variant it documents: a fixed user, still not root
    fixed_user = re.sub(r"^#(DynamicUser|User|Group)=", r"\1=", drop_in, flags=re.M)
    assert _one(parse_unit(unit_text + "\n" + fixed_user), "User") == "gpuledger"
    assert unit_problems(unit_text + "\n" + fixed_user) == []


@needs_systemd_analyze
def test_systemd_analyze_verify_with_the_slurm_drop_in(unit_text: str, tmp_path: Path) -> None:
    drop_in = SLURM_DROP_IN.read_text(encoding="utf-8")
    assert verify_problems(unit_text + "\n" + drop_in, tmp_path) == []
