"""The alerts on tenants of shared endpoints (issue 14), through ``promtool test rules``
with values computed here by hand: the untenanted share of a service's tokens (above the
threshold fires, at it does not), a gateway whose page cannot be read, tenants folded
into ``__other__``.

Per second, over the whole input (counters grow linearly, so every rate is exact):

=========  ===========================  ======================  ==========
service    untenanted prompt + gen      named tenant p + g      share
=========  ===========================  ======================  ==========
chat       2.5 + 1.5 = 4                10 + 2 = 12             4/16 = 0.25
edge       3 + 1 = 4                    12 + 4 = 16             4/20 = 0.2
calm       0.5 + 0.5 = 1                6 + 3 = 9               1/10 = 0.1
solo       (none)                       5 + 5 = 10              no value
=========  ===========================  ======================  ==========
"""

from __future__ import annotations

from pathlib import Path

from gpuledger import schema
from gpuledger.alerts import rules
from gpuledger.alerts.config import AlertsConfig
from tests.support.promtool_rules import Case, needs_promtool, run_promtool_tests, sel

UNTENANTED = schema.TENANT_UNTENANTED
# (service, tenant): (prompt, generation) tokens per second
TRAFFIC = {
    ("chat", UNTENANTED): (2.5, 1.5),
    ("chat", "search"): (10, 2),
    ("edge", UNTENANTED): (3, 1),
    ("edge", "ads"): (12, 4),
    ("calm", UNTENANTED): (0.5, 0.5),
    ("calm", "search"): (6, 3),
    ("solo", "ads"): (5, 5),
}


def _service(name: str) -> dict[str, str]:
    return {"service": name, "namespace": "llm-prod"}


def _traffic(case: Case, minutes: int = 120) -> Case:
    for (service, tenant), per_second in TRAFFIC.items():
        labels = {"node": "n1", **_service(service), "model_name": "llama", "tenant": tenant}
        for spec, rate in zip(
            (schema.TENANT_PROMPT_TOKENS, schema.TENANT_GENERATION_TOKENS), per_second, strict=True
        ):
            case.series(spec.name, f"0+{rate * 60:g}x{minutes}", **labels)
    return case


def test_the_tenant_alerts_are_last_in_the_rule_file() -> None:
    names = [r["alert"] for r in rules.alert_rules(AlertsConfig())]
    assert names[-3:] == list(rules.TENANT_ALERT_NAMES)
    assert set(rules.TENANT_ALERT_NAMES) <= set(rules.ALERT_NAMES)


def test_the_untenanted_threshold_window_and_duration_come_from_the_config() -> None:
    cfg = AlertsConfig(
        untenanted_traffic_ratio=0.35, untenanted_traffic_window="1h", untenanted_traffic_for="2h"
    )
    rule = next(r for r in rules.alert_rules(cfg) if r["alert"] == rules.TENANT_ALERT_NAMES[0])
    assert rule["expr"].endswith(" > 0.35")
    assert rule["expr"].count("[1h]") == 4
    assert f'tenant="{UNTENANTED}"' in rule["expr"]
    assert rule["for"] == "2h"
    assert "35%" in rule["annotations"]["description"]
    defaults = AlertsConfig()
    assert defaults.untenanted_traffic_ratio == 0.2
    assert defaults.untenanted_traffic_for == "30m"


@needs_promtool
def test_promtool_tenant_alerts(tmp_path: Path) -> None:
    cfg = AlertsConfig()
    cases = []

    # Untenanted share > 20 % over 30 m, for 30 m. The expression holds from minute 1 (the
    # first with two samples), so the alert is pending until minute 31. chat (25 %) fires;
    # edge at exactly 20 % does not (above, not at); calm (10 %) and solo (no untenanted
    # traffic) do not.
    c = _traffic(Case(cfg))
    alert = "GpuledgerUntenantedTrafficHigh"
    c.expect("30m", alert, [])
    c.expect("32m", alert, [(_service("chat"), 0.25)])
    c.expect("100m", alert, [(_service("chat"), 0.25)])
    share = rules.untenanted_share_expr("30m")
    c.expr(
        "60m",
        share,
        [
            (sel("", **_service("chat")), 0.25),
            (sel("", **_service("edge")), 0.2),
            (sel("", **_service("calm")), 0.1),
        ],
    )
    cases.append(c)

    # A gateway down for 10 m fires; one down for 5 m, then back, does not.
    c = Case(cfg)
    up = schema.TENANT_GATEWAY_UP.name
    c.series(up, "0x30", node="n1", endpoint="http://litellm:4000/metrics")
    c.series(up, "1x30", node="n1", endpoint="http://envoy:1064/metrics")
    c.series(up, "0x5 1x25", node="n2", endpoint="http://meter:8000/metrics")
    c.expect("9m", "GpuledgerTenantGatewayDown", [])
    c.expect(
        "11m",
        "GpuledgerTenantGatewayDown",
        [({"node": "n1", "endpoint": "http://litellm:4000/metrics"}, 0)],
    )
    cases.append(c)

    # Tenants folded into __other__ for 15 m: chat's 3 fire, solo's 0 does not.
    c = Case(cfg)
    overflow = schema.TENANT_OVERFLOW.name
    c.series(overflow, "3x30", node="n1", **_service("chat"))
    c.series(overflow, "0x30", node="n1", **_service("solo"))
    c.expect("14m", "GpuledgerTenantOverflow", [])
    c.expect("16m", "GpuledgerTenantOverflow", [({"node": "n1", **_service("chat")}, 3)])
    cases.append(c)

    covered = {t["alertname"] for c in cases for t in c.doc["alert_rule_test"]}
    assert covered == set(rules.TENANT_ALERT_NAMES)
    run_promtool_tests(tmp_path, cfg, cases)


@needs_promtool
def test_promtool_a_lower_threshold_catches_more(tmp_path: Path) -> None:
    # at 10 %: chat and edge fire, calm (exactly 10 %) does not
    cfg = AlertsConfig(untenanted_traffic_ratio=0.1, untenanted_traffic_for="5m")
    c = _traffic(Case(cfg), minutes=60)
    c.expect(
        "40m",
        "GpuledgerUntenantedTrafficHigh",
        [(_service("chat"), 0.25), (_service("edge"), 0.2)],
    )
    run_promtool_tests(tmp_path, cfg, [c])
