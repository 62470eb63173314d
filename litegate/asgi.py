"""Mount litegate into any ASGI app (Starlette, FastAPI, …) or a WSGI app (Flask, …).

``LitegateMiddleware`` serves ``/v1``, ``/v2`` and (``health=True``) ``/healthz``,
``/readyz``, ``/metrics`` itself, and puts the policy stack (request context, auth,
per-key limits, metrics) in front of the host app's own routes too, except the paths
listed in ``public_paths``. Its OpenAPI document and offline docs page are at
``/litegate/openapi.json`` and ``/litegate/docs`` (``docs_prefix``; ``None`` turns them
off), never the host app's own ``/docs`` or ``/openapi.json``. ``admin=True`` also serves
the console and its JSON API at the configured admin path (``/admin``), built on first
use exactly as ``litegate serve`` builds it. See ``litegate.mount`` for what happens when it cannot start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from litegate.apidocs import MOUNTED_PREFIX, DocsSite
from litegate.asgi_types import ASGIApp, Message, Receive, Scope, Send
from litegate.errors import ServiceUnavailable, send_error
from litegate.gateway import Gateway
from litegate.health import HEALTH_PATHS, send_health
from litegate.mount import MountedStart
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
        health: bool = True,
        docs_prefix: str | None = MOUNTED_PREFIX,
        admin: bool = False,
    ) -> None:
        self.app = app
        self.gateway = gateway or Gateway(settings)
        self.starter = MountedStart(self.gateway)
        self.public_paths = public_paths
        self.health_paths = HEALTH_PATHS if health else frozenset()
        self.health = health
        self.docs = DocsSite(docs_prefix) if docs_prefix is not None else None
        self.docs_paths = self.docs.paths if self.docs is not None else frozenset()
        settings = self.gateway.settings
        self.admin_path = ((settings.admin_path.rstrip("/") or "/admin")
                           if admin and settings.admin_enabled else None)
        self._admin: ASGIApp | None = None
        self._admin_lock: asyncio.Lock | None = None
        self.inference = self.gateway.inference_app()
        self.protected_host = (
            self.gateway.build_stack(app, public_prefixes=public_paths) if protect_host_routes else app
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        fault = await self.starter.start()  # WSGI bridges and some servers skip lifespan
        path = scope["path"]
        admin = self.admin_path is not None and (
            path == self.admin_path or path.startswith(self.admin_path + "/"))
        ours = path.startswith("/v1/") or path == "/v2" or path.startswith("/v2/") or admin
        if path in self.health_paths:
            await send_health(self.gateway, path, send, fault=str(fault) if fault else None)
        elif path in self.docs_paths and self.docs is not None:  # static: served even when down
            await self.docs.send(path, send, admin_path=self.admin_path, health=self.health)
        elif fault is not None:  # litegate is down: only the host's public routes work
            if not ours and path.startswith(self.public_paths):
                await self.app(scope, receive, send)
            else:
                await send_error(send, ServiceUnavailable(str(fault)), path=path)
        elif admin:
            await (await self._admin_app())(scope, receive, send)
        elif ours:
            await self.inference(scope, receive, send)
        else:
            await self.protected_host(scope, receive, send)

    async def _admin_app(self) -> ASGIApp:
        """The console (a Litestar app with the admin API's JSON 404/405), built once,
        off the event loop, as the standalone gateway builds it."""
        if self._admin is None:
            if self._admin_lock is None:
                self._admin_lock = asyncio.Lock()
            async with self._admin_lock:
                if self._admin is None:
                    from litegate.app import build_admin_app

                    built = await asyncio.to_thread(build_admin_app, self.gateway)
                    assert built is not None  # admin_path is set only when the console is on
                    self._admin = built
        return self._admin

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The host's lifespan always runs, whether or not litegate could start."""
        gateway, starter = self.gateway, self.starter

        async def wrapped_receive() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await starter.start()
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
