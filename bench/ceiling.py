"""The ceiling: the least a Python forwarder can do, as a yardstick for litegate.

A raw ASGI app under uvicorn (uvloop + httptools) that forwards every request to
the upstream over ONE pooled aiohttp ClientSession and relays status, content
type and body. No auth, no limits, no metrics, no logging.

Run: ``python bench/ceiling.py --port 8100 --upstream http://127.0.0.1:9000``
(the request path is appended to ``--upstream`` unchanged).
"""

from __future__ import annotations

import argparse

import aiohttp
import uvicorn

UPSTREAM = "http://127.0.0.1:9000"
session: aiohttp.ClientSession | None = None


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


def main() -> None:
    global UPSTREAM
    p = argparse.ArgumentParser(description="minimal raw-ASGI aiohttp forwarder (benchmark ceiling)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8100)
    p.add_argument("--upstream", default=UPSTREAM)
    a = p.parse_args()
    UPSTREAM = a.upstream.rstrip("/")
    uvicorn.run(app, host=a.host, port=a.port, loop="uvloop", http="httptools",
                lifespan="on", access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
