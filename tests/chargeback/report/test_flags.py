"""Each figure of a service line flagged by what it rests on (issue 16, item 6).

The token-API counterfactual and the latency figures by the probes' verdicts, the
GPU-rental counterfactual by the coverage of its GPUs' hours; ``not
applicable`` where the line has no such figure. Expected values are worked out here from
the rows each test writes (and the hand-computed month of
``tests/support/report_fixtures.py``), on SQLite and on a real PostgreSQL.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import pytest

from gpuledger.chargeback.attribution.claims import IDLE, UNATTRIBUTED
from gpuledger.chargeback.ledger.model import CoverageGroup, UsageGroup
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.chargeback.ledger.tables import CoverageRow, ProbeRecord, TokenRow, UsageRow
from gpuledger.chargeback.report.build import ReportOptions, build_report
from gpuledger.chargeback.report.console import flag_summary
from gpuledger.chargeback.report.flags import gpu_coverage, rental_coverage
from gpuledger.chargeback.report.model import Month, Report, ServiceLine
from gpuledger.chargeback.report.ratecard import load_rate_card
from gpuledger.chargeback.report.writers.csv_json import lines_csv, report_json
from gpuledger.chargeback.report.writers.focus import focus_csv
from gpuledger.chargeback.report.writers.html import render_html
from tests.support import report_fixtures as fx
from tests.support.html_dom import parse

OCTOBER = Month.parse("2026-10")
H100 = fx.H100
LLAMA = fx.CHAT_MODEL  # priced on the default card (class llama-3.1-70b)
T0 = fx.OCT


def _line(report: Report, service: str) -> ServiceLine:
    return next(line for line in report.lines if line.service == service)


def _build(store: AuditableLedgerStore, **opts: float) -> Report:
    return build_report(store, load_rate_card(), OCTOBER, options=ReportOptions(**opts), now=fx.NOW)


# -- the hand-computed month ----------------------------------------------------------------


def test_fixture_month_flags(ledger_store: AuditableLedgerStore) -> None:
    fx.fill(ledger_store)
    r = _build(ledger_store)
    chat = _line(r, "chat")
    # tokens priced (Llama 70B), 990/1000 probes ok, all 990 verdicts agree
    assert (chat.token_api_flag, chat.latency_flag, chat.rental_flag) == (
        "validated", "validated", "validated",
    )  # fmt: skip
    assert chat.token_api_flag_reason == (
        "99.0% of 1,000 probes succeeded; the engine's own metrics agreed with 100.0% of "
        "990 checked"
    )
    # chat holds GPU-h1 and GPU-h2 every hour, both observed 3600 s every hour
    assert chat.rental_coverage_ratio == pytest.approx(1.0)
    assert not chat.counterfactual_flagged

    embed = _line(r, "embed")
    # BAAI/bge-m3 has no API class: no token figure; 80 of 100 probes ok < 95 %
    assert embed.token_api_flag == "not applicable"
    assert "BAAI/bge-m3" in embed.token_api_flag_reason
    assert embed.latency_flag == "unvalidated"
    assert embed.latency_flag_reason == ("only 80.0% of 100 probes succeeded (at least 95% needed)")
    # its A100 ran hours 0-99 only, and was observed in each; GPU-h2 all 744 hours
    assert embed.rental_flag == "validated"
    assert embed.rental_coverage_ratio == pytest.approx(1.0)
    assert not embed.counterfactual_flagged

    train = _line(r, "train")  # B200: no rental rate; no tokens; no probes
    assert (train.token_api_flag, train.latency_flag, train.rental_flag) == (
        "not applicable", "not applicable", "not applicable",
    )  # fmt: skip
    assert "no billable tokens" in train.token_api_flag_reason
    assert "NVIDIA B200" in train.rental_flag_reason
    assert not train.counterfactual_flagged

    unattributed = _line(r, UNATTRIBUTED)  # on an H100: a rental figure, fully observed
    assert unattributed.rental_flag == "validated"
    assert unattributed.latency_flag == "not applicable"

    idle = _line(r, IDLE)
    assert (idle.token_api_flag, idle.latency_flag, idle.rental_flag) == (
        "not applicable", "not applicable", "not applicable",
    )  # fmt: skip
    assert idle.rental_coverage_ratio is None
    assert not any("counterfactuals" in n.lower() and "⚑" in n for n in r.notes)


# -- coverage of the hours ------------------------------------------------------------------


def _gappy(store: AuditableLedgerStore) -> None:
    """``ml/batch`` on GPU-g1 of node ``n9`` over hours 0-9: the agent did not observe
    GPU-g1 in hours 3 and 4 (no rows for it), and only 1800 s of hour 6; ``ml/steady`` on
    GPU-g2 of the same node, hours 0-9, every hour whole. By hand: batch's span is 10
    hours, observed shares 1,1,1,0,0,1,0.5,1,1,1 → 7.5 / 10 = 0.75; steady's 10 / 10."""
    for h in range(10):
        hs = T0 + 3600 * h
        usage = [UsageRow(hs, "n9", "GPU-g2", "ml", "steady", H100, "", 3600.0, 100.0, 1e5)]
        coverage = [CoverageRow(hs, "n9", "GPU-g2", H100, 3600.0)]
        if h not in (3, 4):
            seen = 1800.0 if h == 6 else 3600.0
            usage.append(UsageRow(hs, "n9", "GPU-g1", "ml", "batch", H100, "", seen, seen / 2, 1e5))
            coverage.append(CoverageRow(hs, "n9", "GPU-g1", H100, seen))
        store.upsert(usage, coverage)


def test_rental_flag_by_coverage_of_the_hours(ledger_store: AuditableLedgerStore) -> None:
    _gappy(ledger_store)
    r = _build(ledger_store)
    batch, steady = _line(r, "batch"), _line(r, "steady")
    assert batch.rental_coverage_ratio == pytest.approx(0.75)
    assert batch.rental_flag == "unvalidated"
    assert batch.rental_flag_reason == (
        "the ledger observed 75.00% of the hours of the GPUs the service ran on "
        "(weighted by its GPU-hours on each) (at least 99% needed)"
    )
    assert batch.counterfactual_flagged  # a counterfactual (rental) is unvalidated
    assert steady.rental_coverage_ratio == pytest.approx(1.0)
    assert steady.rental_flag == "validated"
    assert not steady.counterfactual_flagged
    assert any(n.startswith("GPU-rental counterfactuals of 1 service(s)") and "ml/batch" in n
               for n in r.notes)  # fmt: skip
    # the threshold is an option: at 0.75 the same coverage passes
    assert _line(_build(ledger_store, min_rental_coverage_ratio=0.75), "batch").rental_flag == (
        "validated"
    )


def _iso(hour: int) -> str:
    return datetime.fromtimestamp(T0 + 3600 * hour, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_rental_coverage_weights_each_gpus_share_by_the_services_seconds() -> None:
    """G1 seen from hour 0 to hour 3 (4 h) for 3600 + 2400 + 0 + 3600 s: 9600 / 14400 = 2/3
    (an hour missing, another two-thirds seen); G2 seen hour 0 only, whole: 1. The service
    has 3600 s on each, so its coverage is (3600 × 2/3 + 3600 × 1) / 7200 = 5/6; a service
    only on G2 has 1; a row of 0 s adds no weight."""
    gpus = [
        CoverageGroup("n1", "G1", H100, 9600.0, 3, _iso(0), _iso(3)),
        CoverageGroup("n2", "G2", H100, 3600.0, 1, _iso(0), _iso(0)),
    ]
    service_gpus = [
        UsageGroup(3600.0, 0.0, 0.0, 1.0, "n1", "G1", None, "a", "svc"),
        UsageGroup(3600.0, 0.0, 0.0, 1.0, "n2", "G2", None, "a", "svc"),
        UsageGroup(1800.0, 0.0, 0.0, 0.5, "n2", "G2", None, "b", "other"),
        UsageGroup(0.0, 0.0, 0.0, 0.0, "n1", "G1", None, "b", "other"),
    ]
    assert rental_coverage(service_gpus, gpus) == {
        ("a", "svc"): pytest.approx(5 / 6),
        ("b", "other"): pytest.approx(1.0),
    }
    assert gpu_coverage(gpus[0]) == pytest.approx(2 / 3)


# -- token and latency flags by probe verdicts -----------------------------------------------


def _llm(store: AuditableLedgerStore, service: str, *, probes: int, ok: int) -> None:
    """``svc/<service>`` on its own H100 for 5 whole hours, serving Llama 70B tokens, with
    ``probes`` probes of which the first ``ok`` succeed and agree with the engine."""
    gpu = f"GPU-{service}"
    for h in range(5):
        hs = T0 + 3600 * h
        store.upsert(
            [UsageRow(hs, "n5", gpu, "svc", service, H100, "", 3600.0, 1800.0, 1e5)],
            [CoverageRow(hs, "n5", gpu, H100, 3600.0)],
        )
    store.upsert_tokens([TokenRow(T0, "n5", "svc", service, LLAMA, 1e6, 2e5, 0.0, 0.0)])
    store.upsert_probes(
        [
            ProbeRecord(
                T0 + 60.0 * i, "n5", f"http://{service}:8000", "svc", service, LLAMA,
                i < ok, None if i < ok else "timeout",
                ttft_s=0.05 if i < ok else None,
                tokens_counted=True if i < ok else None,
                ttft_histogram_moved=True if i < ok else None,
                ttft_agrees=True if i < ok else None,
            )
            for i in range(probes)
        ]
    )  # fmt: skip


def test_token_and_latency_flags_by_probe_verdicts(ledger_store: AuditableLedgerStore) -> None:
    _llm(ledger_store, "good", probes=20, ok=20)
    _llm(ledger_store, "failing", probes=20, ok=10)  # 50 % < 95 %: probe failures
    _llm(ledger_store, "unprobed", probes=0, ok=0)
    r = _build(ledger_store)
    good, failing, unprobed = (_line(r, s) for s in ("good", "failing", "unprobed"))
    assert (good.token_api_flag, good.latency_flag) == ("validated", "validated")
    assert not good.counterfactual_flagged

    assert (failing.token_api_flag, failing.latency_flag) == ("unvalidated", "unvalidated")
    assert failing.token_api_flag_reason == (
        "only 50.0% of 20 probes succeeded (at least 95% needed)"
    )
    assert failing.rental_flag == "validated"  # its hours are whole: rental is fine
    assert failing.counterfactual_flagged

    # tokens no probe checked: the token figure is unvalidated; there is no latency figure
    assert unprobed.token_api_flag == "unvalidated"
    assert unprobed.token_api_flag_reason == "no probe checked the engine's counters this month"
    assert unprobed.latency_flag == "not applicable"
    assert unprobed.counterfactual_flagged
    note = next(n for n in r.notes if n.startswith("Token-API counterfactuals"))
    assert "svc/failing" in note
    assert "svc/unprobed" in note
    assert "svc/good" not in note


# -- the writers ----------------------------------------------------------------------------


@pytest.fixture
def mixed(ledger_store: AuditableLedgerStore) -> Report:
    _gappy(ledger_store)
    _llm(ledger_store, "failing", probes=20, ok=10)
    return _build(ledger_store)


def test_csv_and_json_carry_the_flags(mixed: Report) -> None:
    rows = {r["service"]: r for r in csv.DictReader(io.StringIO(lines_csv(mixed)))}
    batch, failing = rows["batch"], rows["failing"]
    assert (batch["rental_flag"], batch["token_api_flag"], batch["latency_flag"]) == (
        "unvalidated", "not applicable", "not applicable",
    )  # fmt: skip
    assert float(batch["rental_coverage_ratio"]) == pytest.approx(0.75)
    assert batch["counterfactual_flagged"] == "true"
    assert failing["token_api_flag"] == "unvalidated"
    assert failing["latency_flag_reason"].startswith("only 50.0% of 20 probes")
    assert rows["TOTAL"]["rental_flag"] == ""
    # the columns before issue 16 keep their places: new ones are appended
    header = next(csv.reader(io.StringIO(lines_csv(mixed))))
    assert header.index("rate_card_version") == header.index("token_api_flag") - 1
    doc = json.loads(report_json(mixed))
    assert doc["schema_version"] == 5  # 4 (issue 17): findings; 5: cost centers, anomalies
    line = next(x for x in doc["lines"] if x["service"] == "steady")
    assert (line["rental_flag"], line["rental_coverage_ratio"]) == ("validated", 1.0)


def test_focus_rows_carry_the_flags(mixed: Report) -> None:
    rows = list(csv.DictReader(io.StringIO(focus_csv(mixed))))
    batch = next(r for r in rows if r["x_Service"] == "batch")
    assert (batch["x_RentalFlag"], batch["x_TokenApiFlag"], batch["x_LatencyFlag"]) == (
        "unvalidated", "not applicable", "not applicable",
    )  # fmt: skip
    assert batch["x_CounterfactualFlagged"] == "true"


def test_html_marks_only_unvalidated_figures(mixed: Report) -> None:
    dom = parse(render_html(mixed)).root
    rows = [tr for tr in dom.find_all("tr") if tr.attrs.get("data-line")]

    def marks(label: str) -> set[str]:
        return {
            el.attrs.get("data-flag", "")
            for tr in rows
            if tr.attrs["data-line"] == label
            for el in tr.iter()
            if "flag" in el.classes()
        }

    assert {"ml/batch", "svc/failing", "ml/steady"} <= {tr.attrs["data-line"] for tr in rows}
    assert marks("ml/batch") == {"rental"}  # hours not observed: its rental figures only
    # probe failures: its token-API and latency figures, not its rentals
    assert marks("svc/failing") == {"token_api", "latency"}
    assert marks("ml/steady") == set()
    badges = {
        el.attrs["data-flag"]: el.text()
        for tr in rows
        if tr.attrs["data-line"] == "ml/steady"
        for el in tr.iter()
        if "badge" in el.classes() and "data-flag" in el.attrs
    }
    assert badges == {
        "token_api": "token API: not applicable",
        "latency": "latency: not applicable",
        "rental": "GPU rental: validated",
    }


def test_console_counts_the_flags(mixed: Report) -> None:
    # batch: rental unvalidated (75 %), no tokens, no probes; steady: rental validated, no
    # tokens, no probes; failing: tokens and latency unvalidated (50 % of probes), rental
    # validated (whole hours). No idle line: every GPU-second here has an owner.
    assert flag_summary(mixed) == (
        "  flags: token API 1 unvalidated, 2 not applicable; "
        "latency 1 unvalidated, 2 not applicable; GPU rental 2 validated, 1 unvalidated"
    )
