"""The gateway's own public surfaces behave the same in every mount shape (Litestar
plug-in, ASGI middleware under FastAPI, WSGI bridge): litegate's OpenAPI document and
offline docs page are served under ``/litegate`` (the host keeps its own ``/docs`` and
``/openapi.json``), the page loads nothing but same-origin assets under the same CSP as
the standalone gateway, and the admin API's unmatched paths answer in its
``{error, code}`` shape while the host's own 404s keep the host's shape."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from flask import Flask
from litestar import Litestar, get

from litegate import LitegateConfig, LitegateMiddleware, LitegatePlugin, wrap_wsgi
from litegate.apidocs import CSP
from litegate.db import migrate
from litegate.settings import Settings
from tests.helpers.cli import create_key, run_cli
from tests.helpers.servers import ThreadServer

GATEWAY_PATHS = ("/v1/chat/completions", "/v1/embeddings", "/v1/models",
                 "/v2/models/{model}/infer")
ASSET_RE = re.compile(rb'(?:src|href)="([^"]+)"')


def create_token(home: Path, name: str, scope: str) -> str:
    code, out, err = run_cli("admin", "create-token", name, "--scope", scope, "--json", home=home)
    assert code == 0, err
    return str(json.loads(out)["token"])


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    """The admin API's error shape: JSON ``{"error": "...", "code": "..."}``."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body["error"], str) and body["error"] and isinstance(body["code"], str), body
    return body


def _settings(home: Path) -> Settings:
    settings = Settings.load(home=home, reload_interval_s=0.1)
    migrate.upgrade(settings.db_url)
    return settings


def _assert_litegate_docs(url: str, *, admin: bool) -> dict[str, Any]:
    """``/litegate/openapi.json`` is litegate's document; ``/litegate/docs`` names it
    and loads only same-origin assets, each served under the standalone CSP."""
    r = httpx.get(url + "/litegate/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert doc["openapi"].startswith("3.1") and doc["info"]["title"] == "litegate"
    for path in GATEWAY_PATHS:
        assert path in doc["paths"], path
    assert ("/admin/api/routes" in doc["paths"]) is admin
    page = httpx.get(url + "/litegate/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CSP.decode()
    assert b"http://" not in page.content and b"https://" not in page.content
    refs = ASSET_RE.findall(page.content)
    assert sorted(set(refs)) == [b"/litegate/docs/apidocs.css", b"/litegate/docs/apidocs.js",
                                 b"/litegate/openapi.json"], refs
    for ref in set(refs):
        asset = httpx.get(url + ref.decode())
        assert asset.status_code == 200, ref
        assert b"http://" not in asset.content and b"https://" not in asset.content
    assert httpx.get(url + "/litegate/docs/").status_code == 200
    return doc


def test_fastapi_keeps_its_docs_and_serves_litegates_under_litegate(home: Path) -> None:
    api = FastAPI()

    @api.get("/items")
    def items() -> dict[str, bool]:
        return {"items": True}

    app = LitegateMiddleware(api, settings=_settings(home))
    with ThreadServer(app) as server:
        doc = _assert_litegate_docs(server.url, admin=False)
        assert "/healthz" in doc["paths"] and "/items" not in doc["paths"]
        # The host's own document and Swagger page are FastAPI's, public as before.
        host = httpx.get(server.url + "/openapi.json")
        assert host.status_code == 200 and list(host.json()["paths"]) == ["/items"]
        swagger = httpx.get(server.url + "/docs")
        assert swagger.status_code == 200 and "/openapi.json" in swagger.text
        assert "litegate API reference" not in swagger.text
        assert httpx.get(server.url + "/items").status_code == 401  # still protected


def test_middleware_docs_prefix_is_configurable_and_can_be_off(home: Path) -> None:
    settings = _settings(home)
    app = LitegateMiddleware(FastAPI(), settings=settings, docs_prefix="/gateway/", health=False)
    with ThreadServer(app) as server:
        doc = httpx.get(server.url + "/gateway/openapi.json").json()
        assert "/v1/chat/completions" in doc["paths"] and "/healthz" not in doc["paths"]
        page = httpx.get(server.url + "/gateway/docs")
        assert b'src="/gateway/docs/apidocs.js"' in page.content
        assert b'href="/gateway/openapi.json"' in page.content
        assert httpx.get(server.url + "/litegate/docs").status_code == 401  # the host's path
    off = LitegateMiddleware(FastAPI(), settings=settings, docs_prefix=None)
    with ThreadServer(off) as server:
        assert httpx.get(server.url + "/litegate/openapi.json").status_code == 401


def test_flask_through_the_bridge_serves_the_same_docs(home: Path) -> None:
    flask_app = Flask("host")

    @flask_app.get("/flask")
    def flask_view() -> dict[str, bool]:
        return {"flask": True}

    with ThreadServer(wrap_wsgi(flask_app, settings=_settings(home))) as server:
        _assert_litegate_docs(server.url, admin=False)
        assert httpx.get(server.url + "/flask").status_code == 401


def test_litestar_plugin_docs_and_admin_api_errors(home: Path) -> None:
    settings = _settings(home)
    token = create_token(home, "ops", "write")

    @get("/hello", sync_to_thread=False)
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    app = Litestar(route_handlers=[hello], plugins=[LitegatePlugin(LitegateConfig(settings=settings))])
    with ThreadServer(app) as server:
        doc = _assert_litegate_docs(server.url, admin=True)
        assert "/admin/api/models/{name}" in doc["paths"]
        # Litestar's own schema of the host app is untouched.
        assert httpx.get(server.url + "/schema/openapi.json").status_code == 200

        _assert_admin_api_errors(server.url, token)
        # Outside the admin API the host's 404 and 405 keep Litestar's shape.
        miss = httpx.get(server.url + "/nope")
        assert miss.status_code == 404 and miss.json()["status_code"] == 404, miss.text
        wrong = httpx.post(server.url + "/hello")
        assert wrong.status_code == 405 and wrong.json()["status_code"] == 405, wrong.text


def test_litestar_plugin_keeps_the_hosts_own_404_handler(home: Path) -> None:
    from litestar import Request, Response
    from litestar.exceptions import NotFoundException

    def host_404(request: Request[Any, Any, Any], exc: NotFoundException) -> Response[dict[str, str]]:
        return Response({"host": "not here"}, status_code=404)

    plugin = LitegatePlugin(LitegateConfig(settings=_settings(home)))
    token = create_token(home, "ops", "read")
    app = Litestar(route_handlers=[], plugins=[plugin], exception_handlers={404: host_404})
    with ThreadServer(app) as server:
        assert httpx.get(server.url + "/nope").json() == {"host": "not here"}
        r = httpx.get(server.url + "/admin/api/models/a%2fb", headers={"Authorization": f"Bearer {token}"})
        assert error(r, 404)["code"] == "not_found"


def _assert_admin_api_errors(url: str, token: str) -> None:
    api = httpx.Client(base_url=url + "/admin/api", headers={"Authorization": f"Bearer {token}"})
    assert api.get("/routes").status_code == 200
    for method, path in [("GET", "/models/a%2fb"), ("POST", "/models/..%2f..%2fetc/versions"),
                         ("GET", "/routes/r/extra"), ("DELETE", "/keys/1/revoke/x"),
                         ("POST", "/no-such-endpoint")]:
        assert error(api.request(method, path), 404)["code"] == "not_found", path
    body = error(api.request("PUT", "/routes", json={}), 405)
    assert body["code"] == "method_not_allowed" and "GET, POST" in body["error"], body
    assert error(api.request("TRACE", "/routes"), 405)["code"] == "method_not_allowed"
    assert error(httpx.put(url + "/admin/api/routes"), 401)["code"] == "invalid_admin_token"


def test_middleware_with_admin_serves_the_console_api_and_its_errors(home: Path) -> None:
    settings = _settings(home)
    token = create_token(home, "ops", "write")
    key = create_key(home)  # before the start: a running gateway picks keys up on reload
    api = FastAPI()

    @api.get("/items")
    def items() -> dict[str, bool]:
        return {"items": True}

    with ThreadServer(LitegateMiddleware(api, settings=settings, admin=True)) as server:
        _assert_litegate_docs(server.url, admin=True)
        _assert_admin_api_errors(server.url, token)
        # The host's own 404 keeps FastAPI's shape (behind a litegate key, as before).
        miss = httpx.get(server.url + "/nope", headers={"X-API-Key": key})
        assert miss.status_code == 404 and miss.json() == {"detail": "Not Found"}
    flask_app = Flask("host")
    with ThreadServer(wrap_wsgi(flask_app, settings=settings, admin=True)) as server:
        _assert_litegate_docs(server.url, admin=True)
        _assert_admin_api_errors(server.url, token)
