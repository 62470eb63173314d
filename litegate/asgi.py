"""Mount litegate into any ASGI app (Starlette, FastAPI, …) or a WSGI app (Flask, …).

``LitegateMiddleware`` serves ``/v1`` and ``/v2`` itself and puts the policy stack
(request context, auth, per-key limits, metrics) in front of the host app's own
routes too, except the paths listed in ``public_paths``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litegate.context import ASGIApp, Message, Receive, Scope, Send
from litegate.gateway import Gateway
from litegate.settings import Settings

DEFAULT_PUBLIC = ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json")


class LitegateMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: Settings | None = None,
        gateway: Gateway | None = None,
        protect_host_routes: bool = True,
        public_paths: tuple[str, ...] = DEFAULT_PUBLIC,
    ) -> None:
        self.app = app
        self.gateway = gateway or Gateway(settings)
        self.inference = self.gateway.inference_app()
        self.protected_host = (
            self.gateway.wrap(app, public_prefixes=public_paths) if protect_host_routes else app
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.gateway.ensure_started()  # WSGI bridges and some servers skip lifespan
        path = scope["path"]
        if path.startswith("/v1/") or path == "/v2" or path.startswith("/v2/"):
            await self.inference(scope, receive, send)
        else:
            await self.protected_host(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = self.gateway

        async def wrapped_receive() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await gateway.ensure_started()
            elif message["type"] == "lifespan.shutdown":
                await gateway.stop()
            return message

        await self.app(scope, wrapped_receive, send)


def wrap_wsgi(
    wsgi_app: Callable[..., Any], *, settings: Settings | None = None, **options: Any
) -> LitegateMiddleware:
    """A WSGI app (Flask, Django…) behind litegate, as one ASGI app for uvicorn."""
    from a2wsgi import WSGIMiddleware

    return LitegateMiddleware(WSGIMiddleware(wsgi_app), settings=settings, **options)  # type: ignore[arg-type]
