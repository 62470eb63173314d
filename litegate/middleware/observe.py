"""Records every request (including 401/429 and cache hits) in Prometheus and the
dashboard's rolling stats once it has completed; it never touches the response."""

from __future__ import annotations

import asyncio
import time

from litegate.asgi_types import ASGIApp, Receive, Scope, Send
from litegate.policies.metrics import Metrics
from litegate.policies.spend import Spend
from litegate.policies.stats import Stats
from litegate.request import configured_name, get_info


class ObserveMiddleware:
    def __init__(
        self, app: ASGIApp, *, metrics: Metrics, stats: Stats, spend: Spend | None = None
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.stats = stats
        self.spend = spend

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
            m = self.metrics
            name = configured_name(info)
            route = name or "-"
            variant = info.variant.name if info.variant else "-"
            status = info.status or raised
            elapsed = time.perf_counter() - info.started
            m.observe_request(
                route, variant, status, elapsed, max(elapsed - info.upstream_s, 0.0), info.cache,
                info.tokens, info.prompt_tokens, info.key,
            )
            if status == 429:
                m.limited.labels(route).inc()
            if info.stream_error:
                m.stream_errors.labels(route).inc()
            self.stats.record(name, info.variant.name if info.variant else None,
                              502 if info.stream_error else status, elapsed, info.cache)
            if info.key is not None:
                self.stats.keys.record(info.key.id, status, info.tokens)
                if self.spend is not None and name is not None and info.tokens:
                    # In-process counters: counted at once, nothing to cancel. Otherwise
                    # shielded: a cancelled (disconnected) stream still records its usage.
                    prompt = min(info.prompt_tokens, info.tokens)
                    if self.spend.record_nowait(info.key, name, info.variant, prompt,
                                                info.tokens - prompt) is None:
                        await asyncio.shield(self.spend.record(
                            info.key, name, info.variant, prompt, info.tokens - prompt))

