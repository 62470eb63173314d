"""Litestar integration: ``Litestar(..., plugins=[LitegatePlugin(LitegateConfig(...))])``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from litestar import asgi
from litestar.enums import ScopeType
from litestar.middleware import DefineMiddleware
from litestar.plugins import InitPlugin

from litegate.apidocs import MOUNTED_PREFIX, DocsSite
from litegate.errors import ServiceUnavailable, send_error
from litegate.gateway import Gateway
from litegate.health import HEALTH_PATHS, send_health
from litegate.mount import MountedStart
from litegate.settings import Settings

if TYPE_CHECKING:
    from litestar.config.app import AppConfig
    from litestar.types import ExceptionHandlersMap, Receive, Scope, Send


class ProtectMiddleware:
    """Puts the litegate policy stack (auth, per-key limits, metrics) in front of the
    host app's own handlers whose path starts with one of ``prefixes``."""

    def __init__(
        self, app: Any, *, gateway: Gateway, prefixes: tuple[str, ...], starter: MountedStart
    ) -> None:
        self.app = app
        self.prefixes = prefixes
        self.starter = starter
        self.protected = gateway.build_stack(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope["path"].startswith(self.prefixes):
            fault = await self.starter.start()
            if fault is not None:
                await send_error(send, ServiceUnavailable(str(fault)), path=scope["path"])  # type: ignore[arg-type]
            else:
                await self.protected(scope, receive, send)  # type: ignore[arg-type]
        else:
            await self.app(scope, receive, send)


@dataclass
class LitegateConfig:
    settings: Settings = field(default_factory=Settings.load)
    admin: bool = True
    """Mount the admin console at ``/admin``."""
    protect: tuple[str, ...] = ()
    """Path prefixes of the host app's own routes that require a litegate API key."""
    health: bool = True
    """Also mount ``/healthz``, ``/readyz`` and ``/metrics`` (False if the app has its own)."""
    docs_prefix: str | None = MOUNTED_PREFIX
    """Serve litegate's OpenAPI document and offline docs page at ``{docs_prefix}/openapi.json``
    and ``{docs_prefix}/docs`` (``None``: not at all). Litestar's own schema stays at ``/schema``."""
    middleware_class: type[ProtectMiddleware] = ProtectMiddleware


class LitegatePlugin(InitPlugin):
    __slots__ = ("config", "gateway", "starter")

    def __init__(self, config: LitegateConfig | None = None) -> None:
        self.config = config or LitegateConfig()
        self.gateway = Gateway(self.config.settings)
        self.starter = MountedStart(self.gateway)

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        gateway, starter = self.gateway, self.starter
        inference = gateway.inference_app()

        async def serve(scope: Scope, receive: Receive, send: Send) -> None:
            # Litestar strips the mount prefix; the gateway routes on the full path.
            path = unquote(scope["raw_path"].decode("latin-1").split("?", 1)[0])
            fault = await starter.start()
            if fault is not None:
                await send_error(send, ServiceUnavailable(str(fault)), path=path)  # type: ignore[arg-type]
                return
            await inference({**scope, "path": path}, receive, send)  # type: ignore[arg-type]

        async def health(scope: Scope, receive: Receive, send: Send) -> None:
            fault = await starter.start()
            await send_health(gateway, scope["path"], send, fault=str(fault) if fault else None)  # type: ignore[arg-type]

        handlers: list[Any] = [
            asgi("/v1", is_mount=True, copy_scope=False, name="litegate-v1")(serve),
            asgi("/v2", is_mount=True, copy_scope=False, name="litegate-v2")(serve),
        ]
        admin_path: str | None = None
        if self.config.admin and gateway.settings.admin_enabled:
            from litegate.app import admin_router

            router = admin_router(gateway)
            if router is not None:
                handlers.append(router)
                admin_path = router.path.rstrip("/")
                _route_admin_api_errors(app_config.exception_handlers, admin_path + "/api")
        if self.config.docs_prefix is not None:
            handlers += _docs_handlers(DocsSite(self.config.docs_prefix), admin_path,
                                       health=self.config.health)
        if self.config.health:
            handlers += [asgi(p, copy_scope=False, name=f"litegate{p.replace('/', '-')}")(health)
                         for p in sorted(HEALTH_PATHS)]
        app_config.route_handlers.extend(handlers)
        if self.config.protect:
            app_config.middleware.append(
                DefineMiddleware(
                    self.config.middleware_class, gateway=gateway, prefixes=self.config.protect,
                    starter=starter,
                )
            )
        app_config.on_startup.append(self._start)
        app_config.on_shutdown.append(gateway.stop)
        return app_config

    async def _start(self) -> None:
        await self.starter.start()  # an operational fault is logged, never raised


def _docs_handlers(docs: DocsSite, admin_path: str | None, *, health: bool) -> list[Any]:
    async def serve_docs(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if path not in docs.paths:  # Litestar matched "/docs/" on the "/docs" handler
            path = path.rstrip("/")
        await docs.send(path, send, admin_path=admin_path, health=health)  # type: ignore[arg-type]

    paths = sorted({p.rstrip("/") for p in docs.paths})
    return [asgi(p, copy_scope=False, name=f"litegate-docs{i}")(serve_docs) for i, p in enumerate(paths)]


def _route_admin_api_errors(handlers: ExceptionHandlersMap, api_prefix: str) -> None:
    """The admin API's JSON 404/405 for paths no handler matches (Litestar's router
    raises those at the app level, where router-level handlers never see them). Under
    ``api_prefix`` only; every other path gets the host app's own handler, if it set one,
    or Litestar's default answer — the host's errors keep their shape."""
    from litestar.exceptions import HTTPException, MethodNotAllowedException, NotFoundException
    from litestar.response.base import Response

    from litegate.admin.api import routing_error_handler

    host = dict(handlers)
    ours = routing_error_handler(api_prefix)

    def handle(request: Any, exc: Any) -> Response[Any]:
        path = request.scope["path"]
        if path == api_prefix or path.startswith(api_prefix + "/"):
            return ours(request, exc)  # type: ignore[no-any-return]
        fallback = host.get(exc.status_code) if isinstance(exc, HTTPException) else None
        fallback = fallback or next((host[c] for c in type(exc).__mro__ if c in host), None)
        if fallback is not None:
            answer: Response[Any] = fallback(request, exc)
            return answer
        return ours(request, exc)  # type: ignore[no-any-return]  # Litestar's default answer here

    for key in (NotFoundException, MethodNotAllowedException):
        handlers[key] = handle
    for code in (404, 405):  # a host handler by status code would win over the classes
        if code in handlers:
            handlers[code] = handle
