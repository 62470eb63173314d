"""Connection guard for ``litegate serve``: slow clients cannot pin the event loop.

uvicorn bounds only idle keep-alive time: a client that opens a connection and sends
its request head (or body) a byte at a time holds a socket, a parser and buffers for
as long as it likes, and a few thousand of them exhaust file descriptors. This
protocol closes a connection whose request head is not complete ``header_timeout_s``
after it started (408), or whose body is not complete ``body_timeout_s`` after the
head, and refuses connections beyond ``max_connections`` per process (503). A request
the HTTP parser refuses gets a JSON 400, like every other error.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import Any

from litegate.log_config import import_hiding

# uvicorn loads watchfiles (and anyio, ~1 MiB) for --reload and a2wsgi for WSGI apps,
# which litegate serve never uses.
import_hiding(("watchfiles", "a2wsgi"), "uvicorn")
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from litegate.asgi_types import ASGIApp, Message, Receive, Scope, Send
from litegate.settings import Settings


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int


def _raw_response(status: bytes, message: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: " + str(len(message)).encode() + b"\r\n\r\n" + message
    )


_TOO_MANY = _raw_response(b"503 Service Unavailable", b'{"error":"too many connections"}')
_TIMEOUT_BODY = b'{"error":"request not received in time"}'
_TIMEOUT = _raw_response(b"408 Request Timeout", _TIMEOUT_BODY)
_MALFORMED = _raw_response(b"400 Bad Request", b'{"error":"malformed HTTP request"}')


_JOIN_LIMIT = 64 * 1024


class CoalescedWrites:
    """A transport whose ``write`` holds a response head (a write that starts with the
    status line) until the next write in the same loop step, so a head and its body leave
    in one ``send`` (one TCP segment) instead of two: uvicorn writes the head when the app
    starts the response and the body when it sends it; ~2.7 µs of CPU per response on
    loopback. A head still held at the end of the step (a stream whose first chunk comes
    later) is written then; other writes go at once, after anything held."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is None:
            if not data.startswith(b"HTTP/1."):  # not a head: stream chunks go at once
                self._transport.write(data)
                return
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self._held = None
            if len(data) > _JOIN_LIMIT:
                self._transport.writelines((held, data))  # no copy of a large body
            else:
                self._transport.write(held + data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus read deadlines, a connection cap and a response
    head written with its body."""

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits
        self._due: float | None = None
        """When the current read must be complete (loop time); None: nothing awaited."""
        self._timer: asyncio.TimerHandle | None = None
        self._in_head = True

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._limits.max_connections:
            transport.write(_TOO_MANY)
            transport.close()
            return
        self.transport = CoalescedWrites(transport, self.loop)  # type: ignore[assignment]
        self._arm(self._limits.header_timeout_s)  # silent connections too

    def connection_lost(self, exc: Exception | None) -> None:
        self._due = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        # First byte of a request (also the next one on a keep-alive connection).
        self._in_head = True
        self._arm(self._limits.header_timeout_s)
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._arm(self._limits.body_timeout_s)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        # The parser refused the request (bad Content-Length, bytes that are not
        # HTTP): answer in JSON like every other error, not uvicorn's plain text.
        self.transport.write(_MALFORMED)
        self.transport.close()

    # Each request moves the deadline twice and clears it once. Moving a number and
    # letting one timer per connection re-check it when it fires costs less than a
    # timer created and cancelled at every step of every request.
    def _arm(self, delay: float) -> None:
        due = self._due = self.loop.time() + delay
        timer = self._timer
        if timer is None or timer.when() > due:
            if timer is not None:
                timer.cancel()
            self._timer = self.loop.call_at(due, self._check_deadline)

    def _disarm(self) -> None:
        self._due = None

    def _check_deadline(self) -> None:
        self._timer = None
        due = self._due
        if due is None:
            return
        if due > self.loop.time():  # moved later since this timer was set
            self._timer = self.loop.call_at(due, self._check_deadline)
            return
        self._due = None
        self._expired()

    def _expired(self) -> None:
        if self.transport.is_closing():
            return
        if self._in_head or not self.cycle.response_started:
            # Nobody is answering this request yet: say why before closing. (When the
            # app is already answering, its response must not be interleaved.)
            self.transport.write(_TIMEOUT)
        self.transport.close()


class BodyDeadline:
    """Pure ASGI: a request's body must arrive within ``timeout_s`` of the app being
    called (the head is complete by then), else 408 — for servers that lack the protocol
    guard above (granian). Until the deadline passes it only relays ``receive``."""

    def __init__(self, app: ASGIApp, *, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        body_done = started = expired = False

        async def guarded_receive() -> Message:
            nonlocal body_done, expired
            if body_done or expired:
                return await receive()  # after the body: only a disconnect is left to wait for
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                expired = True
                if not started:
                    await send({"type": "http.response.start", "status": 408, "headers": [
                        (b"content-type", b"application/json"), (b"connection", b"close"),
                        (b"content-length", str(len(_TIMEOUT_BODY)).encode())]})
                    await send({"type": "http.response.body", "body": _TIMEOUT_BODY})
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if expired:
                return  # the 408 went out: whatever the app answers now is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, guarded_receive, guarded_send)


def protocol_for(settings: Settings) -> Any:
    """The ``http=`` protocol for uvicorn (a picklable partial, so workers get it too)."""
    limits = ConnectionLimits(
        header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s,
        max_connections=settings.max_connections,
    )
    return functools.partial(GuardedHttpToolsProtocol, limits=limits)
