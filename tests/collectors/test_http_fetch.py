"""fetch() and KeepAliveClient.fetch() against real sockets: caps, the overall deadline,
and what errors may say -- every promise is checked on both (the ``get`` fixture), plus
what only the kept-alive client does: reuse a connection, and recover when the server
closed it."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from gpuledger.collectors.base import CollectorError
from gpuledger.collectors.http import fetch, redact_url
from gpuledger.collectors.keepalive import KeepAliveClient
from tests.support.standins import Behaviour, StandIn

Get = Callable[..., bytes]


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client() as c:
        yield c


@pytest.fixture(params=["httpx", "keepalive"])
def get(request: pytest.FixtureRequest) -> Iterator[Get]:
    """``get(url, timeout_s=..., max_bytes=..., headers=...)`` by either client."""
    if request.param == "httpx":
        with httpx.Client() as c:
            yield lambda url, **kw: fetch(c, url, **kw)
    else:
        ka = KeepAliveClient()
        try:
            yield ka.fetch
        finally:
            ka.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SlowDrip:
    """Sends the status line and headers at once, then one body byte every ``gap_s``
    forever: every single read finishes well inside any per-operation timeout."""

    def __init__(self, gap_s: float) -> None:
        self.gap_s = gap_s
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/metrics"

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                    b"Content-Length: 1000000\r\n\r\n"
                )
                try:
                    while not self.stop.wait(self.gap_s):
                        conn.sendall(b"#")
                except OSError:
                    pass

    def __enter__(self) -> SlowDrip:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


def test_returns_the_body(get: Get) -> None:
    with StandIn(Behaviour(body=b"DCGM_FI_DEV_GPU_TEMP 61\n")) as s:
        assert get(s.url, timeout_s=2, max_bytes=1024) == b"DCGM_FI_DEV_GPU_TEMP 61\n"


def test_non_2xx_names_the_status(get: Get) -> None:
    with (
        StandIn(Behaviour(body=b"boom", status=500)) as s,
        pytest.raises(CollectorError, match=r"^HTTP 500 from http://127\.0\.0\.1:\d+/metrics$"),
    ):
        get(s.url, timeout_s=2, max_bytes=1024)


def test_body_exactly_at_the_cap_is_accepted(get: Get) -> None:
    with StandIn(Behaviour(body=b"a" * 1000)) as s:
        assert len(get(s.url, timeout_s=2, max_bytes=1000)) == 1000


def test_declared_length_over_the_cap_fails_before_reading(get: Get) -> None:
    cap = pytest.raises(CollectorError, match="1001 bytes, over the 1000-byte cap")
    with StandIn(Behaviour(body=b"a" * 1001)) as s, cap:
        get(s.url, timeout_s=2, max_bytes=1000)


def test_undeclared_length_is_capped_while_streaming(get: Get) -> None:
    # HTTP/1.0 close-delimited body: no Content-Length for the early check to use.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n")
            try:
                for _ in range(200):  # up to 12.5 MiB, far past the cap
                    conn.sendall(b"b" * 65536)
            except OSError:
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{srv.getsockname()[1]}/metrics"
        with pytest.raises(CollectorError, match="exceeds the 100000-byte cap"):
            get(url, timeout_s=5, max_bytes=100_000)
    finally:
        t.join(5)
        srv.close()


def test_hang_before_headers_hits_the_deadline(get: Get) -> None:
    with StandIn(Behaviour(body=b"x", delay_s=30)) as s:
        start = time.monotonic()
        with pytest.raises(CollectorError, match=r"timed out after 0\.5s"):
            get(s.url, timeout_s=0.5, max_bytes=1024)
        assert time.monotonic() - start < 1.5


def test_slow_drip_body_hits_the_overall_deadline(get: Get) -> None:
    # Each byte arrives after 0.1 s, so no single read ever times out; only an overall
    # deadline stops this.
    with SlowDrip(gap_s=0.1) as s:
        start = time.monotonic()
        with pytest.raises(CollectorError, match=r"timed out after 1s reading"):
            get(s.url, timeout_s=1.0, max_bytes=10_000_000)
        assert time.monotonic() - start < 1.8


def test_connection_refused(get: Get) -> None:
    url = f"http://127.0.0.1:{_free_port()}/metrics"
    with pytest.raises(CollectorError, match=r"cannot connect to .*: connection refused"):
        get(url, timeout_s=2, max_bytes=1024)


def test_password_never_appears_in_errors(get: Get) -> None:
    with StandIn(Behaviour(body=b"no", status=401)) as s:
        url = f"http://scraper:hunter2-s3cret@127.0.0.1:{s.port}/metrics?token=abc123"
        with pytest.raises(CollectorError) as info:
            get(url, timeout_s=2, max_bytes=1024, headers={"Authorization": "Bearer zz9"})
    message = str(info.value)
    assert message == f"HTTP 401 from http://127.0.0.1:{s.port}/metrics"
    for secret in ("hunter2", "s3cret", "scraper", "abc123", "zz9", "Bearer"):
        assert secret not in message


def test_password_not_echoed_when_connection_fails(get: Get) -> None:
    url = f"http://admin:pa55word@127.0.0.1:{_free_port()}/metrics"
    with pytest.raises(CollectorError) as info:
        get(url, timeout_s=2, max_bytes=1024)
    assert "pa55word" not in str(info.value)
    assert "admin" not in str(info.value)
    assert info.value.__cause__ is None  # the chained httpx error would carry the URL


def test_sends_caller_headers(client: httpx.Client) -> None:
    seen: dict[str, str] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(request.headers)
        return httpx.Response(200, stream=httpx.ByteStream(b"ok"))

    with httpx.Client(transport=httpx.MockTransport(handler)) as mocked:
        fetch(mocked, "http://exporter/metrics", timeout_s=1, max_bytes=10, headers={"X-A": "1"})
    assert seen["x-a"] == "1"
    assert seen["accept-encoding"] == "identity"


def test_asks_for_the_text_format_as_prometheus_does(get: Get) -> None:
    # prometheus/prometheus v3.14.0: config/config.go maps PrometheusText0.0.4 to
    # "text/plain;version=0.0.4"; scrape/scrape.go acceptHeader weights n protocols from
    # q=0.(len(ScrapeProtocolsHeaders)+1) = q=0.6 down and appends */* one step lower.
    with StandIn(Behaviour(body=b"a 1\n")) as server:
        assert get(server.url, timeout_s=2, max_bytes=1024) == b"a 1\n"
        get(server.url, timeout_s=2, max_bytes=1024, headers={"Accept": "x/y"})
    first, overridden = server.request_headers
    assert first["accept"] == "text/plain;version=0.0.4;q=0.6,*/*;q=0.5"
    assert first["accept-encoding"] == "identity"
    assert overridden["accept"] == "x/y"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://u:p@host:9400/metrics?x=1", "http://host:9400/metrics"),
        ("https://host/metrics", "https://host/metrics"),
        ("http://[::1]:9400/metrics", "http://[::1]:9400/metrics"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


class KeepAliveServer:
    """A raw HTTP/1.1 server that keeps connections open, counting them. ``script`` says
    what each successive request gets, whatever its connection: ``"ok"`` (the body, the
    connection kept), ``"drop"`` (the connection closed without an answer, as when a
    server's keep-alive timer fires as a request arrives) or ``"hang"`` (no answer)."""

    def __init__(self, script: list[str], body: bytes = b"a 1\n") -> None:
        self.script = list(script)
        self.body = body
        self.connections = 0
        self.hung_up = 0
        self.heads: list[bytes] = []  # each request's line and headers, as sent
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/metrics"

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            buf = b""
            while not self.stop.is_set():
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        self.hung_up += 1  # the client closed the connection
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                self.heads.append(head)
                step = self.script.pop(0) if self.script else "ok"
                if step == "drop":
                    return
                if step == "hang":
                    self.stop.wait(30)
                    return
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                    + f"Content-Length: {len(self.body)}\r\n\r\n".encode()
                    + self.body
                )

    def __enter__(self) -> KeepAliveServer:
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(5)
        self.sock.close()


def test_keepalive_reuses_one_connection() -> None:
    client = KeepAliveClient()
    try:
        with KeepAliveServer(["ok", "ok", "ok"]) as server:
            for _ in range(3):
                assert client.fetch(server.url, timeout_s=2, max_bytes=100) == b"a 1\n"
            assert server.connections == 1
    finally:
        client.close()


def test_keepalive_resends_once_when_the_kept_connection_was_closed() -> None:
    # The second request finds its kept connection closed by the server without an
    # answer: it goes again on a new connection, and the caller sees only the page.
    client = KeepAliveClient()
    try:
        with KeepAliveServer(["ok", "drop", "ok"]) as server:
            assert client.fetch(server.url, timeout_s=2, max_bytes=100) == b"a 1\n"
            assert client.fetch(server.url, timeout_s=2, max_bytes=100) == b"a 1\n"
            assert server.connections == 2
    finally:
        client.close()


def test_keepalive_does_not_resend_on_a_new_connection() -> None:
    client = KeepAliveClient()
    try:
        with KeepAliveServer(["drop", "ok"]) as server:
            with pytest.raises(CollectorError, match="server closed the connection"):
                client.fetch(server.url, timeout_s=2, max_bytes=100)
            assert server.connections == 1
    finally:
        client.close()


def test_keepalive_hang_on_a_kept_connection_hits_the_deadline() -> None:
    client = KeepAliveClient()
    try:
        with KeepAliveServer(["ok", "hang"]) as server:
            client.fetch(server.url, timeout_s=2, max_bytes=100)
            start = time.monotonic()
            with pytest.raises(CollectorError, match=r"timed out after 0\.5s waiting for"):
                client.fetch(server.url, timeout_s=0.5, max_bytes=100)
            assert time.monotonic() - start < 1.5
    finally:
        client.close()


def test_https_verifies_the_certificate(get: Get, tmp_path: Path) -> None:
    # A server whose certificate is signed by a CA in no trust store: both clients refuse
    # it at the handshake (certifi's roots, hostname checked, as httpx's default context).
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    pem = tmp_path / "server.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(pem))
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            with contextlib.suppress(OSError), context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(65536)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        url = f"https://127.0.0.1:{srv.getsockname()[1]}/metrics"
        with pytest.raises(
            CollectorError, match=r"^cannot connect to https://127\.0\.0\.1:\d+/metrics: "
        ):
            get(url, timeout_s=2, max_bytes=100)
    finally:
        stop.set()
        t.join(5)
        srv.close()


def test_keepalive_closes_connections_idle_past_their_age() -> None:
    # An endpoint that went away (a deleted pod) must not keep a socket open here.
    client = KeepAliveClient(max_idle_s=0.2)
    try:
        with KeepAliveServer([]) as gone, KeepAliveServer([]) as other:
            client.fetch(gone.url, timeout_s=2, max_bytes=100)
            client.fetch(other.url, timeout_s=2, max_bytes=100)
            assert (gone.hung_up, other.hung_up) == (0, 0)  # both kept
            time.sleep(0.3)
            client.fetch(other.url, timeout_s=2, max_bytes=100)
            deadline = time.monotonic() + 2
            while gone.hung_up == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert gone.hung_up == 1
            assert other.connections == 1  # taken (alive) before the sweep: reused
    finally:
        client.close()


def test_a_caller_header_replaces_ours_whatever_its_case(get: Get) -> None:
    with KeepAliveServer([]) as server:
        get(server.url, timeout_s=2, max_bytes=100, headers={"accept": "z/w"})
    lines = server.heads[0].lower().split(b"\r\n")
    assert [line for line in lines if line.startswith(b"accept:")] == [b"accept: z/w"]
