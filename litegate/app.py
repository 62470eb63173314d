"""The standalone gateway.

``/v1`` and ``/v2`` run on the pure-ASGI policy stack; ``/healthz``, ``/readyz`` and
``/metrics`` are answered directly; the admin console (a Litestar app) is built on the
first request to it, so a gateway that nobody administers never imports Litestar,
Jinja or the console — it starts faster and stays smaller.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from litegate.apidocs import ROOT as DOCS
from litegate.asgi_types import ASGIApp, Receive, Scope, Send
from litegate.errors import NotFound, send_error
from litegate.faults import OperationalFault
from litegate.gateway import Gateway
from litegate.health import HEALTH_PATHS, send_health
from litegate.request import OPENAI_BODY_PATHS
from litegate.responses import send_response
from litegate.settings import Settings

log = structlog.get_logger("litegate.app")
UNPREFIXED = frozenset(
    {p.removeprefix("/v1") for p in OPENAI_BODY_PATHS} | {"/models", "/aggregate"}
)


def admin_router(gateway: Gateway) -> Any | None:
    if not gateway.settings.admin_enabled:
        return None
    from litegate.admin import create_admin_router  # a broken console fails loudly

    return create_admin_router(gateway)


def build_admin_app(gateway: Gateway) -> ASGIApp | None:
    router = admin_router(gateway)
    if router is None:
        return None
    from litestar import Litestar
    from litestar.exceptions import MethodNotAllowedException, NotFoundException

    from litegate.admin.api import routing_error_handler

    # The admin API's 404/405 for paths no handler matches (the router raises those).
    api_errors = routing_error_handler(router.path.rstrip("/") + "/api")
    return Litestar(route_handlers=[router], openapi_config=None, logging_config=None,  # type: ignore[return-value]
                    exception_handlers={NotFoundException: api_errors,
                                        MethodNotAllowedException: api_errors})


class GatewayApp:
    """The standalone ASGI app: routes by path prefix, owns the gateway's lifespan."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.inference = gateway.inference_app()
        self.admin_path = gateway.settings.admin_path.rstrip("/") or "/admin"
        self._admin: ASGIApp | None = None
        self._admin_lock: asyncio.Lock | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            if path in UNPREFIXED or path.startswith("/models/"):
                # OpenAI clients pointed at the bare host (as LiteLLM accepts them).
                path = "/v1" + path
                scope = {**scope, "path": path, "raw_path": path.encode()}
            if path.startswith("/v1/") or path == "/v2" or path.startswith("/v2/"):
                await self.inference(scope, receive, send)
            elif path in HEALTH_PATHS:
                await send_health(self.gateway, path, send)
            elif path in DOCS.paths:
                api_root = self.admin_path if self.gateway.settings.admin_enabled else None
                await DOCS.send(path, send, admin_path=api_root)
            elif path == self.admin_path or path.startswith(self.admin_path + "/"):
                admin = await self._admin_app()
                if admin is None:
                    await send_error(send, NotFound("admin console disabled"), path=path)
                else:
                    await admin(scope, receive, send)
            elif path == "/" and self.gateway.settings.admin_enabled:
                await send_response(send, 302, b"", [(b"location", self.admin_path.encode())])
            else:
                await send_error(send, NotFound(f"Unknown endpoint {scope['method']} {path}"), path=path)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1000})

    async def _admin_app(self) -> ASGIApp | None:
        if self._admin is None and self.gateway.settings.admin_enabled:
            if self._admin_lock is None:
                self._admin_lock = asyncio.Lock()
            async with self._admin_lock:
                if self._admin is None:
                    # Importing and building the console takes a few hundred ms of CPU:
                    # do it off the event loop so in-flight inference keeps moving.
                    self._admin = await asyncio.to_thread(build_admin_app, self.gateway)
        return self._admin

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.gateway.start()
                except OperationalFault as exc:  # one line naming the fix, no traceback
                    log.error("startup_failed", error=str(exc))
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                except Exception as exc:
                    log.exception("startup_failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.gateway.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(settings: Settings | None = None, *, gateway: Gateway | None = None) -> GatewayApp:
    return GatewayApp(gateway or Gateway(settings))
