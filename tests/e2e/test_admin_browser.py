"""The admin console in real Chromium (Playwright) against the full gateway app under
uvicorn on 127.0.0.1, with a fake OpenAI-compatible upstream.

The main story: log in, create an upstream and a route with two variants at 80/20,
create a key and read its secret once, send traffic through the gateway and see the
split and the dashboard move, change the weights and see the new split on the running
gateway (no restart), upload a corrupt model and see the error, upload good ones,
activate and roll back, revoke the key and get 401, and read it all in the audit log.
Screenshots of the main pages are written to ``docs/screenshots/``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from litegate.app import create_app
from litegate.db import migrate
from litegate.settings import Settings
from tests.e2e.support import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    add_user,
    browser_login,
    launch_chromium,
    screenshot,
)
from tests.fixtures.onnx_models import corrupt_file, matmul_add_model
from tests.helpers.servers import FakeUpstream, ThreadServer, run_fake_upstream

pytestmark = pytest.mark.timeout(240)

XSS = "<script>alert(1)</script>"
USERS = [f"user-{i}" for i in range(200)]


# -- servers and browser ------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with run_fake_upstream() as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("e2e") / "home"
    settings = Settings.load(home=home, reload_interval_s=0.1)
    home.mkdir(parents=True)
    migrate.upgrade(settings.db_url)
    asyncio.run(add_user(settings, ADMIN_USER, ADMIN_PASSWORD))
    asyncio.run(add_user(settings, "bob", "bob-password-1"))
    asyncio.run(add_user(settings, "carol", "carol-password-1"))
    with ThreadServer(create_app(settings)) as server:
        yield server.url


@pytest.fixture(scope="module")
def browser(gateway_url: str) -> Iterator[Browser]:
    # Depends on the server: Playwright's sync API keeps a loop running in this thread,
    # so everything that needs asyncio.run() (migrations, seeding) must happen first.
    with sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


@pytest.fixture
def new_context(browser: Browser, gateway_url: str) -> Iterator[Callable[[], BrowserContext]]:
    contexts: list[BrowserContext] = []

    def make() -> BrowserContext:
        ctx = browser.new_context(base_url=gateway_url, viewport={"width": 1280, "height": 860})
        ctx.set_default_timeout(10_000)
        contexts.append(ctx)
        return ctx

    yield make
    for ctx in contexts:
        ctx.close()


def _flash(page: Page) -> str:
    return page.locator(".flash").first.inner_text()


# -- gateway traffic ----------------------------------------------------------------


def _chat(client: httpx.Client, key: str, user: str, route: str = "chat") -> httpx.Response:
    return client.post(
        "/v1/chat/completions",
        json={"model": route, "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {key}", "X-User": user, "Cache-Control": "no-cache"},
    )


def _split(client: httpx.Client, key: str) -> Counter[str]:
    seen: Counter[str] = Counter()
    for user in USERS:
        r = _chat(client, key, user)
        assert r.status_code == 200, r.text
        seen[r.headers["x-litegate-variant"]] += 1
    return seen


def _eventually(check: Callable[[], Any], *, timeout: float = 5.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        else:
            if result is not False:
                return result
            if time.monotonic() > deadline:
                raise AssertionError("condition not met in time")
        time.sleep(interval)


def _set_route_weights(page: Page, a: str, b: str) -> None:
    page.goto("/admin/routes")
    page.click("#routes a:text-is('chat')")
    page.fill("input[name=variants-0-weight]", a)
    page.fill("input[name=variants-1-weight]", b)
    page.click("#route-form button[type=submit]")
    expect(page.locator(".flash")).to_contain_text("Route chat saved.")


# -- the story ------------------------------------------------------------------------


def test_console_end_to_end(
    new_context: Callable[[], BrowserContext], gateway_url: str, upstream: FakeUpstream,
    tmp_path: Path,
) -> None:
    page = new_context().new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.accept()))

    # Log in (anonymous access lands on the login page first).
    page.goto("/admin/")
    expect(page).to_have_url(re.compile(r"/admin/login\?next=%2Fadmin%2F$"))
    screenshot(page, "login")
    page.fill("input[name=username]", ADMIN_USER)
    page.fill("input[name=password]", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Dashboard")

    # An upstream, then a route with two variants at 80/20 (sticky per X-User header).
    page.click("nav >> text=Upstreams")
    page.click("text=New upstream")
    page.fill("input[name=name]", "fake-llm")
    page.select_option("select[name=kind]", "openai")
    page.fill("input[name=base_url]", upstream.base_url)
    page.click("form.form button[type=submit]")
    expect(page.locator(".flash")).to_have_text("Upstream fake-llm saved.")

    page.click("nav >> text=Routes")
    page.click("text=New route")
    page.fill("input[name=name]", "chat")
    page.fill("input[name=description]", "A/B test of two chat models")
    for i, (name, model, weight) in enumerate([("a", "model-a", "80"), ("b", "model-b", "20")]):
        page.fill(f"input[name=variants-{i}-name]", name)
        page.select_option(f"select[name=variants-{i}-upstream]", "fake-llm")
        page.fill(f"input[name=variants-{i}-model]", model)
        page.fill(f"input[name=variants-{i}-weight]", weight)
    page.select_option("select[name=sticky_mode]", "header")
    page.fill("input[name=sticky_header]", "X-User")
    # invalid weights first: the form comes back with the values and a message
    page.fill("input[name=variants-1-weight]", "-3")
    page.click("#route-form button[type=submit]")
    expect(page.locator(".field-error[data-field=variants-1-weight]")).to_have_text("must be >= 0")
    expect(page.locator("input[name=variants-0-model]")).to_have_value("model-a")
    page.fill("input[name=variants-1-weight]", "20")
    page.click("#route-form button[type=submit]")
    expect(page.locator(".flash")).to_have_text("Route chat saved.")
    screenshot(page, "route-edit")

    # A key: the secret is shown once, with a copy button.
    page.click("nav >> text=API keys")
    page.fill("#key-form input[name=name]", "e2e-client")
    page.click("#key-form button[type=submit]")
    secret = page.input_value("#new-key-secret")
    assert secret.startswith("lg-")
    page.click("button[data-copy]")
    expect(page.locator("button[data-copy]")).to_have_text("Copied")
    screenshot(page, "keys")
    page.goto("/admin/keys")
    assert secret not in page.content()
    expect(page.locator("#keys tr[data-key-name='e2e-client'] td").first).to_contain_text(secret[:9])

    # Traffic through the running gateway: the split follows 80/20.
    client = httpx.Client(base_url=gateway_url, timeout=10)
    _eventually(lambda: _chat(client, secret, "warm-up").status_code == 200)
    first = _split(client, secret)
    assert set(first) == {"a", "b"}
    assert 0.7 <= first["a"] / len(USERS) <= 0.9, first

    # The dashboard shows the numbers, per route and per variant.
    page.click("nav >> text=Dashboard")
    route_requests = int(page.inner_text("#route-stats tr[data-route='chat'] [data-metric=requests]"))
    assert route_requests >= len(USERS)
    a_requests = int(page.inner_text("#variant-stats tr[data-variant='chat/a'] [data-metric=requests]"))
    assert a_requests >= first["a"]
    assert page.locator("svg.chart").count() >= 9
    # ... and they move (the panel refreshes itself every few seconds)
    for user in USERS[:20]:
        assert _chat(client, secret, user).status_code == 200
    expect(page.locator("#route-stats tr[data-route='chat'] [data-metric=requests]")).to_have_text(
        str(route_requests + 20), timeout=12_000
    )

    # Change the weights: the running gateway follows within a second, no restart.
    _set_route_weights(page, "20", "80")
    changed_at = time.monotonic()

    def flipped() -> bool:
        seen = _split(client, secret)
        assert seen["b"] / len(USERS) >= 0.7, seen
        return True

    _eventually(flipped, timeout=5, interval=0.05)
    assert time.monotonic() - changed_at < 5
    page.goto("/admin/routes")
    screenshot(page, "routes")

    # Models: a corrupt upload is refused with the reason; good ones are validated.
    page.click("nav >> text=Models")
    page.fill("#upload-form input[name=name]", "adder")
    page.set_input_files("#upload-form input[name=file]", str(corrupt_file(tmp_path / "broken.onnx")))
    page.click("#upload-form button[type=submit]")
    expect(page.locator(".field-error[data-field=file]")).to_contain_text("broken.onnx")
    expect(page.locator("#upload-form input[name=name]")).to_have_value("adder")
    page.set_input_files("#upload-form input[name=file]", str(matmul_add_model(tmp_path / "adder-v1.onnx")))
    page.click("#upload-form button[type=submit]")
    expect(page.locator(".flash")).to_contain_text("Model adder version 1 uploaded and validated")
    page.fill("#upload-form input[name=name]", "adder")
    page.uncheck("#upload-form input[name=activate]")
    page.set_input_files(
        "#upload-form input[name=file]", str(matmul_add_model(tmp_path / "adder-v2.onnx", offset=10.0))
    )
    page.click("#upload-form button[type=submit]")
    expect(page.locator(".flash")).to_contain_text("Model adder version 2 uploaded and validated.")
    model = page.locator("section[data-model='adder']")
    expect(model.locator(".active-version")).to_have_text("1")
    model.locator("tr[data-version='2'] button:text-is('Activate')").click()
    expect(page.locator(".flash")).to_contain_text("version 2 is now active")
    expect(model.locator(".active-version")).to_have_text("2")

    def infer() -> float:
        r = client.post(
            "/v2/models/adder/infer",
            json={"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]}]},
            headers={"Authorization": f"Bearer {secret}"},
        )
        assert r.status_code == 200, r.text
        return r.json()["outputs"][0]["data"][0]

    _eventually(lambda: infer() == pytest.approx(10.5))
    model.locator("button:has-text('Roll back to 1')").click()
    expect(page.locator(".flash")).to_contain_text("rolled back to version 1")
    expect(model.locator(".active-version")).to_have_text("1")
    _eventually(lambda: infer() == pytest.approx(0.5))
    page.reload()
    expect(model.locator("tr[data-version='1'] .load-state")).to_have_text("loaded")
    expect(model.locator("tr[data-version='1']")).to_contain_text("CPUExecutionProvider")
    # the active version cannot be removed, an inactive one can
    expect(model.locator("tr[data-version='1'] button:text-is('Remove')")).to_have_count(0)
    screenshot(page, "models")

    # Revoke the key: the gateway answers 401 right away.
    page.click("nav >> text=API keys")
    page.locator("#keys tr[data-key-name='e2e-client'] button:text-is('Revoke')").click()
    expect(page.locator(".flash")).to_have_text("Key e2e-client revoked.")
    _eventually(lambda: _chat(client, secret, "after-revoke").status_code == 401, timeout=3)
    assert any("Revoke key e2e-client" in m for m in dialogs)

    # The audit log has every step: who, what, before and after.
    page.click("nav >> text=Audit log")
    rows = page.locator("#audit tbody tr")
    actions = [
        (rows.nth(i).get_attribute("data-entity-type"), rows.nth(i).get_attribute("data-action"))
        for i in range(rows.count())
    ]
    for expected in [
        ("upstream", "create"), ("route", "create"), ("route", "update"), ("api_key", "create"),
        ("model", "add_version"), ("model", "activate"), ("model", "rollback"), ("api_key", "revoke"),
    ]:
        assert expected in actions, (expected, actions)
    assert ("model", "add_version") in actions and actions.count(("model", "add_version")) == 2
    expect(page.locator("#audit tbody tr").first).to_contain_text(f"admin:{ADMIN_USER}")
    page.select_option("select[name=entity_type]", "route")
    page.click("#audit-filters button[type=submit]")
    expect(page.locator("#audit tbody tr")).to_have_count(2)
    update = page.locator("#audit tbody tr[data-action=update]")
    update.locator("summary:text-is('before')").click()
    update.locator("summary:text-is('after')").click()
    expect(update.locator("details").first).to_contain_text('"weight": 80')
    expect(update.locator("details").nth(1)).to_contain_text('"weight": 20')
    expect(update).to_contain_text("variants[a].weight: 80 → 20")
    page.goto("/admin/audit")
    screenshot(page, "audit")

    # Last, the dashboard with all of the above: both splits, the model's providers.
    page.goto("/admin/")
    expect(page.locator("#model-providers")).to_contain_text("CPUExecutionProvider")
    screenshot(page, "dashboard")
    client.close()


# -- security checks in the browser ---------------------------------------------------


def test_anonymous_pages_go_to_login(new_context: Callable[[], BrowserContext]) -> None:
    page = new_context().new_page()
    for path in ["/admin/", "/admin/routes", "/admin/routes/new", "/admin/upstreams",
                 "/admin/quotas", "/admin/keys", "/admin/models", "/admin/audit"]:
        page.goto(path)
        expect(page).to_have_url(re.compile(r"/admin/login\?next="))
        expect(page.locator("h1")).to_have_text("litegate admin")
    r = page.request.get("/admin/dashboard/panel", headers={"X-Litegate-Partial": "1"})
    assert r.status == 401


def test_csrf_token_required(new_context: Callable[[], BrowserContext]) -> None:
    ctx = new_context()
    page = ctx.new_page()
    browser_login(page)
    expect(page.locator("h1")).to_have_text("Dashboard")
    # same cookies as the logged-in page, but no token: a forged cross-site form post
    r = ctx.request.post("/admin/keys", form={"name": "forged"}, max_redirects=0)
    assert r.status == 403
    r = ctx.request.post("/admin/keys", form={"name": "forged", "_csrf": "guess"}, max_redirects=0)
    assert r.status == 403
    page.goto("/admin/keys")
    assert "forged" not in page.content()


def test_xss_payload_rendered_as_text(new_context: Callable[[], BrowserContext]) -> None:
    page = new_context().new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    browser_login(page)
    page.goto("/admin/routes/new")
    page.fill("input[name=name]", XSS)
    page.fill("input[name=description]", XSS)
    page.click("#route-form button[type=submit]")
    expect(page.locator(".field-error[data-field=name]")).to_contain_text("invalid name")
    expect(page.locator("input[name=name]")).to_have_value(XSS)
    page.goto("/admin/keys")
    page.fill("#key-form input[name=name]", XSS)
    page.click("#key-form button[type=submit]")
    page.goto("/admin/keys")
    expect(page.locator(f"#keys tr td a.key-link:text-is('{XSS}')")).to_have_count(1)
    page.goto("/admin/audit")
    page.goto("/admin/quotas")
    assert dialogs == []
    assert page.evaluate("document.querySelectorAll('script:not([src])').length") == 0


def test_login_throttled(new_context: Callable[[], BrowserContext]) -> None:
    page = new_context().new_page()
    for _ in range(5):
        browser_login(page, "bob", "wrong-password")
        expect(page.locator(".form-error")).to_have_text("Invalid username or password.")
    browser_login(page, "bob", "bob-password-1")
    expect(page.locator(".form-error")).to_contain_text("Too many failed sign-in attempts")
    expect(page).to_have_url(re.compile(r"/admin/login$"))


def test_concurrent_edit_conflict(new_context: Callable[[], BrowserContext], upstream: FakeUpstream) -> None:
    one, two = new_context().new_page(), new_context().new_page()
    browser_login(one)
    browser_login(two)
    one.goto("/admin/upstreams/new")
    one.fill("input[name=name]", "conflict-up")
    one.fill("input[name=base_url]", upstream.base_url)
    one.click("form.form button[type=submit]")
    expect(one.locator(".flash")).to_have_text("Upstream conflict-up saved.")
    one.goto("/admin/routes/new")
    one.fill("input[name=name]", "shared")
    one.select_option("select[name=variants-0-upstream]", "conflict-up")
    one.fill("input[name=variants-0-model]", "m")
    one.fill("input[name=variants-0-weight]", "1")
    one.click("#route-form button[type=submit]")
    expect(one.locator(".flash")).to_have_text("Route shared saved.")
    edit_url = one.url
    two.goto(edit_url)
    one.fill("input[name=variants-0-weight]", "5")
    one.click("#route-form button[type=submit]")
    expect(one.locator(".flash")).to_have_text("Route shared saved.")
    two.fill("input[name=variants-0-weight]", "9")
    two.click("#route-form button[type=submit]")
    expect(two.locator(".form-error")).to_contain_text("changed by someone else")
    expect(two.locator("input[name=variants-0-weight]")).to_have_value("9")
    two.goto(edit_url)
    expect(two.locator("input[name=variants-0-weight]")).to_have_value("5")


# -- post-redirect-get, variant rows, sessions ----------------------------------------


def _new_upstream(page: Page, name: str, base_url: str) -> None:
    page.goto("/admin/upstreams/new")
    page.fill("input[name=name]", name)
    page.fill("input[name=base_url]", base_url)
    page.click("form.form button[type=submit]")
    expect(page.locator(".flash")).to_have_text(f"Upstream {name} saved.")


def test_reload_after_create_key_creates_no_second_key(
    new_context: Callable[[], BrowserContext],
) -> None:
    page = new_context().new_page()
    browser_login(page)
    page.goto("/admin/keys")
    page.fill("#key-form input[name=name]", "reload-me")
    page.click("#key-form button[type=submit]")
    expect(page).to_have_url(re.compile(r"/admin/keys$"))  # redirected after the POST
    secret = page.input_value("#new-key-secret")
    assert secret.startswith("lg-")
    page.reload()  # a plain GET: no "resubmit the form?" and no second key
    expect(page.locator("#new-key-secret")).to_have_count(0)
    assert secret not in page.content()
    expect(page.locator("#keys tr[data-key-name='reload-me']")).to_have_count(1)


def test_route_form_adds_variant_rows_with_javascript(
    new_context: Callable[[], BrowserContext], upstream: FakeUpstream,
) -> None:
    page = new_context().new_page()
    browser_login(page)
    _new_upstream(page, "js-up", upstream.base_url)
    page.goto("/admin/routes/new")
    rows = page.locator("#route-form table.variants tbody tr")
    expect(rows).to_have_count(2)
    page.click("button[data-add-variant]")
    page.click("button[data-add-variant]")
    expect(rows).to_have_count(4)
    page.fill("input[name=name]", "three-way")
    for i, weight in enumerate(["50", "30", "20"]):
        page.fill(f"input[name=variants-{i}-name]", f"v{i}")
        page.select_option(f"select[name=variants-{i}-upstream]", "js-up")
        page.fill(f"input[name=variants-{i}-model]", f"model-{i}")
        page.fill(f"input[name=variants-{i}-weight]", weight)
    page.click("#route-form button[type=submit]:text-is('Save route')")
    expect(page.locator(".flash")).to_have_text("Route three-way saved.")
    for i, weight in enumerate(["50", "30", "20"]):
        expect(page.locator(f"input[name=variants-{i}-weight]")).to_have_value(weight)


def test_route_form_adds_variant_rows_without_javascript(
    browser: Browser, gateway_url: str, upstream: FakeUpstream,
) -> None:
    ctx = browser.new_context(base_url=gateway_url, java_script_enabled=False)
    ctx.set_default_timeout(10_000)
    try:
        page = ctx.new_page()
        browser_login(page)
        _new_upstream(page, "nojs-up", upstream.base_url)
        page.goto("/admin/routes/new")
        page.fill("input[name=name]", "no-js")
        for i in range(2):
            page.select_option(f"select[name=variants-{i}-upstream]", "nojs-up")
            page.fill(f"input[name=variants-{i}-model]", f"m{i}")
            page.fill(f"input[name=variants-{i}-weight]", "1")
        page.click("button[data-add-variant]")  # posts back: same values, one more row
        expect(page.locator("#route-form table.variants tbody tr")).to_have_count(3)
        expect(page.locator("input[name=variants-1-model]")).to_have_value("m1")
        page.select_option("select[name=variants-2-upstream]", "nojs-up")
        page.fill("input[name=variants-2-model]", "m2")
        page.fill("input[name=variants-2-weight]", "1")
        page.click("#route-form button[type=submit]:text-is('Save route')")
        expect(page.locator(".flash")).to_have_text("Route no-js saved.")
        expect(page.locator("input[name=variants-2-model]")).to_have_value("m2")
    finally:
        ctx.close()


def test_logout_and_end_all_sessions_kill_captured_cookies(
    new_context: Callable[[], BrowserContext],
) -> None:
    alice, thief, carol = new_context(), new_context(), new_context()
    page = alice.new_page()
    browser_login(page)
    expect(page.locator("h1")).to_have_text("Dashboard")
    thief.add_cookies(alice.cookies())  # a cookie captured while alice is signed in
    stolen = thief.new_page()
    stolen.goto("/admin/keys")
    expect(stolen.locator("h1")).to_have_text("API keys")
    page.click("form.logout button[type=submit]")
    expect(page).to_have_url(re.compile(r"/admin/login$"))
    stolen.goto("/admin/keys")
    expect(stolen).to_have_url(re.compile(r"/admin/login\?next="))

    other = carol.new_page()
    browser_login(other, "carol", "carol-password-1")
    expect(other.locator("h1")).to_have_text("Dashboard")
    browser_login(page)
    page.click("#account-link")
    expect(page.locator("h1")).to_have_text("Account")
    page.on("dialog", lambda d: d.accept())
    page.click("#end-all-sessions button")
    expect(page).to_have_url(re.compile(r"/admin/login$"))
    expect(page.locator(".flash")).to_have_text("Every console session was signed out.")
    other.goto("/admin/")
    expect(other).to_have_url(re.compile(r"/admin/login\?next="))


def test_edit_key_and_search_keys(new_context: Callable[[], BrowserContext]) -> None:
    page = new_context().new_page()
    browser_login(page)
    page.goto("/admin/keys")
    page.fill("#key-form input[name=name]", "browser-edit")
    page.fill("#key-form textarea[name=limits]", "5/minute")
    page.click("#key-form button[type=submit]")
    expect(page.locator(".flash")).to_have_text("Key browser-edit created.")
    page.click("#keys tr[data-key-name='browser-edit'] a.key-link")
    expect(page.locator("h1")).to_have_text("Key browser-edit")
    expect(page.locator("#key-usage-empty")).to_be_visible()
    expect(page.locator("#key-edit-form textarea[name=limits]")).to_have_value("5/minute")
    page.fill("#key-edit-form textarea[name=limits]", "not a rate")
    page.click("#key-edit-form button[type=submit]")
    expect(page.locator(".field-error[data-field=limits]")).to_contain_text("invalid rate")
    page.fill("#key-edit-form textarea[name=limits]", "7/minute\n100/hour")
    page.fill("#key-edit-form input[name=expires_at]", "2099-06-01T12:00")
    page.click("#key-edit-form button[type=submit]")
    expect(page.locator(".flash")).to_have_text("Key browser-edit updated.")
    expect(page.locator("#key-edit-form textarea[name=limits]")).to_have_value("7/minute\n100/hour")
    expect(page.locator("#key-edit-form input[name=expires_at]")).to_have_value("2099-06-01T12:00")

    page.goto("/admin/keys")
    page.fill("#key-filters input[name=q]", "browser-ed")
    page.click("#key-filters button[type=submit]")
    expect(page.locator("#keys tbody tr")).to_have_count(1)
    expect(page.locator("#keys tbody tr")).to_contain_text("7/minute requests")
    page.select_option("#key-filters select[name=status]", "revoked")
    page.click("#key-filters button[type=submit]")
    expect(page.locator("#keys")).to_have_count(0)
    expect(page.locator("text=No keys match.")).to_be_visible()
