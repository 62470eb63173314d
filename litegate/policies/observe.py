"""The observe step shared by HTTP (``middleware/observe.py``,
``middleware/request_context.py``) and gRPC (``grpc_api/service.py``): one finished
request, as plain values, becomes Prometheus metrics, the dashboard's stats, the key's
stats, its spend and one access-log line. No ASGI here.

``route`` is always a configured name or None (metric labels and stats series never
take a client's text); ``-`` stands for None in metric labels.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from litegate.log_config import access_logger
from litegate.policies.metrics import Metrics
from litegate.policies.spend import Spend
from litegate.policies.stats import Stats
from litegate.snapshot import KeySpec, VariantSpec


class Observer:
    """Shared by every request: holds only the policy objects it writes to."""

    __slots__ = ("metrics", "spend", "stats")

    def __init__(self, *, metrics: Metrics, stats: Stats, spend: Spend | None = None) -> None:
        self.metrics = metrics
        self.stats = stats
        self.spend = spend

    def finish(
        self, route: str | None, variant: VariantSpec | None, status: int, elapsed_s: float,
        upstream_s: float, cache: str | None, key: KeySpec | None, tokens: int,
        prompt_tokens: int, stream_error: bool = False,
    ) -> Awaitable[int] | None:
        """Record one finished request. Returns the spend record still to be awaited
        when the spend storage needs an await (Redis): the caller shields it, so that a
        cancelled (disconnected) request still records its usage; else None."""
        m = self.metrics
        label = route or "-"
        m.observe_request(
            label, variant.name if variant else "-", status, elapsed_s,
            max(elapsed_s - upstream_s, 0.0), cache, tokens, prompt_tokens, key,
        )
        if status == 429:
            m.limited.labels(label).inc()
        if stream_error:
            m.stream_errors.labels(label).inc()
        self.stats.record(route, variant.name if variant else None,
                          502 if stream_error else status, elapsed_s, cache)
        if key is None:
            return None
        self.stats.keys.record(key.id, status, tokens)
        if self.spend is not None and route is not None and tokens:
            # In-process counters: counted at once, nothing to cancel or await.
            prompt = min(prompt_tokens, tokens)
            if self.spend.record_nowait(key, route, variant, prompt, tokens - prompt) is None:
                return self.spend.record(key, route, variant, prompt, tokens - prompt)
        return None


class AccessLog:
    """The per-request access line (``LITEGATE_ACCESS_LOG``); the same fields for every
    surface. ``request_id`` is given only where no request context carries it (gRPC):
    on HTTP the logger adds it from the request's context."""

    __slots__ = ("log",)

    def __init__(self) -> None:
        self.log: Any = access_logger()

    def __call__(
        self, method: str, path: str, status: int, route: str | None,
        variant: VariantSpec | None, key: KeySpec | None, cache: str | None,
        elapsed_s: float, upstream_s: float, tokens: int, request_id: str | None = None,
    ) -> None:
        fields: dict[str, Any] = {
            "method": method,
            "path": path,
            "status": status,
            "route": route,
            "variant": variant.name if variant else None,
            "key_id": key.id if key else None,
            "cache": cache,
            "latency_ms": round(elapsed_s * 1000.0, 3),
            "upstream_ms": round(upstream_s * 1000.0, 3),
            "tokens": tokens or None,
        }
        if request_id is not None:
            fields["request_id"] = request_id
        self.log(fields)
