"""Upstream pages: list (with the routes using each), create, edit, delete."""

from __future__ import annotations

from typing import Any

from litestar import Response, get, post
from litestar.params import FromPath
from litestar.response import Redirect
from sqlalchemy.ext.asyncio import AsyncSession

from litegate.db.models import Upstream
from litegate.services import routing
from litegate.services.schema import UpstreamIn

from . import forms
from .auth import context_of, session_of
from .pages import AdminRequest, act, actor, redirect, render, row_or_404, save


async def _upstream(session: AsyncSession, upstream_id: int) -> Upstream:
    return await row_or_404(session, Upstream, upstream_id, "upstream")


async def _upstream_usage(session: AsyncSession) -> dict[int, list[str]]:
    usage: dict[int, list[str]] = {}
    for route in await routing.list_routes(session):
        for variant in route.variants:
            names = usage.setdefault(variant.upstream_id, [])
            if route.name not in names:
                names.append(route.name)
    return usage


@get("/upstreams")
async def upstreams_page(request: AdminRequest) -> Response[str]:
    async with context_of(request).sessionmaker() as session:
        upstreams = await routing.list_upstreams(session)
        usage = await _upstream_usage(session)
    return render(
        request, "upstreams.html", title="Upstreams", active="upstreams",
        upstreams=upstreams, usage=usage,
    )


def _upstream_form(
    request: AdminRequest, result: forms.FormResult[UpstreamIn], *, upstream: Upstream | None,
    status_code: int = 200,
) -> Response[str]:
    return render(
        request, "upstream_form.html", title="Upstream", active="upstreams",
        values=result.values, errors=result.errors, upstream=upstream, status_code=status_code,
    )


@get("/upstreams/new")
async def upstream_new(request: AdminRequest) -> Response[str]:
    return _upstream_form(request, forms.FormResult(forms.upstream_values(None)), upstream=None)


@get("/upstreams/{upstream_id:int}")
async def upstream_edit(request: AdminRequest, upstream_id: FromPath[int]) -> Response[str]:
    async with context_of(request).sessionmaker() as session:
        upstream = await _upstream(session, upstream_id)
    return _upstream_form(
        request, forms.FormResult(forms.upstream_values(upstream)), upstream=upstream
    )


@post("/upstreams/new", status_code=200)
async def upstream_create(request: AdminRequest) -> Response[Any]:
    return await _save_upstream(request, None)


@post("/upstreams/{upstream_id:int}", status_code=200)
async def upstream_update(request: AdminRequest, upstream_id: FromPath[int]) -> Response[Any]:
    return await _save_upstream(request, upstream_id)


async def _save_upstream(request: AdminRequest, upstream_id: int | None) -> Response[Any]:
    form = await request.form()
    current = None
    if upstream_id is not None:
        async with context_of(request).sessionmaker() as session:
            current = await _upstream(session, upstream_id)
    result = forms.parse_upstream(
        form, fixed_name=current.name if current else None,
        stored=forms.upstream_values(current) if current else None,
    )
    status_code = 400
    data = result.data
    if result.ok and data is not None:
        who = actor(request)

        async def write(session: AsyncSession) -> str:
            if current is None:
                saved = await routing.create_upstream(session, data, actor=who)
            else:
                saved = await routing.upsert_upstream(
                    session, data, actor=who, expected_version=forms.row_version(form)
                )
            return saved.name

        name, status_code = await save(request, result, write, conflict_kind="upstream")
        if name is not None:
            session_of(request).flash(f"Upstream {name} saved.")
            return redirect(request, "/upstreams")
    return _upstream_form(request, result, upstream=current, status_code=status_code)


@post("/upstreams/{upstream_id:int}/delete")
async def upstream_delete(request: AdminRequest, upstream_id: FromPath[int]) -> Redirect:
    async def delete(session: AsyncSession) -> str:
        name = (await _upstream(session, upstream_id)).name
        await routing.delete_upstream(session, name, actor=actor(request))
        return f"Upstream {name} deleted."

    return await act(request, delete, "/upstreams")


ROUTE_HANDLERS = [
    upstreams_page, upstream_new, upstream_create, upstream_edit, upstream_update,
    upstream_delete,
]
