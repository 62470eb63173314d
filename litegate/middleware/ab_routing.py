"""A/B variant selection: weighted, sticky per key, per header, or random.

The chosen variant goes to ``X-Litegate-Variant`` and to metrics, so variants can be
compared.
"""

from __future__ import annotations

import random
import zlib
from bisect import bisect_right
from typing import TYPE_CHECKING

from litegate.asgi_types import ASGIApp, Receive, Scope, Send
from litegate.request import RequestInfo, get_info, header
from litegate.snapshot import RouteSpec, VariantSpec

if TYPE_CHECKING:
    from litegate.gateway import Gateway


def choose_variant(route: RouteSpec, sticky_value: bytes | None) -> VariantSpec:
    """Pick a variant; the same ``sticky_value`` always lands on the same point."""
    if len(route.variants) == 1:
        return route.variants[0]
    if route.total_weight <= 0:
        return route.variants[0]
    if sticky_value is None:
        point = random.randrange(route.total_weight)
    else:
        point = zlib.crc32(route.name.encode() + b"\0" + sticky_value) % route.total_weight
    return route.variants[bisect_right(route.cumulative, point)]


def sticky_value(scope: Scope, info: RequestInfo, route: RouteSpec) -> bytes | None:
    if route.sticky == "key" and info.key is not None:
        return str(info.key.id).encode()
    if route.sticky == "header" and route.sticky_header is not None:
        return header(scope, route.sticky_header)
    return None


class ABRoutingMiddleware:
    def __init__(self, app: ASGIApp, *, gateway: Gateway) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        info = get_info(scope) if scope["type"] == "http" else None
        if info is not None and info.route is not None and info.variant is None:
            route = info.route
            variant = choose_variant(route, sticky_value(scope, info, route))
            info.variant = variant
            info.extra_headers.append((b"x-litegate-variant", variant.name.encode()))
        await self.app(scope, receive, send)
