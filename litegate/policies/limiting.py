"""Rate limits and token quotas over ``limits`` storages (memory or Redis).

Policies are data: rate strings are parsed once into ``RateLimitItem``s when the
snapshot is built; the storage comes from a URI; the strategy is picked by name.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import structlog
from limits import RateLimitItem
from limits.aio.strategies import STRATEGIES, FixedWindowRateLimiter, RateLimiter
from limits.storage import storage_from_string

from litegate.errors import RateLimited, ServiceUnavailable
from litegate.log_config import hiding
from litegate.policies.limit_storage import LocalStorage  # also registers async+local://
from litegate.policies.redis_window import FIXED_WINDOWS, INCR_MANY, RedisWindows, StorageScripts
from litegate.snapshot import KeySpec, RouteSpec

log = structlog.get_logger("litegate.limits")

NAMESPACE = "litegate"


@dataclass(frozen=True, slots=True)
class Check:
    item: RateLimitItem
    ids: tuple[str, ...]
    key: str
    """``item.key_for(*ids)``, computed once: the storage key of this limit."""


def _check(item: RateLimitItem, *ids: str) -> Check:
    return Check(item, ids, item.key_for(*ids))


def storage_uri(redis_url: str | None) -> str:
    if not redis_url:
        return "async+local://"
    if redis_url.startswith("async+"):
        return redis_url
    return "async+" + redis_url


class Limiter:
    """Counts requests and tokens; raises ``RateLimited`` (429) or, fail-closed, 503."""

    def __init__(self, *, storage: str, strategy: str, fail_open: bool) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown limit strategy {strategy!r}; choose from {sorted(STRATEGIES)}")
        # redis-py, which the cache and the semantic cache use too: limits' default
        # client (coredis) would be a second Redis library in the process (+30 MiB), and
        # limits imports every client it knows when a Redis storage is made.
        if storage.startswith("async+redis"):
            with hiding("coredis", "valkey"):
                self.storage = storage_from_string(storage, implementation="redispy")
        else:
            self.storage = storage_from_string(storage)
        self.strategy = strategy
        # STRATEGIES maps names to concrete strategy classes.
        self.requests: RateLimiter = STRATEGIES[strategy](self.storage)  # type: ignore[abstract]
        # In-process storage: count synchronously, skipping the async strategy layers.
        self.local = self.storage if isinstance(self.storage, LocalStorage) else None
        # Redis: litegate's scripts (shared with the spend counters), and all of a
        # request's checks in one round trip.
        self.scripts = StorageScripts.for_storage(self.storage)
        self.windows = (RedisWindows(self.storage, self.scripts) if self.scripts is not None
                        and RedisWindows.supports(self.storage, strategy) else None)
        self._checks: dict[tuple[object, ...], list[Check]] = {}
        self._checks_version = -1
        # Token usage is known only after the response and must always be counted,
        # even past the limit: a fixed window's counter increments unconditionally.
        self.tokens = FixedWindowRateLimiter(self.storage)
        self.fail_open = fail_open
        self._degraded_since: float | None = None

    def checks(
        self,
        kind: str,
        version: int,
        key: KeySpec,
        route_name: str | None,
        route: RouteSpec | None,
    ) -> list[Check]:
        """The limits that apply, ``kind`` ``req`` or ``tok``; cached per config version."""
        if version != self._checks_version:
            self._checks.clear()
            self._checks_version = version
        cache_key = (kind, key.id, route_name)
        cached = self._checks.get(cache_key)
        if cached is not None:
            return cached
        tokens = kind == "tok"
        kid = str(key.id)
        items = key.token_limits if tokens else key.limits
        checks = [_check(item, NAMESPACE, kind, kid, "*") for item in items]
        if route_name is not None:
            if route is not None:
                items = route.token_limits if tokens else route.limits
                checks += [_check(i, NAMESPACE, kind, kid, route_name) for i in items]
            per_key = key.route_token_limits if tokens else key.route_limits
            checks += [_check(i, NAMESPACE, kind, kid, route_name, "k") for i in per_key.get(route_name, ())]
        if len(self._checks) > 100_000:  # bound memory under key churn
            self._checks.clear()
        self._checks[cache_key] = checks
        return checks

    def close(self) -> None:
        if self.scripts is not None:
            self.scripts.close()

    def _storage_failed(self, exc: Exception) -> None:
        if self._degraded_since is None:
            self._degraded_since = time.time()
            log.warning("limit_storage_unavailable", error=str(exc), fail_open=self.fail_open)
        if not self.fail_open:
            raise ServiceUnavailable(
                "rate-limit storage unavailable", headers={"Retry-After": "1"}
            ) from exc

    def _recovered(self) -> None:
        if self._degraded_since is not None:
            log.info("limit_storage_recovered")
            self._degraded_since = None

    async def hit(self, checks: list[Check]) -> list[tuple[bytes, bytes]]:
        """Count one request against every check; return the X-RateLimit-* headers of
        the tightest one, or raise ``RateLimited`` for the first one exceeded."""
        if self.local is not None:
            return self.hit_local(checks)
        if self.windows is not None:
            return await self._hit_windows(checks)
        tightest: tuple[int, float, RateLimitItem] | None = None
        try:
            for check in checks:
                allowed = await self.requests.hit(check.item, *check.ids)
                stats = await self.requests.get_window_stats(check.item, *check.ids)
                if not allowed:
                    raise _limited(check.item, stats.reset_time)
                if tightest is None or stats.remaining < tightest[0]:
                    tightest = (stats.remaining, stats.reset_time, check.item)
        except (RateLimited, ServiceUnavailable):
            raise
        except Exception as exc:
            self._storage_failed(exc)
            return []
        self._recovered()
        return _rate_headers(tightest)

    async def _hit_windows(self, checks: list[Check]) -> list[tuple[bytes, bytes]]:
        assert self.windows is not None
        try:
            results = await self.windows.hit([(c.item, c.key) for c in checks])
        except Exception as exc:  # whatever the client raises, the storage is unusable now
            self._storage_failed(exc)
            return []
        self._recovered()
        tightest: tuple[int, float, RateLimitItem] | None = None
        for check, (allowed, remaining, reset) in zip(checks, results, strict=False):
            if not allowed:
                raise _limited(check.item, reset)
            if tightest is None or remaining < tightest[0]:
                tightest = (remaining, reset, check.item)
        return _rate_headers(tightest)

    def hit_local(self, checks: list[Check]) -> list[tuple[bytes, bytes]]:
        """Synchronous: the in-process storage never waits (called directly on the hot path)."""
        assert self.local is not None
        tightest: tuple[int, float, RateLimitItem] | None = None
        for check in checks:
            item = check.item
            allowed, remaining, reset = self.local.hit_now(
                self.strategy, check.key, item.amount, item.get_expiry()
            )
            if not allowed:
                raise _limited(item, reset)
            if tightest is None or remaining < tightest[0]:
                tightest = (remaining, reset, item)
        return _rate_headers(tightest)

    async def check_tokens(self, checks: list[Check]) -> None:
        """Refuse a request when a token quota is already used up."""
        if not checks:
            return
        try:
            if self.scripts is not None:  # every window in one round trip
                rows = await self.scripts.run(
                    FIXED_WINDOWS, [self.scripts.key(c.key) for c in checks], [])
                now = time.time()
                windows = [(c.item.amount - int(count), max(int(ttl), 0) + now)
                           for c, (count, ttl) in zip(checks, rows, strict=True)]
            else:
                windows = []
                for check in checks:
                    stats = await self.tokens.get_window_stats(check.item, *check.ids)
                    windows.append((stats.remaining, stats.reset_time))
        except Exception as exc:  # whatever the client raises, the storage is unusable now
            self._storage_failed(exc)
            return
        for check, (remaining, reset) in zip(checks, windows, strict=True):
            if remaining <= 0:
                raise _limited(check.item, reset, tokens=True)

    async def add_tokens(self, checks: list[Check], tokens: int) -> None:
        if tokens <= 0 or not checks:
            return
        if self.scripts is not None:  # every counter in one round trip
            keys = [self.scripts.key(c.key) for c in checks]
            args = [v for c in checks for v in (c.item.get_expiry(), tokens)]
            try:
                await self.scripts.run(INCR_MANY, keys, args)
            except Exception as exc:  # usage accounting never fails the response
                log.warning("token_usage_not_recorded", error=str(exc), tokens=tokens)
            return
        for check in checks:
            try:
                await self.tokens.hit(check.item, *check.ids, cost=tokens)
            except Exception as exc:
                log.warning("token_usage_not_recorded", error=str(exc), tokens=tokens)


def _limited(item: RateLimitItem, reset: float, *, tokens: bool = False) -> RateLimited:
    return RateLimited(
        f"{'Token quota' if tokens else 'Rate limit'} exceeded: {item}",
        headers={
            "Retry-After": str(max(1, int(reset - time.time() + 0.999))),
            "X-RateLimit-Limit": str(item.amount),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(int(reset)),
        },
        code="token_quota_exceeded" if tokens else None,
    )


def _rate_headers(tightest: tuple[int, float, RateLimitItem] | None) -> list[tuple[bytes, bytes]]:
    if tightest is None:
        return []
    remaining, reset, item = tightest
    return [
        (b"x-ratelimit-limit", str(item.amount).encode()),
        (b"x-ratelimit-remaining", str(max(remaining, 0)).encode()),
        (b"x-ratelimit-reset", str(int(reset)).encode()),
    ]
