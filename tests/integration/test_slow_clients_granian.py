"""``litegate serve --server granian`` against slow clients: a request head sent a byte at
a time is cut off by granian's own ``header_read_timeout`` (serve sets it from
``LITEGATE_HEADER_TIMEOUT_S``); a body that does not arrive within ``LITEGATE_BODY_TIMEOUT_S``
is answered 408 by ``litegate.connections.BodyDeadline``.

(The default server, uvicorn, has the full guard of ``litegate.connections``: 408 on slow
heads, silent connections and slow bodies, and the connection cap —
tests/integration/test_slow_clients.py. Under granian silent connections stay open and
there is no connection cap; the README's TLS/HTTP/2 section says so.)
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.helpers.cli import create_key, serving
from tests.helpers.servers import free_port
from tests.helpers.slow_clients import close_all, dribble, open_sockets

HEADER_TIMEOUT_S = 1.0
DRIBBLERS = 50


def test_granian_cuts_off_dribbling_heads_and_serves_others(home: Path) -> None:
    port = free_port()
    with serving("--server", "granian", "--port", str(port), home=home,
                 LITEGATE_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S)):
        t0 = time.monotonic()
        socks = open_sockets(port, DRIBBLERS, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
            assert r.status_code == 200 and r.json() == {"status": "ok"}
            closed = dribble(socks, t0 + 8, b"a")
            assert len(closed) == DRIBBLERS, f"{DRIBBLERS - len(closed)} slow heads still open"
            # Closed without an answer (hyper sends none), and nothing was served to them.
            assert all(not data.startswith(b"HTTP/1.1 200") for data in closed.values())
            assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
        finally:
            close_all(socks)


def test_granian_answers_408_to_a_slow_body(home: Path) -> None:
    port = free_port()
    key = create_key(home)  # so that the gateway waits for the body (no early 401)
    with serving("--server", "granian", "--port", str(port), home=home,
                 LITEGATE_BODY_TIMEOUT_S="1"):
        head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Authorization: Bearer " + key.encode() + b"\r\nContent-Length: 100000\r\n\r\n{")
        t0 = time.monotonic()
        slow = open_sockets(port, 10, head)
        try:
            closed = dribble(slow, t0 + 8, None)
            assert len(closed) == 10, f"{10 - len(closed)} slow bodies still open"
            assert all(data.startswith(b"HTTP/1.1 408 ") for data in closed.values()), closed
            assert all(b"request not received in time" in data for data in closed.values())
            r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=10,
                           headers={"Authorization": f"Bearer {key}"}, json={"model": "nope"})
            assert r.status_code == 404  # a whole body in time is served as usual
        finally:
            close_all(slow)
