"""The standalone gateway: ``/v1`` and ``/v2`` on the pure-ASGI policy stack, and
Litestar for everything else (health, metrics, admin console)."""

from __future__ import annotations

from typing import Any

import structlog
from litestar import Litestar, MediaType, Response, Router, get
from litestar.response import Redirect
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from litegate.context import ASGIApp, Receive, Scope, Send
from litegate.gateway import Gateway
from litegate.settings import Settings

log = structlog.get_logger("litegate.app")


def health_router(gateway: Gateway, *, path: str = "/") -> Router:
    @get("/healthz", media_type=MediaType.JSON, sync_to_thread=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz", media_type=MediaType.JSON, sync_to_thread=False)
    def readyz() -> Response[dict[str, Any]]:
        ok, detail = gateway.ready()
        return Response({"ready": ok, **detail}, status_code=200 if ok else 503)

    @get("/metrics", sync_to_thread=False)
    def metrics() -> Response[bytes]:
        return Response(
            generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST
        )

    return Router(path=path, route_handlers=[healthz, readyz, metrics])


def admin_router(gateway: Gateway) -> Router | None:
    if not gateway.settings.admin_enabled:
        return None
    try:
        from litegate.admin import create_admin_router
    except ImportError:  # the console is optional at import time of a bare checkout
        return None
    return create_admin_router(gateway)


class GatewayApp:
    """Routes ``/v1``/``/v2`` to the gateway stack and the rest to Litestar."""

    def __init__(self, gateway: Gateway, litestar_app: Litestar) -> None:
        self.gateway = gateway
        self.inference = gateway.inference_app()
        self.litestar = litestar_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if path.startswith("/v1/") or path == "/v2" or path.startswith("/v2/"):
                await self.inference(scope, receive, send)
                return
        await self.litestar(scope, receive, send)


def create_app(settings: Settings | None = None, *, gateway: Gateway | None = None) -> GatewayApp:
    gateway = gateway or Gateway(settings)
    handlers: list[Any] = [health_router(gateway)]
    admin = admin_router(gateway)
    if admin is not None:
        handlers.append(admin)

        @get("/", sync_to_thread=False, include_in_schema=False)
        def index() -> Redirect:
            return Redirect(gateway.settings.admin_path)

        handlers.append(index)
    litestar_app = Litestar(
        route_handlers=handlers,
        on_startup=[gateway.start],
        on_shutdown=[gateway.stop],
        openapi_config=None,
        logging_config=None,
    )
    litestar_app.state.gateway = gateway
    return GatewayApp(gateway, litestar_app)
