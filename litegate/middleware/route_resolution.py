"""Route resolution, once per request: which route (or local model) the request is
for — from the JSON body's ``model`` on ``/v1``, from the path on ``/v2`` — and whether
the request's key may use it (403 otherwise). From here on the route is a fact on the
request; no later layer looks it up again.

It runs after authentication, so an anonymous client gets its 401 before the gateway
spends anything on reading or parsing its body.

A body refused here (malformed: 400; oversize: 413) never reaches the limits step, so
it is counted against the key's own limits first (``limiter``), like an unknown model:
a key past its limit gets 429 for those too, and cannot keep the gateway reading and
parsing bodies for free. A route out of the key's scope stays a 403 (a permission
answer, like a 401), whatever the key's limits.
"""

from __future__ import annotations

from litegate.asgi_types import ASGIApp, Receive, Scope, Send
from litegate.errors import Forbidden, LitegateError
from litegate.policies.admission import count_refused
from litegate.policies.limiting import Limiter
from litegate.request import configured_name, get_info, resolve_route


class RouteResolutionMiddleware:
    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, limiter: Limiter | None = None
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        info = get_info(scope) if scope["type"] == "http" else None
        if info is None:
            await self.app(scope, receive, send)
            return
        try:
            receive = await resolve_route(scope, receive, info, self.max_body_bytes)
        except LitegateError:
            # 429 instead once the key's limits are spent
            await count_refused(self.limiter, info.snapshot.version, info.key)
            raise
        # Unknown names are not refused here: the key's limits count them, then 404.
        name = configured_name(info)
        if info.key is not None and name is not None and not info.key.allows(name):
            raise Forbidden(f"This API key may not use '{name}'")
        await self.app(scope, receive, send)

