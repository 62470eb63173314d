"""``litegate serve --server granian``: a request head sent a byte at a time is cut off by
granian's own ``header_read_timeout``, which serve sets from ``LITEGATE_HEADER_TIMEOUT_S``.

(The default server, uvicorn, has the full guard of ``litegate.connections``: 408 on slow
heads, silent connections and slow bodies, and the connection cap —
tests/integration/test_slow_clients.py. Under granian only the head deadline holds; the
README's TLS/HTTP/2 section says so.)
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.helpers.cli import serving
from tests.helpers.servers import free_port
from tests.integration.test_slow_clients import _close_all, _dribble, _open

HEADER_TIMEOUT_S = 1.0
DRIBBLERS = 50


def test_granian_cuts_off_dribbling_heads_and_serves_others(home: Path) -> None:
    port = free_port()
    with serving("--server", "granian", "--port", str(port), home=home,
                 LITEGATE_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S)):
        t0 = time.monotonic()
        socks = _open(port, DRIBBLERS, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
            assert r.status_code == 200 and r.json() == {"status": "ok"}
            closed = _dribble(socks, t0 + 8, b"a")
            assert len(closed) == DRIBBLERS, f"{DRIBBLERS - len(closed)} slow heads still open"
            # Closed without an answer (hyper sends none), and nothing was served to them.
            assert all(not data.startswith(b"HTTP/1.1 200") for data in closed.values())
            assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
        finally:
            _close_all(socks)
