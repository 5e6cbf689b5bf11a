"""The monthly report e-mailed through a real SMTP server on 127.0.0.1 (aiosmtpd): the
MIME as received, attachments byte-equal to the files on disk, each cost center's lines
and subtotal against hand-computed figures, the HTML body opened in headless Chromium,
STARTTLS and implicit TLS with a test CA, and login with the password from its file."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from email.message import EmailMessage
from pathlib import Path

import pytest

from gpuledger.chargeback.delivery.config import DeliveryConfig
from gpuledger.chargeback.delivery.record import open_delivery_log
from gpuledger.chargeback.delivery.send import Deliverer
from gpuledger.chargeback.report.writers.csv_json import LINE_COLUMNS
from tests.support import delivery as dv
from tests.support.html_dom import chromium, needs_chromium, number, parse
from tests.support.smtp_server import PASSWORD, USER, Inbox, make_tls, smtp_server


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The fixture month on disk and its SQLite ledger (which holds the record)."""
    base = tmp_path_factory.mktemp("delivery")
    url = f"sqlite:///{base / 'ledger.db'}"
    dv.write_month(base / "reports", url)
    return base / "reports", url


@pytest.fixture
def fresh(written: tuple[Path, str], tmp_path: Path) -> tuple[Path, str]:
    """The written month beside an empty, migrated ledger of the test's own."""
    from gpuledger.chargeback.ledger.store import open_store

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    store = open_store(url)
    store.migrate()
    store.close()
    return written[0], url


def _deliver(cfg: DeliveryConfig, out: Path, url: str) -> Deliverer:
    d = Deliverer(cfg, open_delivery_log(url), fleet="default")
    result = d.deliver(out, dv.MONTH, dv.cost_center_map())
    assert result.error is None
    return d


def _by_to(inbox: Inbox) -> dict[str, EmailMessage]:
    return {str(m["To"]): m for m in inbox.messages()}


def _attachments(msg: EmailMessage) -> dict[str, bytes]:
    out = {}
    for part in msg.iter_attachments():
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        out[str(part.get_filename())] = payload
    return out


def _html(msg: EmailMessage) -> str:
    body = msg.get_body(preferencelist=("html",))
    assert body is not None
    return str(body.get_content())


def test_finance_gets_the_report_files_byte_for_byte(fresh: tuple[Path, str]) -> None:
    out, url = fresh
    inbox = Inbox()
    with smtp_server(inbox, mode="none") as port:
        _deliver(dv.delivery_config(port), out, url)
    got = _by_to(inbox)
    assert set(got) == {*dv.FINANCE, *dv.ML, *dv.SEARCH}
    assert len(inbox.received) == 4  # one message per address, nobody twice
    folder = out / dv.MONTH
    for address in dv.FINANCE:
        files = _attachments(got[address])
        assert files == {
            f"chargeback-{dv.MONTH}.csv": (folder / f"chargeback-{dv.MONTH}.csv").read_bytes(),
            f"chargeback-{dv.MONTH}-focus.csv": (
                folder / f"chargeback-{dv.MONTH}-focus.csv"
            ).read_bytes(),
        }
        assert got[address]["From"] == "gpuledger@example.com"
        assert dv.MONTH in str(got[address]["Subject"])
    # each message its own Message-ID, derived (not random): stable across resends
    ids = {str(m["Message-ID"]) for m in inbox.messages()}
    assert len(ids) == 4
    assert all(i.endswith("@example.com>") for i in ids)


def _csv_rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))


@pytest.mark.parametrize(
    ("address", "center", "namespace", "service"),
    [(dv.ML[0], "ml-platform", "prod", "chat"), (dv.SEARCH[0], "search-team", "search", "embed")],
)
def test_a_cost_center_gets_only_its_lines_and_subtotal(
    fresh: tuple[Path, str], address: str, center: str, namespace: str, service: str
) -> None:
    out, url = fresh
    inbox = Inbox()
    with smtp_server(inbox, mode="none") as port:
        _deliver(dv.delivery_config(port), out, url)
    msg = _by_to(inbox)[address]
    files = _attachments(msg)
    name = f"chargeback-{dv.MONTH}-cost-center-{center}.csv"
    assert list(files) == [name]
    text = files[name].decode("utf-8")
    assert text.splitlines()[0] == ",".join(LINE_COLUMNS)
    rows = _csv_rows(files[name])
    assert [(r["namespace"], r["service"]) for r in rows] == [
        (namespace, service),
        (center, "TOTAL"),
    ]
    # the line is the main CSV's row as written, byte for byte
    main = (out / dv.MONTH / f"chargeback-{dv.MONTH}.csv").read_text(encoding="utf-8")
    assert text.splitlines()[1] in main.splitlines()
    expected = dv.SUBTOTALS[center]
    assert expected is not None
    assert float(rows[0]["total_cost_usd"]) == pytest.approx(expected, abs=1e-5)
    assert Decimal(rows[1]["total_cost_usd"]) == Decimal(rows[0]["total_cost_usd"])
    html = parse(_html(msg)).root
    assert number(html.find("strong", id="subtotal").text()) == pytest.approx(expected, abs=0.006)
    assert [td.text() for td in html.find("table", id="lines").find_all("td")][:2] == [
        namespace,
        service,
    ]
    other = "search" if namespace == "prod" else "prod"
    assert other not in _html(msg)
    assert f"{other}," not in text


def test_finance_body_subtotals_add_up_to_the_total(fresh: tuple[Path, str]) -> None:
    out, url = fresh
    inbox = Inbox()
    with smtp_server(inbox, mode="none") as port:
        _deliver(dv.delivery_config(port), out, url)
    html = parse(_html(_by_to(inbox)[dv.FINANCE[0]])).root
    rows = {
        tr.find_all("td")[0].text(): tr.find_all("td")[2].text()
        for tr in html.find("table", id="cost-centers").find_all("tr")
        if tr.find_all("td")
    }
    assert number(rows["ml-platform"]) == pytest.approx(dv.SUBTOTALS["ml-platform"], abs=0.006)
    assert number(rows["search-team"]) == pytest.approx(dv.SUBTOTALS["search-team"], abs=0.006)
    # lab/train is on a GPU the card cannot price (B200): its cost center stays unpriced
    assert rows[dv.HOSTILE] == "unpriced"
    assert "__unassigned__" in rows


@needs_chromium
def test_the_html_body_opens_in_chromium_with_a_hostile_name_as_text(
    fresh: tuple[Path, str], tmp_path: Path
) -> None:
    out, url = fresh
    inbox = Inbox()
    with smtp_server(inbox, mode="none") as port:
        _deliver(dv.delivery_config(port), out, url)
    page = tmp_path / "body.html"
    page.write_text(_html(_by_to(inbox)[dv.FINANCE[0]]), encoding="utf-8")
    run = chromium(tmp_path, page, "--dump-dom", "--virtual-time-budget=2000")
    assert run.problems() == []
    dom = parse(run.stdout).root
    cells = [td.text() for td in dom.find("table", id="cost-centers").find_all("td")]
    assert dv.HOSTILE in cells  # shown as text ...
    assert dom.find_all("img") == []
    assert dom.find_all("b") == []
    assert number(dom.find("strong", id="total").text()) > dv.SUBTOTALS["ml-platform"]  # type: ignore[operator]


@pytest.mark.parametrize("mode", ["starttls", "tls"])
def test_tls_and_login_with_the_password_from_its_file(
    fresh: tuple[Path, str], tmp_path: Path, mode: str
) -> None:
    out, url = fresh
    tls = make_tls(tmp_path)
    secret = tmp_path / "smtp-password"
    secret.write_text(PASSWORD + "\n", encoding="utf-8")
    inbox = Inbox()
    with smtp_server(inbox, tls=tls, mode=mode, auth=True) as port:
        cfg = dv.delivery_config(
            port, security=mode, username=USER, password_file=str(secret), ca_file=str(tls.ca_file)
        )
        d = _deliver(cfg, out, url)
    assert len(inbox.received) == 4
    assert inbox.auth_seen == 4
    assert d.stats.counts()[("email", "sent")] == 4


def test_starttls_refuses_a_server_whose_certificate_it_cannot_verify(
    fresh: tuple[Path, str], tmp_path: Path
) -> None:
    out, url = fresh
    tls = make_tls(tmp_path)
    other = make_tls(tmp_path / "..")  # another CA: the server's certificate is not trusted
    inbox = Inbox()
    with smtp_server(inbox, tls=tls, mode="starttls") as port:
        cfg = dv.delivery_config(port, security="starttls", ca_file=str(other.ca_file))
        d = Deliverer(cfg, open_delivery_log(url), fleet="default")
        result = d.deliver(out, dv.MONTH, dv.cost_center_map())
    assert inbox.received == []
    assert result.failed == 4
    assert result.sent == 0
    rows = d.record.rows(dv.MONTH)
    assert {r.state for r in rows} == {"failed"}
    assert all("CERTIFICATE_VERIFY_FAILED" in (r.last_error or "") for r in rows)
