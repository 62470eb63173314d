"""Litestar integration: ``Litestar(..., plugins=[LitegatePlugin(LitegateConfig(...))])``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from litestar import asgi
from litestar.middleware import DefineMiddleware
from litestar.plugins import InitPlugin

from litegate.gateway import Gateway
from litegate.settings import Settings

if TYPE_CHECKING:
    from litestar.config.app import AppConfig
    from litestar.types import Receive, Scope, Send


class ProtectMiddleware:
    """Puts the litegate policy stack (auth, per-key limits, metrics) in front of the
    host app's own handlers whose path starts with one of ``prefixes``."""

    def __init__(self, app: Any, *, gateway: Gateway, prefixes: tuple[str, ...]) -> None:
        self.app = app
        self.prefixes = prefixes
        self.protected = gateway.wrap(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefixes):
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
    health: bool = False
    """Also mount ``/healthz``, ``/readyz`` and ``/metrics``."""
    middleware_class: type[ProtectMiddleware] = ProtectMiddleware


class LitegatePlugin(InitPlugin):
    __slots__ = ("config", "gateway")

    def __init__(self, config: LitegateConfig | None = None) -> None:
        self.config = config or LitegateConfig()
        self.gateway = Gateway(self.config.settings)

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        gateway = self.gateway
        inference = gateway.inference_app()

        async def serve(scope: Scope, receive: Receive, send: Send) -> None:
            # Litestar strips the mount prefix; the gateway routes on the full path.
            scope = {**scope, "path": unquote(scope["raw_path"].decode("latin-1").split("?", 1)[0])}  # type: ignore[assignment]
            await inference(scope, receive, send)  # type: ignore[arg-type]

        handlers: list[Any] = [
            asgi("/v1", is_mount=True, copy_scope=False, name="litegate-v1")(serve),
            asgi("/v2", is_mount=True, copy_scope=False, name="litegate-v2")(serve),
        ]
        if self.config.admin and gateway.settings.admin_enabled:
            from litegate.app import admin_router

            router = admin_router(gateway)
            if router is not None:
                handlers.append(router)
        if self.config.health:
            from litegate.app import health_router

            handlers.append(health_router(gateway))
        app_config.route_handlers.extend(handlers)
        if self.config.protect:
            app_config.middleware.append(
                DefineMiddleware(
                    self.config.middleware_class, gateway=gateway, prefixes=self.config.protect
                )
            )
        app_config.on_startup.append(gateway.start)
        app_config.on_shutdown.append(gateway.stop)
        return app_config
