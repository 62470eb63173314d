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

import litegate.limit_storage  # noqa: F401  (registers the async+local:// scheme)

from litegate.errors import RateLimited, ServiceUnavailable
from litegate.snapshot import KeySpec, RouteSpec

log = structlog.get_logger("litegate.limits")

NAMESPACE = "litegate"


@dataclass(frozen=True, slots=True)
class Check:
    item: RateLimitItem
    ids: tuple[str, ...]


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
        self.storage = storage_from_string(storage)
        self.requests: RateLimiter = STRATEGIES[strategy](self.storage)
        # Token usage is known only after the response and must always be counted,
        # even past the limit: a fixed window's counter increments unconditionally.
        self.tokens = FixedWindowRateLimiter(self.storage)
        self.fail_open = fail_open
        self._degraded_since: float | None = None

    @staticmethod
    def request_checks(
        key: KeySpec, route_name: str | None, route: RouteSpec | None, *, key_limits: bool = True
    ) -> list[Check]:
        kid = str(key.id)
        checks = (
            [Check(item, (NAMESPACE, "req", kid, "*")) for item in key.limits] if key_limits else []
        )
        if route_name is not None:
            if route is not None:
                checks += [Check(i, (NAMESPACE, "req", kid, route_name)) for i in route.limits]
            checks += [
                Check(i, (NAMESPACE, "req", kid, route_name, "k"))
                for i in key.route_limits.get(route_name, ())
            ]
        return checks

    @staticmethod
    def token_checks(
        key: KeySpec, route_name: str | None, route: RouteSpec | None, *, key_limits: bool = True
    ) -> list[Check]:
        kid = str(key.id)
        checks = (
            [Check(item, (NAMESPACE, "tok", kid, "*")) for item in key.token_limits]
            if key_limits
            else []
        )
        if route_name is not None:
            if route is not None:
                checks += [Check(i, (NAMESPACE, "tok", kid, route_name)) for i in route.token_limits]
            checks += [
                Check(i, (NAMESPACE, "tok", kid, route_name, "k"))
                for i in key.route_token_limits.get(route_name, ())
            ]
        return checks

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
        """Count one request against every check; return the X-RateLimit-* headers."""
        tightest: tuple[int, int, RateLimitItem] | None = None
        try:
            for check in checks:
                allowed = await self.requests.hit(check.item, *check.ids)
                stats = await self.requests.get_window_stats(check.item, *check.ids)
                reset = int(stats.reset_time)
                if not allowed:
                    retry = max(1, int(stats.reset_time - time.time() + 0.999))
                    raise RateLimited(
                        f"Rate limit exceeded: {check.item}",
                        headers={
                            "Retry-After": str(retry),
                            "X-RateLimit-Limit": str(check.item.amount),
                            "X-RateLimit-Remaining": "0",
                            "X-RateLimit-Reset": str(reset),
                        },
                    )
                if tightest is None or stats.remaining < tightest[0]:
                    tightest = (stats.remaining, reset, check.item)
        except (RateLimited, ServiceUnavailable):
            raise
        except Exception as exc:
            self._storage_failed(exc)
            return []
        self._recovered()
        if tightest is None:
            return []
        remaining, reset, item = tightest
        return [
            (b"x-ratelimit-limit", str(item.amount).encode()),
            (b"x-ratelimit-remaining", str(max(remaining, 0)).encode()),
            (b"x-ratelimit-reset", str(reset).encode()),
        ]

    async def check_tokens(self, checks: list[Check]) -> None:
        """Refuse a request when a token quota is already used up."""
        try:
            for check in checks:
                stats = await self.tokens.get_window_stats(check.item, *check.ids)
                if stats.remaining <= 0:
                    retry = max(1, int(stats.reset_time - time.time() + 0.999))
                    raise RateLimited(
                        f"Token quota exceeded: {check.item}",
                        headers={
                            "Retry-After": str(retry),
                            "X-RateLimit-Limit": str(check.item.amount),
                            "X-RateLimit-Remaining": "0",
                            "X-RateLimit-Reset": str(int(stats.reset_time)),
                        },
                        code="token_quota_exceeded",
                    )
        except (RateLimited, ServiceUnavailable):
            raise
        except Exception as exc:
            self._storage_failed(exc)

    async def add_tokens(self, checks: list[Check], tokens: int) -> None:
        if tokens <= 0:
            return
        for check in checks:
            try:
                await self.tokens.hit(check.item, *check.ids, cost=tokens)
            except Exception as exc:  # usage accounting never fails the response
                log.warning("token_usage_not_recorded", error=str(exc), tokens=tokens)
