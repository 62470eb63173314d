"""The same core mounted three ways: Litestar plug-in, ASGI middleware, WSGI bridge.
Each serves /healthz, /readyz and /metrics; a fresh directory works with no set-up; an
unmigrated PostgreSQL leaves the host app running and names `litegate db upgrade`."""

from __future__ import annotations

import contextlib
import time

import httpx
import openai
from flask import Flask
from litestar import Litestar, get
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from litegate import LitegateConfig, LitegateMiddleware, LitegatePlugin, wrap_wsgi
from litegate.db import migrate
from litegate.settings import Settings
from tests.helpers.cli import apply_config, chat_config, create_key
from tests.helpers.servers import ThreadServer


def _prepare(home, fake_upstream) -> tuple[Settings, str]:
    settings = Settings.load(home=home, reload_interval_s=0.1)
    migrate.upgrade(settings.db_url)
    apply_config(home, chat_config(fake_upstream.base_url))
    return settings, create_key(home)


def _assert_health(url: str) -> None:
    """Before: /readyz and /metrics were 404 when mounted (issue 8 item 13)."""
    assert httpx.get(url + "/healthz").status_code == 200
    ready = httpx.get(url + "/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    metrics = httpx.get(url + "/metrics")
    assert metrics.status_code == 200 and "litegate_config_version" in metrics.text


def _chat(url: str, key: str) -> str:
    c = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
    out = c.chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}])
    return out.choices[0].message.content


def test_litestar_plugin(home, fake_upstream):
    settings, key = _prepare(home, fake_upstream)

    @get("/internal/hello", sync_to_thread=False)
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    @get("/public", sync_to_thread=False)
    def public() -> dict[str, str]:
        return {"public": "yes"}

    app = Litestar(
        route_handlers=[hello, public],
        plugins=[LitegatePlugin(LitegateConfig(settings=settings, protect=("/internal",), admin=False))],
    )
    with ThreadServer(app) as server:
        assert _chat(server.url, key) == "hello from small-model"
        assert httpx.get(server.url + "/internal/hello").status_code == 401
        r = httpx.get(server.url + "/internal/hello", headers={"X-API-Key": key})
        assert r.status_code == 200 and r.json() == {"hello": "world"}
        assert httpx.get(server.url + "/public").json() == {"public": "yes"}
        r = httpx.post(server.url + "/v1/chat/completions", json={"model": "chat"})
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        _assert_health(server.url)


def test_starlette_middleware_protects_host_routes(home, fake_upstream):
    settings, key = _prepare(home, fake_upstream)

    async def own(request):
        return JSONResponse({"own": True})

    host = Starlette(routes=[Route("/own", own), Route("/healthz", own)])
    app = LitegateMiddleware(host, settings=settings)
    with ThreadServer(app) as server:
        assert _chat(server.url, key) == "hello from small-model"
        assert httpx.get(server.url + "/own").status_code == 401
        assert httpx.get(server.url + "/own", headers={"Authorization": f"Bearer {key}"}).json() == {"own": True}
        _assert_health(server.url)  # served by litegate, public by default


def test_flask_through_wsgi_bridge(home, fake_upstream):
    settings, key = _prepare(home, fake_upstream)
    flask_app = Flask("host")

    @flask_app.get("/flask")
    def flask_view():
        return {"flask": True}

    app = wrap_wsgi(flask_app, settings=settings)
    with ThreadServer(app) as server:
        assert _chat(server.url, key) == "hello from small-model"
        assert httpx.get(server.url + "/flask").status_code == 401
        assert httpx.get(server.url + "/flask", headers={"X-API-Key": key}).json() == {"flask": True}
        _assert_health(server.url)


def _host_with_lifespan(started: list[str]) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app):
        started.append("host")
        yield

    async def public(request):
        return JSONResponse({"public": True})

    return Starlette(routes=[Route("/docs", public)], lifespan=lifespan)


def test_fresh_directory_creates_and_migrates_the_embedded_database(tmp_path):
    """Before: every route answered 500 ("unable to open database file") and the host's
    lifespan was skipped; the Litestar plug-in crashed with "no such table"."""
    started: list[str] = []
    home = tmp_path / "new" / ".litegate"
    app = LitegateMiddleware(_host_with_lifespan(started), settings=Settings.load(home=home))
    with ThreadServer(app) as server:
        assert started == ["host"]
        assert httpx.get(server.url + "/docs").json() == {"public": True}
        r = httpx.get(server.url + "/v1/models")
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        _assert_health(server.url)
    assert (home / "litegate.db").is_file()
    plugin_home = tmp_path / "plugin" / ".litegate"
    plugin = LitegatePlugin(LitegateConfig(settings=Settings.load(home=plugin_home)))
    with ThreadServer(Litestar(route_handlers=[], plugins=[plugin])) as server:
        assert httpx.get(server.url + "/v1/models").status_code == 401
        _assert_health(server.url)


def test_unmigrated_postgres_keeps_the_host_up_and_names_the_fix(tmp_path):
    from tests.helpers.services import postgres_server

    started: list[str] = []
    with postgres_server() as url:
        settings = Settings.load(home=tmp_path / "home", db=url)
        app = LitegateMiddleware(_host_with_lifespan(started), settings=settings)
        with ThreadServer(app) as server:
            assert started == ["host"]
            assert httpx.get(server.url + "/docs").json() == {"public": True}
            r = httpx.get(server.url + "/v1/models")
            assert r.status_code == 503
            assert "is not migrated: run `litegate db upgrade`" in r.json()["error"]["message"]
            v2 = httpx.get(server.url + "/v2/health/ready")
            assert v2.status_code == 503 and "litegate db upgrade" in v2.json()["error"]
            ready = httpx.get(server.url + "/readyz")
            assert ready.status_code == 503 and "litegate db upgrade" in ready.json()["error"]
            plugin = LitegatePlugin(LitegateConfig(settings=settings, admin=False))
            with ThreadServer(Litestar(route_handlers=[], plugins=[plugin])) as litestar:
                r = httpx.get(litestar.url + "/v1/models")  # before: "no such table" at start
                assert r.status_code == 503 and "litegate db upgrade" in r.json()["error"]["message"]
                assert httpx.get(litestar.url + "/readyz").status_code == 503
            migrate.upgrade(settings.db_url)
            deadline = time.monotonic() + 15  # litegate retries its start every 2 s
            while httpx.get(server.url + "/v1/models").status_code == 503:
                assert time.monotonic() < deadline, "gateway never started after db upgrade"
                time.sleep(0.2)
            assert httpx.get(server.url + "/v1/models").status_code == 401
