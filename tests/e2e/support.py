"""Shared helpers for the admin console tests (integration and browser)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
from litegate.admin import create_admin_router
from limits.storage import storage_from_string
from litestar import Litestar

from litegate.db.engine import make_engine, make_sessionmaker
from litegate.db.models import Base
from litegate.policies.limit_storage import LocalStorage  # noqa: F401  (registers async+local)
from litegate.policies.spend import Spend
from litegate.policies.stats import Stats
from litegate.services import users
from litegate.settings import Settings

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright

ADMIN_USER = "alice"
ADMIN_PASSWORD = "correct horse battery"
CSRF_RE = re.compile(r'name="_csrf" value="([^"]+)"')
CHROMIUM = os.environ.get("LITEGATE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
# Committed under docs/screenshots and linked from the README; LITEGATE_SCREENSHOTS
# redirects them (e.g. to a temp dir in CI) so a test run leaves the checkout clean.
SCREENSHOTS = Path(
    os.environ.get("LITEGATE_SCREENSHOTS")
    or Path(__file__).resolve().parents[2] / "docs" / "screenshots"
)


async def make_admin_gateway(tmp_path: Path, **settings: Any) -> SimpleNamespace:
    """A stand-in gateway: real SQLite schema, real Stats and in-process spend counters,
    no ONNX manager."""
    home = tmp_path / "home"
    home.mkdir(parents=True, exist_ok=True)
    cfg = Settings(home=home, secret_key="test-secret-" + "x" * 32, **settings)
    engine = make_engine(cfg.db_url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    sessionmaker = make_sessionmaker(engine)
    async with sessionmaker() as session, session.begin():
        await users.create_user(session, ADMIN_USER, ADMIN_PASSWORD, actor="test")
    return SimpleNamespace(
        settings=cfg, engine=engine, sessionmaker=sessionmaker, stats=Stats(), models=None,
        models_loaded=False, spend=Spend(storage_from_string("async+local://")),
    )


def make_app(gateway: Any, **router_kwargs: Any) -> tuple[Litestar, Any]:
    router = create_admin_router(gateway, **router_kwargs)
    return Litestar(route_handlers=[router], openapi_config=None, logging_config=None), router


def csrf_of(html: str) -> str:
    m = CSRF_RE.search(html)
    assert m, "no CSRF token in page"
    return m.group(1)


async def login(client: Any, username: str = ADMIN_USER, password: str = ADMIN_PASSWORD) -> Any:
    page = await client.get("/admin/login")
    return await client.post(
        "/admin/login",
        data={"_csrf": csrf_of(page.text), "username": username, "password": password},
        follow_redirects=False,
    )


def create_console_user(home: Path, name: str, password: str) -> None:
    """``litegate admin create-user NAME --password-stdin`` through the real CLI."""
    import contextlib
    import io
    import sys

    from tests.helpers.cli import run_cli

    stdin, sys.stdin = sys.stdin, io.StringIO(password + "\n")
    try:
        with contextlib.redirect_stderr(io.StringIO()) as err:
            code, _, _ = run_cli("admin", "create-user", name, "--password-stdin", home=home)
    finally:
        sys.stdin = stdin
    assert code == 0, err.getvalue()


def http_login(url: str, username: str, password: str) -> Any:
    """An ``httpx.Client`` signed in to the console of the server at ``url``."""
    import httpx

    client = httpx.Client(base_url=url, timeout=10)
    page = client.get("/admin/login")
    r = client.post(
        "/admin/login",
        data={"_csrf": csrf_of(page.text), "username": username, "password": password},
    )
    assert r.status_code == 303, r.text
    return client


def browser_fields(html: str, form_attr: str) -> dict[str, str]:
    """What a browser submits for the form (the one with ``form_attr``, e.g. ``id="x"``) as
    rendered, ticked checkboxes included."""
    form = re.search(rf'<form method="post"[^>]*{form_attr}.*?</form>', html, re.DOTALL)
    assert form is not None, html
    data: dict[str, str] = {}
    for tag in re.findall(r"<input[^>]*>", form.group(0)):
        name, value = re.search(r'name="([^"]+)"', tag), re.search(r'value="([^"]*)"', tag)
        if not name or "disabled" in tag or ('type="checkbox"' in tag and " checked" not in tag):
            continue
        data[name.group(1)] = value.group(1) if value else ""
    for name, body in re.findall(r'<select name="([^"]+)"[^>]*>(.*?)</select>', form.group(0),
                                 re.DOTALL):
        chosen = re.search(r'<option value="([^"]*)" selected>', body)
        data[name] = chosen.group(1) if chosen else ""
    for name, body in re.findall(r'<textarea name="([^"]+)"[^>]*>(.*?)</textarea>',
                                 form.group(0), re.DOTALL):
        data[name] = body
    return data


async def add_user(settings: Settings, name: str, password: str) -> None:
    """A console user in the database at ``settings.db_url`` (already migrated)."""
    engine = make_engine(settings.db_url)
    try:
        async with make_sessionmaker(engine).begin() as session:
            await users.create_user(session, name, password, actor="test")
    finally:
        await engine.dispose()


def launch_chromium(playwright: Playwright) -> Browser:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}; install Debian's 'chromium' package")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def browser_login(page: Page, username: str = ADMIN_USER, password: str = ADMIN_PASSWORD) -> None:
    page.goto("/admin/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
