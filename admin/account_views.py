"""The signed-in user's account page: change the password and end console sessions.

A password change ends every session of that user (then signs this browser in
again with a new session id); the end-sessions buttons delete rows, so the
cookies stop working on every replica at their next request.
"""

from __future__ import annotations

import math
from typing import Any

from litestar import Response, get, post
from litestar.response import Redirect

from litegate.errors import BadRequest
from litegate.services import admin_sessions
from litegate.services import users as user_service

from . import forms
from .auth import context_of, session_of
from .pages import AdminRequest, actor, client_ip, redirect, render


async def _account_page(
    request: AdminRequest, errors: dict[str, list[str]] | None = None,
    status_code: int = 200,
) -> Response[str]:
    state = session_of(request)
    async with context_of(request).sessionmaker() as session:
        count = await admin_sessions.count_for_user(session, state.user_id or 0)
    return render(
        request, "account.html", title="Account", active="account", session_count=count,
        errors=errors or {}, status_code=status_code,
    )


@get("/account")
async def account_page(request: AdminRequest) -> Response[str]:
    return await _account_page(request)


@post("/account/password", status_code=200)
async def password_change(request: AdminRequest) -> Response[Any]:
    ctx = context_of(request)
    state = session_of(request)
    form = await request.form()
    current, new, repeat = (
        str(form.get(name) or "")
        for name in ("current_password", "new_password", "repeat_password")
    )
    user, user_id, ip = state.user or "", state.user_id or 0, client_ip(request)
    result = forms.FormResult[None]({})
    wait = ctx.throttle.retry_after(user, ip)
    if wait > 0:
        result.add(forms.GENERAL, f"Too many wrong passwords. Try again in {math.ceil(wait)} s.")
        return await _account_page(request, result.errors, status_code=429)
    async with ctx.sessionmaker() as session:
        current_ok = await user_service.check_password(session, user_id, current)
    if not current_ok:
        ctx.throttle.failure(user, ip)
        result.add("current_password", "wrong password")
    try:
        user_service.validate_password(new)
    except BadRequest as exc:
        result.add("new_password", exc.detail)
    if new != repeat:
        result.add("repeat_password", "does not match the new password")
    if not result.ok:
        return await _account_page(request, result.errors, status_code=400)
    async with ctx.sessionmaker() as session, session.begin():
        await user_service.set_password(session, user, new, actor=actor(request))
        session_id = await admin_sessions.start(session, user_id, max_age_s=ctx.signer.max_age_s)
    state.sign_in(session_id, user, user_id)
    state.flash("Password changed. Every other session of yours was signed out.")
    return redirect(request, "/account")


async def _end_sessions(request: AdminRequest, username: str | None, message: str) -> Redirect:
    """End ``username``'s sessions (every user's for ``None``), this one included."""
    state = session_of(request)
    async with context_of(request).sessionmaker() as session, session.begin():
        await user_service.end_sessions(session, username, actor=actor(request))
    state.sign_out()
    state.flash(message)
    return redirect(request, "/login")


@post("/account/sessions/end")
async def end_my_sessions(request: AdminRequest) -> Redirect:
    user = session_of(request).user
    return await _end_sessions(request, user, "All your sessions were signed out.")


@post("/sessions/end-all")
async def end_all_sessions(request: AdminRequest) -> Redirect:
    return await _end_sessions(request, None, "Every console session was signed out.")


ROUTE_HANDLERS = [account_page, password_change, end_my_sessions, end_all_sessions]
