"""The route form's variant prices in real Chromium against the gateway under uvicorn:
the stored prices are shown, one is edited and saved, a bad one is refused on its field,
and ``litegate config export`` keeps every other setting of the route byte for byte."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from litegate.app import create_app
from litegate.db import migrate
from litegate.settings import Settings
from tests.e2e.support import ADMIN_PASSWORD, ADMIN_USER, add_user, browser_login, launch_chromium
from tests.helpers.cli import apply_config, run_litegate
from tests.helpers.servers import ThreadServer, run_fake_upstream

pytestmark = pytest.mark.timeout(240)


def _config(base_url: str) -> dict[str, Any]:
    return {
        "upstreams": [{"name": "mock", "kind": "openai", "base_url": base_url,
                       "api_key_env": "MOCK_KEY", "timeout_s": 5}],
        "routes": [
            {"name": "backup", "variants": [{"upstream": "mock", "model": "small-model"}]},
            {"name": "chat", "description": "priced chat", "sticky": "none",
             "variants": [
                 {"upstream": "mock", "model": "small-model", "name": "small", "weight": 90,
                  "price": {"input_per_1m": 0.15, "output_per_1m": 0.6}},
                 {"upstream": "mock", "model": "big-model", "name": "big", "weight": 10,
                  "price": {"input_per_1m": 2.5, "output_per_1m": 10.0}},
             ],
             "cache": {"ttl_s": 30}, "limits": ["50/minute"], "fallback": "backup",
             "shadow": "big", "adaptive": {"metric": "errors", "min_share": 0.05}},
        ],
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("prices") / "home"
    with run_fake_upstream() as fake:
        settings = Settings.load(home=home, reload_interval_s=0.1)
        home.mkdir(parents=True)
        migrate.upgrade(settings.db_url)
        asyncio.run(add_user(settings, ADMIN_USER, ADMIN_PASSWORD))
        code, _, err = apply_config(home, _config(fake.base_url))
        assert code == 0, err
        with ThreadServer(create_app(settings)) as server:
            yield {"url": server.url, "home": home}


def _export(home: Path) -> str:
    # A child process: Playwright's sync API keeps an event loop in this thread.
    done = run_litegate("config", "export", home=home)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def page(served: dict[str, Any]) -> Iterator[Page]:
    with sync_playwright() as p:
        browser = launch_chromium(p)
        ctx = browser.new_context(base_url=served["url"], viewport={"width": 1400, "height": 900})
        ctx.set_default_timeout(10_000)
        yield ctx.new_page()
        ctx.close()
        browser.close()


def test_edit_a_variant_price_in_the_route_form(served: dict[str, Any], page: Page) -> None:
    home = served["home"]
    before = _export(home)
    browser_login(page)
    page.goto("/admin/routes")
    page.click("a:text-is('chat')")
    expect(page.locator("h1")).to_have_text("Route chat")
    price_in = page.locator("input[name=variants-0-input_per_1m]")
    price_out = page.locator("input[name=variants-1-output_per_1m]")
    expect(price_in).to_have_value("0.15")
    expect(price_out).to_have_value("10")

    # A bad price: refused on its own field, nothing saved, the typed value kept.
    price_in.fill("-0.5")
    page.click("#route-form button[type=submit]:text-is('Save route')")
    error = page.locator(".field-error[data-field='variants-0-input_per_1m']")
    expect(error).to_have_text("must be between 0 and 1e+06")
    expect(page.locator("input[name=variants-0-input_per_1m]")).to_have_value("-0.5")
    assert _export(home) == before

    page.locator("input[name=variants-0-input_per_1m]").fill("0.2")
    page.click("#route-form button[type=submit]:text-is('Save route')")
    expect(page.locator(".flash")).to_have_text("Route chat saved.")
    expect(page.locator("input[name=variants-0-input_per_1m]")).to_have_value("0.2")
    expect(page.locator("input[name=variants-0-output_per_1m]")).to_have_value("0.6")
    after = _export(home)
    assert before.count("input_per_1m: 0.15") == 1
    assert after == before.replace("input_per_1m: 0.15", "input_per_1m: 0.2")
