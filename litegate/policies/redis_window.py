"""Every request limit of one request in one Redis round trip (sliding-window counter).

``limits`` counts one check per call and reads its window in a second call: a key
limit plus a route limit cost four round trips, and redis-py's per-command work was
most of a worker's CPU per request. This script runs ``limits``' own acquire and window
steps for all the checks, in order, atomically, and stops at the first refused one
(the later ones are not counted, as before). Same keys, same arithmetic: replicas on
older code and this one count the same windows.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from math import floor, inf
from typing import Any

from limits import RateLimitItem
from limits.aio.storage import RedisClusterStorage, RedisStorage

from litegate.redis_wire import RedisWire, parse_redis_url

# limits/resources/redis/lua_scripts/acquire_sliding_window.lua then sliding_window.lua,
# once per pair of KEYS (previous, current window) with ARGV (limit, expiry s) per check.
SCRIPT = """
local out = {}
for i = 1, #KEYS / 2 do
    local previous_key, current_key = KEYS[2 * i - 1], KEYS[2 * i]
    local limit = tonumber(ARGV[2 * i - 1])
    local expiry = tonumber(ARGV[2 * i]) * 1000
    local allowed = 1
    local current_ttl = tonumber(redis.call('pttl', current_key))
    if current_ttl > 0 and current_ttl < expiry then
        redis.call('rename', current_key, previous_key)
        redis.call('set', current_key, 0, 'PX', current_ttl + expiry)
    end
    local previous_count = tonumber(redis.call('get', previous_key)) or 0
    local previous_ttl = tonumber(redis.call('pttl', previous_key)) or 0
    local current_count = tonumber(redis.call('get', current_key)) or 0
    current_ttl = tonumber(redis.call('pttl', current_key)) or 0
    if previous_ttl <= 0 then previous_ttl = 0 end
    if current_ttl <= 0 then current_ttl = 0 end
    if 1 > limit or math.floor(previous_count * previous_ttl / expiry) + current_count + 1 > limit then
        allowed = 0
    elseif redis.call('exists', current_key) == 1 then
        redis.call('incrby', current_key, 1)
    else
        redis.call('set', current_key, 1, 'PX', expiry * 2)
    end
    previous_count = redis.call('get', previous_key)
    previous_ttl = redis.call('pttl', previous_key)
    current_count = redis.call('get', current_key)
    current_ttl = redis.call('pttl', current_key)
    table.insert(out, {allowed, previous_count, previous_ttl, current_count, current_ttl})
    if allowed == 0 then return out end
end
return out
"""


INCR_MANY = """
local out = {}
for i = 1, #KEYS do
    local amount = tonumber(ARGV[2 * i])
    local current = redis.call('incrby', KEYS[i], amount)
    if tonumber(current) == amount then
        redis.call('expire', KEYS[i], ARGV[2 * i - 1])
    end
    out[i] = current
end
return out
"""
"""limits' ``incr`` (INCRBY, then EXPIRE on a new counter) for several counters, in one
round trip; ARGV holds (expiry s, amount) per counter."""

FIXED_WINDOWS = """
local out = {}
for i = 1, #KEYS do
    out[i] = {tonumber(redis.call('get', KEYS[i])) or 0, redis.call('ttl', KEYS[i])}
end
return out
"""
"""limits' fixed-window ``get_window_stats`` reads (GET, then TTL) for several counters,
in one round trip: (count, ttl s) per counter."""


class StorageScripts:
    """Lua scripts on the Redis behind a ``limits`` storage: over litegate's pipelined
    :class:`~litegate.redis_wire.RedisWire` where the storage is redis-py on a URL the
    wire speaks (plain ``redis://`` or a unix socket, no client options), else through
    the storage's own client (coredis, valkey, TLS, sentinel...)."""

    def __init__(self, storage: Any) -> None:
        self._bridge = storage.bridge
        address = None
        if type(self._bridge).__name__ == "RedispyBridge" and not storage.options:
            address = parse_redis_url(self._bridge.uri)
        self.wire = RedisWire(address) if address is not None else None
        self._registered: dict[str, Any] = {}

    @classmethod
    def for_storage(cls, storage: Any) -> StorageScripts | None:
        """Scripts for a single Redis (a cluster cannot run one script across slots)."""
        if isinstance(storage, RedisStorage) and not isinstance(storage, RedisClusterStorage):
            return cls(storage)
        return None

    def key(self, name: str) -> str:
        """The storage's own name for counter ``name`` (its key prefix)."""
        return str(self._bridge.prefixed_key(name))

    async def run(self, source: str, keys: Sequence[str], args: Sequence[int]) -> Any:
        if self.wire is not None:
            return await self.wire.eval(source, keys, args)
        script = self._registered.get(source)
        if script is None:
            script = self._registered[source] = (
                self._bridge.get_connection().register_script(source))
        if hasattr(script, "execute"):  # coredis; redis-py's and valkey's are called
            return await script.execute(keys, args)
        return await script(keys, args)

    def close(self) -> None:
        if self.wire is not None:
            self.wire.close()


class RedisWindows:
    """The one-round-trip path over a ``limits`` Redis storage (coredis or redis-py)."""

    def __init__(self, storage: Any, scripts: StorageScripts) -> None:
        self._storage = storage
        self._scripts = scripts

    @classmethod
    def supports(cls, storage: Any, strategy: str) -> bool:
        bridge = getattr(storage, "bridge", None)
        return (strategy == "sliding-window-counter"
                and type(bridge).__name__ in ("CoredisBridge", "RedispyBridge")
                and hasattr(storage, "_current_window_key"))

    async def hit(self, items: Sequence[tuple[RateLimitItem, str]]
                  ) -> list[tuple[bool, int, float]]:
        """Count one request against each ``(item, key)`` in order: (allowed, remaining,
        reset time) per check evaluated; the list ends at the first refused one."""
        storage, scripts = self._storage, self._scripts
        keys: list[str] = []
        args: list[int] = []
        for item, key in items:
            keys += [scripts.key(storage._previous_window_key(key)),
                     scripts.key(storage._current_window_key(key))]
            args += [item.amount, item.get_expiry()]
        rows = await scripts.run(SCRIPT, keys, args)
        now = time.time()
        return [_stats(item, row, now) for (item, _), row in zip(items, rows, strict=False)]


def _stats(item: RateLimitItem, row: Sequence[Any], now: float) -> tuple[bool, int, float]:
    """``SlidingWindowCounterRateLimiter.get_window_stats`` on the window read back."""
    allowed = int(row[0]) == 1
    previous_count, current_count = int(row[1] or 0), int(row[3] or 0)
    previous_expires_in = max(0.0, float(row[2] or 0)) / 1000
    current_expires_in = max(0.0, float(row[4] or 0)) / 1000
    expiry = item.get_expiry()
    weighted = previous_count * previous_expires_in / expiry + current_count
    remaining = max(0, item.amount - floor(weighted))
    if not (previous_count or current_count):
        return allowed, remaining, now
    previous_reset_in = previous_expires_in % (expiry / previous_count) if previous_count else inf
    current_reset_in = current_expires_in % expiry if current_count else inf
    return allowed, remaining, now + min(previous_reset_in, current_reset_in)
