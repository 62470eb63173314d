"""Pure-ASGI policy middleware, outermost first:

request context (error boundary) → observe (metrics, stats) → auth → route resolution
(+ scope) → limits → cache → A/B routing → handler. Each takes ``(app, *, <the objects
it uses>)`` and passes non-HTTP scopes straight through; ``Gateway.build_stack`` composes
them (docs/architecture.md).
"""

from litegate.middleware.ab_routing import ABRoutingMiddleware
from litegate.middleware.auth import AuthMiddleware
from litegate.middleware.cache import CacheMiddleware, SemanticCacheMiddleware
from litegate.middleware.limits import RateLimitMiddleware
from litegate.middleware.observe import ObserveMiddleware
from litegate.middleware.request_context import RequestContextMiddleware
from litegate.middleware.route_resolution import RouteResolutionMiddleware

__all__ = [
    "ABRoutingMiddleware",
    "AuthMiddleware",
    "CacheMiddleware",
    "ObserveMiddleware",
    "RateLimitMiddleware",
    "RequestContextMiddleware",
    "RouteResolutionMiddleware",
    "SemanticCacheMiddleware",
]
