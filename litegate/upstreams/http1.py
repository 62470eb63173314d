"""A lean HTTP/1.1 client for the upstream calls: one keep-alive pool per origin, answers
parsed by httptools (llhttp, the parser uvicorn uses), the body handed on with flow
control.

Why not aiohttp (the spec's first choice): a proxied request cost 75–81 µs of CPU in
aiohttp's client against 11–13 µs here, measured side by side on the same mock upstream
(bench/PROFILE.md, "Round four") — about a third of litegate's whole cost per request.
It speaks what upstreams need and nothing more: a request with a bytes body and a
``content-length``; answers framed by ``content-length``, chunked encoding or the
connection's end; plain TCP or TLS (verified against the system's CAs, as aiohttp did).
No cookies, redirects, proxies or decompression: the gateway wants none of them.

Bounds: a pool keeps at most ``max_idle`` idle connections per origin and closes those
idle past ``keepalive_s``; an answer's head is bounded by ``MAX_HEAD_BYTES`` and must
arrive within the timeout even when it is counted per read; a body is buffered up to
``HIGH_WATER`` bytes before the socket stops being read, so a slow consumer holds the
upstream back instead of filling memory (each read's body pieces are kept as one chunk,
so tiny chunked pieces cost no more than their bytes).
"""

from __future__ import annotations

import asyncio
import collections
import ssl as ssl_module
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httptools

from litegate.origins import Origin, safe_path

HIGH_WATER = 256 * 1024
"""Body bytes buffered before the upstream socket is paused."""
MAX_HEAD_BYTES = 64 * 1024
"""An answer's status line and headers (with any 1xx answers before it): past this the
answer is refused, as llhttp itself bounds nothing."""
LOW_WATER = 64 * 1024
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


class ConnectError(OSError):
    """The request never reached the upstream (refused, unresolvable, unreachable):
    safe to retry."""


class ProtocolError(Exception):
    """The upstream broke the exchange: a malformed answer, or the connection lost
    before the answer was complete."""


class Response:
    """One upstream answer: status and headers at once, the body as it arrives.

    Release it (back to the pool once its body was read whole) or close it (the
    connection is dropped, e.g. to stop an upstream generating for a client that left).
    """

    __slots__ = ("_conn", "_waiter", "chunks", "content_length", "done", "error",
                 "raw_headers", "size", "status")

    def __init__(self, conn: Connection, status: int, raw_headers: list[tuple[bytes, bytes]]) -> None:
        self._conn: Connection | None = conn
        self.status = status
        self.raw_headers = raw_headers
        self.content_length: int | None = None
        for name, value in raw_headers:
            if name.lower() == b"content-length" and value.isdigit():
                self.content_length = int(value)
        self.chunks: collections.deque[bytes] = collections.deque()
        self.size = 0
        self.done = False
        self.error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (lower case), or None."""
        wanted = name.encode("latin-1")
        for k, v in self.raw_headers:
            if k.lower() == wanted:
                return v.decode("latin-1")
        return None

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive; raises ProtocolError or TimeoutError when the
        exchange breaks (after handing on what arrived before)."""
        while True:
            if self.chunks:
                chunk = self.chunks.popleft()
                self.size -= len(chunk)
                if self.size <= LOW_WATER and self._conn is not None:
                    self._conn.resume()
                yield chunk
            elif self.error is not None:
                raise self.error
            elif self.done:
                return
            else:
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None

    async def read(self, limit: int) -> bytes | None:
        """The whole body, or None once more than ``limit`` bytes arrived (the
        connection is then dropped: the rest is never read)."""
        if self.done and self.error is None and self.size <= limit:  # the usual small answer
            body = b"".join(self.chunks)
            self.chunks.clear()
            self.size = 0
            return body
        parts: list[bytes] = []
        size = 0
        async for chunk in self.iter_chunks():
            size += len(chunk)
            if size > limit:
                self.close()
                return None
            parts.append(chunk)
        return b"".join(parts)

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.finish(self.done and self.error is None and not self.chunks)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.finish(False)

    # Called by the connection as the answer arrives.
    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _feed(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.size += len(chunk)
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if not self.done:
            self.error = exc
            self._wake()


class Connection(asyncio.Protocol):
    """One keep-alive connection; one exchange at a time."""

    def __init__(self, pool: Pool, origin: Origin) -> None:
        self.pool = pool
        self.origin = origin
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        # The exchange in flight.
        self.head: asyncio.Future[Response] | None = None
        self.response: Response | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_only = False
        self.framed = False
        """The answer says where its body ends (content-length or chunked); else the
        body runs to the connection's end."""
        self.keep_alive = False
        self.received = False
        self.paused = False
        self.timer: asyncio.TimerHandle | None = None
        self.idle_timeout: float | None = None
        self.last_read = 0.0
        self.head_due = 0.0
        """Per-read timeouts start once the head is in: until then this deadline holds."""
        self.head_bytes = 0
        self.body_parts: list[bytes] = []
        """The body pieces of the read being parsed, handed on as one chunk."""

    # ---------------------------------------------------------------- the exchange
    def send(self, head: bytes, body: bytes | None, *, head_only: bool, timeout: float,
             per_read: bool) -> asyncio.Future[Response]:
        """Write a request; the future gets the answer once its head has arrived.
        ``timeout`` bounds the whole exchange, or (``per_read``) each wait for bytes."""
        assert self.transport is not None and self.head is None
        self.head = self.loop.create_future()
        self.response = None
        self.headers = []
        self.head_only = head_only
        self.framed = False
        self.received = False
        self.head_bytes = 0
        if per_read:
            self.idle_timeout = timeout
            self.last_read = self.loop.time()
            self.head_due = self.last_read + timeout
            self.timer = self.loop.call_at(self.head_due, self._idle_check)
        else:
            self.idle_timeout = None
            self.timer = self.loop.call_later(timeout, self._timed_out)
        self.transport.write(head + body if body else head)
        return self.head

    def finish(self, reusable: bool) -> None:
        """The response is done with: back to the pool, or closed."""
        self._stop_timer()
        self.head = None
        self.response = None
        if reusable and self.keep_alive and not self.closed:
            self.resume()  # a body read whole may have paused it on the way
            self.pool.checkin(self)
        else:
            self.close()

    def close(self) -> None:
        self._stop_timer()
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def resume(self) -> None:
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _fail(self, exc: BaseException) -> None:
        self._stop_timer()
        head = self.head
        if head is not None and not head.done():
            head.set_exception(exc)
        elif self.response is not None:
            self.response._fail(exc)
        self.close()

    def _timed_out(self) -> None:
        self.timer = None
        self._fail(TimeoutError("the upstream did not answer in time"))

    def _idle_check(self) -> None:
        assert self.idle_timeout is not None
        if self.paused:  # our consumer is slow, not the upstream
            self.last_read = self.loop.time()
        due = self.last_read + self.idle_timeout if self.response is not None else self.head_due
        if self.loop.time() >= due:
            self._timed_out()
        else:
            self.timer = self.loop.call_at(due, self._idle_check)

    # ---------------------------------------------------------------- asyncio.Protocol
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.head is None:  # bytes on an idle connection: nobody asked for them
            self.close()
            return
        self.received = True
        if self.idle_timeout is not None:
            self.last_read = self.loop.time()
        error: ProtocolError | None = None
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            error = ProtocolError(f"malformed answer: {exc!r}")
        response = self.response
        if response is not None and self.body_parts:  # what arrived goes on, even before an error
            parts, self.body_parts = self.body_parts, []
            response._feed(parts[0] if len(parts) == 1 else b"".join(parts))
            if response.size > HIGH_WATER and not self.paused and self.transport is not None:
                self.paused = True
                self.transport.pause_reading()
        if error is None and response is None:
            self.head_bytes += len(data)
            if self.head_bytes > MAX_HEAD_BYTES:
                error = ProtocolError(f"the answer's head is over {MAX_HEAD_BYTES} bytes")
        if error is not None:
            self._fail(error)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_timer()
        response = self.response
        if (exc is None and response is not None and not self.framed and not response.done
                and response.error is None and self.origin.scheme == "http"):
            # A body that runs to the connection's end has ended. Not over TLS: asyncio
            # does not say whether the close was TLS's own, so a cut could pass for an end.
            response.done = True
            response._wake()
            return
        if (self.head is not None and not self.head.done()) or (
                response is not None and not response.done):
            self._fail(ProtocolError("the upstream closed the connection mid-answer"))

    # ---------------------------------------------------------------- httptools callbacks
    def on_message_begin(self) -> None:
        if self.response is not None:
            # Bytes past the answer: the connection is out of step with its requests (a
            # confused or hostile upstream). Reused, its parser would take the next
            # caller's answer as the rest of these; it is dropped with this answer.
            self.keep_alive = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.response is None:  # not trailers, nor a second answer's
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # 100 Continue, 103 Early Hints: the answer follows
            self.headers = []
            return
        if not 200 <= status <= 599:
            raise ProtocolError(f"the upstream answered status {status}")
        if self.response is not None:
            self.keep_alive = False  # a second answer (see on_message_begin)
            return
        response = self.response = Response(self, status, self.headers)
        self.keep_alive = self.parser.should_keep_alive()
        self.framed = (response.content_length is not None or status in (204, 304)
                       or _chunked(response.header("transfer-encoding")))
        if self.head_only:  # llhttp would wait for the body a HEAD answer never has
            response.done = True
            self.keep_alive = False
            self._stop_timer()
        head = self.head
        if head is not None and not head.done():
            head.set_result(response)

    def on_body(self, body: bytes) -> None:
        response = self.response
        if response is not None and not response.done:
            self.body_parts.append(body)

    def on_message_complete(self) -> None:
        response = self.response
        if response is None or response.done:  # an informational answer, or a HEAD's
            return
        self._stop_timer()
        response.done = True
        response._wake()


def _chunked(transfer_encoding: str | None) -> bool:
    """Whether the last transfer coding is chunked (llhttp then finds the body's end;
    with any other coding it reads to the connection's end)."""
    if not transfer_encoding:
        return False
    return transfer_encoding.rsplit(",", 1)[-1].strip().lower() == "chunked"


class Pool:
    """Keep-alive connections per origin; a connection serves one exchange at a time."""

    def __init__(self, *, max_idle: int = 256, keepalive_s: float = 30.0) -> None:
        self.max_idle = max_idle
        self.keepalive_s = keepalive_s
        self.idle: dict[Origin, collections.deque[Connection]] = {}
        self._ssl: ssl_module.SSLContext | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    async def request(
        self, origin: Origin, method: str, path: str, headers: Mapping[str, str],
        body: bytes | None, *, connect_timeout: float, timeout: float, per_read: bool,
    ) -> Response:
        """Send one request; the answer comes back once its head has arrived.

        Raises ConnectError (never sent), TimeoutError, ProtocolError, or ValueError for
        a request that cannot be written safely (a CR or LF in a header, a bad path)."""
        head = _request_head(origin, method, path, headers, body)
        head_only = method == "HEAD"
        conn = self._checkout(origin)
        if conn is not None:
            try:
                return await self._exchange(conn, head, body, head_only, timeout, per_read)
            except ProtocolError:
                # A kept-alive connection the upstream closed as we reused it: nothing of
                # the answer arrived. Sent again on a new connection only when that
                # cannot repeat a side effect.
                if conn.received or method not in IDEMPOTENT:
                    raise
        conn = await self._connect(origin, connect_timeout)
        return await self._exchange(conn, head, body, head_only, timeout, per_read)

    async def _exchange(self, conn: Connection, head: bytes, body: bytes | None,
                        head_only: bool, timeout: float, per_read: bool) -> Response:
        waiter = conn.send(head, body, head_only=head_only, timeout=timeout, per_read=per_read)
        try:
            return await waiter
        except BaseException:
            conn.close()  # cancelled or failed before the head: the connection is spent
            raise

    async def _connect(self, origin: Origin, timeout: float) -> Connection:
        loop = asyncio.get_running_loop()
        tls = self._ssl_context() if origin.scheme == "https" else None
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: Connection(self, origin), origin.host, origin.port, ssl=tls,
                    server_hostname=origin.host if tls is not None else None,
                )
        except TimeoutError:
            raise TimeoutError("the upstream did not accept a connection in time") from None
        except ssl_module.SSLError as exc:
            raise ProtocolError(f"TLS handshake failed: {exc.reason or exc}") from exc
        except OSError as exc:
            raise ConnectError(str(exc) or type(exc).__name__) from exc
        return conn

    def _ssl_context(self) -> ssl_module.SSLContext:
        if self._ssl is None:
            self._ssl = ssl_module.create_default_context()
        return self._ssl

    def _checkout(self, origin: Origin) -> Connection | None:
        idle = self.idle.get(origin)
        if not idle:
            return None
        oldest_usable = asyncio.get_running_loop().time() - self.keepalive_s
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to be stale
            if not conn.closed and conn.idle_since >= oldest_usable:
                return conn
            conn.close()
        return None

    def checkin(self, conn: Connection) -> None:
        idle = self.idle.get(conn.origin)
        if idle is None:
            idle = self.idle[conn.origin] = collections.deque()
        now = conn.loop.time()
        conn.idle_since = now
        idle.append(conn)
        while idle and (len(idle) > self.max_idle or idle[0].closed
                        or idle[0].idle_since < now - self.keepalive_s):
            idle.popleft().close()
        if self._sweeper is None:
            self._sweeper = conn.loop.call_later(self.keepalive_s, self._sweep)

    def _sweep(self) -> None:
        """Close the connections idle past ``keepalive_s``, even for an origin no request
        uses any more; again later while some stay idle."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        oldest_usable = loop.time() - self.keepalive_s
        for origin, idle in list(self.idle.items()):
            while idle and (idle[0].closed or idle[0].idle_since < oldest_usable):
                idle.popleft().close()
            if not idle:
                del self.idle[origin]
        if self.idle:
            self._sweeper = loop.call_later(self.keepalive_s, self._sweep)

    def idle_count(self) -> int:
        return sum(len(q) for q in self.idle.values())

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in self.idle.values():
            while idle:
                idle.pop().close()
        self.idle.clear()


def _request_head(origin: Origin, method: str, path: str, headers: Mapping[str, str],
                  body: bytes | None) -> bytes:
    full = origin.prefix + path
    if not safe_path(full) or not method.isalpha():
        raise ValueError("refusing to send a request line with spaces, controls or non-ASCII")
    lines = [f"{method} {full} HTTP/1.1\r\nhost: {origin.host_header}\r\n"]
    for name, value in headers.items():
        lines.append(f"{name}: {value}\r\n")
    if body is not None or method in ("POST", "PUT", "PATCH"):
        lines.append(f"content-length: {len(body) if body else 0}\r\n")
    lines.append("\r\n")
    text = "".join(lines)
    # Every line ends in the CRLF written above and nowhere else: a CR or LF inside a
    # header (say, an api key read from a file with its newline) could smuggle a second
    # header or request.
    if text.count("\n") != len(lines) + 1 or text.count("\r") != len(lines) + 1:
        raise ValueError("refusing to send a header with a CR or LF in it")
    return text.encode("latin-1")
