"""Requests/period and tokens/period per key, per route, per key on a route.

429 with ``Retry-After`` and ``X-RateLimit-Limit/Remaining/Reset``; the same headers on
every allowed response that a limit applies to. Token usage (from the handler, also for
streamed and cancelled requests) is counted after the response.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from litegate.asgi_types import ASGIApp, Receive, Scope, Send
from litegate.request import configured_name, get_info, resolve_route

if TYPE_CHECKING:
    from litegate.gateway import Gateway


AGGREGATE_PATH = "/v1/aggregate"


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, *, gateway: Gateway) -> None:
        self.app = app
        self.limiter = gateway.limiter
        self.max_body = gateway.settings.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        info = get_info(scope) if scope["type"] == "http" else None
        if info is None or info.key is None or scope["path"] == AGGREGATE_PATH:
            # A fan-out is not itself a request: each of its branches is counted.
            await self.app(scope, receive, send)
            return
        receive = await resolve_route(scope, receive, info, self.max_body)
        # Unknown names count against the key's own limits only (never a per-name key).
        key, route_name, route = info.key, configured_name(info), info.route
        version = info.snapshot.version
        checks = self.limiter.checks("req", version, key, route_name, route)
        if checks:
            limiter = self.limiter
            info.extra_headers.extend(
                limiter.hit_local(checks) if limiter.local is not None else await limiter.hit(checks)
            )
        token_checks = self.limiter.checks("tok", version, key, route_name, route)
        if not token_checks:
            await self.app(scope, receive, send)
            return
        await self.limiter.check_tokens(token_checks)
        try:
            await self.app(scope, receive, send)
        finally:
            if info.tokens:
                # Shielded: a cancelled (disconnected) request still records its usage.
                await asyncio.shield(self.limiter.add_tokens(token_checks, info.tokens))
