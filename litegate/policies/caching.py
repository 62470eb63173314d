"""Exact-match response cache: LRU bounded by entries and bytes, with TTL, and
coalescing of concurrent identical misses (one upstream call)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import msgspec

from litegate.redis_wire import RedisWire, parse_redis_url

_encode_sorted = msgspec.json.Encoder(order="sorted").encode


@dataclass(frozen=True, slots=True)
class CachedResponse:
    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    variant: str | None
    expires_at: float


def cache_key(route: str, body: Any) -> str:
    """Route + normalized JSON body (key order does not matter)."""
    return route + ":" + hashlib.sha256(_encode_sorted(body)).hexdigest()


class ResponseCache:
    """In-process LRU bounded by entries and bytes (the embedded default)."""

    def __init__(self, *, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_entry_bytes = max(1, max_bytes // 8)
        self._entries: OrderedDict[str, CachedResponse] = OrderedDict()
        self._bytes = 0
        self.inflight: dict[str, asyncio.Future[None]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    async def lookup(self, key: str) -> CachedResponse | None:
        return self.get(key)

    async def store(self, key: str, **entry: Any) -> bool:
        return self.put(key, **entry)

    def get(self, key: str) -> CachedResponse | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= time.monotonic():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def put(
        self,
        key: str,
        *,
        status: int,
        headers: tuple[tuple[bytes, bytes], ...],
        body: bytes,
        variant: str | None,
        ttl_s: float,
    ) -> bool:
        if len(body) > self.max_entry_bytes:
            return False
        if key in self._entries:
            self._drop(key)
        self._entries[key] = CachedResponse(
            status, headers, body, variant, time.monotonic() + ttl_s
        )
        self._bytes += len(body)
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)
        return True

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= len(entry.body)

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0


class RedisResponseCache:
    """Shared cache for several replicas: entries in Redis with a TTL (bound its memory
    with Redis' own ``maxmemory`` + ``allkeys-lru``). Redis failures count as misses —
    the cache never fails a request. Identical concurrent misses are still coalesced
    per process."""

    PREFIX = "litegate:cache:"

    TIMEOUT_S = 0.5
    """A slower Redis is a miss: the cache must never hold a request back for long."""

    def __init__(self, url: str, *, max_bytes: int) -> None:
        self.max_entry_bytes = max(1, max_bytes // 8)
        address = parse_redis_url(url)
        self.wire: RedisWire | None = None
        self.redis: Any = None
        if address is not None:  # litegate's pipelined connection (redis_wire)
            self.wire = RedisWire(address, timeout_s=self.TIMEOUT_S,
                                  max_reply_bytes=self.max_entry_bytes + 65536)
        else:  # TLS, URL options ...: redis-py
            import redis.asyncio as aioredis

            self.redis = aioredis.Redis.from_url(url, socket_timeout=self.TIMEOUT_S,
                                                 socket_connect_timeout=self.TIMEOUT_S)
        self.inflight: dict[str, asyncio.Future[None]] = {}
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode = msgspec.msgpack.Decoder(tuple[int, list[tuple[bytes, bytes]], bytes, str | None]).decode
        self._failing = False

    def __len__(self) -> int:
        return 0  # not known locally

    async def lookup(self, key: str) -> CachedResponse | None:
        try:
            name = self.PREFIX + key
            raw = await (self.wire.command(b"GET", name) if self.wire is not None
                         else self.redis.get(name))
        except Exception as exc:  # noqa: BLE001 - any Redis failure is a miss
            self._warn(exc)
            return None
        self._failing = False
        if raw is None:
            return None
        status, headers, body, variant = self._decode(raw.encode() if isinstance(raw, str) else raw)
        return CachedResponse(status, tuple(headers), body, variant, float("inf"))

    async def store(
        self,
        key: str,
        *,
        status: int,
        headers: tuple[tuple[bytes, bytes], ...],
        body: bytes,
        variant: str | None,
        ttl_s: float,
    ) -> bool:
        if len(body) > self.max_entry_bytes:
            return False
        name, value = self.PREFIX + key, self._encode((status, list(headers), body, variant))
        ttl_ms = max(1, int(ttl_s * 1000))
        try:
            if self.wire is not None:
                await self.wire.command(b"SET", name, value, b"PX", ttl_ms)
            else:
                await self.redis.set(name, value, px=ttl_ms)
        except Exception as exc:  # noqa: BLE001
            self._warn(exc)
            return False
        return True

    def _warn(self, exc: Exception) -> None:
        if not self._failing:
            self._failing = True
            import structlog

            structlog.get_logger("litegate.cache").warning("redis_cache_unavailable", error=str(exc))

    async def close(self) -> None:
        if self.wire is not None:
            self.wire.close()
        else:
            await self.redis.aclose()
