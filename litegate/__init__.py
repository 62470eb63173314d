"""litegate: a lightweight, fast inference gateway.

Mount it three ways — ``LitegatePlugin`` for Litestar, ``LitegateMiddleware`` for
any ASGI app, ``wrap_wsgi`` for WSGI apps — or run ``litegate serve``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Gateway", "LitegateConfig", "LitegateMiddleware", "LitegatePlugin", "Settings", "create_app", "wrap_wsgi"]

_LAZY = {
    "Gateway": "litegate.gateway",
    "LitegateConfig": "litegate.plugin",
    "LitegatePlugin": "litegate.plugin",
    "LitegateMiddleware": "litegate.asgi",
    "wrap_wsgi": "litegate.asgi",
    "Settings": "litegate.settings",
    "create_app": "litegate.app",
}

if TYPE_CHECKING:
    from litegate.app import create_app
    from litegate.asgi import LitegateMiddleware, wrap_wsgi
    from litegate.gateway import Gateway
    from litegate.plugin import LitegateConfig, LitegatePlugin
    from litegate.settings import Settings


def __getattr__(name: str) -> Any:
    # Lazy so `import litegate` (and the CLI) stays fast.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
