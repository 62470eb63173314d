"""Pure-ASGI policy middleware, outermost first:

context → metrics → auth → limits → cache → A/B routing → handler.
Each takes ``(app, *, gateway)`` and passes non-HTTP scopes straight through.
"""

from litegate.middleware.ab_routing import ABRoutingMiddleware
from litegate.middleware.auth import AuthMiddleware
from litegate.middleware.cache import CacheMiddleware
from litegate.middleware.limits import RateLimitMiddleware
from litegate.middleware.observe import MetricsMiddleware
from litegate.middleware.request_context import RequestContextMiddleware

__all__ = [
    "ABRoutingMiddleware",
    "AuthMiddleware",
    "CacheMiddleware",
    "MetricsMiddleware",
    "RateLimitMiddleware",
    "RequestContextMiddleware",
]
