"""A line's cost center: static service rule > recorded label > namespace rule."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gpuledger.chargeback.costcenters.config import (
    UNASSIGNED,
    CostCentersConfig,
    clean_cost_center,
)
from gpuledger.chargeback.costcenters.resolve import CostCenterMap


def config(**kw: object) -> CostCentersConfig:
    return CostCentersConfig.model_validate(kw)


def test_precedence_service_rule_then_label_then_namespace_rule() -> None:
    cfg = config(
        static=[
            {"namespace": "llm-prod", "service": "chat", "cost_center": "finance-override"},
            {"namespace": "llm-prod", "cost_center": "platform"},
        ]
    )
    recorded = {("llm-prod", "chat"): "search", ("llm-prod", "embed"): "retrieval"}
    m = CostCenterMap(cfg, recorded)
    assert m.of("llm-prod", "chat") == "finance-override"
    assert m.of("llm-prod", "embed") == "retrieval"
    assert m.of("llm-prod", "rerank") == "platform"
    assert m.of("batch", "etl") == UNASSIGNED
    assert m.names() == {"finance-override", "platform", "search", "retrieval", UNASSIGNED}


def test_a_tenant_has_its_own_cost_center_or_its_services() -> None:
    cfg = config(
        static=[{"namespace": "llm-prod", "cost_center": "platform"}],
        tenants={"team-a": "research"},
    )
    m = CostCenterMap(cfg)
    assert m.of_tenant("team-a", "llm-prod", "chat") == "research"
    assert m.of_tenant("team-b", "llm-prod", "chat") == "platform"


@pytest.mark.parametrize(
    "value", ["", "   ", "a\nBcc: x@evil", "tab\there", "x" * 129, "__unassigned__"]
)
def test_hostile_or_reserved_names_are_refused(value: str) -> None:
    assert clean_cost_center(value) is None
    with pytest.raises(ValidationError, match="not a cost-center name"):
        config(static=[{"namespace": "ns", "cost_center": value or "\x00"}])


def test_a_namespace_assigned_twice_is_named() -> None:
    with pytest.raises(ValidationError, match=r"rows 0 and 1: llm-prod/chat is assigned twice"):
        config(
            static=[
                {"namespace": "llm-prod", "service": "chat", "cost_center": "a"},
                {"namespace": "llm-prod", "service": "chat", "cost_center": "b"},
            ]
        )
