"""POST /v1/aggregate: parallel fan-out with per-branch status and timeouts."""

from __future__ import annotations

import time

import httpx

from tests.helpers.cli import apply_config, create_key
from tests.helpers.servers import run_fake_upstream
from tests.helpers.windows import clear_of_minute_edge


def test_aggregate_fans_out_in_parallel_with_per_branch_status(home, make_gateway):
    with run_fake_upstream(slow_s=6.0) as fake:
        cfg = {
            "upstreams": [{"name": "mock", "kind": "openai", "base_url": fake.base_url}],
            "routes": [
                {"name": "a", "variants": [{"upstream": "mock", "model": "model-a"}]},
                {"name": "b", "variants": [{"upstream": "mock", "model": "model-b"}],
                 "limits": ["1/minute"]},
                {"name": "slow", "variants": [{"upstream": "mock", "model": "slow-model"}]},
                {"name": "secret", "variants": [{"upstream": "mock", "model": "x"}]},
            ],
        }
        apply_config(home, cfg)
        key = create_key(home, "agg", "--routes", "a,b,slow")
        server = make_gateway()
        h = {"Authorization": f"Bearer {key}"}
        body = {
            "routes": ["a", "b", "slow", "secret", "missing"],
            "request": {"messages": [{"role": "user", "content": "hi"}]},
            "timeout_s": 0.5,
        }
        clear_of_minute_edge()  # exact counts: not across a window boundary
        t0 = time.perf_counter()
        r = httpx.post(server.url + "/v1/aggregate", headers=h, json=body, timeout=10)
        elapsed = time.perf_counter() - t0
        assert r.status_code == 200
        results = {x["route"]: x for x in r.json()["results"]}
        assert results["a"]["status"] == 200
        assert results["a"]["body"]["choices"][0]["message"]["content"] == "hello from model-a"
        assert results["b"]["status"] == 200 and results["b"]["variant"] == "model-b"
        assert results["slow"]["status"] == 504
        assert results["secret"]["status"] == 403
        assert results["missing"]["status"] == 404
        # The slow branch answers after 6 s; its 0.5 s timeout ends the whole call long
        # before (a wide margin: a loaded CI machine must not turn this into a timing test).
        assert elapsed < 4.0, "the branches' timeout must end the call, not the slow upstream"
        # Route limits apply per branch: b allows one request a minute.
        r = httpx.post(server.url + "/v1/aggregate", headers=h,
                       json={"routes": ["a", "b"], "request": {"messages": []}})
        results = {x["route"]: x for x in r.json()["results"]}
        assert results["a"]["status"] == 200 and results["b"]["status"] == 429
        for bad in ({"routes": []}, {"routes": ["a"], "request": {"stream": True}},
                    {"routes": ["a", "a"], "request": {}}, {"nope": 1}):
            r = httpx.post(server.url + "/v1/aggregate", headers=h, json=bad)
            assert r.status_code == 400, bad
        assert httpx.post(server.url + "/v1/aggregate", json=body).status_code == 401


def test_shadow_variant_gets_a_copy_and_its_answer_is_ignored(home, fake_upstream, make_gateway):
    cfg = {
        "upstreams": [{"name": "mock", "kind": "openai", "base_url": fake_upstream.base_url}],
        "routes": [{
            "name": "chat",
            "variants": [{"upstream": "mock", "model": "live-model", "weight": 1},
                         {"upstream": "mock", "model": "error-500", "weight": 0, "name": "candidate"}],
            "shadow": "candidate",
        }],
    }
    assert apply_config(home, cfg)[0] == 0
    key = create_key(home)
    server = make_gateway()
    for _ in range(3):
        r = httpx.post(server.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                       json={"model": "chat", "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 200 and r.headers["x-litegate-variant"] == "live-model"
    deadline = time.time() + 2
    while time.time() < deadline and sum(c["model"] == "error-500" for c in fake_upstream.calls) < 3:
        time.sleep(0.02)
    assert sum(c["model"] == "error-500" for c in fake_upstream.calls) == 3
    text = httpx.get(server.url + "/metrics").text
    assert 'litegate_shadow_requests_total{route="chat",status="500",variant="candidate"} 3.0' in text
    bad = {**cfg, "routes": [{**cfg["routes"][0], "shadow": "ghost"}]}
    code, _, err = apply_config(home, bad)
    assert code == 1 and "routes[0].shadow" in err
