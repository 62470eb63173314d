"""Every console route, signed in, with hostile path parameters, query strings and
forms: the answer is a 4xx page (or a normal page), never a 5xx. The admin API's routes
get the same parameters with a write token, and the hostile fields as a JSON body."""

from __future__ import annotations

import re
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from tests.e2e.support import csrf_of, login, make_admin_gateway, make_app

HUGE = "99999999999999999999"
BAD_IDS = [HUGE, "9223372036854775808", "-1", "0", "abc", "%2e%2e"]
BAD_QUERY_VALUES = [HUGE, "-1", "abc"]
ODD_QUERY_VALUES = ["0", "1.5", "%00", "<script>", "x" * 5000]
QUERY_NAMES = ["page", "window", "next", "q", "actor", "entity_type", "action", "status"]


@pytest.fixture
async def admin():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        gw = await make_admin_gateway(Path(tmp))
        api_token = await _seed(gw)
        app, _ = make_app(gw)
        async with AsyncTestClient(app) as client:
            assert (await login(client)).status_code == 303
            yield app, client, api_token
        await gw.engine.dispose()


async def _seed(gw: Any) -> str:
    """One of each row, so list pages render real data and id 1 exists; returns a write
    token for the admin API."""
    from litegate.services import admin_tokens, keys, quotas, routing
    from litegate.services.schema import RouteIn, UpstreamIn, VariantIn

    async with gw.sessionmaker() as s, s.begin():
        up = UpstreamIn(name="up", base_url="http://127.0.0.1:9")
        await routing.upsert_upstream(s, up, actor="t")
        await routing.upsert_route(
            s, RouteIn(name="chat", variants=[VariantIn(upstream="up", model="m", weight=1)]),
            actor="t",
        )
        await keys.create_key(s, name="k", actor="t", limits=["5/minute"])
        await quotas.add_quota(
            s, actor="t", key_id=None, route="chat", kind="requests", rate="9/minute"
        )
        return (await admin_tokens.create_token(s, "hostile", scope="write", actor="t"))[1]


def _routes(app: Any) -> list[tuple[str, str]]:
    out = []
    for route in app.routes:
        if not route.path.startswith("/admin") or "static" in route.path:
            continue
        for handler in route.route_handlers:
            if handler.opt.get("refuses_methods"):
                continue  # the admin API's 405s (test_admin_api checks them)
            for method in sorted(getattr(handler, "http_methods", ()) or ()):
                if method not in ("HEAD", "OPTIONS"):
                    out.append((method, route.path))
    return out


def _fill(path: str, value: str) -> str:
    return re.sub(r"\{[^}]+\}", value, path)


async def test_every_admin_route_survives_hostile_parameters(admin):
    app, client, api_token = admin
    routes = _routes(app)
    assert len(routes) >= 30
    token = csrf_of((await client.get("/admin/")).text)
    failures: list[tuple[str, str, int]] = []
    checked = 0

    async def hit(method: str, url: str, **kw: Any) -> int:
        nonlocal checked
        checked += 1
        data = kw.pop("data", None)
        if url.startswith("/admin/api/"):
            r = await client.request(method, url, json=data, headers={
                "Authorization": f"Bearer {api_token}"}, **kw)
            assert r.headers["content-type"].startswith("application/json") or r.status_code == 204
            if r.status_code >= 500:
                failures.append((method, url[:120], r.status_code))
            return r.status_code
        if method == "POST":
            data = {"_csrf": token, **(data or {})}
        r = await client.request(
            method, url, data=data, follow_redirects=False, headers={"Accept": "text/html"}, **kw
        )
        if r.status_code >= 500:
            failures.append((method, url[:120], r.status_code))
        return r.status_code

    for method, path in routes:
        if path.endswith("/logout") or "sessions/end" in path:
            continue  # would sign this client out; covered in test_admin_sessions
        templated = "{" in path
        for value in BAD_IDS if templated else [""]:
            url = _fill(path, value) if templated else path
            status = await hit(method, url)
            if templated and method == "GET":
                assert status in (400, 404), (url, status)
            if method == "GET" and value in ("", HUGE):
                for name in QUERY_NAMES:
                    for bad in BAD_QUERY_VALUES:
                        await hit(method, url, params={name: bad})
                for odd in ODD_QUERY_VALUES:
                    await hit(method, url, params={name: odd for name in QUERY_NAMES})
            if method in ("POST", "PUT", "PATCH") and value in ("", HUGE):
                hostile = {name: HUGE for name in (
                    "name", "key_id", "route", "kind", "rate", "row_version", "variant_rows",
                    "timeout_s", "max_retries", "weight", "expires_at", "limits", "version",
                )}
                await hit(method, url, data=hostile)
                await hit(method, url, data={"variant_rows": "-5", "row_version": "-1"})
    assert not failures, failures
    assert checked > 400
    # still signed in and working afterwards
    assert (await client.get("/admin/")).status_code == 200


async def test_audit_page_out_of_range(admin):
    _, client, _ = admin
    for page in (HUGE, "-3", "abc", "0"):
        r = await client.get("/admin/audit", params={"page": page})
        assert r.status_code == 400, (page, r.status_code)
        assert "page" in r.text
    assert (await client.get("/admin/audit", params={"page": "1"})).status_code == 200
