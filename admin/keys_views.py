"""API key pages: search and page through keys, create (the secret is shown once),
edit scopes, own limits and expiry, revoke; per-key hourly usage from the stats."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from litestar import Response, get, post
from litestar.params import FromPath
from litestar.response import Redirect
from sqlalchemy.ext.asyncio import AsyncSession

from litegate.db.models import ApiKey, utcnow
from litegate.services import keys as key_service
from litegate.services import quotas as quota_service
from litegate.services import routing

from . import forms
from .auth import context_of, session_of
from .forms import KeyInput
from .pages import (
    AdminRequest,
    act,
    actor,
    keep_secret,
    paging,
    query_int,
    redirect,
    render,
    save,
    take_secret,
)

KEYS_PAGE_SIZE = 50


async def _keys_page(
    request: AdminRequest,
    result: forms.FormResult[KeyInput] | None = None,
    *,
    created: tuple[str, str] | None = None,  # (name, secret) of a key just created
    status_code: int = 200,
) -> Response[str]:
    q = str(request.query_params.get("q") or "")[:200]
    status = str(request.query_params.get("status") or "all")
    page = query_int(request, "page", default=1)
    async with context_of(request).sessionmaker() as session:
        keys, total = await key_service.search_keys(
            session, query=q, status=status, offset=(page - 1) * KEYS_PAGE_SIZE,
            limit=KEYS_PAGE_SIZE,
        )
        routes = await routing.route_names(session)
        key_quotas = await quota_service.of_keys(session, [k.id for k in keys])
    pages = paging(page, total, KEYS_PAGE_SIZE, q=q, status="" if status == "all" else status)
    result = result or forms.FormResult(
        {"name": "", "routes": [], "limits": "", "token_limits": "", "expires_at": ""}
    )
    return render(
        request, "keys.html", title="API keys", active="keys", keys=keys, routes=routes,
        key_quotas=key_quotas, values=result.values, errors=result.errors,
        created_name=created[0] if created else None,
        created_secret=created[1] if created else None,
        now=_now(), q=q, status=status, statuses=key_service.STATUSES, total=total,
        status_code=status_code, **pages,
    )


def _now() -> datetime:
    return utcnow()


@get("/keys")
async def keys_page(request: AdminRequest) -> Response[str]:
    return await _keys_page(request, created=await take_secret(request, "new_key"))


async def _key_form(
    request: AdminRequest, key_id: int, result: forms.FormResult[KeyInput] | None = None,
    status_code: int = 200,
) -> Response[str]:
    ctx = context_of(request)
    async with ctx.sessionmaker() as session:
        key = await key_service.get_key(session, key_id)
        limits = await key_service.own_limits(session, key_id)
        routes = await routing.route_names(session)
        route_quotas = await quota_service.key_on_routes(session, key_id)
    usage = ctx.stats.keys if ctx.stats is not None else None
    result = result or forms.FormResult(forms.key_values(key, limits))
    return render(
        request, "key_edit.html", title=f"Key {key.name}", active="keys", key=key,
        routes=routes, route_quotas=route_quotas, values=result.values, errors=result.errors,
        usage_hours=usage.hourly(key_id) if usage is not None else [],
        usage_total=usage.totals(key_id) if usage is not None else None,
        now=_now(), status_code=status_code,
    )


@get("/keys/{key_id:int}")
async def key_edit(request: AdminRequest, key_id: FromPath[int]) -> Response[str]:
    return await _key_form(request, key_id)


@post("/keys/{key_id:int}", status_code=200)
async def key_update(request: AdminRequest, key_id: FromPath[int]) -> Response[Any]:
    async with context_of(request).sessionmaker() as session:
        current = await key_service.get_key(session, key_id)
    form = await request.form()
    result = forms.parse_key(form, fixed_name=current.name)
    data = result.data
    if result.ok and data is not None:
        who = actor(request)
        changes = forms.key_changes(form, data, current)

        async def write(session: AsyncSession) -> ApiKey:
            return await key_service.update_key(session, key_id, actor=who, **changes)

        updated, _ = await save(request, result, write, aliases=forms.KEY_ALIASES)
        if updated is not None:
            session_of(request).flash(f"Key {current.name} updated.")
            return redirect(request, f"/keys/{key_id}")
    return await _key_form(request, key_id, result, status_code=400)


@post("/keys", status_code=200)
async def key_create(request: AdminRequest) -> Response[Any]:
    result = forms.parse_key(await request.form())
    data = result.data
    if result.ok and data is not None:
        who = actor(request)

        async def write(session: AsyncSession) -> tuple[ApiKey, str]:
            return await key_service.create_key(session, actor=who, **data)

        created, _ = await save(request, result, write, aliases=forms.KEY_ALIASES)
        if created is not None:
            key, secret = created
            await keep_secret(request, "new_key", key.name, secret)
            session_of(request).flash(f"Key {key.name} created.")
            return redirect(request, "/keys")
    return await _keys_page(request, result, status_code=400)


@post("/keys/{key_id:int}/revoke")
async def key_revoke(request: AdminRequest, key_id: FromPath[int]) -> Redirect:
    async def revoke(session: AsyncSession) -> str:
        key = await key_service.revoke_key(session, key_id, actor=actor(request))
        return f"Key {key.name} revoked."

    return await act(request, revoke, "/keys")


ROUTE_HANDLERS = [keys_page, key_create, key_edit, key_update, key_revoke]
