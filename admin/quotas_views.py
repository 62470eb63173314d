"""Quota pages: every quota (per key, per route, or a key on a route), add, delete."""

from __future__ import annotations

from typing import Any

from litestar import Response, get, post
from litestar.params import FromPath
from litestar.response import Redirect
from sqlalchemy.ext.asyncio import AsyncSession

from litegate.services import keys as key_service
from litegate.services import quotas as quota_service
from litegate.services import routing

from . import forms
from .auth import context_of, session_of
from .forms import QuotaInput
from .pages import AdminRequest, act, actor, redirect, render, save


async def _quotas_page(
    request: AdminRequest,
    result: forms.FormResult[QuotaInput] | None = None,
    status_code: int = 200,
) -> Response[str]:
    async with context_of(request).sessionmaker() as session:
        quotas = await quota_service.list_quotas(session)
        keys = await key_service.list_keys(session, include_revoked=False)
        routes = await routing.route_names(session)
    result = result or forms.FormResult({"key_id": "", "route": "", "kind": "requests", "rate": ""})
    return render(
        request, "quotas.html", title="Quotas", active="quotas", quotas=quotas, keys=keys,
        routes=routes, values=result.values, errors=result.errors, status_code=status_code,
    )


@get("/quotas")
async def quotas_page(request: AdminRequest) -> Response[str]:
    return await _quotas_page(request)


@post("/quotas", status_code=200)
async def quota_create(request: AdminRequest) -> Response[Any]:
    result = forms.parse_quota(await request.form())
    quota = result.data
    if result.ok and quota is not None:
        who = actor(request)

        async def write(session: AsyncSession) -> int:
            return (await quota_service.add_quota(session, actor=who, **quota)).id

        added, _ = await save(request, result, write, aliases=forms.QUOTA_ALIASES)
        if added is not None:
            session_of(request).flash("Quota added.")
            return redirect(request, "/quotas")
    return await _quotas_page(request, result, status_code=400)


@post("/quotas/{quota_id:int}/delete")
async def quota_delete(request: AdminRequest, quota_id: FromPath[int]) -> Redirect:
    async def delete(session: AsyncSession) -> str:
        await quota_service.delete_quota(session, quota_id, actor=actor(request))
        return "Quota deleted."

    return await act(request, delete, "/quotas")


ROUTE_HANDLERS = [quotas_page, quota_create, quota_delete]
