"""A key holder must not reach anything on a remote v2 server but the per-model
surface of the route's model: the upstream path is rebuilt from parsed parts, so
``..`` in any encoding never escapes to model control with the gateway's credentials."""

from __future__ import annotations

import contextlib
import http.client
from collections.abc import Iterator

import pytest
from aiohttp import web

from tests.helpers.cli import apply_config, create_key
from tests.helpers.servers import serve_aiohttp


@contextlib.contextmanager
def recording_v2_server() -> Iterator[tuple[str, list[tuple[str, str, str]]]]:
    """A stand-in remote Triton answering every path, recording method, path and auth."""
    seen: list[tuple[str, str, str]] = []

    async def anything(request: web.Request) -> web.Response:
        seen.append((request.method, request.raw_path, request.headers.get("Authorization", "")))
        return web.json_response({"name": "rmodel", "ready": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    with serve_aiohttp(app) as port:
        yield f"http://127.0.0.1:{port}", seen


def raw_request(port: int, method: str, path: str, key: str) -> int:
    """http.client sends the path byte for byte (no dot-segment normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, body=b"{}" if method == "POST" else None,
                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    status = conn.getresponse().status
    conn.close()
    return status


ESCAPES = [
    ("POST", "/v2/models/triton-route/../../repository/models/rmodel/unload"),
    ("POST", "/v2/models/triton-route/%2e%2e/%2e%2e/repository/models/rmodel/unload"),
    ("POST", "/v2/models/triton-route/..%2f..%2frepository/models/rmodel/unload"),
    ("POST", "/v2/models/triton-route/%2E%2E%2F%2E%2E%2Frepository%2Fmodels%2Frmodel%2Fload"),
    ("GET", "/v2/models/triton-route/versions/1/../../../repository/index"),
    ("GET", "/v2/models/triton-route/versions/..%2f..%2f/ready"),
    ("POST", "/v2/models/triton-route/infer/../../../repository/index"),
    ("POST", "/v2/models/triton-route/versions/01/infer"),
    ("POST", "/v2/models/triton-route/trace/setting"),
]


def test_v2_route_forwards_only_the_per_model_surface(home, make_gateway, monkeypatch):
    with recording_v2_server() as (base_url, seen):
        monkeypatch.setenv("LG_TRITON_KEY", "upstream-secret")
        apply_config(home, {
            "upstreams": [{"name": "triton", "kind": "v2", "base_url": base_url,
                           "api_key_env": "LG_TRITON_KEY"}],
            "routes": [{"name": "triton-route",
                        "variants": [{"upstream": "triton", "model": "rmodel"}]}],
        })
        key = create_key(home)
        server = make_gateway()
        for method, path in ESCAPES:
            status = raw_request(server.port, method, path, key)
            assert status in (400, 404), (path, status)
        escaped = [p for _, p, _ in seen if not p.startswith("/v2/models/rmodel")]
        assert escaped == [], f"reached the upstream outside the model: {escaped}"
        # The documented surface still works, each call rebuilt on the variant's model
        # (the query string is not passed on either).
        for method, path in [("GET", "/v2/models/triton-route"),
                             ("GET", "/v2/models/triton-route/ready?x=/../../repository"),
                             ("POST", "/v2/models/triton-route/infer"),
                             ("POST", "/v2/models/triton-route/versions/3/infer"),
                             ("GET", "/v2/models/triton-route/stats")]:
            assert raw_request(server.port, method, path, key) == 200, path
        assert [(m, p) for m, p, _ in seen] == [
            ("GET", "/v2/models/rmodel"), ("GET", "/v2/models/rmodel/ready"),
            ("POST", "/v2/models/rmodel/infer"), ("POST", "/v2/models/rmodel/versions/3/infer"),
            ("GET", "/v2/models/rmodel/stats"),
        ]
        assert all(auth == "Bearer upstream-secret" for _, _, auth in seen)


@pytest.mark.parametrize("method,path", [("POST", "/v2/repository/models/rmodel/unload"),
                                         ("POST", "/v2/repository/index")])
def test_model_control_stays_admin_only(home, make_gateway, method, path):
    apply_config(home, {"upstreams": [], "routes": []})
    key = create_key(home)
    server = make_gateway()
    assert raw_request(server.port, method, path, key) == 403
