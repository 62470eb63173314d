"""Pure-ASGI policy middleware, outermost first:

context → metrics → auth → limits → cache → A/B routing → handler.
Each takes ``(app, *, gateway)`` and passes non-HTTP scopes straight through.
"""

from litegate.middleware.auth import AuthMiddleware
from litegate.middleware.cache import CacheMiddleware
from litegate.middleware.context import RequestContextMiddleware
from litegate.middleware.limits import RateLimitMiddleware
from litegate.middleware.metrics import MetricsMiddleware
from litegate.middleware.routing import ABRoutingMiddleware

__all__ = [
    "ABRoutingMiddleware",
    "AuthMiddleware",
    "CacheMiddleware",
    "MetricsMiddleware",
    "RateLimitMiddleware",
    "RequestContextMiddleware",
]
