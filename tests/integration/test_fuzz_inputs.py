"""Whatever a client sends, the gateway answers with a JSON error, never a 500."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from litegate.app import create_app
from litegate.db import migrate
from litegate.jsonbody import MAX_JSON_DEPTH
from litegate.settings import Settings
from tests.fixtures.onnx_models import matmul_add_model
from tests.helpers.cli import apply_config, chat_config, create_key, run_cli

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: __import__("json").dumps(v).encode()),
    st.fixed_dictionaries({"model": st.one_of(st.text(max_size=10), st.integers(), st.just("chat"))},
                          optional={"stream": json_values, "messages": json_values})
    .map(lambda v: __import__("json").dumps(v).encode()),
)
paths = st.sampled_from(["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models",
                         "/v1/nope", "/v2/models/x/infer", "/v2/models/x", "/v2"])


def test_random_requests_never_500(home, tmp_path_factory):
    # The upstream is unreachable on purpose: valid requests get a 502, never a 500.
    apply_config(home, chat_config("http://127.0.0.1:9/v1"))
    key = create_key(home)
    settings = Settings.load(home=home, breaker_failures=10_000)
    migrate.upgrade(settings.db_url)
    app = create_app(settings)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(app.gateway.start())
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")

    @hsettings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(path=paths, body=bodies, method=st.sampled_from(["POST", "GET", "PUT"]),
           auth=st.sampled_from(["good", "none", "bad"]))
    def check(path, body, method, auth):
        headers = {"content-type": "application/json"}
        if auth == "good":
            headers["authorization"] = f"Bearer {key}"
        elif auth == "bad":
            headers["authorization"] = "Bearer nope"
        r = loop.run_until_complete(client.request(method, path, content=body, headers=headers))
        assert r.status_code < 500 or r.status_code in (502, 503, 504), (r.status_code, r.text)
        if r.status_code >= 400:
            assert "error" in r.json()

    try:
        check()
    finally:
        loop.run_until_complete(client.aclose())
        loop.run_until_complete(app.gateway.stop())
        loop.close()


@pytest.fixture
def live(tmp_path, home, make_gateway, fake_upstream):
    """The real server: route ``chat`` to the fake upstream, local ONNX model ``add``."""
    apply_config(home, chat_config(fake_upstream.base_url))
    code, _, err = run_cli("models", "add", "add", str(matmul_add_model(tmp_path / "add.onnx")),
                           home=home)
    assert code == 0, err
    key = create_key(home)
    return make_gateway(), key, fake_upstream


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _deep_bodies(depth: int) -> dict[str, str]:
    deep = _nested(depth)
    return {
        "/v1/chat/completions": f'{{"model": "chat", "messages": [], "metadata": {deep}}}',
        "/v1/aggregate": f'{{"routes": ["chat"], "request": {{"messages": {deep}}}}}',
        "/v2/models/add/infer":
            f'{{"inputs": [{{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": {deep}}}]}}',
    }


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 900, 5_000, 300_000])
def test_deeply_nested_json_is_a_400_not_a_500(live, depth):
    # Before: from ~1,000 levels msgspec raised RecursionError -> 500 on /v1 and /v2.
    server, key, _ = live
    auth = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    for path, body in _deep_bodies(depth).items():
        r = httpx.post(server.url + path, content=body, headers=auth, timeout=30)
        assert r.status_code == 400, (path, depth, r.status_code, r.text[:300])
        message = r.json()["error"]
        message = message["message"] if isinstance(message, dict) else message
        assert f"nested deeper than {MAX_JSON_DEPTH} levels" in message, (path, message)


def test_nesting_up_to_the_bound_is_served(live):
    server, key, fake = live
    auth = {"authorization": f"Bearer {key}"}
    body = f'{{"model": "chat", "messages": [], "metadata": {_nested(MAX_JSON_DEPTH - 1)}}}'
    r = httpx.post(server.url + "/v1/chat/completions", content=body, headers=auth, timeout=30)
    assert r.status_code == 200, r.text
    assert fake.calls[-1]["metadata"] == json.loads(_nested(MAX_JSON_DEPTH - 1))
    shaped = '{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [[1, 2, 3, 4]]}]}'
    r = httpx.post(server.url + "/v2/models/add/infer", content=shaped, headers=auth, timeout=30)
    assert r.status_code == 200, r.text
