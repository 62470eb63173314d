"""API-key authentication: ``Authorization: Bearer <key>`` or ``X-API-Key``.

401 for a missing, unknown, revoked or expired key; 403 for a route outside the key's scope.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING

from litegate.asgi_types import ASGIApp, Receive, Scope, Send
from litegate.errors import Forbidden, Unauthorized
from litegate.request import configured_name, get_info, resolve_route

if TYPE_CHECKING:
    from litegate.gateway import Gateway

PUBLIC_PATHS = frozenset({"/v2", "/v2/health/live", "/v2/health/ready"})


def extract_key(scope: Scope) -> str | None:
    for k, v in scope["headers"]:
        if k == b"authorization":
            scheme, _, token = v.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip().decode("latin-1")
        elif k == b"x-api-key" and v:
            return v.decode("latin-1")
    return None


class AuthMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        gateway: Gateway,
        public_paths: frozenset[str] = PUBLIC_PATHS,
        exclude_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.gateway = gateway
        self.public_paths = public_paths
        self.exclude_prefixes = exclude_prefixes
        self.max_body = gateway.settings.max_body_bytes

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
        secret = extract_key(scope)
        if secret is None:
            raise Unauthorized(
                "Missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        key = info.snapshot.keys.get(hashlib.sha256(secret.encode()).hexdigest())
        if key is None:
            raise Unauthorized("Invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
        now = time.time()
        if key.expires_at is not None and key.expires_at <= now:
            raise Unauthorized("API key expired", headers={"WWW-Authenticate": "Bearer"})
        info.key = key
        self.gateway.note_key_use(key.id, now)
        receive = await resolve_route(scope, receive, info, self.max_body)
        route_name = configured_name(info)  # unknown names: limits first, then 404
        if route_name is not None and not key.allows(route_name):
            raise Forbidden(f"This API key may not use '{route_name}'")
        await self.app(scope, receive, send)
