"""Response cache policies: ``X-Cache: HIT|MISS|BYPASS`` (exact match) and
``X-Cache: SEMANTIC-HIT`` with ``X-Cache-Similarity`` (by meaning), the latter inside the
former so an exact hit costs no embedding.

Only successful, non-streamed responses of routes with a cache TTL are stored; the
body is teed while it is forwarded, so the client is never held back.
``Cache-Control: no-cache`` bypasses the lookup (the fresh answer is still stored).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from litegate.asgi_types import ASGIApp, Message, Receive, Scope, Send
from litegate.policies.caching import CachedResponse, RedisResponseCache, ResponseCache, cache_key
from litegate.policies.semantic_cache import PATHS as SEMANTIC_PATHS
from litegate.policies.semantic_cache import Answer, Hit, Query, SemanticCache, as_sse
from litegate.request import RequestInfo, get_info, header
from litegate.responses import send_response

if TYPE_CHECKING:
    from litegate.policies.semantic_cache import Vector

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

        async def store(headers: tuple[tuple[bytes, bytes], ...], body: bytes) -> None:
            await cache.store(key, status=200, headers=headers, body=body,
                              variant=info.variant.name if info.variant else None, ttl_s=ttl_s)

        return tee_success(send, info, cache.max_entry_bytes, store)


class SemanticCacheMiddleware:
    """Routes with ``semantic_cache``: chat and completion requests whose last user
    message means the same as a stored one (``policies.semantic_cache``) are answered from
    the cache. A ``stream: true`` hit is replayed as Server-Sent Events; a streamed miss
    is forwarded as it comes and not stored. A hit has been counted by the limits like any
    request; it uses no tokens (no upstream call)."""

    def __init__(self, app: ASGIApp, *, cache: SemanticCache) -> None:
        self.app = app
        self.cache = cache

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        info = get_info(scope) if scope["type"] == "http" else None
        route = info.route if info is not None else None
        if (info is None or route is None or route.semantic_cache is None
                or scope["path"] not in SEMANTIC_PATHS or info.json is None
                or scope["method"] != "POST"):
            await self.app(scope, receive, send)
            return
        query = self.cache.query(info.snapshot, route, scope["path"],
                                 info.key.id if info.key is not None else None, info.json)
        vector = hit = None
        if query is not None and b"no-cache" not in (header(scope, b"cache-control") or b""):
            vector, hit = await self.cache.lookup(query)
        if hit is not None and await self._replay(hit, info, scope["path"], send):
            self.cache.record(route.name, "hit")
            return
        if query is None or vector is None:
            self.cache.record(route.name, "bypass")
            _mark_once(info, "BYPASS")
            await self.app(scope, receive, send)
            return
        self.cache.record(route.name, "miss")
        _mark_once(info, "MISS")
        if info.stream:
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, self._tee(send, info, query, vector))

    async def _replay(self, hit: Hit, info: RequestInfo, path: str, send: Send) -> bool:
        body, headers = hit.answer.body, list(hit.answer.headers)
        if info.stream:
            options = info.json.get("stream_options") if info.json else None
            sse = as_sse(body, path, include_usage=isinstance(options, dict)
                         and options.get("include_usage") is True)
            if sse is None:
                return False
            body = sse
            headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        info.cache = "SEMANTIC-HIT"
        info.extra_headers[:] = [h for h in info.extra_headers if h[0] != b"x-cache"]
        info.extra_headers += [(b"x-cache", b"SEMANTIC-HIT"),
                               (b"x-cache-similarity", f"{hit.similarity:.4f}".encode())]
        if hit.answer.variant:
            headers.append((b"x-litegate-variant", hit.answer.variant.encode()))
        await send_response(send, 200, body, headers)
        return True

    def _tee(self, send: Send, info: RequestInfo, query: Query, vector: Vector) -> Send:
        cache = self.cache

        async def store(headers: tuple[tuple[bytes, bytes], ...], body: bytes) -> None:
            variant = info.variant.name if info.variant else None
            await cache.add(query, vector, Answer(headers, body, variant))

        return tee_success(send, info, cache.max_entry_bytes, store)


def _mark_once(info: RequestInfo, status: str) -> None:
    """The exact cache, when the route has one, has already said MISS or BYPASS."""
    if info.cache is None:
        info.cache = status
        info.extra_headers.append((b"x-cache", status.encode()))


def tee_success(
    send: Send, info: RequestInfo, limit: int,
    store: Callable[[tuple[tuple[bytes, bytes], ...], bytes], Awaitable[None]],
) -> Send:
    """Forward every message; once a complete 200 answer of at most ``limit`` bytes has
    reached the client, hand its headers and body to ``store``."""
    status = 0
    kept: tuple[tuple[bytes, bytes], ...] = ()
    chunks: list[bytes] = []
    size = 0

    async def tee(message: Message) -> None:
        nonlocal status, kept, size
        if message["type"] == "http.response.start":
            status = message["status"]
            kept = tuple((k, v) for k, v in message.get("headers", ()) if k not in _SKIP_HEADERS)
        elif message["type"] == "http.response.body" and status == 200:
            chunk = message.get("body", b"")
            size += len(chunk)
            if size <= limit:
                chunks.append(chunk)
            if not message.get("more_body", False) and not info.stream_error:
                await send(message)  # the client first; then store
                if size <= limit:
                    await store(kept, b"".join(chunks))
                return
        await send(message)

    return tee
