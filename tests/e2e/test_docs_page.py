"""``/docs`` in real Chromium (Playwright, Debian's chromium) with every request to
anything but 127.0.0.1 blocked: the page renders the gateway's OpenAPI document — the
/v1, /v2 and admin API operations with their parameters and schemas — from the
gateway alone, under a CSP that allows only its own origin."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from tests.e2e.support import launch_chromium

pytestmark = pytest.mark.timeout(120)


def operation_count(doc: dict) -> int:  # type: ignore[type-arg]
    return sum(1 for item in doc["paths"].values() for m in item
               if m in ("get", "post", "put", "patch", "delete"))


def offline_page(browser: Browser, base_url: str, blocked: list[str], errors: list[str]) -> Page:
    """A page that may reach 127.0.0.1 only (other requests are aborted and recorded in
    ``blocked``), with console and page errors recorded in ``errors``."""

    def only_local(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort("internetdisconnected")

    context = browser.new_context(base_url=base_url)
    context.route("**/*", only_local)
    page = context.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return page


@pytest.fixture
def gateway_url(home: Path, make_gateway) -> str:  # type: ignore[no-untyped-def]
    return str(make_gateway().url)


def test_docs_page_renders_every_operation_offline(gateway_url: str) -> None:
    operations = operation_count(httpx.get(gateway_url + "/openapi.json").json())
    page_headers = httpx.get(gateway_url + "/docs").headers
    assert "default-src 'none'" in page_headers["content-security-policy"]
    assert page_headers["content-type"].startswith("text/html")

    blocked: list[str] = []
    errors: list[str] = []
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = offline_page(browser, gateway_url, blocked, errors)
            page.goto("/docs")
            expect(page.locator("body")).to_have_attribute("data-rendered", str(operations))
            expect(page.locator("#title")).to_have_text("litegate API reference")

            # Inference and admin operations are listed, grouped.
            chat = page.locator("details.op", has_text="/v1/chat/completions")
            expect(chat).to_have_count(1)
            expect(page.locator("section[data-group='admin: routes'] details.op")).to_have_count(5)
            put_route = page.locator("details.op", has=page.locator(".method.put")).filter(
                has_text="/admin/api/routes/{name}")
            put_route.locator("summary").click()
            body = put_route.locator(".body")
            expect(body).to_contain_text("admin token (Authorization: Bearer lga-…)")
            expect(body).to_contain_text("If-Match")
            expect(body).to_contain_text("variants")  # the RouteIn schema, expanded
            expect(body.locator("tr[data-status='409']")).to_contain_text("Stale `row_version`")

            # The filter narrows the list.
            page.fill("#filter", "/v2/models/{model}/infer")
            expect(page.locator("details.op:visible")).to_have_count(1)
            page.fill("#filter", "")
            expect(page.locator("details.op:visible")).to_have_count(operations)
        finally:
            browser.close()
    assert blocked == [], f"the page asked for outside resources: {blocked}"
    assert errors == [], errors


def test_docs_assets_are_served(gateway_url: str) -> None:
    for path, kind in (("/docs/apidocs.js", "text/javascript"), ("/docs/apidocs.css", "text/css")):
        r = httpx.get(gateway_url + path)
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
        assert b"http://" not in r.content and b"https://" not in r.content
    assert httpx.get(gateway_url + "/docs/other.js").status_code == 404


def test_docs_page_renders_offline_under_the_litestar_plugin(home: Path) -> None:
    """Mounted, the page is ``/litegate/docs`` and renders ``/litegate/openapi.json``
    (with the admin API) from the same origin; Litestar's ``/schema`` stays the host's."""
    from litestar import Litestar

    from litegate import LitegateConfig, LitegatePlugin
    from litegate.db import migrate
    from litegate.settings import Settings
    from tests.helpers.servers import ThreadServer

    settings = Settings.load(home=home)
    migrate.upgrade(settings.db_url)
    app = Litestar(route_handlers=[], plugins=[LitegatePlugin(LitegateConfig(settings=settings))])
    blocked: list[str] = []
    errors: list[str] = []
    with ThreadServer(app) as server, sync_playwright() as p:
        operations = operation_count(httpx.get(server.url + "/litegate/openapi.json").json())
        browser = launch_chromium(p)
        try:
            page = offline_page(browser, server.url, blocked, errors)
            page.goto("/litegate/docs")
            expect(page.locator("body")).to_have_attribute("data-rendered", str(operations))
            expect(page.locator("#openapi")).to_have_text("/litegate/openapi.json")
            expect(page.locator("details.op", has_text="/v1/chat/completions")).to_have_count(1)
            expect(page.locator("section[data-group='admin: routes'] details.op")).to_have_count(5)
        finally:
            browser.close()
    assert blocked == [], f"the page asked for outside resources: {blocked}"
    assert errors == [], errors
