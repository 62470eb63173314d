"""Records every request (including 401/429 and cache hits) in Prometheus and the
dashboard's rolling stats once it has completed; it never touches the response."""

from __future__ import annotations

import asyncio
import time

from litegate.asgi_types import ASGIApp, Receive, Scope, Send
from litegate.policies.metrics import Metrics
from litegate.policies.observe import Observer
from litegate.policies.spend import Spend
from litegate.policies.stats import Stats
from litegate.request import configured_name, get_info


class ObserveMiddleware:
    def __init__(
        self, app: ASGIApp, *, metrics: Metrics, stats: Stats, spend: Spend | None = None
    ) -> None:
        self.app = app
        self.observer = Observer(metrics=metrics, stats=stats, spend=spend)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        info = get_info(scope) if scope["type"] == "http" else None
        if info is None:
            await self.app(scope, receive, send)
            return
        raised = 0
        try:
            await self.app(scope, receive, send)
        except asyncio.CancelledError:
            raised = 499  # client went away
            raise
        except Exception as exc:
            # Rendered by the context middleware after this point.
            raised = int(getattr(exc, "status_code", 500))
            raise
        finally:
            pending = self.observer.finish(
                configured_name(info), info.variant, info.status or raised,
                time.perf_counter() - info.started, info.upstream_s, info.cache, info.key,
                info.tokens, info.prompt_tokens, info.stream_error,
            )
            if pending is not None:
                # Shielded: a cancelled (disconnected) stream still records its usage.
                await asyncio.shield(pending)
