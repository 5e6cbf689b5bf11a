"""Adding a source is a package, schema entries and one registry line: nothing in agent/.

A throwaway source is registered for one test and goes through the real wiring (the
agent's config model, ``Agent``'s build, the runtime, the exporter, the ledger listener);
and the agent's modules are checked, by parsing them, never to name a registered source.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, ConfigDict, create_model

from gpuledger.agent.config import AgentConfig, ConfigError, source_fields
from gpuledger.agent.main import Agent
from gpuledger.collectors import registry
from gpuledger.collectors.base import Schedule
from gpuledger.collectors.source import (
    BuildContext,
    Built,
    LedgerSink,
    Readings,
    Source,
    SourceConfigError,
)
from gpuledger.collectors.textformat.render import FamiliesBuilder
from gpuledger.schema import Kind, MetricSpec

AGENT_DIR = Path(__file__).resolve().parents[2] / "gpuledger" / "agent"

SPARKLES = MetricSpec(
    name="gpuledger_sparkles",
    kind=Kind.GAUGE,
    unit="",
    help="Sparkles the throwaway source counted.",
    labels=("jar",),
    group="sparkles",
)


class SparkleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    jars: tuple[str, ...] = ("a",)
    broken: bool = False


@dataclass(frozen=True)
class SparkleReading:
    counts: dict[str, float]


class SparkleCollector:
    name = "sparkles"

    def __init__(self, jars: tuple[str, ...]) -> None:
        self.jars = jars

    def collect(self) -> SparkleReading:
        return SparkleReading({jar: float(len(jar)) for jar in self.jars})

    def close(self) -> None:
        pass


@dataclass
class SparkleLive:
    """What the ledger hook saw, and a live value the export reads."""

    fed: list[tuple[str, SparkleReading | None]]
    bonus: float = 0.5


def _build(cfg: SparkleConfig, ctx: BuildContext) -> Built[SparkleLive]:
    if not cfg.enabled:
        return Built()
    if cfg.broken:
        raise SourceConfigError("sparkles.broken", "cannot sparkle on this host")
    collector = SparkleCollector(cfg.jars)
    return Built(
        collectors=((collector, Schedule(ctx.default_interval_s, 1.0, SparkleReading)),),
        live=SparkleLive(fed=[]),
    )


def _export(f: FamiliesBuilder, snap: Readings, live: SparkleLive | None) -> None:
    reading = snap.reading("sparkles", SparkleReading)
    if reading is None:
        return
    bonus = live.bonus if live is not None else 0.0
    for jar, count in sorted(reading.counts.items()):
        f.add(SPARKLES, (jar,), count + bonus)


def _ledger(ledger: LedgerSink, snap: Readings, live: SparkleLive | None) -> None:
    assert live is not None
    live.fed.append((type(ledger).__name__, snap.reading("sparkles", SparkleReading)))


SPARKLE_SOURCE: Source[SparkleConfig, SparkleLive] = Source(
    name="sparkles",
    reading=SparkleReading,
    config_key="sparkles",
    config_model=SparkleConfig,
    build=_build,
    export=_export,
    ledger=_ledger,
)


def _config(tmp_path: Path, **sections: Any) -> AgentConfig:
    """The agent's config with the throwaway's section added as the registry adds every
    source's (a source registered after the config model was built, as in a test)."""
    model = create_model(
        "SparkleAgentConfig", __base__=AgentConfig, **source_fields([SPARKLE_SOURCE])
    )
    cfg = model(state_dir=tmp_path, nvml={"enabled": False}, **sections)
    assert isinstance(cfg, AgentConfig)
    return cfg


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_a_registered_source_is_configured_built_scheduled_exported_and_fed_to_the_ledger(
    tmp_path: Path,
) -> None:
    with registry.registered(SPARKLE_SOURCE):
        cfg = _config(tmp_path, sparkles={"enabled": True, "jars": ["ab", "xyz"]})
        agent = Agent(cfg)
        try:
            (runner,) = [r for r in agent.runtime.runners if r.name == "sparkles"]
            assert runner.run_once().up
            got = _samples(agent.runtime.store.rendered.body.decode())
        finally:
            agent.stop()
    node = cfg.node_name
    own = {("cluster", cfg.cluster), ("node", node)}
    assert got[("gpuledger_sparkles", frozenset({*own, ("jar", "ab")}))] == 2.5
    assert got[("gpuledger_sparkles", frozenset({*own, ("jar", "xyz")}))] == 3.5
    up = ("gpuledger_collector_up", frozenset({*own, ("collector", "sparkles")}))
    assert got[up] == 1.0
    live = agent.live["sparkles"]
    assert isinstance(live, SparkleLive)
    assert live.fed == [("Ledger", SparkleReading({"ab": 2.0, "xyz": 3.0}))]


def test_a_disabled_source_builds_nothing(tmp_path: Path) -> None:
    with registry.registered(SPARKLE_SOURCE):
        agent = Agent(_config(tmp_path))
        try:
            assert [r.name for r in agent.runtime.runners] == []
            assert "gpuledger_sparkles" not in agent.runtime.store.rendered.body.decode()
        finally:
            agent.stop()


def test_a_section_unusable_here_is_a_config_error_naming_its_key(tmp_path: Path) -> None:
    with registry.registered(SPARKLE_SOURCE):
        cfg = _config(
            tmp_path, sparkles={"enabled": True, "broken": True}, ledger={"enabled": False}
        )
        with pytest.raises(ConfigError) as caught:
            Agent(cfg)
    assert caught.value.problems == [("sparkles.broken", "cannot sparkle on this host")]


def test_registration_is_temporary_and_names_are_unique() -> None:
    before = registry.sources()
    with registry.registered(SPARKLE_SOURCE):
        assert registry.sources() == (*before, SPARKLE_SOURCE)
        with pytest.raises(ValueError, match="registered"):
            registry.register(SPARKLE_SOURCE)
    assert registry.sources() == before


def test_every_built_in_source_has_its_section_in_the_agent_config() -> None:
    for source in registry.sources():
        field = AgentConfig.model_fields[source.config_key]
        assert field.annotation is source.config_model, source.name
        assert AgentConfig().section(source) == source.config_model()


def _agent_modules() -> list[Path]:
    return sorted(AGENT_DIR.glob("*.py"))


def test_the_agent_never_names_a_registered_source() -> None:
    names = {s.name for s in registry.sources()} | {s.config_key for s in registry.sources()}
    found = [
        f"{path.name}:{node.lineno}: {node.value!r}"
        for path in _agent_modules()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and node.value in names
    ]
    assert not found, "agent/ dispatches on source names:\n" + "\n".join(found)


def test_the_agent_imports_no_source_implementation() -> None:
    """Only the registry, the source contract, the runtime contract, the text format and
    reading types: the agent imports no source's collector, config, export or source."""
    allowed_leaves = {"readings", "types"}
    allowed = {
        "gpuledger.collectors",
        "gpuledger.collectors.registry",
        "gpuledger.collectors.source",
        "gpuledger.collectors.base",
    }
    found = []
    for path in _agent_modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom | ast.Import):
                continue
            modules = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
            )
            for module in modules:
                if not module.startswith("gpuledger.collectors") or module in allowed:
                    continue
                if module.startswith("gpuledger.collectors.textformat."):
                    continue
                if module.rsplit(".", 1)[-1] in allowed_leaves:
                    continue
                found.append(f"{path.name}:{node.lineno}: {module}")
    assert not found, "agent/ imports a source's implementation:\n" + "\n".join(found)
