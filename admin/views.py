"""Console pages. Reads go straight to the models; every write goes through
:mod:`litegate.services` in one transaction (audit entry + config version bump),
exactly like the CLI, so running gateways pick the change up within a second.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlencode

import structlog
from litestar import Request, Response, get, post
from litestar.enums import MediaType
from litestar.exceptions import NotFoundException, ValidationException
from litestar.response import Redirect
from sqlalchemy import func, or_, select
from sqlalchemy.orm.exc import StaleDataError

from litegate.db.models import AuditEntry, Model, Quota, Route, Upstream, utcnow
from litegate.errors import Conflict, LitegateError
from litegate.services import admin_sessions, routing
from litegate.services import keys as key_service
from litegate.services import quotas as quota_service
from litegate.services import users as user_service
from litegate.services.schema import ValidationFailed, check_route

from . import dashboard, forms
from .auth import context_of, session_of

log = structlog.get_logger("litegate.admin")

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
NAV = (
    ("dashboard", "", "Dashboard"),
    ("routes", "/routes", "Routes"),
    ("upstreams", "/upstreams", "Upstreams"),
    ("quotas", "/quotas", "Quotas"),
    ("keys", "/keys", "API keys"),
    ("models", "/models", "Models"),
    ("audit", "/audit", "Audit log"),
)
AUDIT_PAGE_SIZE = 50
MAX_CHOICES = 200


def render(
    request: Request[Any, Any, Any],
    template: str,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> Response[str]:
    ctx = context_of(request)
    state = session_of(request)
    html = ctx.env.get_template(f"litegate_admin/{template}").render(
        base=ctx.base_path,
        user=state.user,
        csrf_token=state.csrf_token,
        flashes=state.pop_flashes(),
        nav=NAV,
        active=context.pop("active", ""),
        title=context.pop("title", "litegate"),
        **context,
    )
    return Response(
        html,
        status_code=status_code,
        media_type=MediaType.HTML,
        headers={**SECURITY_HEADERS, **(headers or {})},
    )


def redirect(request: Request[Any, Any, Any], path: str) -> Redirect:
    return Redirect(path=context_of(request).url(path), status_code=303)


def actor(request: Request[Any, Any, Any]) -> str:
    return f"admin:{session_of(request).user}"


def client_ip(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else "unknown"


def query_int(
    request: Request[Any, Any, Any], name: str, *, default: int, maximum: int = 10**9
) -> int:
    """A positive whole-number query parameter; anything else is a 400 page, not a 500."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    text = str(raw).strip()
    if not text.isdigit() or len(text) > 10 or not 1 <= int(text) <= maximum:
        raise ValidationException(f"{name} must be a whole number from 1 to {maximum}")
    return int(text)


def _safe_next(request: Request[Any, Any, Any], target: str) -> str:
    base = context_of(request).base_path
    if target.startswith(base + "/") and not target.startswith("//") and "\\" not in target:
        if not target.startswith(base + "/login"):
            return target
    return context_of(request).url()


# -- access -------------------------------------------------------------------------


@get("/login", opt={"public": True}, name="litegate_admin:login")
async def login_page(request: Request[Any, Any, Any]) -> Response[Any]:
    next = str(request.query_params.get("next") or "")
    if session_of(request).user:
        return Redirect(path=_safe_next(request, next), status_code=303)
    return render(request, "login.html", title="Sign in", next=next, username="", error=None)


@post("/login", opt={"public": True}, status_code=200)
async def login_submit(request: Request[Any, Any, Any]) -> Response[Any]:
    ctx = context_of(request)
    form = await request.form()
    username = str(form.get("username") or "").strip()
    password = str(form.get("password") or "")
    target = str(form.get("next") or "")
    ip = client_ip(request)
    wait = ctx.throttle.retry_after(username, ip)
    if wait > 0:
        log.warning("admin_login_throttled", username=username, ip=ip)
        return render(
            request, "login.html", title="Sign in", next=target, username=username,
            error=f"Too many failed sign-in attempts. Try again in {math.ceil(wait)} s.",
            status_code=429, headers={"Retry-After": str(math.ceil(wait))},
        )
    user = None
    if username and password:
        async with ctx.sessionmaker() as session:
            user = await user_service.authenticate(session, username, password)
    if user is None:
        ctx.throttle.failure(username, ip)
        log.warning("admin_login_failed", username=username, ip=ip)
        return render(
            request, "login.html", title="Sign in", next=target, username=username,
            error="Invalid username or password.", status_code=401,
        )
    ctx.throttle.success(username, ip)
    log.info("admin_login", username=user.username, ip=ip)
    async with ctx.sessionmaker() as session, session.begin():
        session_id = await admin_sessions.start(session, user.id, max_age_s=ctx.signer.max_age_s)
    session_of(request).sign_in(session_id, user.username, user.id)
    return Redirect(path=_safe_next(request, target), status_code=303)


@post("/logout")
async def logout(request: Request[Any, Any, Any]) -> Redirect:
    state = session_of(request)
    log.info("admin_logout", username=state.user)
    if state.session_id is not None:
        async with context_of(request).sessionmaker() as session, session.begin():
            await admin_sessions.end(session, state.session_id)
    state.sign_out()
    state.flash("Signed out.")
    return redirect(request, "/login")


# -- dashboard ----------------------------------------------------------------------


def _dashboard_context(request: Request[Any, Any, Any], window: str) -> dict[str, Any]:
    ctx = context_of(request)
    return dashboard.build(getattr(ctx.gateway, "stats", None), ctx.models, window=window)


@get("/", name="litegate_admin:dashboard")
async def dashboard_page(request: Request[Any, Any, Any]) -> Response[Any]:
    window = str(request.query_params.get("window") or "10m")
    return render(
        request, "dashboard.html", title="Dashboard", active="dashboard",
        **_dashboard_context(request, window),
    )


@get("/dashboard/panel")
async def dashboard_panel(request: Request[Any, Any, Any]) -> Response[Any]:
    window = str(request.query_params.get("window") or "10m")
    return render(request, "_dashboard_panel.html", **_dashboard_context(request, window))


# -- upstreams ----------------------------------------------------------------------


async def _upstream(session: Any, upstream_id: int) -> Upstream:
    upstream = await session.get(Upstream, upstream_id)
    if upstream is None:
        raise NotFoundException(f"upstream {upstream_id} not found")
    return upstream


@get("/upstreams")
async def upstreams_page(request: Request[Any, Any, Any]) -> Response[Any]:
    async with context_of(request).sessionmaker() as session:
        upstreams = await routing.list_upstreams(session)
        usage = await _upstream_usage(session)
    return render(
        request, "upstreams.html", title="Upstreams", active="upstreams",
        upstreams=upstreams, usage=usage,
    )


async def _upstream_usage(session: Any) -> dict[int, list[str]]:
    usage: dict[int, list[str]] = {}
    for route in await routing.list_routes(session):
        for variant in route.variants:
            names = usage.setdefault(variant.upstream_id, [])
            if route.name not in names:
                names.append(route.name)
    return usage


def _upstream_form(
    request: Request[Any, Any, Any], result: forms.FormResult, *, upstream: Upstream | None,
    status_code: int = 200,
) -> Response[Any]:
    return render(
        request, "upstream_form.html", title="Upstream", active="upstreams",
        values=result.values, errors=result.errors, upstream=upstream, status_code=status_code,
    )


@get("/upstreams/new")
async def upstream_new(request: Request[Any, Any, Any]) -> Response[Any]:
    return _upstream_form(request, forms.FormResult(forms.upstream_values(None)), upstream=None)


@get("/upstreams/{upstream_id:int}")
async def upstream_edit(request: Request[Any, Any, Any]) -> Response[Any]:
    upstream_id = int(request.path_params["upstream_id"])
    async with context_of(request).sessionmaker() as session:
        upstream = await _upstream(session, upstream_id)
    return _upstream_form(
        request, forms.FormResult(forms.upstream_values(upstream)), upstream=upstream
    )


@post("/upstreams/new", status_code=200)
async def upstream_create(request: Request[Any, Any, Any]) -> Response[Any]:
    return await _save_upstream(request, None)


@post("/upstreams/{upstream_id:int}", status_code=200)
async def upstream_update(request: Request[Any, Any, Any]) -> Response[Any]:
    upstream_id = int(request.path_params["upstream_id"])
    return await _save_upstream(request, upstream_id)


async def _save_upstream(request: Request[Any, Any, Any], upstream_id: int | None) -> Response[Any]:
    ctx = context_of(request)
    form = await request.form()
    current = None
    if upstream_id is not None:
        async with ctx.sessionmaker() as session:
            current = await _upstream(session, upstream_id)
    result = forms.parse_upstream(form, fixed_name=current.name if current else None)
    if result.ok:
        try:
            async with ctx.sessionmaker() as session, session.begin():
                if current is None and await session.scalar(
                    select(Upstream.id).where(Upstream.name == result.data.name)
                ):
                    result.add("name", f"an upstream named {result.data.name!r} already exists")
                    raise _Abort
                saved = await routing.upsert_upstream(
                    session, result.data, actor=actor(request),
                    expected_version=forms.row_version(form) if current else None,
                )
                saved_name = saved.name
        except _Abort:
            pass
        except ValidationFailed as exc:
            forms.map_errors(exc.errors, result)
        except (Conflict, StaleDataError) as exc:
            result.add(forms.GENERAL, _conflict_message("upstream", exc))
            return _upstream_form(request, result, upstream=current, status_code=409)
        except LitegateError as exc:
            result.add(forms.GENERAL, exc.detail)
        else:
            session_of(request).flash(f"Upstream {saved_name} saved.")
            return redirect(request, "/upstreams")
    return _upstream_form(request, result, upstream=current, status_code=400)


@post("/upstreams/{upstream_id:int}/delete")
async def upstream_delete(request: Request[Any, Any, Any]) -> Redirect:
    upstream_id = int(request.path_params["upstream_id"])
    ctx = context_of(request)
    state = session_of(request)
    try:
        async with ctx.sessionmaker() as session, session.begin():
            upstream = await _upstream(session, upstream_id)
            name = upstream.name
            await routing.delete_upstream(session, name, actor=actor(request))
    except LitegateError as exc:
        state.flash(exc.detail, "error")
    else:
        state.flash(f"Upstream {name} deleted.")
    return redirect(request, "/upstreams")


# -- routes -------------------------------------------------------------------------


class _Abort(Exception):
    """Leave a transaction (rolled back) after a form-level error was recorded."""


def _conflict_message(kind: str, exc: Exception) -> str:
    return (
        f"This {kind} was changed by someone else after you opened it, so your save was "
        f"not applied. Reload the page to see the current values, then make your change again."
    )


async def _route(session: Any, route_id: int) -> Route:
    route = await session.get(Route, route_id)
    if route is None:
        raise NotFoundException(f"route {route_id} not found")
    return route


@get("/routes")
async def routes_page(request: Request[Any, Any, Any]) -> Response[Any]:
    async with context_of(request).sessionmaker() as session:
        routes = await routing.list_routes(session)
        quotas = list(await session.scalars(
            select(Quota).where(Quota.route_id.is_not(None), Quota.key_id.is_(None))
        ))
    by_route: dict[int, list[Quota]] = {}
    for q in quotas:
        by_route.setdefault(q.route_id or 0, []).append(q)
    return render(
        request, "routes.html", title="Routes", active="routes", routes=routes,
        route_quotas=by_route,
    )


async def _route_form(
    request: Request[Any, Any, Any], result: forms.FormResult, *, route: Route | None,
    status_code: int = 200,
) -> Response[Any]:
    async with context_of(request).sessionmaker() as session:
        upstreams = [u.name for u in await routing.list_upstreams(session)]
        route_names = [r for r in await session.scalars(select(Route.name).order_by(Route.name))]
        local_models = [m for m in await session.scalars(select(Model.name).order_by(Model.name))]
    return render(
        request, "route_form.html", title="Route", active="routes", values=result.values,
        errors=result.errors, route=route, upstreams=upstreams, local_models=local_models,
        fallbacks=[n for n in route_names if route is None or n != route.name],
        max_variant_rows=forms.MAX_VARIANT_ROWS, status_code=status_code,
    )


@get("/routes/new")
async def route_new(request: Request[Any, Any, Any]) -> Response[Any]:
    return await _route_form(request, forms.FormResult(forms.route_values(None)), route=None)


@get("/routes/{route_id:int}")
async def route_edit(request: Request[Any, Any, Any]) -> Response[Any]:
    route_id = int(request.path_params["route_id"])
    async with context_of(request).sessionmaker() as session:
        route = await _route(session, route_id)
        limits = await routing.route_quotas(session, route.id)
    return await _route_form(
        request, forms.FormResult(forms.route_values(route, limits)), route=route
    )


@post("/routes/new", status_code=200)
async def route_create(request: Request[Any, Any, Any]) -> Response[Any]:
    return await _save_route(request, None)


@post("/routes/{route_id:int}", status_code=200)
async def route_update(request: Request[Any, Any, Any]) -> Response[Any]:
    route_id = int(request.path_params["route_id"])
    return await _save_route(request, route_id)


async def _save_route(request: Request[Any, Any, Any], route_id: int | None) -> Response[Any]:
    ctx = context_of(request)
    form = await request.form()
    current = None
    if route_id is not None:
        async with ctx.sessionmaker() as session:
            current = await _route(session, route_id)
    result = forms.parse_route(form, fixed_name=current.name if current else None)
    if form.get("add_variant"):
        # "Add variant" without JavaScript: the same form back with one more row, unsaved.
        forms.add_variant_row(result)
        return await _route_form(request, forms.FormResult(result.values), route=current)
    if not result.ok:
        # Report the service's rules too, so every problem shows in one round trip.
        async with ctx.sessionmaker() as session:
            upstreams = {u.name for u in await routing.list_upstreams(session)}
        forms.map_errors(check_route(result.data, "route", upstreams), result, only_new=True)
    if result.ok:
        try:
            async with ctx.sessionmaker() as session, session.begin():
                if current is None and await session.scalar(
                    select(Route.id).where(Route.name == result.data.name)
                ):
                    result.add("name", f"a route named {result.data.name!r} already exists")
                    raise _Abort
                saved = await routing.upsert_route(
                    session, result.data, actor=actor(request),
                    expected_version=forms.row_version(form) if current else None,
                )
                if current is not None:
                    # Variant-only edits do not UPDATE the routes row, so touch it: the
                    # row_version moves and a concurrent save of the old version fails.
                    saved.updated_at = utcnow()
                    await session.flush()
                saved_id, saved_name = saved.id, saved.name
        except _Abort:
            pass
        except ValidationFailed as exc:
            forms.map_errors(exc.errors, result)
        except (Conflict, StaleDataError) as exc:
            result.add(forms.GENERAL, _conflict_message("route", exc))
            return await _route_form(request, result, route=current, status_code=409)
        except LitegateError as exc:
            result.add(forms.GENERAL, exc.detail)
        else:
            session_of(request).flash(f"Route {saved_name} saved.")
            return redirect(request, f"/routes/{saved_id}")
    return await _route_form(request, result, route=current, status_code=400)


@post("/routes/{route_id:int}/delete")
async def route_delete(request: Request[Any, Any, Any]) -> Redirect:
    route_id = int(request.path_params["route_id"])
    ctx = context_of(request)
    state = session_of(request)
    try:
        async with ctx.sessionmaker() as session, session.begin():
            route = await _route(session, route_id)
            name = route.name
            await routing.delete_route(session, name, actor=actor(request))
    except LitegateError as exc:
        state.flash(exc.detail, "error")
    else:
        state.flash(f"Route {name} deleted.")
    return redirect(request, "/routes")


# -- quotas -------------------------------------------------------------------------


async def _quotas_page(
    request: Request[Any, Any, Any], result: forms.FormResult | None = None, status_code: int = 200
) -> Response[Any]:
    async with context_of(request).sessionmaker() as session:
        quotas = await quota_service.list_quotas(session)
        keys = await key_service.list_keys(session, include_revoked=False)
        routes = [r for r in await session.scalars(select(Route.name).order_by(Route.name))]
    result = result or forms.FormResult({"key_id": "", "route": "", "kind": "requests", "rate": ""})
    return render(
        request, "quotas.html", title="Quotas", active="quotas", quotas=quotas, keys=keys,
        routes=routes, values=result.values, errors=result.errors, status_code=status_code,
    )


@get("/quotas")
async def quotas_page(request: Request[Any, Any, Any]) -> Response[Any]:
    return await _quotas_page(request)


@post("/quotas", status_code=200)
async def quota_create(request: Request[Any, Any, Any]) -> Response[Any]:
    ctx = context_of(request)
    result = forms.parse_quota(await request.form())
    if result.ok:
        try:
            async with ctx.sessionmaker() as session, session.begin():
                await quota_service.add_quota(session, actor=actor(request), **result.data)
        except ValidationFailed as exc:
            forms.map_errors(exc.errors, result, aliases=forms.QUOTA_ALIASES)
        except LitegateError as exc:
            result.add(forms.GENERAL, exc.detail)
        else:
            session_of(request).flash("Quota added.")
            return redirect(request, "/quotas")
    return await _quotas_page(request, result, status_code=400)


@post("/quotas/{quota_id:int}/delete")
async def quota_delete(request: Request[Any, Any, Any]) -> Redirect:
    quota_id = int(request.path_params["quota_id"])
    ctx = context_of(request)
    state = session_of(request)
    try:
        async with ctx.sessionmaker() as session, session.begin():
            await quota_service.delete_quota(session, quota_id, actor=actor(request))
    except LitegateError as exc:
        state.flash(exc.detail, "error")
    else:
        state.flash("Quota deleted.")
    return redirect(request, "/quotas")


# -- API keys -----------------------------------------------------------------------


KEYS_PAGE_SIZE = 50


def _pages(page: int, total: int, size: int, **query: str) -> dict[str, Any]:
    """``pages`` and prev/next query strings; a page past the last one is a 400."""
    pages = max(1, math.ceil(total / size))
    if page > pages:
        raise ValidationException(f"page must be a whole number from 1 to {pages}")
    kept = {k: v for k, v in query.items() if v}
    return {
        "page": page, "pages": pages,
        "prev_query": urlencode({**kept, "page": page - 1}) if page > 1 else None,
        "next_query": urlencode({**kept, "page": page + 1}) if page < pages else None,
    }


async def _keys_page(
    request: Request[Any, Any, Any],
    result: forms.FormResult | None = None,
    *,
    created: tuple[str, str] | None = None,  # (name, secret) of a key just created
    status_code: int = 200,
) -> Response[Any]:
    q = str(request.query_params.get("q") or "")[:200]
    status = str(request.query_params.get("status") or "all")
    if status not in key_service.STATUSES:
        raise ValidationException(f"status must be one of {', '.join(key_service.STATUSES)}")
    page = query_int(request, "page", default=1)
    async with context_of(request).sessionmaker() as session:
        keys, total = await key_service.search_keys(
            session, query=q, status=status, offset=(page - 1) * KEYS_PAGE_SIZE,
            limit=KEYS_PAGE_SIZE,
        )
        routes = [r for r in await session.scalars(select(Route.name).order_by(Route.name))]
        quotas = list(await session.scalars(
            select(Quota).where(Quota.key_id.in_([k.id for k in keys]))
        ))
    paging = _pages(page, total, KEYS_PAGE_SIZE, q=q, status="" if status == "all" else status)
    key_quotas: dict[int, list[Quota]] = {}
    for quota in quotas:
        key_quotas.setdefault(quota.key_id or 0, []).append(quota)
    result = result or forms.FormResult(
        {"name": "", "routes": [], "limits": "", "token_limits": "", "expires_at": ""}
    )
    return render(
        request, "keys.html", title="API keys", active="keys", keys=keys, routes=routes,
        key_quotas=key_quotas, values=result.values, errors=result.errors,
        created_name=created[0] if created else None,
        created_secret=created[1] if created else None,
        now=_now(), q=q, status=status, statuses=key_service.STATUSES, total=total,
        status_code=status_code, **paging,
    )


def _now() -> Any:
    return utcnow()


@get("/keys")
async def keys_page(request: Request[Any, Any, Any]) -> Response[Any]:
    created = None
    session_id = session_of(request).session_id
    if session_id is not None:
        async with context_of(request).sessionmaker() as session, session.begin():
            flash = await admin_sessions.pop_flash(session, session_id)
        new_key = (flash or {}).get("new_key")
        if isinstance(new_key, dict):
            created = (str(new_key.get("name", "")), str(new_key.get("secret", "")))
    return await _keys_page(request, created=created)


async def _key_form(
    request: Request[Any, Any, Any], key_id: int, result: forms.FormResult | None = None,
    status_code: int = 200,
) -> Response[Any]:
    ctx = context_of(request)
    async with ctx.sessionmaker() as session:
        key = await key_service.get_key(session, key_id)
        limits = await key_service.own_limits(session, key_id)
        routes = [r for r in await session.scalars(select(Route.name).order_by(Route.name))]
        route_quotas = list(await session.scalars(
            select(Quota).where(Quota.key_id == key_id, Quota.route_id.is_not(None))
        ))
    stats = getattr(ctx.gateway, "stats", None)
    usage = getattr(stats, "keys", None)
    result = result or forms.FormResult(forms.key_values(key, limits))
    return render(
        request, "key_edit.html", title=f"Key {key.name}", active="keys", key=key,
        routes=routes, route_quotas=route_quotas, values=result.values, errors=result.errors,
        usage_hours=usage.hourly(key_id) if usage is not None else [],
        usage_total=usage.totals(key_id) if usage is not None else None,
        now=_now(), status_code=status_code,
    )


@get("/keys/{key_id:int}")
async def key_edit(request: Request[Any, Any, Any]) -> Response[Any]:
    return await _key_form(request, int(request.path_params["key_id"]))


@post("/keys/{key_id:int}", status_code=200)
async def key_update(request: Request[Any, Any, Any]) -> Response[Any]:
    key_id = int(request.path_params["key_id"])
    ctx = context_of(request)
    async with ctx.sessionmaker() as session:
        current = await key_service.get_key(session, key_id)
    result = forms.parse_key(await request.form(), fixed_name=current.name)
    if result.ok:
        data = {k: v for k, v in result.data.items() if k != "name"}
        try:
            async with ctx.sessionmaker() as session, session.begin():
                await key_service.update_key(session, key_id, actor=actor(request), **data)
        except ValidationFailed as exc:
            forms.map_errors(exc.errors, result, aliases=forms.KEY_ALIASES)
        except LitegateError as exc:
            result.add(forms.GENERAL, exc.detail)
        else:
            session_of(request).flash(f"Key {current.name} updated.")
            return redirect(request, f"/keys/{key_id}")
    return await _key_form(request, key_id, result, status_code=400)


@post("/keys", status_code=200)
async def key_create(request: Request[Any, Any, Any]) -> Response[Any]:
    ctx = context_of(request)
    result = forms.parse_key(await request.form())
    if result.ok:
        try:
            async with ctx.sessionmaker() as session, session.begin():
                key, secret = await key_service.create_key(
                    session, actor=actor(request), **result.data
                )
        except ValidationFailed as exc:
            forms.map_errors(exc.errors, result, aliases=forms.KEY_ALIASES)
        except LitegateError as exc:
            result.add(forms.GENERAL, exc.detail)
        else:
            # Post-redirect-get: the secret waits in this session's one-time server-side
            # flash, so a reload of the next page neither shows it again nor re-creates.
            async with ctx.sessionmaker() as session, session.begin():
                await admin_sessions.set_flash(
                    session, session_of(request).session_id or "",
                    {"new_key": {"id": key.id, "name": key.name, "secret": secret}},
                )
            session_of(request).flash(f"Key {key.name} created.")
            return redirect(request, "/keys")
    return await _keys_page(request, result, status_code=400)


@post("/keys/{key_id:int}/revoke")
async def key_revoke(request: Request[Any, Any, Any]) -> Redirect:
    key_id = int(request.path_params["key_id"])
    ctx = context_of(request)
    state = session_of(request)
    try:
        async with ctx.sessionmaker() as session, session.begin():
            key = await key_service.revoke_key(session, key_id, actor=actor(request))
            name = key.name
    except LitegateError as exc:
        state.flash(exc.detail, "error")
    else:
        state.flash(f"Key {name} revoked.")
    return redirect(request, "/keys")


# -- audit --------------------------------------------------------------------------


@get("/audit")
async def audit_page(request: Request[Any, Any, Any]) -> Response[Any]:
    params = request.query_params
    actor_filter, entity_type, action, q = (
        str(params.get(name) or "") for name in ("actor", "entity_type", "action", "q")
    )
    page = query_int(request, "page", default=1)
    stmt = select(AuditEntry)
    if actor_filter:
        stmt = stmt.where(AuditEntry.actor == actor_filter)
    if entity_type:
        stmt = stmt.where(AuditEntry.entity_type == entity_type)
    if action:
        stmt = stmt.where(AuditEntry.action == action)
    if q:
        stmt = stmt.where(or_(
            AuditEntry.entity_name.contains(q, autoescape=True),
            AuditEntry.actor.contains(q, autoescape=True),
        ))
    async with context_of(request).sessionmaker() as session:
        total = int(await session.scalar(select(func.count()).select_from(stmt.subquery())) or 0)
        entries = list(await session.scalars(
            stmt.order_by(AuditEntry.id.desc())
            .offset((page - 1) * AUDIT_PAGE_SIZE).limit(AUDIT_PAGE_SIZE)
        ))
        choices = [  # bounded: the filter drop-downs list at most MAX_CHOICES values
            list(await session.scalars(select(col).distinct().order_by(col).limit(MAX_CHOICES)))
            for col in (AuditEntry.actor, AuditEntry.entity_type, AuditEntry.action)
        ]
        actors, types, actions = choices
    filters = {"actor": actor_filter, "entity_type": entity_type, "action": action, "q": q}
    return render(
        request, "audit.html", title="Audit log", active="audit", entries=entries, total=total,
        filters=filters, actors=actors, types=types, actions=actions,
        **_pages(page, total, AUDIT_PAGE_SIZE, **filters),
    )
