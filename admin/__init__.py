"""litegate admin console: a Litestar router mounted at ``/admin``.

Usage::

    from litegate.admin import create_admin_router
    app = Litestar(route_handlers=[create_admin_router(gateway)])

``gateway`` provides ``settings``, ``sessionmaker``, ``stats`` and ``models``.
The session middleware, the CSRF/login guard and the error pages live inside the
router, so nothing outside ``/admin`` pays for them. The admin HTTP API
(:mod:`.api`, ``/admin/api/``) is a sibling router with its own token guard and no
session middleware: a console cookie never authenticates it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from litestar import Response, Router
from litestar.enums import MediaType
from litestar.exceptions import HTTPException, NotAuthorizedException
from litestar.response import Redirect
from litestar.static_files import create_static_files_router

from litegate.errors import LitegateError
from litegate.services.users import LoginThrottle

from . import (
    access_views,
    account_views,
    api_tokens_views,
    audit_views,
    dashboard_views,
    keys_views,
    models_views,
    quotas_views,
    routes_views,
    upstreams_views,
    usage_views,
)
from .api_views import create_api_router
from .auth import (
    AdminAuthRequired,
    AdminSessionMiddleware,
    admin_guard,
    context_of,
    ids_guard,
    session_of,
)
from .config import STATIC_DIR, AdminContext, AdminHost, make_environment, resolve_secret
from .pages import AdminRequest, render
from .session import SessionSigner

__all__ = ["ROUTE_HANDLERS", "AdminContext", "AdminHost", "create_admin_router"]

ROUTE_HANDLERS = [
    *access_views.ROUTE_HANDLERS,
    *dashboard_views.ROUTE_HANDLERS,
    *usage_views.ROUTE_HANDLERS,
    *upstreams_views.ROUTE_HANDLERS,
    *routes_views.ROUTE_HANDLERS,
    *quotas_views.ROUTE_HANDLERS,
    *keys_views.ROUTE_HANDLERS,
    *audit_views.ROUTE_HANDLERS,
    *models_views.ROUTE_HANDLERS,
    *account_views.ROUTE_HANDLERS,
    *api_tokens_views.ROUTE_HANDLERS,
]


def _wants_html(request: AdminRequest) -> bool:
    if request.headers.get("hx-request") or request.headers.get("x-litegate-partial"):
        return False
    accept = request.headers.get("accept", "")
    return "text/html" in accept or "*/*" in accept or not accept


def _auth_required(request: AdminRequest, exc: NotAuthorizedException) -> Response[Any]:
    ctx = context_of(request)
    login = ctx.url("/login")
    if _wants_html(request):
        target = request.url.path
        inside = target == ctx.base_path or target.startswith(ctx.base_path + "/")
        if request.method == "GET" and inside:
            target = target if target != ctx.base_path else ctx.url()
            login = f"{login}?{urlencode({'next': target})}"
        return Redirect(path=login, status_code=303)
    return Response(
        {"error": "login required", "login": login},
        status_code=401,
        media_type=MediaType.JSON,
        headers={"HX-Redirect": login, "Cache-Control": "no-store"},
    )


def _http_error(request: AdminRequest, exc: HTTPException) -> Response[Any]:
    if not _wants_html(request):
        return Response(
            {"error": exc.detail}, status_code=exc.status_code, media_type=MediaType.JSON
        )
    try:
        session_of(request)
    except RuntimeError:
        return Response(exc.detail, status_code=exc.status_code, media_type=MediaType.TEXT)
    return render(
        request, "error.html", title="Error", status_code=exc.status_code,
        status=exc.status_code, message=exc.detail,
    )


def _litegate_error(request: AdminRequest, exc: LitegateError) -> Response[Any]:
    return _http_error(request, HTTPException(detail=exc.detail, status_code=exc.status_code))


def create_admin_router(
    gateway: AdminHost,
    *,
    path: str | None = None,
    templates_dir: str | Path | None = None,
    secret_key: str | None = None,
    secure_cookies: bool | None = None,
    throttle: LoginThrottle | None = None,
) -> Router:
    """Build the console router for ``gateway``.

    Unset arguments fall back to optional settings fields: ``admin_path`` (default
    ``/admin``), ``admin_templates_dir`` (searched before the package templates, so
    any ``litegate_admin/<page>.html`` can be overridden), ``admin_secure_cookies``
    (always mark the cookie ``Secure``; it is anyway on HTTPS requests) and
    ``secret_key`` (else a key generated once under ``home``).
    """
    settings = gateway.settings
    if path is None:
        path = settings.admin_path or "/admin"
    if secure_cookies is None:
        secure_cookies = settings.admin_secure_cookies
    path = "/" + path.strip("/") if path.strip("/") else ""
    if templates_dir is None:
        templates_dir = settings.admin_templates_dir
    context = AdminContext(
        gateway=gateway,
        base_path=path,
        signer=SessionSigner(
            secret_key or resolve_secret(settings),
            max_age_s=settings.session_max_age_s,
        ),
        env=make_environment(templates_dir),
        throttle=throttle or LoginThrottle(),
        secure_cookies=secure_cookies,
    )
    static = create_static_files_router(
        path="/static",
        directories=[STATIC_DIR],
        name="litegate_admin:static",
        opt={"public": True},
        include_in_schema=False,
    )
    console = Router(
        path="/",
        route_handlers=[*ROUTE_HANDLERS, static],
        middleware=[AdminSessionMiddleware(context)],
        guards=[admin_guard, ids_guard],
        exception_handlers={
            AdminAuthRequired: _auth_required,
            HTTPException: _http_error,
            LitegateError: _litegate_error,
        },
        include_in_schema=False,
    )
    return Router(path=path or "/", route_handlers=[console, create_api_router(context)],
                  include_in_schema=False)
