"""The ceiling: the least a Python forwarder can do, as a yardstick for litegate.

A raw ASGI app under uvicorn (uvloop + httptools) that forwards every request to
the upstream over ONE pooled aiohttp ClientSession and relays status, content
type and body. No auth, no limits, no metrics, no logging.

``--client litegate`` forwards with litegate's own upstream client
(``litegate.upstreams.http1.Pool``) instead of aiohttp: the ceiling for a forwarder
that uses the same client as litegate, so the two ratios can be told apart.

Run: ``python bench/ceiling.py --port 8100 --upstream http://127.0.0.1:9000 [--client litegate]``
(the request path is appended to ``--upstream`` unchanged).
"""

from __future__ import annotations

import argparse

import aiohttp
import uvicorn

UPSTREAM = "http://127.0.0.1:9000"
session: aiohttp.ClientSession | None = None
HEADERS = {"content-type": "application/json"}


async def app(scope, receive, send):
    global session
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                if session is not None:
                    await session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        msg = await receive()
        body += msg.get("body", b"")
        more = msg.get("more_body", False)
    path = scope["path"]
    if scope["query_string"]:
        path += "?" + scope["query_string"].decode("latin-1")
    try:
        async with session.request(
            scope["method"], UPSTREAM + path, data=body or None,
            headers={"content-type": "application/json"},
        ) as r:
            status, data = r.status, await r.read()
            ctype = r.headers.get("content-type", "application/json").encode("latin-1")
    except aiohttp.ClientError:
        status, data, ctype = 502, b'{"error":{"message":"upstream error"}}', b"application/json"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


async def lean_app(scope, receive, send):
    """The same forwarder on litegate's upstream client."""
    from litegate.origins import parse_base_url
    from litegate.upstreams.http1 import Pool, ProtocolError

    global session
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                session = (Pool(), parse_base_url(UPSTREAM))
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                session[0].close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        msg = await receive()
        body += msg.get("body", b"")
        more = msg.get("more_body", False)
    pool, origin = session
    try:
        r = await pool.request(origin, scope["method"], scope["path"], HEADERS, body or None,
                               connect_timeout=5, timeout=30, per_read=False)
        status, data = r.status, await r.read(1 << 24)
        ctype = (r.header("content-type") or "application/json").encode("latin-1")
        r.release()
    except (OSError, ProtocolError):
        status, data, ctype = 502, b'{"error":{"message":"upstream error"}}', b"application/json"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def main() -> None:
    global UPSTREAM
    p = argparse.ArgumentParser(description="minimal raw-ASGI aiohttp forwarder (benchmark ceiling)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8100)
    p.add_argument("--upstream", default=UPSTREAM)
    p.add_argument("--client", choices=("aiohttp", "litegate"), default="aiohttp")
    a = p.parse_args()
    UPSTREAM = a.upstream.rstrip("/")
    uvicorn.run(app if a.client == "aiohttp" else lean_app, host=a.host, port=a.port, loop="uvloop", http="httptools",
                lifespan="on", access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
