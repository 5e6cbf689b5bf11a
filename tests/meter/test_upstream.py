"""The meter's own HTTP/1.1 client (gpuledger/meter/upstream.py) against scripted servers:
what goes on the wire, keep-alive, de-chunking without decoding, and each failure's kind."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable

import pytest
import trustme

from gpuledger.meter.upstream import (
    UpstreamCut,
    UpstreamPool,
    UpstreamResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gpuledger.meter.usage import event_data

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _head(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + (await reader.readexactly(length) if length else b"")


async def _serve(script: Script) -> tuple[asyncio.Server, str, list[bytes], list[int]]:
    """A server running ``script`` per connection; what it read and how many connections."""
    seen: list[bytes] = []
    conns: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(1)
        orig = reader.readuntil

        async def recording(sep: bytes = b"\n") -> bytes:
            data = await orig(sep)
            seen.append(data)
            return data

        reader.readuntil = recording  # type: ignore[method-assign]
        try:
            await script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}", seen, conns


def _pool(url: str, read_seconds: float = 5.0) -> UpstreamPool:
    return UpstreamPool(url, max_connections=4, connect_seconds=2, read_seconds=read_seconds)


async def _body(resp: UpstreamResponse) -> bytes:
    out = b"".join([p async for p in resp.aiter_raw()])
    await resp.aclose()
    return out


def test_request_bytes_keep_alive_and_chunked_body_undecoded() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):
            await _head(reader)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            for event in (b"data: {}\n\n", b"data: [DONE]\n\n"):
                writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                await writer.drain()
                await asyncio.sleep(0.01)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        await reader.read()

    async def main() -> None:
        server, url, seen, conns = await _serve(script)
        async with server:
            pool = _pool(url + "/base/")
            for _ in range(2):
                resp = await pool.send("POST", "/v1/x?a=1", [(b"X-Tenant", b"t1")], b"{}")
                assert resp.status_code == 200
                assert resp.header("content-type") == "text/event-stream"
                assert resp.header("CONTENT-ENCODING") == "gzip"
                assert resp.header("missing") == ""
                assert await _body(resp) == b"data: {}\n\ndata: [DONE]\n\n"
            await pool.aclose()
        assert len(conns) == 1  # the second request reused the connection
        host = url.removeprefix("http://").encode()
        assert seen[0] == (b"POST /base/v1/x?a=1 HTTP/1.1\r\nhost: " + host +
                           b"\r\nX-Tenant: t1\r\ncontent-length: 2\r\n\r\n")  # fmt: skip

    asyncio.run(main())


def test_a_get_has_no_content_length_and_a_body_may_end_with_the_connection() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
        await writer.drain()

    async def main() -> None:
        server, url, seen, _ = await _serve(script)
        async with server:
            pool = _pool(url)
            resp = await pool.send("GET", "/health", [], b"")
            assert await _body(resp) == b"until the end"
            assert b"content-length" not in seen[0]

    asyncio.run(main())


def test_head_answers_have_no_body_and_interim_responses_are_skipped() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await _head(reader)
        if head.startswith(b"HEAD"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n"
                         b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")  # fmt: skip
        await writer.drain()
        await reader.read()

    async def main() -> None:
        server, url, _, _ = await _serve(script)
        async with server:
            pool = _pool(url)
            resp = await pool.send("HEAD", "/", [], b"")
            assert (resp.status_code, await _body(resp)) == (200, b"")
            resp = await pool.send("POST", "/", [], b"x")
            assert (resp.status_code, await _body(resp)) == (201, b"ok")

    asyncio.run(main())


def test_failures_before_the_status_line() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async def hangs_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _head(reader)

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _head(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()
        await reader.read()

    async def main() -> None:
        server, url, _, _ = await _serve(silent)
        async with server:
            with pytest.raises(UpstreamTimeout):
                await _pool(url, read_seconds=0.2).send("POST", "/", [], b"{}")
        for script in (hangs_up, garbage):
            server, url, _, _ = await _serve(script)
            async with server:
                with pytest.raises(UpstreamUnavailable) as info:
                    await _pool(url).send("POST", "/", [], b"{}")
                assert not isinstance(info.value, UpstreamTimeout)
        with pytest.raises(UpstreamUnavailable):
            await _pool(url).send("GET", "/", [], b"")  # the server is gone: refused

    asyncio.run(main())


@pytest.mark.parametrize("how", ["silent", "closed", "invalid"])
def test_a_body_that_breaks_off_is_a_cut_after_what_arrived(how: str) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst")
        await writer.drain()
        if how == "silent":
            await reader.read()
        elif how == "invalid":
            writer.close()
            await writer.wait_closed()

    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\nzz\r\n")
        await writer.drain()
        await reader.read()

    async def main() -> None:
        server, url, _, _ = await _serve(chunked if how == "invalid" else script)
        async with server:
            pool = _pool(url, read_seconds=0.3)
            resp = await pool.send("POST", "/", [], b"{}")
            got: list[bytes] = []

            async def drain() -> None:
                async for piece in resp.aiter_raw():
                    got.append(piece)

            with pytest.raises(UpstreamCut):
                await drain()
            await resp.aclose()
            assert b"".join(got) == b"first"

    asyncio.run(main())


def test_the_read_timeout_is_silence_not_length() -> None:
    """Pieces every 0.1 s for 0.6 s under a 0.25 s read timeout: never a cut."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n")
        for i in range(6):
            await asyncio.sleep(0.1)
            writer.write(str(i).encode())
            await writer.drain()
        await reader.read()

    async def main() -> None:
        server, url, _, _ = await _serve(script)
        async with server:
            resp = await _pool(url, read_seconds=0.25).send("GET", "/", [], b"")
            assert await _body(resp) == b"012345"

    asyncio.run(main())


def test_connections_are_limited_and_freed() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await _head(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
            await writer.drain()

    async def main() -> None:
        server, url, _, conns = await _serve(script)
        async with server:
            pool = UpstreamPool(url, max_connections=2, connect_seconds=0.3, read_seconds=5)
            held = [await pool.send("GET", "/", [], b"") for _ in range(2)]
            with pytest.raises(UpstreamTimeout):  # no third connection within the timeout
                await pool.send("GET", "/", [], b"")
            for resp in held:
                assert await _body(resp) == b"x"
            for _ in range(5):
                assert await _body(await pool.send("GET", "/", [], b"")) == b"x"
            await pool.aclose()
        assert len(conns) == 2

    asyncio.run(main())


def _event_data_reference(event: bytes) -> bytes | None:
    lines = [
        line[5:].lstrip(b" ") if line.startswith(b"data:") else None
        for line in event.replace(b"\r\n", b"\n").split(b"\n")
    ]
    data = [d for d in lines if d is not None]
    return b"\n".join(data) if data else None


@pytest.mark.parametrize(
    "event",
    [b"data: {}\n\n", b"data:{}\n\n", b"data:   x\n\n", b"data:\n\n", b"data: a\rb\n\n",
     b"data: a\ndata: b\n\n", b"data: a\r\n\r\n", b": comment\n\n", b"event: x\ndata: y\n\n",
     b"data: [DONE]\n\n", b"data: x\n"],
)  # fmt: skip
def test_event_data_fast_path_matches_the_general_reading(event: bytes) -> None:
    assert event_data(event) == _event_data_reference(event)


def test_an_https_upstream_is_verified() -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        async with server:
            trusting = ssl.create_default_context()
            ca.configure_trust(trusting)
            pool = UpstreamPool(url, max_connections=1, connect_seconds=2, read_seconds=2,
                                ssl_context=trusting)  # fmt: skip
            assert await _body(await pool.send("GET", "/", [], b"")) == b"ok"
            with pytest.raises(UpstreamUnavailable):  # an unknown CA: refused
                await _pool(url).send("GET", "/", [], b"")

    asyncio.run(main())
