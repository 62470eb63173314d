"""Sign in and sign out. Failed sign-ins are throttled per user name and address."""

from __future__ import annotations

import math
from typing import Any

import structlog
from litestar import Response, get, post
from litestar.response import Redirect

from litegate.services import admin_sessions
from litegate.services import users as user_service

from .auth import context_of, session_of
from .pages import AdminRequest, client_ip, redirect, render

log = structlog.get_logger("litegate.admin")


def _safe_next(request: AdminRequest, target: str) -> str:
    base = context_of(request).base_path
    if (
        target.startswith(base + "/")
        and not target.startswith(("//", base + "/login"))
        and "\\" not in target
    ):
        return target
    return context_of(request).url()


@get("/login", opt={"public": True}, name="litegate_admin:login")
async def login_page(request: AdminRequest) -> Response[Any]:
    next = str(request.query_params.get("next") or "")
    if session_of(request).user:
        return Redirect(path=_safe_next(request, next), status_code=303)
    return render(request, "login.html", title="Sign in", next=next, username="", error=None)


@post("/login", opt={"public": True}, status_code=200)
async def login_submit(request: AdminRequest) -> Response[Any]:
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
async def logout(request: AdminRequest) -> Redirect:
    state = session_of(request)
    log.info("admin_logout", username=state.user)
    if state.session_id is not None:
        async with context_of(request).sessionmaker() as session, session.begin():
            await admin_sessions.end(session, state.session_id)
    state.sign_out()
    state.flash("Signed out.")
    return redirect(request, "/login")


ROUTE_HANDLERS = [login_page, login_submit, logout]
