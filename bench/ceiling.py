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
HEADERS = {"content-type": "application/json"}
BAD_GATEWAY = (502, b'{"error":{"message":"upstream error"}}', b"application/json")


class AiohttpClient:
    """One pooled aiohttp session (the issue's forwarder)."""

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))

    async def close(self) -> None:
        await self.session.close()

    async def forward(self, method: str, path: str, body: bytes) -> tuple[int, bytes, bytes]:
        try:
            async with self.session.request(method, UPSTREAM + path, data=body or None,
                                            headers=HEADERS) as r:
                data = await r.read()
                return r.status, data, r.headers.get("content-type", "application/json").encode("latin-1")
        except aiohttp.ClientError:
            return BAD_GATEWAY


class LitegateClient:
    """litegate's own upstream client (``--client litegate``)."""

    async def start(self) -> None:
        from litegate.origins import parse_base_url
        from litegate.upstreams.http1 import Pool, ProtocolError

        self.pool, self.origin = Pool(), parse_base_url(UPSTREAM)
        self.errors = (OSError, ProtocolError)

    async def close(self) -> None:
        self.pool.close()

    async def forward(self, method: str, path: str, body: bytes) -> tuple[int, bytes, bytes]:
        try:
            r = await self.pool.request(self.origin, method, path, HEADERS, body or None,
                                        connect_timeout=5, timeout=30, per_read=False)
            data = await r.read(1 << 24)
            r.release()
            return r.status, data or b"", (r.header("content-type") or "application/json").encode("latin-1")
        except self.errors:
            return BAD_GATEWAY


client: AiohttpClient | LitegateClient = AiohttpClient()


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await client.start()
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await client.close()
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
    status, data, ctype = await client.forward(scope["method"], path, body)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def main() -> None:
    global UPSTREAM, client
    p = argparse.ArgumentParser(description="minimal raw-ASGI aiohttp forwarder (benchmark ceiling)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8100)
    p.add_argument("--upstream", default=UPSTREAM)
    p.add_argument("--client", choices=("aiohttp", "litegate"), default="aiohttp")
    a = p.parse_args()
    UPSTREAM = a.upstream.rstrip("/")
    if a.client == "litegate":
        client = LitegateClient()
    uvicorn.run(app, host=a.host, port=a.port, loop="uvloop", http="httptools",
                lifespan="on", access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
