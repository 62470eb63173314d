"""litegate admin console: a Litestar router mounted at ``/admin``.

Usage::

    from litegate.admin import create_admin_router
    app = Litestar(route_handlers=[create_admin_router(gateway)])

``gateway`` provides ``settings``, ``sessionmaker``, ``stats`` and ``models``.
The session middleware, the CSRF/login guard and the error pages live inside the
router, so nothing outside ``/admin`` pays for them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import Request, Response, Router
from litestar.enums import MediaType
from litestar.exceptions import HTTPException, NotAuthorizedException
from litestar.middleware.base import DefineMiddleware
from litestar.response import Redirect
from litestar.static_files import create_static_files_router

from litegate.errors import LitegateError
from litegate.services.users import LoginThrottle

from . import account_views, models_views, views
from .auth import (
    AdminAuthRequired,
    AdminSessionMiddleware,
    SessionSigner,
    admin_guard,
    context_of,
    ids_guard,
    session_of,
)
from .config import STATIC_DIR, AdminContext, make_environment, resolve_secret

__all__ = ["AdminContext", "create_admin_router", "ROUTE_HANDLERS"]

ROUTE_HANDLERS = [
    views.login_page,
    views.login_submit,
    views.logout,
    views.dashboard_page,
    views.dashboard_panel,
    views.upstreams_page,
    views.upstream_new,
    views.upstream_create,
    views.upstream_edit,
    views.upstream_update,
    views.upstream_delete,
    views.routes_page,
    views.route_new,
    views.route_create,
    views.route_edit,
    views.route_update,
    views.route_delete,
    views.quotas_page,
    views.quota_create,
    views.quota_delete,
    views.keys_page,
    views.key_create,
    views.key_edit,
    views.key_update,
    views.key_revoke,
    views.audit_page,
    *models_views.ROUTE_HANDLERS,
    *account_views.ROUTE_HANDLERS,
]


def _wants_html(request: Request[Any, Any, Any]) -> bool:
    if request.headers.get("hx-request") or request.headers.get("x-litegate-partial"):
        return False
    accept = request.headers.get("accept", "")
    return "text/html" in accept or "*/*" in accept or not accept


def _auth_required(request: Request[Any, Any, Any], exc: NotAuthorizedException) -> Response[Any]:
    ctx = context_of(request)
    login = ctx.url("/login")
    if _wants_html(request):
        target = request.url.path
        if request.method == "GET" and (target == ctx.base_path or target.startswith(ctx.base_path + "/")):
            target = target if target != ctx.base_path else ctx.url()
            from urllib.parse import urlencode

            login = f"{login}?{urlencode({'next': target})}"
        return Redirect(path=login, status_code=303)
    return Response(
        {"error": "login required", "login": login},
        status_code=401,
        media_type=MediaType.JSON,
        headers={"HX-Redirect": login, "Cache-Control": "no-store"},
    )


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if not _wants_html(request):
        return Response(
            {"error": exc.detail}, status_code=exc.status_code, media_type=MediaType.JSON
        )
    try:
        session_of(request)
    except RuntimeError:
        return Response(exc.detail, status_code=exc.status_code, media_type=MediaType.TEXT)
    return views.render(
        request, "error.html", title="Error", status_code=exc.status_code,
        status=exc.status_code, message=exc.detail,
    )


def _litegate_error(request: Request[Any, Any, Any], exc: LitegateError) -> Response[Any]:
    return _http_error(request, HTTPException(detail=exc.detail, status_code=exc.status_code))


def create_admin_router(
    gateway: Any,
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
        path = getattr(settings, "admin_path", None) or "/admin"
    if secure_cookies is None:
        secure_cookies = bool(getattr(settings, "admin_secure_cookies", False))
    path = "/" + path.strip("/") if path.strip("/") else ""
    if templates_dir is None:
        templates_dir = getattr(settings, "admin_templates_dir", None) or (
            getattr(settings, "extra", None) or {}
        ).get("admin_templates_dir")
    context = AdminContext(
        gateway=gateway,
        base_path=path,
        signer=SessionSigner(
            secret_key or resolve_secret(settings),
            max_age_s=int(getattr(settings, "session_max_age_s", 8 * 3600)),
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
    return Router(
        path=path or "/",
        route_handlers=[*ROUTE_HANDLERS, static],
        middleware=[DefineMiddleware(AdminSessionMiddleware, context=context)],
        guards=[admin_guard, ids_guard],
        exception_handlers={
            AdminAuthRequired: _auth_required,
            HTTPException: _http_error,
            LitegateError: _litegate_error,
        },
        include_in_schema=False,
    )
