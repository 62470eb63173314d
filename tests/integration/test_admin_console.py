"""Admin console over HTTP (Litestar test client, real SQLite): access control,
CSRF, cookies, forms, escaping, optimistic concurrency and the audit trail."""

from __future__ import annotations

import re
import time
from http.cookies import SimpleCookie
from typing import Any

import pytest
from litegate.admin.session import SessionSigner
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select

from litegate.db.models import ApiKey, AuditEntry, ConfigState, Quota, Route, Upstream
from litegate.services import routing
from litegate.services.schema import RouteIn, UpstreamIn, VariantIn
from tests.e2e.support import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    csrf_of,
    login,
    make_admin_gateway,
    make_app,
)

XSS = "<script>alert(1)</script>"


@pytest.fixture
async def gateway(tmp_path):
    gw = await make_admin_gateway(tmp_path)
    yield gw
    await gw.engine.dispose()


@pytest.fixture
async def app_router(gateway):
    return make_app(gateway)


@pytest.fixture
async def client(app_router):
    app, _ = app_router
    async with AsyncTestClient(app) as c:
        yield c


@pytest.fixture
async def admin(client):
    r = await login(client)
    assert r.status_code == 303, r.text
    return client


async def _token(client: Any, path: str = "/admin/") -> str:
    return csrf_of((await client.get(path)).text)


async def _seed(gateway: Any, *, route: str = "chat") -> int:
    async with gateway.sessionmaker() as s, s.begin():
        await routing.upsert_upstream(
            s, UpstreamIn(name="up", base_url="http://127.0.0.1:9"), actor="test"
        )
        r = await routing.upsert_route(
            s,
            RouteIn(
                name=route,
                variants=[VariantIn(upstream="up", model="m-a", weight=80, name="a"),
                          VariantIn(upstream="up", model="m-b", weight=20, name="b")],
            ),
            actor="test",
        )
        return r.id


async def _count(gateway: Any, model: Any) -> int:
    async with gateway.sessionmaker() as s:
        return int(await s.scalar(select(func.count()).select_from(model)))


async def _config_version(gateway: Any) -> int:
    async with gateway.sessionmaker() as s:
        return int(await s.scalar(select(ConfigState.version).where(ConfigState.id == 1)) or 0)


def _route_form(token: str, **overrides: str) -> dict[str, str]:
    data = {
        "_csrf": token, "name": "chat2", "variant_rows": "3", "sticky_mode": "key",
        "variants-0-name": "a", "variants-0-upstream": "up", "variants-0-model": "m-a",
        "variants-0-weight": "80",
        "variants-1-name": "b", "variants-1-upstream": "up", "variants-1-model": "m-b",
        "variants-1-weight": "20",
    }
    data.update(overrides)
    return data


def _field_errors(html: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, message in re.findall(r'<div class="field-error" data-field="([^"]+)">([^<]*)</div>', html):
        out.setdefault(name, []).append(message)
    return out


# -- access -------------------------------------------------------------------------


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


async def test_every_admin_route_denies_anonymous(app_router, gateway):
    """Enumerate the router: every non-public handler redirects HTML clients to the
    login page and answers 401 to htmx/fetch/JSON clients (the admin API: 401 to all)."""
    app, router = app_router
    await _seed(gateway)
    checked = 0
    public: set[str] = set()
    async with AsyncTestClient(app) as client:
        for route in app.routes:
            if not route.path.startswith("/admin"):
                continue
            for handler in route.route_handlers:
                methods = sorted(getattr(handler, "http_methods", ()) or ())
                if handler.opt.get("public"):
                    public.add(route.path)
                    continue
                for method in methods:
                    if method in ("HEAD", "OPTIONS"):
                        continue
                    url = _concrete(route.path)
                    if url.startswith("/admin/api/"):  # the admin API: a token or a JSON 401
                        for headers in ({"Accept": "text/html"}, {"HX-Request": "true"}, {}):
                            r = await client.request(method, url, headers=headers)
                            assert r.status_code == 401, (method, url, r.status_code)
                            assert r.json()["code"] == "invalid_admin_token"
                        checked += 1
                        continue
                    r = await client.request(
                        method, url, headers={"Accept": "text/html"}, follow_redirects=False
                    )
                    assert r.status_code == 303, (method, url, r.status_code, r.text[:200])
                    assert r.headers["location"].startswith("/admin/login"), (method, url)
                    for headers in ({"HX-Request": "true"}, {"Accept": "application/json"}):
                        r = await client.request(method, url, headers=headers, follow_redirects=False)
                        assert r.status_code == 401, (method, url, headers, r.status_code)
                    checked += 1
    assert checked >= 27
    # only the login page/form and the static files are reachable anonymously
    assert public == {"/admin/login", "/admin/static/{file_path:path}"}, public
    # and nothing was changed by all those anonymous POSTs
    assert await _count(gateway, Route) == 1
    assert await _count(gateway, ApiKey) == 0


async def test_login_redirects_back_to_requested_page(client):
    r = await client.get("/admin/keys", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/admin/login?next=%2Fadmin%2Fkeys"
    page = await client.get(r.headers["location"])
    r = await client.post(
        "/admin/login",
        data={"_csrf": csrf_of(page.text), "username": ADMIN_USER, "password": ADMIN_PASSWORD,
              "next": "/admin/keys"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/admin/keys"


async def test_login_ignores_offsite_next(client):
    page = await client.get("/admin/login")
    r = await client.post(
        "/admin/login",
        data={"_csrf": csrf_of(page.text), "username": ADMIN_USER, "password": ADMIN_PASSWORD,
              "next": "//evil.example/admin/"},
        follow_redirects=False,
    )
    assert r.headers["location"] == "/admin/"


async def test_wrong_password_and_unknown_user(client):
    r = await login(client, password="wrong password")
    assert r.status_code == 401
    assert "Invalid username or password." in r.text
    r = await login(client, username="nobody")
    assert r.status_code == 401
    assert (await client.get("/admin/", follow_redirects=False)).status_code == 303


async def test_login_throttled_per_user_and_ip(client):
    for _ in range(5):
        assert (await login(client, password="nope-nope")).status_code == 401
    r = await login(client)  # even the right password is refused while locked
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) > 0
    assert "Too many failed sign-in attempts" in r.text
    assert (await client.get("/admin/", follow_redirects=False)).status_code == 303


async def test_login_throttle_is_per_user(client, gateway):
    async with gateway.sessionmaker() as s, s.begin():
        from litegate.services import users

        await users.create_user(s, "bob", "bob-password-1", actor="test")
    for _ in range(5):
        await login(client, password="nope-nope")
    assert (await login(client, username="bob", password="bob-password-1")).status_code == 303


async def test_session_cookie_flags(client):
    r = await client.get("/admin/login")
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Path=/admin" in cookie
    assert "Secure" not in cookie  # plain http
    r = await login(client)
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Max-Age=" in cookie


async def test_secure_cookie_over_https(app_router):
    app, _ = app_router
    async with AsyncTestClient(app, base_url="https://testserver.local") as client:
        r = await client.get("/admin/login")
        assert "; Secure" in r.headers["set-cookie"]


async def test_session_rotates_on_login(client):
    page = await client.get("/admin/login")
    before = csrf_of(page.text)
    await login(client)
    assert await _token(client) != before


async def test_logout_ends_session(admin):
    r = await admin.post("/admin/logout", data={"_csrf": await _token(admin)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/admin/login"
    assert (await admin.get("/admin/", follow_redirects=False)).status_code == 303


async def test_logout_requires_csrf(admin):
    r = await admin.post("/admin/logout", data={}, follow_redirects=False)
    assert r.status_code == 403
    assert (await admin.get("/admin/")).status_code == 200


async def test_session_expires(client, gateway):
    await login(client)
    cookie = SimpleCookie()
    cookie.load(client.cookies.jar and "; ".join(f"{c.name}={c.value}" for c in client.cookies.jar))
    signer = SessionSigner(gateway.settings.secret_key, max_age_s=gateway.settings.session_max_age_s)
    data = signer.loads(cookie["litegate_admin"].value)
    assert data and isinstance(data["sid"], str) and "user" not in data
    data["iat"] = int(time.time()) - gateway.settings.session_max_age_s - 5
    client.cookies.clear()
    client.cookies.set("litegate_admin", signer.dumps(data), path="/admin")
    assert (await client.get("/admin/", follow_redirects=False)).status_code == 303


async def test_tampered_session_rejected(client, gateway):
    signer = SessionSigner("not-the-secret", max_age_s=3600)
    forged = signer.dumps({"user": ADMIN_USER, "uid": 1, "csrf": "x", "iat": int(time.time())})
    client.cookies.set("litegate_admin", forged, path="/admin")
    assert (await client.get("/admin/", follow_redirects=False)).status_code == 303


# -- CSRF ---------------------------------------------------------------------------


async def test_csrf_required_on_every_write(admin, gateway):
    route_id = await _seed(gateway)
    token = await _token(admin)
    writes = [
        ("/admin/keys", {"name": "k"}),
        ("/admin/upstreams/new", {"name": "u2", "kind": "openai", "base_url": "http://x"}),
        ("/admin/routes/new", _route_form("")),
        (f"/admin/routes/{route_id}/delete", {}),
        ("/admin/quotas", {"route": "chat", "rate": "1/minute"}),
    ]
    version = await _config_version(gateway)
    for url, data in writes:
        for bad in (None, "forged-token", token[:-1]):
            body = dict(data)
            body.pop("_csrf", None)
            if bad is not None:
                body["_csrf"] = bad
            r = await admin.post(url, data=body, follow_redirects=False)
            assert r.status_code == 403, (url, bad, r.status_code)
            assert "CSRF" in r.text
    assert await _config_version(gateway) == version
    assert await _count(gateway, ApiKey) == 0
    assert await _count(gateway, Route) == 1
    # the header form works too (htmx / fetch)
    r = await admin.post(
        "/admin/keys", data={"name": "via-header"}, headers={"X-CSRF-Token": token},
        follow_redirects=False,
    )
    assert r.status_code == 303


async def test_login_form_requires_csrf(client):
    r = await client.post(
        "/admin/login", data={"username": ADMIN_USER, "password": ADMIN_PASSWORD},
        follow_redirects=False,
    )
    assert r.status_code == 403


# -- pages, forms, escaping ---------------------------------------------------------


async def test_all_pages_render(admin, gateway):
    route_id = await _seed(gateway)
    gateway.stats.record("chat", "a", 200, 0.004, "MISS")
    gateway.stats.record("chat", "b", 502, 0.2, None)
    for path in ["/admin/", "/admin/?window=1h", "/admin/dashboard/panel", "/admin/routes",
                 "/admin/routes/new", f"/admin/routes/{route_id}", "/admin/upstreams",
                 "/admin/upstreams/new", "/admin/upstreams/1", "/admin/quotas", "/admin/keys",
                 "/admin/models", "/admin/audit", "/admin/audit?entity_type=route&page=1",
                 "/admin/keys?q=x&status=revoked&page=1"]:
        r = await admin.get(path)
        assert r.status_code == 200, (path, r.text[:500])
        assert r.headers["cache-control"] == "no-store"
        assert "default-src 'self'" in r.headers["content-security-policy"]
    r = await admin.get("/admin/routes/999")
    assert r.status_code == 404
    r = await admin.get("/admin/audit?entity_type=route&page=2")  # past the last page
    assert r.status_code == 400 and "page must be a whole number from 1 to 1" in r.text


async def test_dashboard_shows_routes_variants_and_charts(admin, gateway):
    await _seed(gateway)
    for i in range(10):
        gateway.stats.record("chat", "a" if i < 8 else "b", 200 if i else 500, 0.003, "HIT" if i % 2 else "MISS")
    gateway.stats.record("chat", "a", 429, 0.001, None)
    html = (await admin.get("/admin/dashboard/panel", headers={"X-Litegate-Partial": "1"})).text
    assert 'data-route="chat"' in html
    assert re.search(r'data-route="chat">.*?data-metric="requests">11<', html, re.DOTALL)
    assert re.search(r'data-variant="chat/a">.*?data-metric="requests">9<', html, re.DOTALL)
    assert re.search(r'data-variant="chat/b">.*?data-metric="share">18.2%<', html, re.DOTALL)
    assert html.count("<svg class=\"chart\"") == 9
    for title in ("Requests / s", "Error rate", "p50 latency", "p99 latency", "Cache hit rate",
                  "Limit rejections"):
        assert title in html


async def test_create_route_with_variants(admin, gateway):
    await _seed(gateway)
    version = await _config_version(gateway)
    r = await admin.post("/admin/routes/new", data=_route_form(await _token(admin)), follow_redirects=False)
    assert r.status_code == 303, _field_errors(r.text)
    async with gateway.sessionmaker() as s:
        route = await routing.get_route(s, "chat2")
        assert [(v.name, v.weight) for v in route.variants] == [("a", 80), ("b", 20)]
    assert await _config_version(gateway) == version + 1
    page = await admin.get(r.headers["location"])
    assert "Route chat2 saved." in page.text


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"variants-0-weight": "0", "variants-1-weight": "0"}, "variants", "at least one weight must be &gt; 0"),
        ({"variants-1-weight": "-5"}, "variants-1-weight", "must be &gt;= 0"),
        ({"variants-1-weight": "lots"}, "variants-1-weight", "must be a whole number"),
        ({"variants-1-upstream": "nope"}, "variants-1-upstream", "unknown upstream &#39;nope&#39;"),
        ({"variants-0-model": ""}, "variants-0-model", "required"),
        ({"name": ""}, "name", "required"),
        ({"limits": "lots/fortnight"}, "limits", "invalid rate"),
        ({"cache_ttl_s": "-1"}, "cache_ttl_s", "must be &gt; 0"),
        ({"sticky_mode": "header", "sticky_header": ""}, "sticky_header", "required"),
        ({"shadow": "ghost"}, "shadow", "not a variant of this route"),
    ],
)
async def test_route_form_errors_keep_values(admin, gateway, overrides, field, message):
    await _seed(gateway)
    version = await _config_version(gateway)
    audit = await _count(gateway, AuditEntry)
    data = _route_form(await _token(admin), description="kept text", **overrides)
    r = await admin.post("/admin/routes/new", data=data)
    assert r.status_code == 400
    errors = _field_errors(r.text)
    assert any(message in m for m in errors.get(field, [])), errors
    assert 'value="kept text"' in r.text
    assert 'value="m-b"' in r.text or overrides.get("variants-1-model") == ""
    # nothing half-saved
    assert await _count(gateway, Route) == 1
    assert await _config_version(gateway) == version
    assert await _count(gateway, AuditEntry) == audit


async def test_route_shadow_variant_round_trips(admin, gateway):
    await _seed(gateway)
    data = _route_form(await _token(admin), shadow="b", **{"variants-1-weight": "0"})
    r = await admin.post("/admin/routes/new", data=data, follow_redirects=False)
    assert r.status_code == 303, _field_errors(r.text)
    async with gateway.sessionmaker() as s:
        route = await routing.get_route(s, "chat2")
        assert route.shadow == "b"
    page = await admin.get(f"/admin/routes/{route.id}")
    assert 'name="shadow" value="b"' in page.text


async def test_duplicate_route_name_is_a_field_error(admin, gateway):
    await _seed(gateway)
    r = await admin.post("/admin/routes/new", data=_route_form(await _token(admin), name="chat"))
    assert r.status_code == 400
    assert "already exists" in _field_errors(r.text)["name"][0]


async def test_edit_weights_and_remove_variant(admin, gateway):
    route_id = await _seed(gateway)
    page = await admin.get(f"/admin/routes/{route_id}")
    row_version = re.search(r'name="row_version" value="(\d+)"', page.text).group(1)
    data = _route_form(csrf_of(page.text), row_version=row_version, **{
        "variants-0-weight": "50", "variants-1-weight": "50", "variants-2-name": "c",
        "variants-2-upstream": "up", "variants-2-model": "m-c", "variants-2-weight": "0",
    })
    r = await admin.post(f"/admin/routes/{route_id}", data=data, follow_redirects=False)
    assert r.status_code == 303, _field_errors(r.text)
    async with gateway.sessionmaker() as s:
        route = await routing.get_route(s, "chat")  # the name is fixed when editing
        assert [(v.name, v.weight) for v in route.variants] == [("a", 50), ("b", 50), ("c", 0)]
        row_version = str(route.row_version)
    page = await admin.get(f"/admin/routes/{route_id}")
    data = _route_form(csrf_of(page.text), row_version=row_version, variant_rows="3", **{
        "variants-1-remove": "1", "variants-2-name": "c", "variants-2-upstream": "up",
        "variants-2-model": "m-c", "variants-2-weight": "5",
    })
    r = await admin.post(f"/admin/routes/{route_id}", data=data, follow_redirects=False)
    assert r.status_code == 303, _field_errors(r.text)
    async with gateway.sessionmaker() as s:
        route = await routing.get_route(s, "chat")
        assert [(v.name, v.weight) for v in route.variants] == [("a", 80), ("c", 5)]


async def test_concurrent_edit_is_rejected(gateway, app_router):
    """Two admins open the same route; the second save must not overwrite the first."""
    app, _ = app_router
    route_id = await _seed(gateway)
    async with AsyncTestClient(app) as one, AsyncTestClient(app) as two:
        await login(one)
        await login(two)
        page_one = await one.get(f"/admin/routes/{route_id}")
        page_two = await two.get(f"/admin/routes/{route_id}")
        version = re.search(r'name="row_version" value="(\d+)"', page_one.text).group(1)
        r = await one.post(f"/admin/routes/{route_id}", data=_route_form(
            csrf_of(page_one.text), row_version=version, **{"variants-0-weight": "10"}),
            follow_redirects=False)
        assert r.status_code == 303
        r = await two.post(f"/admin/routes/{route_id}", data=_route_form(
            csrf_of(page_two.text), row_version=version, **{"variants-0-weight": "99"}))
        assert r.status_code == 409
        assert "changed by someone else" in r.text
        assert 'value="99"' in r.text  # the user's input is kept to re-apply
    async with gateway.sessionmaker() as s:
        route = await routing.get_route(s, "chat")
        assert route.variants[0].weight == 10


async def test_concurrent_upstream_edit_is_rejected(admin, gateway):
    await _seed(gateway)
    page = await admin.get("/admin/upstreams/1")
    version = re.search(r'name="row_version" value="(\d+)"', page.text).group(1)
    form = {"_csrf": csrf_of(page.text), "row_version": version, "kind": "openai",
            "base_url": "http://127.0.0.1:10", "timeout_s": "30", "connect_timeout_s": "5",
            "max_retries": "1"}
    assert (await admin.post("/admin/upstreams/1", data=form, follow_redirects=False)).status_code == 303
    form["base_url"] = "http://127.0.0.1:11"
    r = await admin.post("/admin/upstreams/1", data=form)
    assert r.status_code == 409 and "changed by someone else" in r.text


async def test_upstream_form_errors(admin, gateway):
    token = await _token(admin)
    r = await admin.post("/admin/upstreams/new", data={
        "_csrf": token, "name": "u", "kind": "openai", "base_url": "ftp://x", "timeout_s": "0",
        "connect_timeout_s": "abc", "max_retries": "1"})
    assert r.status_code == 400
    errors = _field_errors(r.text)
    assert "connect_timeout_s" in errors and 'value="ftp://x"' in r.text
    r = await admin.post("/admin/upstreams/new", data={
        "_csrf": token, "name": "u", "kind": "openai", "base_url": "ftp://x", "timeout_s": "0",
        "connect_timeout_s": "5", "max_retries": "1"})
    errors = _field_errors(r.text)
    assert "base_url" in errors and "timeout_s" in errors
    assert await _count(gateway, Upstream) == 0


async def test_delete_upstream_in_use_is_refused(admin, gateway):
    await _seed(gateway)
    r = await admin.post("/admin/upstreams/1/delete", data={"_csrf": await _token(admin)})
    assert r.status_code == 200
    assert "is used by route" in r.text
    assert await _count(gateway, Upstream) == 1


async def test_delete_route(admin, gateway):
    route_id = await _seed(gateway)
    r = await admin.post(f"/admin/routes/{route_id}/delete", data={"_csrf": await _token(admin)})
    assert "Route chat deleted." in r.text
    assert await _count(gateway, Route) == 0


async def test_xss_payloads_are_escaped(admin, gateway):
    await _seed(gateway)
    token = await _token(admin)
    # rejected route name: re-rendered in the form and in the error message, escaped
    r = await admin.post("/admin/routes/new", data=_route_form(token, name=XSS, description=XSS))
    assert r.status_code == 400
    assert XSS not in r.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text
    # a route name that bypassed validation (e.g. an older release) still renders escaped
    async with gateway.sessionmaker() as s, s.begin():
        route = await routing.get_route(s, "chat")
        route.name = XSS
        route.description = XSS
    gateway.stats.record(XSS, XSS, 200, 0.01, None)
    # key names and quota labels are free text
    r = await admin.post("/admin/keys", data={"_csrf": token, "name": XSS}, follow_redirects=False)
    assert r.status_code == 303
    for path in ["/admin/routes", "/admin/routes/1", "/admin/keys", "/admin/audit", "/admin/",
                 "/admin/quotas", "/admin/upstreams"]:
        html = (await admin.get(path)).text
        assert XSS not in html, path
        assert "<script>alert" not in html, path
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in (await admin.get("/admin/keys")).text


async def test_key_secret_shown_once_and_revoke(admin, gateway):
    await _seed(gateway)
    token = await _token(admin)
    r = await admin.post("/admin/keys", data={
        "_csrf": token, "name": "team", "routes": ["chat"], "limits": "10/minute\n100/hour",
        "token_limits": "1000/day", "expires_at": "2099-01-01T00:00"}, follow_redirects=False)
    # post-redirect-get: the secret is on the next GET, once, from a server-side flash
    assert r.status_code == 303 and r.headers["location"] == "/admin/keys"
    assert "lg-" not in r.headers.get("set-cookie", "")
    r = await admin.get("/admin/keys")
    secret = re.search(r'id="new-key-secret" value="([^"]+)"', r.text).group(1)
    assert secret.startswith("lg-") and "data-copy" in r.text
    assert r.headers["cache-control"] == "no-store"
    listing = (await admin.get("/admin/keys")).text  # a reload
    assert secret not in listing and "new-key-secret" not in listing
    assert secret[:9] in listing  # the prefix
    assert "10/minute requests" in listing and "1000/day tokens" in listing
    assert "2099-01-01 00:00:00 UTC" in listing and ">never<" in listing
    async with gateway.sessionmaker() as s:
        key = (await s.scalars(select(ApiKey))).one()
        assert key.routes == ["chat"]
        assert await s.scalar(select(func.count()).select_from(Quota).where(Quota.key_id == key.id)) == 3
    r = await admin.post(f"/admin/keys/{key.id}/revoke", data={"_csrf": token})
    assert "Key team revoked." in r.text and ">revoked<" in r.text
    async with gateway.sessionmaker() as s:
        assert (await s.get(ApiKey, key.id)).revoked_at is not None


async def test_key_form_errors(admin, gateway):
    r = await admin.post("/admin/keys", data={
        "_csrf": await _token(admin), "name": "k", "limits": "often", "expires_at": "2001-01-01T00:00"})
    assert r.status_code == 400
    errors = _field_errors(r.text)
    assert "invalid rate" in errors["limits"][0]
    assert "future" in errors["expires_at"][0]
    assert 'value="k"' in r.text and ">often</textarea>" in r.text
    assert await _count(gateway, ApiKey) == 0


async def test_quotas(admin, gateway):
    await _seed(gateway)
    token = await _token(admin)
    r = await admin.post("/admin/quotas", data={"_csrf": token, "route": "chat", "kind": "tokens", "rate": "bad"})
    assert r.status_code == 400 and "invalid rate" in _field_errors(r.text)["rate"][0]
    r = await admin.post("/admin/quotas", data={"_csrf": token, "kind": "requests", "rate": "1/second"})
    assert r.status_code == 400 and "scope" in _field_errors(r.text)
    r = await admin.post("/admin/quotas", data={"_csrf": token, "route": "chat", "kind": "tokens", "rate": "5000/hour"})
    assert "Quota added." in r.text and "5000/hour" in r.text
    async with gateway.sessionmaker() as s:
        q = (await s.scalars(select(Quota))).one()
        assert (q.kind, q.rate, q.key_id) == ("tokens", "5000/hour", None)
    r = await admin.post(f"/admin/quotas/{q.id}/delete", data={"_csrf": token})
    assert "Quota deleted." in r.text
    assert await _count(gateway, Quota) == 0


async def test_audit_log_records_and_filters(admin, gateway):
    await _seed(gateway)
    token = await _token(admin)
    await admin.post("/admin/keys", data={"_csrf": token, "name": "audited"})
    html = (await admin.get("/admin/audit")).text
    assert "admin:alice" in html and "api_key" in html and "audited" in html
    html = (await admin.get("/admin/audit?entity_type=route")).text
    assert html.count('data-entity-type="route"') == 1 and 'data-entity-type="api_key"' not in html
    html = (await admin.get("/admin/audit?actor=admin%3Aalice")).text
    assert 'data-entity-type="api_key"' in html and 'data-entity-type="route"' not in html
    html = (await admin.get("/admin/audit?q=audit")).text
    assert html.count("<tr data-entity-type") == 1
    html = (await admin.get("/admin/audit?action=create&entity_type=upstream")).text
    assert "&#34;base_url&#34;: &#34;http://127.0.0.1:9&#34;" in html  # the 'after' JSON


async def test_template_override(gateway, tmp_path):
    override = tmp_path / "templates" / "litegate_admin"
    override.mkdir(parents=True)
    (override / "login.html").write_text("custom login {{ csrf_token|length > 0 }}")
    app, _ = make_app(gateway, templates_dir=tmp_path / "templates")
    async with AsyncTestClient(app) as client:
        assert (await client.get("/admin/login")).text == "custom login True"


async def test_custom_mount_path(gateway):
    app, _ = make_app(gateway, path="/ops/console")
    async with AsyncTestClient(app) as client:
        r = await client.get("/ops/console/routes", follow_redirects=False)
        assert r.headers["location"] == "/ops/console/login?next=%2Fops%2Fconsole%2Froutes"
        assert "Path=/ops/console;" in r.headers["set-cookie"]
        page = await client.get("/ops/console/login")
        r = await client.post("/ops/console/login", data={
            "_csrf": csrf_of(page.text), "username": ADMIN_USER, "password": ADMIN_PASSWORD},
            follow_redirects=False)
        assert r.headers["location"] == "/ops/console/"
        assert (await client.get("/ops/console/routes")).status_code == 200


async def test_every_successful_write_redirects_to_a_get(admin, gateway):
    """Post-redirect-get everywhere: a reload after any successful save is a plain GET."""
    await _seed(gateway)
    token = await _token(admin)
    writes = [
        ("/admin/upstreams/new", {"name": "up2", "kind": "openai", "base_url": "http://x",
                                  "timeout_s": "5", "connect_timeout_s": "1", "max_retries": "0"}),
        ("/admin/routes/new", _route_form(token)),
        ("/admin/quotas", {"route": "chat", "kind": "requests", "rate": "9/minute"}),
        ("/admin/keys", {"name": "prg"}),
        ("/admin/keys/1", {"limits": "4/minute"}),
        ("/admin/keys/1/revoke", {}),
        ("/admin/quotas/1/delete", {}),
        ("/admin/routes/2/delete", {}),
        ("/admin/upstreams/2/delete", {}),
    ]
    for url, data in writes:
        r = await admin.post(url, data={"_csrf": token, **data}, follow_redirects=False)
        assert r.status_code == 303, (url, r.status_code, r.text[:300])
        follow = await admin.get(r.headers["location"])
        assert follow.status_code == 200, (url, r.headers["location"])
        assert "flash-ok" in follow.text, (url, follow.text[:300])


async def test_audit_filter_choices_are_bounded(admin, gateway):
    from litegate.admin.audit_views import MAX_CHOICES

    from litegate.services.audit import record_audit

    async with gateway.sessionmaker() as s, s.begin():
        for i in range(MAX_CHOICES + 50):
            await record_audit(s, actor=f"cli:user{i:04d}", action="create",
                               entity_type="route", entity_name=f"r{i}")
    html = (await admin.get("/admin/audit")).text
    actors = re.search(r'<select name="actor">(.*?)</select>', html, re.DOTALL).group(1)
    assert actors.count("<option") == MAX_CHOICES + 1  # "anyone" + the first 200
    r = await admin.get("/admin/audit", params={"q": "user0249"})  # the rest stay searchable
    assert r.status_code == 200 and "1 entry." in r.text
