"""API-key authentication: ``Authorization: Bearer <key>`` or ``X-API-Key``.

401 for a missing, unknown, revoked or expired key. Whether the key may use the route
it asks for (403) is decided once the route is known (route resolution).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from litegate.asgi_types import ASGIApp, Receive, Scope, Send
from litegate.policies.api_keys import authenticate
from litegate.request import get_info

PUBLIC_PATHS = frozenset({"/v2", "/v2/health/live", "/v2/health/ready"})


def extract_key(scope: Scope) -> str | None:
    for k, v in scope["headers"]:
        if k == b"authorization":
            scheme, _, token = v.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return str(token.strip().decode("latin-1"))
        elif k == b"x-api-key" and v:
            return str(v.decode("latin-1"))
    return None


class AuthMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        on_key_use: Callable[[int, float], None],
        public_paths: frozenset[str] = PUBLIC_PATHS,
        exclude_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.on_key_use = on_key_use
        self.public_paths = public_paths
        self.exclude_prefixes = exclude_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path in self.public_paths or (
            self.exclude_prefixes and path.startswith(self.exclude_prefixes)
        ):
            await self.app(scope, receive, send)
            return
        info = get_info(scope)
        if info is None:
            raise RuntimeError("AuthMiddleware needs RequestContextMiddleware outside it")
        now = time.time()
        info.key = key = authenticate(
            info.snapshot, extract_key(scope), now,
            missing="Missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key'")
        self.on_key_use(key.id, now)
        await self.app(scope, receive, send)
