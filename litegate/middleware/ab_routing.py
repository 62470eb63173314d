"""A/B routing: the chosen variant becomes a fact on the request, goes to
``X-Litegate-Variant`` and to metrics, so variants can be compared."""

from __future__ import annotations

from litegate.asgi_types import ASGIApp, Receive, Scope, Send
from litegate.policies.variants import choose_variant
from litegate.request import get_info, sticky_value


class ABRoutingMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        info = get_info(scope) if scope["type"] == "http" else None
        if info is not None and info.route is not None and info.variant is None:
            route = info.route
            variant = choose_variant(route, sticky_value(scope, info, route))
            info.variant = variant
            info.extra_headers.append((b"x-litegate-variant", variant.name.encode()))
        await self.app(scope, receive, send)
