"""A/B routing: the chosen variant becomes a fact on the request, goes to
``X-Litegate-Variant`` and to metrics, so variants can be compared. With a bandit,
routes with ``adaptive`` are split by its current shares and each outcome feeds it."""

from __future__ import annotations

import time

from litegate.asgi_types import ASGIApp, Receive, Scope, Send
from litegate.errors import LitegateError
from litegate.policies.bandit import Bandit, PendingFeedback, pick_variant
from litegate.request import RequestInfo, get_info, sticky_value
from litegate.snapshot import RouteSpec, VariantSpec


class ABRoutingMiddleware:
    def __init__(
        self, app: ASGIApp, *, bandit: Bandit | None = None,
        pending: PendingFeedback | None = None,
    ) -> None:
        self.app = app
        self.bandit = bandit
        self.pending = pending
        """Where requests of ``feedback`` routes are remembered for ``/v1/feedback``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        info = get_info(scope) if scope["type"] == "http" else None
        if info is not None and info.route is not None and info.variant is None:
            route = info.route
            sticky = sticky_value(scope, info, route)
            variant = pick_variant(self.bandit, route, sticky)
            info.variant = variant
            info.extra_headers.append((b"x-litegate-variant", variant.name.encode()))
            if self.bandit is not None and self.bandit.adaptive(route.name) is not None:
                await self._observed(scope, receive, send, info, route, variant)
                return
        await self.app(scope, receive, send)

    async def _observed(
        self, scope: Scope, receive: Receive, send: Send, info: RequestInfo,
        route: RouteSpec, variant: VariantSpec,
    ) -> None:
        """Run the request and hand its outcome to the bandit. Client errors (4xx) say
        nothing about the variant and are not counted; a fallback means it failed."""
        assert self.bandit is not None
        adaptive = self.bandit.adaptive(route.name)
        if adaptive is not None and adaptive.metric == "feedback" and self.pending is not None:
            self.pending.remember(info.request_id, route.name, variant.name,
                                  info.key.id if info.key is not None else None)
        started = time.perf_counter()
        status = 0
        try:
            await self.app(scope, receive, send)
        except LitegateError as exc:
            status = exc.status_code
            raise
        except Exception:
            status = 500
            raise
        finally:
            # The status sent is recorded on the request by the outer send (the request
            # context, or an aggregate branch's capture): no second send wrapper here.
            self.bandit.outcome(route.name, variant.name, info.status or status,
                                time.perf_counter() - started,
                                failed=info.stream_error or info.variant is not variant)
