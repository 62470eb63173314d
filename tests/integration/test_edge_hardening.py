"""The edge holds against a hostile client: limits cover every request a key makes,
metric labels are configured names only, upstream answers are bounded, and a
cancelled call never wedges a circuit breaker."""

from __future__ import annotations

import time

import httpx
from aiohttp import web

from tests.helpers.cli import apply_config, create_key
from tests.helpers.servers import run_fake_upstream, serve_aiohttp
from tests.helpers.windows import clear_of_minute_edge

MSGS = [{"role": "user", "content": "hi"}]


def test_cancelled_half_open_trial_does_not_wedge_the_circuit(home, make_gateway):
    with run_fake_upstream(slow_s=3.0) as fake:
        apply_config(home, {
            "upstreams": [{"name": "mock", "kind": "openai", "base_url": fake.base_url,
                           "max_retries": 0}],
            "routes": [
                {"name": "bad", "variants": [{"upstream": "mock", "model": "error-502"}]},
                {"name": "slow", "variants": [{"upstream": "mock", "model": "slow-model"}]},
                {"name": "ok", "variants": [{"upstream": "mock", "model": "fine"}]},
            ],
        })
        key = create_key(home)
        server = make_gateway(breaker_failures=1, breaker_reset_s=0.3)
        h = {"Authorization": f"Bearer {key}"}
        url = server.url + "/v1/chat/completions"
        assert httpx.post(url, headers=h, json={"model": "bad", "messages": MSGS}).status_code == 502
        assert httpx.post(url, headers=h, json={"model": "ok", "messages": MSGS}).status_code == 503
        time.sleep(0.4)
        # The half-open trial is a branch that times out: cancelled, no outcome.
        r = httpx.post(server.url + "/v1/aggregate", headers=h, timeout=10,
                       json={"routes": ["slow"], "request": {"messages": MSGS}, "timeout_s": 0.3})
        assert r.json()["results"][0]["status"] == 504
        r = httpx.post(url, headers=h, json={"model": "ok", "messages": MSGS})
        assert r.status_code == 200, r.text


def test_unknown_models_count_against_the_keys_limit(home, fake_upstream, make_gateway):
    apply_config(home, {
        "upstreams": [{"name": "mock", "kind": "openai", "base_url": fake_upstream.base_url}],
        "routes": [{"name": "chat", "variants": [{"upstream": "mock", "model": "m"}]}],
    })
    key = create_key(home, "limited", "--limit", "10/minute")
    server = make_gateway()
    clear_of_minute_edge()  # exact counts: not across a window boundary
    h = {"Authorization": f"Bearer {key}"}
    statuses = [
        httpx.post(server.url + "/v1/chat/completions", headers=h,
                   json={"model": f"nope-{i}", "messages": MSGS}).status_code
        for i in range(15)
    ] + [httpx.post(server.url + "/v2/models/nope/infer", headers=h, json={}).status_code]
    assert statuses[:10] == [404] * 10
    assert statuses[10:] == [429] * 6
    # ... and the known route is limited by the same key-wide count.
    r = httpx.post(server.url + "/v1/chat/completions", headers=h, json={"model": "chat", "messages": MSGS})
    assert r.status_code == 429 and not fake_upstream.calls


def test_aggregate_branches_count_against_the_keys_limit(home, fake_upstream, make_gateway):
    routes = [f"r{i}" for i in range(16)]
    apply_config(home, {
        "upstreams": [{"name": "mock", "kind": "openai", "base_url": fake_upstream.base_url}],
        "routes": [{"name": r, "variants": [{"upstream": "mock", "model": r}]} for r in routes],
    })
    key = create_key(home, "fan", "--limit", "3/minute")
    server = make_gateway()
    clear_of_minute_edge()  # exact counts: not across a window boundary
    h = {"Authorization": f"Bearer {key}"}
    statuses = []
    for _ in range(3):
        r = httpx.post(server.url + "/v1/aggregate", headers=h, timeout=10,
                       json={"routes": routes, "request": {"messages": MSGS}})
        assert r.status_code == 200
        statuses += [b["status"] for b in r.json()["results"]]
    assert len(fake_upstream.calls) == 3
    assert sorted(statuses).count(200) == 3 and statuses.count(429) == 45
    # A branch to an unknown route is counted too, before its 404.
    r = httpx.post(server.url + "/v1/aggregate", headers=h,
                   json={"routes": ["missing"], "request": {"messages": MSGS}})
    assert r.json()["results"][0]["status"] == 429


def test_client_chosen_names_never_become_metric_labels(home, fake_upstream, make_gateway):
    apply_config(home, {
        "upstreams": [{"name": "mock", "kind": "openai", "base_url": fake_upstream.base_url}],
        "routes": [{"name": "chat", "variants": [{"upstream": "mock", "model": "m"}]}],
    })
    key = create_key(home)
    server = make_gateway()
    h = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=server.url, headers=h) as c:
        for i in range(200):
            c.post("/v1/chat/completions", json={"model": f"zz-unique-{i}", "messages": MSGS})
            c.post(f"/v2/models/zz-v2-{i}/infer", json={"inputs": []})
        c.post("/v1/aggregate", json={"routes": ["zz-agg"], "request": {"messages": MSGS}})
        assert c.post("/v1/chat/completions", json={"model": "chat", "messages": MSGS}).status_code == 200
        text = httpx.get(server.url + "/metrics").text
    assert "zz-" not in text
    assert 'route="chat"' in text and 'route="-"' in text
    # 400 unknown-name requests add one fixed series, not 400.
    assert text.count("litegate_requests_total{") <= 6


def _huge_upstream(size: int) -> web.Application:
    """Answers ``size`` bytes: with a Content-Length on /v1/chat/completions, chunked
    (length unknown up front) on /v1/completions, and as a v2 infer answer."""
    blob = b"x" * size

    async def sized(request: web.Request) -> web.Response:
        return web.Response(body=blob, content_type="application/json")

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, size, 65536):
            await resp.write(blob[i:i + 65536])
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", sized)
    app.router.add_post("/v1/completions", chunked)
    app.router.add_post("/v2/models/big/infer", chunked)
    return app


def test_upstream_answers_are_bounded_or_streamed(home, make_gateway):
    size = 3 * 1024 * 1024
    with serve_aiohttp(_huge_upstream(size)) as port:
        apply_config(home, {
            "upstreams": [
                {"name": "llm", "kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1"},
                {"name": "triton", "kind": "v2", "base_url": f"http://127.0.0.1:{port}"},
            ],
            "routes": [
                {"name": "chat", "variants": [{"upstream": "llm", "model": "m"}]},
                {"name": "big", "variants": [{"upstream": "triton", "model": "big"}]},
            ],
        })
        key = create_key(home)
        server = make_gateway(max_upstream_body_bytes=1024 * 1024)
        h = {"Authorization": f"Bearer {key}"}
        for path in ("/v1/chat/completions", "/v1/completions"):
            r = httpx.post(server.url + path, headers=h,
                           json={"model": "chat", "messages": MSGS, "prompt": "x"})
            assert r.status_code == 502, (path, r.status_code)
            err = r.json()["error"]
            assert err["code"] == "upstream_body_too_large" and "1048576 bytes" in err["message"]
        # A remote v2 answer is relayed as it arrives, so the bound does not apply to it.
        r = httpx.post(server.url + "/v2/models/big/infer", headers=h, json={"inputs": []},
                       timeout=30)
        assert r.status_code == 200 and len(r.content) == size


def test_a_route_asked_through_the_wrong_api_is_a_400(home, fake_upstream, make_gateway):
    apply_config(home, {
        "upstreams": [{"name": "mock", "kind": "openai", "base_url": fake_upstream.base_url},
                      {"name": "triton", "kind": "v2", "base_url": "http://127.0.0.1:9"}],
        "routes": [{"name": "chat", "variants": [{"upstream": "mock", "model": "m"}]},
                   {"name": "tensors", "variants": [{"upstream": "triton", "model": "m"}]}],
    })
    key = create_key(home)
    server = make_gateway()
    h = {"Authorization": f"Bearer {key}"}
    r = httpx.post(server.url + "/v2/models/chat/infer", headers=h, json={"inputs": []})
    assert r.status_code == 400 and "use the /v1 API" in r.json()["error"]
    r = httpx.post(server.url + "/v1/chat/completions", headers=h,
                   json={"model": "tensors", "messages": MSGS})
    assert r.status_code == 400 and "use the /v2 inference API" in r.json()["error"]["message"]


def test_refused_requests_count_against_the_keys_limit(home, fake_upstream, make_gateway):
    """A malformed body (JSON or form) and an oversize one are refused before the limits
    step, and used to cost the key nothing: a key past its limit could keep the gateway
    reading and parsing bodies. Now each is counted against the key's own limits first
    (429 once they are spent), then refused. An out-of-scope route stays a 403."""
    apply_config(home, {
        "upstreams": [{"name": "mock", "kind": "openai", "base_url": fake_upstream.base_url}],
        "routes": [{"name": r, "variants": [{"upstream": "mock", "model": "m"}]}
                   for r in ("chat", "other")],
    })
    key = create_key(home, "limited", "--limit", "5/minute", "--routes", "chat")
    server = make_gateway()
    clear_of_minute_edge()  # exact counts: not across a window boundary
    h = {"Authorization": f"Bearer {key}"}
    form = {"content-type": "multipart/form-data; boundary=b0undary", **h}
    with httpx.Client(base_url=server.url, headers=h) as c:
        refused = [
            c.post("/v1/chat/completions", content=b'{"model": ').status_code,
            c.post("/v1/audio/transcriptions", content=b"junk", headers=form).status_code,
            c.post("/v1/chat/completions", content=b"x" * (2 * 1024 * 1024)).status_code,
            c.post("/v1/chat/completions", content=b"[1]").status_code,
            c.post("/v1/embeddings", content=b"{}").status_code,
        ]
        assert refused == [400, 400, 413, 400, 400]
        after = [
            c.post("/v1/chat/completions", content=b'{"model": '),
            c.post("/v1/audio/transcriptions", content=b"junk", headers=form),
            c.post("/v1/chat/completions", json={"model": "chat", "messages": MSGS}),
        ]
        assert c.post("/v1/chat/completions",
                      json={"model": "other", "messages": MSGS}).status_code == 403
    assert [r.status_code for r in after] == [429] * 3
    assert all(r.headers.get("retry-after") for r in after)
    assert not fake_upstream.calls


def test_refused_aggregate_bodies_count_against_the_keys_limit(home, fake_upstream, make_gateway):
    """``/v1/aggregate`` is not itself counted (each branch is), so a malformed, invalid
    or oversize aggregate body (no branch at all) used to cost the key nothing. It is now
    counted against the key's own limits like any refused body: 429 once they are spent."""
    apply_config(home, {
        "upstreams": [{"name": "mock", "kind": "openai", "base_url": fake_upstream.base_url}],
        "routes": [{"name": "chat", "variants": [{"upstream": "mock", "model": "m"}]}],
    })
    key = create_key(home, "limited", "--limit", "4/minute")
    server = make_gateway()
    clear_of_minute_edge()  # exact counts: not across a window boundary
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}) as c:
        bodies = [
            b'{"routes": ',
            b'{"routes": [], "request": {}}',
            b'{"routes": ["chat"], "request": {}, "bogus": 1}',
            b"x" * (2 * 1024 * 1024),
        ]
        refused = [c.post("/v1/aggregate", content=b).status_code for b in bodies]
        assert refused == [400, 400, 400, 413]
        after = [c.post("/v1/aggregate", content=b) for b in bodies[:3]]
        good = c.post("/v1/aggregate", json={"routes": ["chat"], "request": {"messages": MSGS}})
    assert [r.status_code for r in after] == [429] * 3
    assert all(r.headers.get("retry-after") for r in after)
    assert good.status_code == 200 and good.json()["results"][0]["status"] == 429
    assert not fake_upstream.calls
