"""Slow clients for the connection guard's tests: raw sockets that open, send a first
chunk, then dribble a byte at a time (or stay silent) until the server hangs up."""

from __future__ import annotations

import selectors
import socket
import time


def open_sockets(port: int, count: int, first: bytes) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(first)
        s.setblocking(False)
        socks.append(s)
    return socks


def dribble(socks: list[socket.socket], deadline: float, byte: bytes | None) -> dict[socket.socket, bytes]:
    """Send ``byte`` on every open socket every 0.2 s (``None``: stay silent) until the
    server has closed them all or ``deadline``; returns what each received, for those
    the server closed."""
    sel = selectors.DefaultSelector()
    received = {s: b"" for s in socks}
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    closed: dict[socket.socket, bytes] = {}
    while len(closed) < len(socks) and time.monotonic() < deadline:
        for key, _ in sel.select(0.2):
            s = key.fileobj
            try:
                data = s.recv(65536)  # type: ignore[union-attr]
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if data:
                received[s] += data  # type: ignore[index]
            else:
                sel.unregister(s)
                closed[s] = received[s]  # type: ignore[index]
        if byte is not None:
            for s in socks:
                if s not in closed:
                    try:
                        s.send(byte)
                    except OSError:
                        pass  # closed by the server: the next select sees EOF
    sel.close()
    return closed


def close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        s.close()
