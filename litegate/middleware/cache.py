"""Response cache policy: ``X-Cache: HIT|MISS|BYPASS``.

Only successful, non-streamed responses of routes with a cache TTL are stored; the
body is teed while it is forwarded, so the client is never held back.
``Cache-Control: no-cache`` bypasses the lookup (the fresh answer is still stored).
"""

from __future__ import annotations

import asyncio

from litegate.asgi_types import ASGIApp, Message, Receive, Scope, Send
from litegate.policies.caching import CachedResponse, RedisResponseCache, ResponseCache, cache_key
from litegate.request import RequestInfo, get_info, header
from litegate.responses import send_response

_SKIP_HEADERS = frozenset({b"content-length", b"x-cache", b"x-litegate-variant", b"date", b"server"})


class CacheMiddleware:
    def __init__(
        self, app: ASGIApp, *, cache: ResponseCache | RedisResponseCache, cache_streams: bool
    ) -> None:
        self.app = app
        self.cache = cache
        self.cache_streams = cache_streams

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        info = get_info(scope) if scope["type"] == "http" else None
        if info is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        route = info.route
        if route is None or not route.cache_ttl_s or info.json is None:
            await self.app(scope, receive, send)
            return
        key = cache_key(route.name, info.json)
        cache_control = header(scope, b"cache-control") or b""
        if (info.stream and not self.cache_streams) or b"no-cache" in cache_control:
            self._mark(info, "BYPASS")
            if info.stream and not self.cache_streams:
                await self.app(scope, receive, send)
            else:
                await self.app(scope, receive, self._tee(send, info, key, route.cache_ttl_s))
            return
        entry = await self.cache.lookup(key)
        if entry is None and key in self.cache.inflight:
            # Someone is already fetching this exact request: wait for their answer.
            await asyncio.shield(self.cache.inflight[key])
            entry = await self.cache.lookup(key)
        if entry is not None:
            self._mark(info, "HIT")
            await self._replay(entry, info, send)
            return
        self._mark(info, "MISS")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.cache.inflight[key] = future
        try:
            await self.app(scope, receive, self._tee(send, info, key, route.cache_ttl_s))
        finally:
            self.cache.inflight.pop(key, None)
            future.set_result(None)

    def _mark(self, info: RequestInfo, status: str) -> None:
        info.cache = status
        info.extra_headers.append((b"x-cache", status.encode()))

    async def _replay(self, entry: CachedResponse, info: RequestInfo, send: Send) -> None:
        headers = list(entry.headers)
        if entry.variant:
            headers.append((b"x-litegate-variant", entry.variant.encode()))
        await send_response(send, entry.status, entry.body, headers)

    def _tee(self, send: Send, info: RequestInfo, key: str, ttl_s: float) -> Send:
        cache = self.cache
        state: dict[str, object] = {"status": 0, "headers": (), "chunks": [], "size": 0}
        limit = cache.max_entry_bytes

        async def tee(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["headers"] = tuple(
                    (k, v) for k, v in message.get("headers", ()) if k not in _SKIP_HEADERS
                )
            elif message["type"] == "http.response.body" and state["status"] == 200:
                chunk = message.get("body", b"")
                chunks: list[bytes] = state["chunks"]  # type: ignore[assignment]
                state["size"] = int(state["size"]) + len(chunk)  # type: ignore[call-overload]
                if int(state["size"]) <= limit:  # type: ignore[call-overload]
                    chunks.append(chunk)
                if not message.get("more_body", False) and not info.stream_error:
                    await send(message)  # the client first; then store
                    if int(state["size"]) <= limit:  # type: ignore[call-overload]
                        await cache.store(
                            key,
                            status=200,
                            headers=state["headers"],  # type: ignore[arg-type]
                            body=b"".join(chunks),
                            variant=info.variant.name if info.variant else None,
                            ttl_s=ttl_s,
                        )
                    return
            await send(message)

        return tee
