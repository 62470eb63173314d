"""Requests/period and tokens/period per key, per route, per key on a route.

429 with ``Retry-After`` and ``X-RateLimit-Limit/Remaining/Reset``; the same headers on
every allowed response that a limit applies to. A key whose spend budget for the period
is used up gets 429 ``budget_exceeded`` before the upstream is called. Token usage (from the handler, also for
streamed and cancelled requests) is counted after the response.
"""

from __future__ import annotations

import asyncio

from litegate.asgi_types import ASGIApp, Receive, Scope, Send
from litegate.policies.admission import admit
from litegate.policies.limiting import Limiter
from litegate.policies.spend import Spend
from litegate.request import configured_name, get_info

AGGREGATE_PATH = "/v1/aggregate"


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, *, limiter: Limiter, spend: Spend | None = None) -> None:
        self.app = app
        self.limiter = limiter
        self.spend = spend

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        info = get_info(scope) if scope["type"] == "http" else None
        if info is None or info.key is None or scope["path"] == AGGREGATE_PATH:
            # A fan-out is not itself a request: each of its branches is counted.
            await self.app(scope, receive, send)
            return
        # Unknown names count against the key's own limits only (never a per-name key).
        admitted = await admit(self.limiter, self.spend, info.snapshot.version, info.key,
                               configured_name(info), info.route)
        info.extra_headers.extend(admitted.headers)
        token_checks = admitted.token_checks
        if not token_checks:
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            if info.tokens:
                # Shielded: a cancelled (disconnected) request still records its usage.
                await asyncio.shield(self.limiter.add_tokens(token_checks, info.tokens))
