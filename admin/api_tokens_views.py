"""The console's "Admin API tokens" page: create a token (its secret is shown once, on
the next page only, through the session's sealed one-time flash like a new API key's)
and revoke tokens. Same service as ``litegate admin create-token|revoke-token``;
CSRF-protected like every console form. A revocation holds at the API's next request on
every replica (the API reads the token's row each time)."""

from __future__ import annotations

from typing import Any

from litestar import Response, get, post
from litestar.params import FromPath
from litestar.response import Redirect
from sqlalchemy.ext.asyncio import AsyncSession

from litegate.db.models import AdminToken, utcnow
from litegate.services import admin_tokens
from litegate.services.schema import parse_expiry

from . import forms
from .auth import context_of, session_of
from .pages import (
    AdminRequest,
    act,
    actor,
    keep_secret,
    redirect,
    render,
    row_or_404,
    save,
    take_secret,
)

_BLANK = {"name": "", "scope": "read", "expires": ""}
_ALIASES = {"expires_at": "expires"}


async def _tokens_page(
    request: AdminRequest, result: forms.FormResult[None] | None = None, *,
    created: tuple[str, str] | None = None, status_code: int = 200,
) -> Response[str]:
    async with context_of(request).sessionmaker() as session:
        tokens = await admin_tokens.list_tokens(session)
    now = utcnow()
    result = result or forms.FormResult(dict(_BLANK))
    return render(
        request, "api_tokens.html", title="Admin API tokens", active="account",
        tokens=[(t, admin_tokens.token_state(t, now)) for t in tokens],
        scopes=admin_tokens.SCOPES, values=result.values, errors=result.errors,
        created_name=created[0] if created else None,
        created_secret=created[1] if created else None, status_code=status_code,
    )


@get("/tokens")
async def tokens_page(request: AdminRequest) -> Response[str]:
    return await _tokens_page(request, created=await take_secret(request, "new_admin_token"))


@post("/tokens", status_code=200)
async def token_create(request: AdminRequest) -> Response[Any]:
    form = await request.form()
    values = {k: str(form.get(k) or "").strip() for k in _BLANK}
    result: forms.FormResult[None] = forms.FormResult(values)
    expires = None
    if values["expires"]:
        try:
            expires = parse_expiry(values["expires"])
        except ValueError as exc:
            result.add("expires", str(exc))
    # The service's rules too, so every problem shows in one round trip.
    forms.map_errors(admin_tokens.check_token(values["name"], values["scope"], expires), result,
                     aliases=_ALIASES, only_new=True)
    if result.ok:
        who = actor(request)

        async def write(session: AsyncSession) -> tuple[AdminToken, str]:
            return await admin_tokens.create_token(
                session, values["name"], scope=values["scope"], actor=who, expires_at=expires)

        created, _ = await save(request, result, write, aliases=_ALIASES)
        if created is not None:
            token, secret = created
            await keep_secret(request, "new_admin_token", token.name, secret)
            session_of(request).flash(f"Admin token {token.name} created.")
            return redirect(request, "/tokens")
    return await _tokens_page(request, result, status_code=400)


@post("/tokens/{token_id:int}/revoke")
async def token_revoke(request: AdminRequest, token_id: FromPath[int]) -> Redirect:
    async def revoke(session: AsyncSession) -> str:
        token = await row_or_404(session, AdminToken, token_id, "admin token")
        await admin_tokens.revoke_token(session, token.id, actor=actor(request))
        return f"Admin token {token.name} revoked."

    return await act(request, revoke, "/tokens")


ROUTE_HANDLERS = [tokens_page, token_create, token_revoke]
