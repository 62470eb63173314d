"""The upstream HTTP/1.1 client (``litegate/upstreams/http1.py``) against a raw socket
server whose every byte the test chooses: framing (content-length, chunked, to the end
of the connection, HEAD, 1xx), keep-alive reuse and its bounds, timeouts, flow control,
broken answers, TLS, and the request lines it refuses to write."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from litegate.errors import UpstreamError
from litegate.policies.metrics import Metrics
from litegate.snapshot import UpstreamSpec
from litegate.upstreams.client import UpstreamClient, forward_headers
from litegate.origins import Origin, parse_base_url
from litegate.upstreams.http1 import HIGH_WATER, ConnectError, Pool, ProtocolError
from tests.helpers.servers import free_port
from tests.helpers.tls import make_cert

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


class RawServer:
    """Answers each request on a connection with ``handler``; counts connections and
    keeps the request heads it read."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head)
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                await reader.readexactly(int(line.split(b":")[1]))
        return head


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[..., Awaitable[tuple[RawServer, Origin]]]]:
    servers: list[asyncio.Server] = []

    async def start(handler_for: Callable[[RawServer], Handler],
                    tls: ssl.SSLContext | None = None) -> tuple[RawServer, Origin]:
        raw = RawServer(lambda r, w: handler_for(raw)(r, w))
        port = free_port()
        raw.server = await asyncio.start_server(raw._serve, "127.0.0.1", port, ssl=tls)
        servers.append(raw.server)
        scheme = "https" if tls is not None else "http"
        return raw, parse_base_url(f"{scheme}://127.0.0.1:{port}/v1")

    yield start
    for s in servers:
        s.close()


def answer_with(writes: list[bytes], *, gap: float = 0.0, then_wait: bool = True
                ) -> Callable[[RawServer], Handler]:
    """Answer each request with ``writes`` (``gap`` seconds after each), keeping the
    connection for the next request, or closing it (``then_wait=False``)."""
    def handler_for(raw: RawServer) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                await raw.read_request(reader)
                for chunk in writes:
                    writer.write(chunk)
                    await writer.drain()
                    if gap:
                        await asyncio.sleep(gap)
                if not then_wait:
                    return
        return handler
    return handler_for


async def fetch(pool: Pool, origin: Origin, *, method: str = "POST", body: bytes | None = b"{}",
                timeout: float = 5.0, per_read: bool = False,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    resp = await pool.request(origin, method, "/chat/completions", headers or {}, body,
                              connect_timeout=2.0, timeout=timeout, per_read=per_read)
    try:
        data = await resp.read(1 << 24)
        assert data is not None
        return resp.status, data
    finally:
        resp.release()


async def test_keep_alive_reuses_one_connection_and_writes_a_clean_head(raw_server) -> None:
    raw, origin = await raw_server(answer_with([OK]))
    pool = Pool()
    for _ in range(5):
        assert await fetch(pool, origin, headers={"x-request-id": "r1"}) == (200, b"{}")
    assert raw.connections == 1
    head = raw.heads[0].decode()
    assert head.startswith("POST /v1/chat/completions HTTP/1.1\r\n")
    assert f"host: 127.0.0.1:{origin.port}\r\n" in head
    assert "content-length: 2\r\n" in head and "x-request-id: r1\r\n" in head
    pool.close()


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhello world",
], ids=["chunked", "content-length"])
async def test_framed_answers_are_read_whole_and_the_connection_kept(raw_server, answer) -> None:
    raw, origin = await raw_server(answer_with([answer]))
    pool = Pool()
    assert await fetch(pool, origin) == (200, b"hello world")
    assert await fetch(pool, origin) == (200, b"hello world")
    assert raw.connections == 1


async def test_a_body_that_runs_to_the_connections_end_is_read_and_not_reused(raw_server) -> None:
    raw, origin = await raw_server(answer_with(
        [b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil ", b"the end"],
        gap=0.05, then_wait=False))
    pool = Pool()
    assert await fetch(pool, origin) == (200, b"until the end")
    assert await fetch(pool, origin) == (200, b"until the end")
    assert raw.connections == 2 and pool.idle_count() == 0


async def test_connection_close_is_honoured(raw_server) -> None:
    raw, origin = await raw_server(answer_with(
        [b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}"]))
    pool = Pool()
    await fetch(pool, origin)
    await fetch(pool, origin)
    assert raw.connections == 2


async def test_a_second_answer_to_one_request_never_reaches_the_next_caller(raw_server) -> None:
    def handler_for(raw: RawServer) -> Handler:
        async def handler(reader, writer) -> None:
            first = raw.connections == 1
            while True:
                await raw.read_request(reader)
                if first:  # one request, an answer and the start of another in one write:
                    # kept, the connection's parser would take the next caller's answer
                    # as the rest of this one
                    writer.write(OK + b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\nEVIL!")
                    first = False
                else:
                    writer.write(OK)
                await writer.drain()
        return handler
    raw, origin = await raw_server(handler_for)
    pool = Pool()
    assert await fetch(pool, origin) == (200, b"{}")
    assert pool.idle_count() == 0  # out of step: not kept
    assert await fetch(pool, origin) == (200, b"{}")
    assert raw.connections == 2


async def test_informational_answers_are_skipped_and_head_answers_end_at_their_headers(
        raw_server) -> None:
    raw, origin = await raw_server(answer_with(
        [b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n"]))
    pool = Pool()
    resp = await pool.request(origin, "HEAD", "/x", {}, None, connect_timeout=2, timeout=2,
                              per_read=False)
    assert resp.status == 200 and resp.content_length == 50
    assert await resp.read(100) == b""
    resp.release()
    assert pool.idle_count() == 0  # a HEAD answer's connection is not reused


async def test_an_upstream_that_closes_idle_connections_costs_no_request(raw_server) -> None:
    # one answer, then the upstream closes while the connection sits idle in the pool
    raw, origin = await raw_server(answer_with([OK], then_wait=False))
    pool = Pool()
    for _ in range(3):
        assert await fetch(pool, origin) == (200, b"{}")
        await asyncio.sleep(0.05)  # the upstream's FIN reaches the pool
    assert raw.connections == 3


async def test_idle_connections_are_bounded_and_expire(raw_server) -> None:
    def handler_for(raw: RawServer) -> Handler:
        async def handler(reader, writer) -> None:
            while True:
                await raw.read_request(reader)
                await asyncio.sleep(0.1)  # slow enough that 6 callers need 6 connections
                writer.write(OK)
                await writer.drain()
        return handler
    raw, origin = await raw_server(handler_for)
    pool = Pool(max_idle=2, keepalive_s=0.3)
    await asyncio.gather(*(fetch(pool, origin) for _ in range(6)))
    assert raw.connections == 6 and pool.idle_count() == 2
    await asyncio.sleep(0.4)
    await fetch(pool, origin)  # both idle ones are past keepalive_s: a new connection
    assert raw.connections == 7 and pool.idle_count() == 1


async def test_the_whole_exchange_is_bounded_unless_per_read(raw_server) -> None:
    # a chunk every 0.2 s: 1.2 s in all
    _, origin = await raw_server(answer_with(
        [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", *[b"1\r\nx\r\n"] * 6,
         b"0\r\n\r\n"], gap=0.2))
    pool = Pool()
    # The same bound, 0.8 s: the whole answer takes longer, no gap comes near it.
    with pytest.raises(TimeoutError):
        await fetch(pool, origin, timeout=0.8)
    assert await fetch(pool, origin, timeout=0.8, per_read=True) == (200, b"x" * 6)


async def test_a_stalled_stream_times_out_after_what_arrived(raw_server) -> None:
    # 5 of the 10 bytes, then nothing more
    _, origin = await raw_server(answer_with([b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nfirst"]))
    pool = Pool()
    resp = await pool.request(origin, "POST", "/s", {}, b"", connect_timeout=2, timeout=0.3,
                              per_read=True)
    got = []
    with pytest.raises(TimeoutError):
        async for chunk in resp.iter_chunks():
            got.append(chunk)
    assert b"".join(got) == b"first"
    resp.release()
    assert pool.idle_count() == 0


async def test_a_cut_answer_is_a_protocol_error_after_what_arrived(raw_server) -> None:
    _, origin = await raw_server(answer_with(
        [b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b"], then_wait=False))
    pool = Pool()
    resp = await pool.request(origin, "POST", "/s", {}, b"", connect_timeout=2, timeout=2,
                              per_read=True)
    got = []
    with pytest.raises(ProtocolError):
        async for chunk in resp.iter_chunks():
            got.append(chunk)
    assert b"".join(got) == b"only ten b"


async def test_a_malformed_answer_is_a_protocol_error(raw_server) -> None:
    _, origin = await raw_server(answer_with([b"SMTP ready\r\n\r\n"]))
    with pytest.raises(ProtocolError):
        await fetch(Pool(), origin)


async def test_a_slow_reader_holds_the_upstream_back(raw_server) -> None:
    size = 8 << 20
    _, origin = await raw_server(answer_with(
        [b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size,
         *[b"z" * 65536] * (size // 65536)]))
    pool = Pool()
    resp = await pool.request(origin, "POST", "/big", {}, b"", connect_timeout=2, timeout=10,
                              per_read=True)
    total = peak = 0
    async for chunk in resp.iter_chunks():
        peak = max(peak, resp.size + len(chunk))
        total += len(chunk)
        await asyncio.sleep(0.001)
    resp.release()
    assert total == size
    # Paused at HIGH_WATER; one socket read (≤ 256 KiB in uvloop/asyncio) may land on top.
    assert peak <= HIGH_WATER + 256 * 1024, peak
    assert pool.idle_count() == 1  # read whole: the connection goes back to the pool
    pool.close()


async def test_cancelling_a_waiting_request_drops_its_connection(raw_server) -> None:
    _, origin = await raw_server(answer_with([]))  # reads the request, never answers
    pool = Pool()
    task = asyncio.create_task(fetch(pool, origin))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pool.idle_count() == 0


async def test_refused_connections_are_connect_errors() -> None:
    origin = parse_base_url(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ConnectError):
        await fetch(Pool(), origin)


@pytest.mark.parametrize("headers,path", [
    ({"x-a": "v\r\nx-injected: 1"}, "/ok"),
    ({"x-a": "v\rx"}, "/ok"),
    ({"x-a\nb": "v"}, "/ok"),
    ({}, "/a b"),
    ({}, "/a\r\nHost: evil"),
    ({}, "/caf\u00e9"),
], ids=["crlf-value", "cr-value", "lf-name", "space-path", "crlf-path", "non-ascii-path"])
async def test_requests_that_cannot_be_written_safely_are_refused(raw_server, headers, path) -> None:
    raw, origin = await raw_server(answer_with([OK]))
    with pytest.raises(ValueError):
        await Pool().request(origin, "POST", path, headers, b"", connect_timeout=2, timeout=2,
                             per_read=False)
    assert raw.connections == 0


@pytest.mark.parametrize("url,error", [
    ("ftp://h/x", "http:// or https://"),
    ("http://user:pw@h/", "credentials"),
    ("http://h/v1?x=1", "query"),
    ("http://h/v1#f", "fragment"),
    ("http:///v1", "no host"),
    ("http://h:99999/", "out of range"),
    ("http://h/a b", "spaces"),
])
def test_base_urls_are_parsed_and_rebuilt(url: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_base_url(url)


def test_base_url_parts() -> None:
    assert parse_base_url("https://api.example.com/v1/") == Origin(
        "https", "api.example.com", 443, "/v1", "api.example.com")
    assert parse_base_url("http://[::1]:8080").host_header == "[::1]:8080"
    assert parse_base_url("HTTP://H:80/").host_header == "h"


async def test_tls_upstreams_are_verified(raw_server, tmp_path: Path, monkeypatch) -> None:
    cert, key = make_cert(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    _, origin = await raw_server(answer_with([OK]), tls=tls)
    with pytest.raises(ProtocolError, match="TLS"):  # not signed by a CA this machine trusts
        await fetch(Pool(), origin)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # read when the pool makes its context
    assert await fetch(Pool(), origin) == (200, b"{}")


async def test_the_client_maps_failures_to_gateway_errors(raw_server) -> None:
    spec = UpstreamSpec(name="up", kind="openai", base_url="http://127.0.0.1:1/v1",
                        api_key="k\nx-evil: 1", timeout_s=1, connect_timeout_s=1, max_retries=0)
    client = UpstreamClient(metrics=Metrics(), breaker_failures=5, breaker_reset_s=1,
                            max_body_bytes=1 << 20)
    await client.start()
    headers = forward_headers([], spec, "rid")
    with pytest.raises(UpstreamError, match="CR or LF"):  # the api key would smuggle a header
        await client.open(spec, "POST", "/chat", body=b"{}", headers=headers, stream=False)
    bad = UpstreamSpec(name="up", kind="openai", base_url="http://u:p@h/v1", api_key=None,
                       timeout_s=1, connect_timeout_s=1, max_retries=0)
    with pytest.raises(UpstreamError, match="credentials"):
        await client.open(bad, "POST", "/chat", body=b"{}", headers={}, stream=False)
    await client.close()


# ----------------------------------------------------------- hostile and odd upstreams
async def test_an_endless_head_is_refused_past_its_bound(raw_server) -> None:
    line = b"x-h: " + b"a" * 1000 + b"\r\n"
    _, origin = await raw_server(answer_with([b"HTTP/1.1 200 OK\r\n"] + [line * 20] * 50))
    with pytest.raises(ProtocolError, match="head is over"):
        await fetch(Pool(), origin, per_read=True)  # bytes keep coming: only the bound stops it


async def test_a_head_dribbled_byte_by_byte_still_has_the_timeout(raw_server) -> None:
    head = b"HTTP/1.1 200 OK\r\n" + b"x-slow: " + b"z" * 40 + b"\r\n\r\n"
    _, origin = await raw_server(answer_with([bytes([b]) for b in head], gap=0.05))
    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):  # each byte is within the per-read bound; the head is not
        await fetch(Pool(), origin, timeout=0.5, per_read=True)
    assert asyncio.get_running_loop().time() - started < 2.0


async def test_tiny_chunks_are_handed_on_whole_per_read(raw_server) -> None:
    body = b"".join(b"1\r\n%c\r\n" % (97 + i % 26) for i in range(20000)) + b"0\r\n\r\n"
    _, origin = await raw_server(answer_with(
        [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + body]))
    resp = await Pool().request(origin, "POST", "/s", {}, b"", connect_timeout=2, timeout=5,
                                per_read=True)
    pieces = [chunk async for chunk in resp.iter_chunks()]
    resp.release()
    assert b"".join(pieces) == bytes(97 + i % 26 for i in range(20000))
    assert len(pieces) < 100  # one per socket read, not 20,000 one-byte objects


async def test_the_start_of_a_second_answer_drops_the_connection(raw_server) -> None:
    raw, origin = await raw_server(answer_with([OK + b"HTTP/1.1 200 OK\r\nx-stale: "]))
    pool = Pool()
    assert await fetch(pool, origin) == (200, b"{}")
    assert pool.idle_count() == 0
    assert await fetch(pool, origin) == (200, b"{}")
    assert raw.connections == 2


async def test_trailers_never_become_headers(raw_server) -> None:
    _, origin = await raw_server(answer_with([
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n"
        b"content-type: text/evil\r\nset-cookie: a=b\r\n\r\n"]))
    resp = await Pool().request(origin, "POST", "/s", {}, b"", connect_timeout=2, timeout=2,
                                per_read=False)
    assert await resp.read(100) == b"{}"
    assert [k.lower() for k, _ in resp.raw_headers] == [b"transfer-encoding"]
    resp.release()


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 799 Odd\r\ncontent-length: 2\r\n\r\n{}",
    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
], ids=["status-799", "upgrade"])
async def test_answers_a_client_cannot_be_given_are_protocol_errors(raw_server, answer) -> None:
    _, origin = await raw_server(answer_with([answer]))
    with pytest.raises(ProtocolError):
        await fetch(Pool(), origin)


async def test_a_non_chunked_transfer_coding_runs_to_the_connections_end(raw_server) -> None:
    _, origin = await raw_server(answer_with(
        [b"HTTP/1.1 200 OK\r\ntransfer-encoding: identity\r\n\r\nwhole ", b"body"],
        then_wait=False))
    assert await fetch(Pool(), origin) == (200, b"whole body")


async def test_a_body_over_tls_that_ends_with_the_connection_is_refused(
        raw_server, tmp_path: Path, monkeypatch) -> None:
    cert, key = make_cert(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    _, origin = await raw_server(answer_with([b"HTTP/1.1 200 OK\r\n\r\ncut or whole?"],
                                             then_wait=False), tls=tls)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    # asyncio cannot tell a TLS close from a cut TCP connection: not taken as an end.
    with pytest.raises(ProtocolError):
        await fetch(Pool(), origin)


async def test_a_body_read_whole_past_the_high_water_leaves_a_reusable_connection(
        raw_server) -> None:
    size = HIGH_WATER + 100_000  # two socket reads: the second completes it, and pauses
    big = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size + b"q" * size
    raw, origin = await raw_server(answer_with([big]))
    pool = Pool()
    for _ in range(2):  # the second exchange runs on the connection the first one paused
        resp = await pool.request(origin, "POST", "/big", {}, b"", connect_timeout=2,
                                  timeout=3, per_read=True)
        await asyncio.sleep(0.2)  # the caller is busy: the whole body arrives first
        assert len(await resp.read(size) or b"") == size
        resp.release()
    assert raw.connections == 1


async def test_idle_connections_are_closed_without_another_request(raw_server) -> None:
    raw, origin = await raw_server(answer_with([OK]))
    pool = Pool(keepalive_s=0.2)
    await asyncio.gather(*(fetch(pool, origin) for _ in range(5)))
    assert pool.idle_count() >= 1
    await asyncio.sleep(0.8)  # the sweep runs every keepalive_s
    assert pool.idle_count() == 0 and pool.idle == {}
    pool.close()
