"""Slow clients cannot hold ``litegate serve``'s connections: read deadlines and a cap.

Through the real ``litegate serve`` in a child process, with raw sockets that send
their request a byte at a time (slowloris).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx

from tests.helpers.cli import create_key, serving
from tests.helpers.servers import free_port
from tests.helpers.slow_clients import close_all, dribble, open_sockets

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
DRIBBLERS = 200
# Generous: each connection must close ~1 s after it opened; before the guard none did.
CLOSE_WITHIN_S = 20.0


def test_dribbling_headers_are_cut_off_and_others_are_served(home: Path) -> None:
    port = free_port()
    with serving("--port", str(port), home=home, LITEGATE_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S),
                 LITEGATE_MAX_CONNECTIONS=str(DRIBBLERS + 50)):
        socks = open_sockets(port, DRIBBLERS, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        try:
            # While all of them hold a connection, a normal client is served.
            r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
            assert r.status_code == 200 and r.json() == {"status": "ok"}
            closed = dribble(socks, time.monotonic() + CLOSE_WITHIN_S, b"a")
            assert len(closed) == DRIBBLERS, f"{DRIBBLERS - len(closed)} slow connections still open"
            assert all(data.startswith(b"HTTP/1.1 408 ") for data in closed.values())
            assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
        finally:
            close_all(socks)


def test_silent_connections_and_slow_bodies_are_cut_off(home: Path) -> None:
    port = free_port()
    key = create_key(home)  # so that the gateway waits for the body (no early 401)
    with serving("--port", str(port), home=home, LITEGATE_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S),
                 LITEGATE_BODY_TIMEOUT_S=str(BODY_TIMEOUT_S)):
        silent = open_sockets(port, 20, b"")
        head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Authorization: Bearer " + key.encode() + b"\r\nContent-Length: 100000\r\n\r\n{")
        slow_body = open_sockets(port, 20, head)
        try:
            closed = dribble(silent + slow_body, time.monotonic() + CLOSE_WITHIN_S, None)
            assert len(closed) == 40, f"{40 - len(closed)} connections still open"
            assert all(data.startswith(b"HTTP/1.1 408 ") for data in closed.values()), closed
        finally:
            close_all(silent + slow_body)


def test_connections_beyond_the_cap_are_refused(home: Path) -> None:
    port = free_port()
    cap = 50
    with serving("--port", str(port), home=home, LITEGATE_MAX_CONNECTIONS=str(cap),
                 LITEGATE_HEADER_TIMEOUT_S="30"):
        held = open_sockets(port, cap, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        try:
            extra = open_sockets(port, 10, b"")
            closed = dribble(extra, time.monotonic() + CLOSE_WITHIN_S, None)
            assert len(closed) == 10
            assert all(data.startswith(b"HTTP/1.1 503 ") for data in closed.values()), closed
        finally:
            close_all(held)
        close_all(extra)
        # The held ones are gone: the server accepts again.
        deadline = time.monotonic() + CLOSE_WITHIN_S
        while True:
            r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert r.status_code == 200


def test_a_slow_request_after_a_served_one_on_the_same_connection_is_cut_off(home: Path) -> None:
    """The deadline follows each request on a kept-alive connection, not only the first."""
    port = free_port()
    with serving("--port", str(port), home=home, LITEGATE_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S)):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            first = b""
            while b'{"status":"ok"}' not in first:
                chunk = s.recv(65536)
                assert chunk, first
                first += chunk
            assert first.startswith(b"HTTP/1.1 200 ")
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            s.setblocking(False)
            closed = dribble([s], time.monotonic() + CLOSE_WITHIN_S, b"a")
            assert list(closed.values()) and closed[s].startswith(b"HTTP/1.1 408 "), closed
        finally:
            s.close()
