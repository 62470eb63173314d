"""Whatever a client sends, the gateway answers with a JSON error, never a 500."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from litegate.app import create_app
from litegate.db import migrate
from litegate.jsonbody import MAX_JSON_DEPTH
from litegate.settings import Settings
from tests.fixtures.onnx_models import matmul_add_model
from tests.helpers.cli import apply_config, chat_config, create_key, run_cli, serving
from tests.helpers.servers import free_port

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


def _raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes (what httpx would refuse to build); status, headers, body."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as conn:
        conn.sendall(request)  # "Connection: close" (or the parser's refusal) ends it
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def _post(path: bytes, body: bytes, key: str, extra: bytes = b"") -> bytes:
    return (b"POST " + path + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" + extra
            + b"Authorization: Bearer " + key.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


def _get(path: bytes, key: str, extra: bytes = b"") -> bytes:
    return (b"GET " + path + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" + extra
            + b"Authorization: Bearer " + key.encode() + b"\r\n\r\n")


_TENSOR = b'{"inputs":[{"name":"x","datatype":"%s","shape":%s,"data":%s}]}'
# What each handler parses from a client (path, query, headers, body), at its edges.
SWEEP: dict[str, Callable[[str], bytes]] = {
    "non-UTF-8 percent-escapes in a /v1 path": lambda k: _get(b"/v1/models/%ff%fe", k),
    "lone surrogate escape in a /v1 path": lambda k: _get(b"/v1/models/%ED%A0%80", k),
    "non-UTF-8 percent-escapes in a /v2 path": lambda k: _post(b"/v2/models/%ff/infer", b"{}", k),
    "NUL in a /v2 version": lambda k: _get(b"/v2/models/add/versions/%00", k),
    "huge /v2 version": lambda k: _get(b"/v2/models/add/versions/99999999999999999999999", k),
    "non-UTF-8 API key": lambda k: _get(b"/v1/models", k, b"X-API-Key: \xff\xfe\r\n"),
    "non-UTF-8 routing headers": lambda k: _post(
        b"/v1/chat/completions", b'{"model":"chat","messages":[]}', k,
        b"X-Litegate-Sticky-Key: \xff\r\nCache-Control: \xff\r\nX-Request-Id: \xff\r\n"),
    "non-UTF-8 query string": lambda k: _get(b"/v1/models?%ff=%fe&limit=-1", k),
    "wrong content type": lambda k: _post(
        b"/v1/chat/completions", b'{"model":"chat","messages":[]}', k, b"Content-Type: text/plain\r\n"),
    "empty /v1 body": lambda k: _post(b"/v1/chat/completions", b"", k),
    "array /v1 body": lambda k: _post(b"/v1/chat/completions", b"[]", k),
    "lone surrogate as model": lambda k: _post(b"/v1/chat/completions", b'{"model":"\\ud800","messages":[]}', k),
    "infinite temperature": lambda k: _post(
        b"/v1/chat/completions", b'{"model":"chat","messages":[],"temperature":1e99999}', k),
    "array aggregate body": lambda k: _post(b"/v1/aggregate", b"[]", k),
    "aggregate with NaN timeout": lambda k: _post(
        b"/v1/aggregate", b'{"routes":["chat"],"request":{},"timeout_s":NaN}', k),
    "aggregate request not an object": lambda k: _post(
        b"/v1/aggregate", b'{"routes":["chat"],"request":[1]}', k),
    "empty /v2 body": lambda k: _post(b"/v2/models/add/infer", b"", k),
    "array /v2 body": lambda k: _post(b"/v2/models/add/infer", b"[]", k),
    "huge header length": lambda k: _post(
        b"/v2/models/add/infer", b"{}", k, b"Inference-Header-Content-Length: 99999999999999999999\r\n"),
    "negative header length": lambda k: _post(
        b"/v2/models/add/infer", b"{}", k, b"Inference-Header-Content-Length: -1\r\n"),
    "non-UTF-8 header length": lambda k: _post(
        b"/v2/models/add/infer", b"{}", k, b"Inference-Header-Content-Length: \xff\r\n"),
    "binary header cut in a UTF-8 sequence": lambda k: _post(
        b"/v2/models/add/infer", b'{"inputs":[]}\xff\xfe', k, b"Inference-Header-Content-Length: 15\r\n"),
    "huge dimension": lambda k: _post(
        b"/v2/models/add/infer", _TENSOR % (b"FP32", b"[99999999999999999999999,4]", b"[1]"), k),
    "integer beyond int64": lambda k: _post(
        b"/v2/models/add/infer", _TENSOR % (b"INT64", b"[1,4]", b"[99999999999999999999999,1,1,1]"), k),
    "infinite float": lambda k: _post(b"/v2/models/add/infer", _TENSOR % (b"FP32", b"[1,4]", b"[1e999,1,1,1]"), k),
    "repository control with a normal key": lambda k: _post(b"/v2/repository/models/%ff/load", b"", k),
}


def test_edge_inputs_get_a_4xx_json_error_never_a_500(live):
    server, key, _ = live
    wrong = {}
    for case, request in SWEEP.items():
        status, headers, body = _raw(server.port, request(key))
        json_error = headers.get("content-type", "").startswith("application/json") and (
            "error" in json.loads(body))
        if status >= 500 or (status >= 400 and not json_error):
            wrong[case] = (status, body[:200])
    assert not wrong, wrong


# Requests uvicorn's parser refuses before the gateway sees them (``litegate serve``).
MALFORMED = {
    "negative Content-Length": b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: -5\r\n\r\n{}",
    "huge Content-Length": b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999999\r\n\r\n{}",
    "huge chunk size": b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFF\r\nabc\r\n",
    "raw non-UTF-8 path": b"GET /v1/models/\xff\xfe HTTP/1.1\r\nHost: t\r\n\r\n",
    "raw non-UTF-8 query": b"GET /healthz?\xff HTTP/1.1\r\nHost: t\r\n\r\n",
}


def test_requests_the_http_parser_refuses_get_a_json_400(home):
    # Before: uvicorn answered these with a text/plain "Invalid HTTP request received."
    port = free_port()
    with serving("--port", str(port), home=home):
        for name, request in MALFORMED.items():
            status, headers, body = _raw(port, request)
            assert status == 400, (name, status, body)
            assert headers["content-type"] == "application/json", (name, headers)
            assert json.loads(body) == {"error": "malformed HTTP request"}, name
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
