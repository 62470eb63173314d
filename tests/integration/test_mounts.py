"""The same core mounted three ways: Litestar plug-in, ASGI middleware, WSGI bridge."""

from __future__ import annotations

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
        assert httpx.get(server.url + "/healthz").status_code == 200  # public by default


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
