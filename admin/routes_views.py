"""Route pages: list (with route-level quotas), create, edit (variants with their prices,
stickiness, cache, limits, fallback, shadow, adaptive A/B, semantic cache), delete.

Editing changes only the settings the submitted form carries: any other setting of the
stored route is kept (``routing.update_route``), never reset to a default."""

from __future__ import annotations

from typing import Any

from litestar import Response, get, post
from litestar.params import FromPath
from litestar.response import Redirect
from sqlalchemy.ext.asyncio import AsyncSession

from litegate.db.models import Route
from litegate.services import models as model_service
from litegate.services import quotas as quota_service
from litegate.services import routing
from litegate.services.schema import RouteIn, check_route

from . import forms
from .auth import context_of, session_of
from .pages import AdminRequest, act, actor, redirect, render, row_or_404, save


async def _route(session: AsyncSession, route_id: int) -> Route:
    return await row_or_404(session, Route, route_id, "route")


@get("/routes")
async def routes_page(request: AdminRequest) -> Response[str]:
    async with context_of(request).sessionmaker() as session:
        routes = await routing.list_routes(session)
        route_quotas = await quota_service.route_level(session)
    return render(
        request, "routes.html", title="Routes", active="routes", routes=routes,
        route_quotas=route_quotas,
    )


async def _route_form(
    request: AdminRequest, result: forms.FormResult[RouteIn], *, route: Route | None,
    status_code: int = 200,
) -> Response[str]:
    async with context_of(request).sessionmaker() as session:
        upstreams = [u.name for u in await routing.list_upstreams(session)]
        route_names = await routing.route_names(session)
        local_models = await model_service.model_names(session)
    return render(
        request, "route_form.html", title="Route", active="routes", values=result.values,
        errors=result.errors, route=route, upstreams=upstreams, local_models=local_models,
        fallbacks=[n for n in route_names if route is None or n != route.name],
        max_variant_rows=forms.MAX_VARIANT_ROWS, status_code=status_code,
        shares=_shares(request, route),
    )


def _shares(request: AdminRequest, route: Route | None) -> dict[str, Any] | None:
    """The A/B shares this gateway process applies to ``route`` now (read-only)."""
    stats = context_of(request).stats
    return stats.shares.get(route.name) if stats is not None and route is not None else None


@get("/routes/new")
async def route_new(request: AdminRequest) -> Response[str]:
    return await _route_form(request, forms.FormResult(forms.route_values(None)), route=None)


@get("/routes/{route_id:int}")
async def route_edit(request: AdminRequest, route_id: FromPath[int]) -> Response[str]:
    async with context_of(request).sessionmaker() as session:
        route = await _route(session, route_id)
        limits = await routing.route_quotas(session, route.id)
    return await _route_form(
        request, forms.FormResult(forms.route_values(route, limits)), route=route
    )


@post("/routes/new", status_code=200)
async def route_create(request: AdminRequest) -> Response[Any]:
    return await _save_route(request, None)


@post("/routes/{route_id:int}", status_code=200)
async def route_update(request: AdminRequest, route_id: FromPath[int]) -> Response[Any]:
    return await _save_route(request, route_id)


async def _save_route(request: AdminRequest, route_id: int | None) -> Response[Any]:
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
    data = result.data
    if data is not None:
        # The service's rules too (``check_route``), so every problem shows in one round trip;
        # when editing, on the route as it will be saved (the settings the form lacks kept).
        async with ctx.sessionmaker() as session:
            upstreams = {u.name for u in await routing.list_upstreams(session)}
            if current is not None:
                stored = await routing.stored_route_in(session, current.name)
                data = routing.merge_route(stored, _changes(stored, result))
        forms.map_errors(check_route(data, "route", upstreams), result, only_new=True)
    status_code = 400
    if result.ok and data is not None:
        who = actor(request)
        new = data

        async def write(session: AsyncSession) -> tuple[int, str]:
            if current is None:
                saved = await routing.create_route(session, new, actor=who)
            else:
                stored = await routing.stored_route_in(session, current.name)
                saved = await routing.update_route(
                    session, current.name, _changes(stored, result), actor=who,
                    expected_version=forms.row_version(form),
                )
            return saved.id, saved.name

        saved, status_code = await save(request, result, write, conflict_kind="route")
        if saved is not None:
            session_of(request).flash(f"Route {saved[1]} saved.")
            return redirect(request, f"/routes/{saved[0]}")
    return await _route_form(request, result, route=current, status_code=status_code)


def _changes(stored: RouteIn, result: forms.FormResult[RouteIn]) -> dict[str, Any]:
    """The settings the submitted form carried, as ``routing.update_route`` takes them: a
    setting whose fields the form lacks is left out (kept as stored), and so is the price
    of each variant row without price fields."""
    assert result.data is not None
    changes = {f: getattr(result.data, f) for f in result.given}
    if "variants" in changes:
        changes["variants"] = routing.keep_prices(result.data.variants, stored,
                                                  result.prices_given)
    return changes


@post("/routes/{route_id:int}/delete")
async def route_delete(request: AdminRequest, route_id: FromPath[int]) -> Redirect:
    async def delete(session: AsyncSession) -> str:
        name = (await _route(session, route_id)).name
        await routing.delete_route(session, name, actor=actor(request))
        return f"Route {name} deleted."

    return await act(request, delete, "/routes")


ROUTE_HANDLERS = [
    routes_page, route_new, route_create, route_edit, route_update, route_delete,
]
