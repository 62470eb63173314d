"""Redis over one pipelined connection: the per-request limit and usage scripts of a
replica, and the shared response cache's reads and writes.

redis-py's asyncio client spends ~64 µs of CPU per script call (~47 with hiredis): a
pool checkout, a lock and a stream read per command. With two calls per request (the
limits, then usage and spend) that was about two thirds of a replica's CPU per request.
This speaks just the RESP2 those commands need: the commands issued in one
loop step leave in one write, and the replies, which Redis sends in order, resolve the
callers in order. Anything else (TLS, cluster, sentinel, URL options) stays on redis-py
(:func:`parse_redis_url` answers None for those).

Bounds: replies pending per connection (``max_pending``), the bytes of one reply being
read (``max_reply_bytes``), and a deadline per call (``timeout_s``). A call past its
deadline closes the connection and fails every call on it: a Redis that does not answer
in time is unusable, and its late replies must not reach later callers.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_PORT = 6379
TIMEOUT_S = 5.0
MAX_PENDING = 65536
MAX_REPLY_BYTES = 1 << 20
RETRY_AFTER_S = 0.5
"""After a failed connect, calls fail at once for this long instead of each dialling."""


class ReplyError(Exception):
    """Redis answered with an error (``-ERR ...``, ``-NOSCRIPT ...``)."""


class WireError(ConnectionError):
    """The connection is unusable: lost, timed out, overloaded or out of protocol."""


@dataclass(frozen=True, slots=True)
class RedisAddress:
    host: str | None
    port: int
    unix_path: str | None
    username: str | None
    password: str | None = field(repr=False)  # never in a log line
    db: int = 0


def parse_redis_url(url: str) -> RedisAddress | None:
    """The address of a plain ``redis://`` or ``unix://`` URL (``async+`` and limits'
    ``redis+unix`` spellings too); None for anything this client does not speak."""
    url = url.removeprefix("async+")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "unix", "redis+unix") or parts.fragment:
        return None
    query = parse_qs(parts.query, keep_blank_values=True)
    if set(query) - {"db"} or len(query.get("db", ())) > 1:
        return None
    db_text = query["db"][0] if "db" in query else ""
    if scheme == "redis":
        if not parts.hostname:
            return None
        path = parts.path.strip("/")
        if path and db_text:
            return None
        db_text = path or db_text
    elif not parts.path or parts.hostname:
        return None
    if db_text and not (db_text.isascii() and db_text.isdigit()):
        return None
    return RedisAddress(
        host=parts.hostname if scheme == "redis" else None,
        port=port or DEFAULT_PORT,
        unix_path=None if scheme == "redis" else unquote(parts.path),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        db=int(db_text or 0),
    )


def _command(args: Sequence[bytes | str | int]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


_INCOMPLETE = object()


def _parse(buf: bytearray, pos: int) -> tuple[Any, int]:
    """One RESP2 reply starting at ``pos``: (value, end) or (_INCOMPLETE, pos). Error
    replies are returned as :class:`ReplyError` values (an array may hold them)."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        return _INCOMPLETE, pos
    kind, line = buf[pos], bytes(buf[pos + 1:end])
    if kind == 0x2B:  # +simple string
        return line, end + 2
    if kind == 0x2D:  # -error
        return ReplyError(line.decode("utf-8", "replace")), end + 2
    if kind == 0x3A:  # :integer
        return int(line), end + 2
    if kind == 0x24:  # $bulk string
        size = int(line)
        if size < 0:
            return None, end + 2
        start, stop = end + 2, end + 2 + size
        if len(buf) < stop + 2:
            return _INCOMPLETE, pos
        return bytes(buf[start:stop]), stop + 2
    if kind == 0x2A:  # *array
        count = int(line)
        if count < 0:
            return None, end + 2
        items, at = [], end + 2
        for _ in range(count):
            item, at = _parse(buf, at)
            if item is _INCOMPLETE:
                return _INCOMPLETE, pos
            items.append(item)
        return items, at
    raise WireError(f"not a RESP reply (first byte {kind!r})")


class _Connection(asyncio.Protocol):
    """One connection: FIFO of the callers waiting for a reply, writes coalesced per
    loop step, one deadline timer for the oldest caller."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, timeout_s: float,
                 max_pending: int, max_reply_bytes: int) -> None:
        self.loop = loop
        self.timeout_s = timeout_s
        self.max_pending = max_pending
        self.max_reply_bytes = max_reply_bytes
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._out: list[bytes] = []
        self._buf = bytearray()
        self._timer: asyncio.TimerHandle | None = None

    # -- calls
    def call(self, *args: bytes | str | int) -> asyncio.Future[Any]:
        if self.closed:
            raise WireError("connection to Redis closed")
        if len(self._waiting) >= self.max_pending:
            raise WireError(f"more than {self.max_pending} Redis calls waiting on one "
                            "connection")
        future = self.loop.create_future()
        due = self.loop.time() + self.timeout_s
        self._waiting.append((future, due))
        if self._timer is None:
            self._timer = self.loop.call_at(due, self._check_deadline)
        if not self._out:
            self.loop.call_soon(self._flush)
        self._out.append(_command(args))
        return future

    def _flush(self) -> None:
        out, self._out = self._out, []
        if out and not self.closed and self.transport is not None:
            self.transport.write(b"".join(out))

    def _check_deadline(self) -> None:
        self._timer = None
        if not self._waiting:
            return
        due = self._waiting[0][1]
        if due > self.loop.time():
            self._timer = self.loop.call_at(due, self._check_deadline)
            return
        self._fail(WireError(f"Redis did not answer within {self.timeout_s:g} s"))

    # -- protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos = 0
        try:
            while pos < len(buf):
                value, end = _parse(buf, pos)
                if value is _INCOMPLETE:
                    break
                pos = end
                if not self._waiting:
                    raise WireError("Redis sent a reply nobody asked for")
                future, _ = self._waiting.popleft()
                if not future.done():  # a caller that gave up (cancelled) skips its reply
                    if isinstance(value, ReplyError):
                        future.set_exception(value)
                    else:
                        future.set_result(value)
        except (WireError, ValueError, RecursionError) as exc:
            self._fail(exc if isinstance(exc, WireError) else WireError(f"bad reply: {exc!r}"))
            return
        del buf[:pos]
        if len(buf) > self.max_reply_bytes:
            self._fail(WireError(f"a Redis reply exceeds {self.max_reply_bytes} bytes"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(WireError(f"connection to Redis lost: {exc or 'closed by the server'}"))

    def _fail(self, exc: Exception) -> None:
        """Close, and fail every waiting caller with ``exc``."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting, self._waiting = self._waiting, deque()
        for future, _ in waiting:
            if not future.done():
                future.set_exception(exc)
        self._out.clear()
        self._buf.clear()
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        if not self.closed:
            self._fail(WireError("connection to Redis closed"))


class RedisWire:
    """Commands and Lua scripts on one Redis, over one pipelined connection per event
    loop, opened on first use and again after it fails."""

    def __init__(self, address: RedisAddress, *, timeout_s: float = TIMEOUT_S,
                 max_pending: int = MAX_PENDING, max_reply_bytes: int = MAX_REPLY_BYTES) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.max_pending = max_pending
        self.max_reply_bytes = max_reply_bytes
        self._conn: _Connection | None = None
        self._opening: asyncio.Task[_Connection] | None = None
        self._failed: tuple[float, str] | None = None
        """When the last connect failed, and why."""
        self._shas: dict[str, str] = {}

    async def eval(self, source: str, keys: Sequence[str], args: Sequence[bytes | str | int]
                   ) -> Any:
        """``EVALSHA`` of ``source`` (``EVAL`` the first time Redis has not got it)."""
        sha = self._shas.get(source)
        if sha is None:
            sha = self._shas[source] = hashlib.sha1(source.encode()).hexdigest()
        try:
            return await self.command(b"EVALSHA", sha, len(keys), *keys, *args)
        except ReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.command(b"EVAL", source, len(keys), *keys, *args)

    async def command(self, *args: bytes | str | int) -> Any:
        """One command's reply (``GET``, ``SET`` ...); a :class:`ReplyError` for an
        error reply, a :class:`WireError` when the connection fails."""
        conn = self._conn
        if conn is None or conn.closed or conn.loop is not asyncio.get_running_loop():
            conn = await self._connect()
        return await conn.call(*args)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        if self._failed is not None and loop.time() - self._failed[0] < RETRY_AFTER_S:
            raise WireError(self._failed[1])
        opening = self._opening
        if opening is None or opening.get_loop() is not loop:
            # (A connection of another event loop is left to that loop, which may still
            # be reading replies on it.)
            opening = self._opening = loop.create_task(self._open(loop))
            # Read its error even when every caller has given up (no "never retrieved").
            opening.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            return await asyncio.shield(opening)
        finally:
            if opening.done() and self._opening is opening:
                self._opening = None

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        a = self.address

        def protocol() -> _Connection:
            return _Connection(loop, timeout_s=self.timeout_s, max_pending=self.max_pending,
                               max_reply_bytes=self.max_reply_bytes)

        conn: _Connection | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                if a.unix_path is not None:
                    _, conn = await loop.create_unix_connection(protocol, a.unix_path)
                else:
                    assert a.host is not None  # parse_redis_url: a host or a socket path
                    _, conn = await loop.create_connection(protocol, a.host, a.port)
                hello = []
                if a.password is not None:
                    auth = (a.username, a.password) if a.username else (a.password,)
                    hello.append(conn.call(b"AUTH", *auth))
                if a.db:
                    hello.append(conn.call(b"SELECT", a.db))
                for reply in hello:
                    await reply
        except (OSError, TimeoutError, ReplyError) as exc:
            if conn is not None:
                conn.close()
            where = a.unix_path or f"{a.host}:{a.port}"
            message = f"cannot use Redis at {where}: {exc or type(exc).__name__}"
            self._failed = (loop.time(), message)
            raise WireError(message) from exc
        self._failed = None
        self._conn = conn
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
