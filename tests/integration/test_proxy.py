"""The OpenAI-compatible proxy against a real gateway and a fake upstream, driven by
the official ``openai`` client."""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest

from tests.helpers.cli import apply_config, chat_config, create_key


def client(server, key: str, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, **kw)


def test_round_trip_substitutes_model_and_hides_client_key(home, fake_upstream, make_gateway):
    assert apply_config(home, chat_config(fake_upstream.base_url))[0] == 0
    key = create_key(home)
    server = make_gateway()
    c = client(server, key)
    raw = c.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hi"}]
    )
    resp = raw.parse()
    assert resp.choices[0].message.content == "hello from small-model"
    assert resp.usage.total_tokens == 12
    assert fake_upstream.calls[-1]["model"] == "small-model"
    seen = fake_upstream.headers_seen[-1]
    assert key not in " ".join(seen.values())
    assert "Authorization" not in seen
    assert raw.headers["x-litegate-variant"] == "small-model"
    assert float(raw.headers["x-litegate-overhead-ms"]) >= 0
    assert raw.headers["x-request-id"]
    models = c.models.list()
    assert [m.id for m in models.data] == ["chat"]


def test_upstream_api_key_comes_from_env(home, fake_upstream, make_gateway, monkeypatch):
    monkeypatch.setenv("LG_TEST_UPSTREAM_KEY", "sk-upstream")
    cfg = chat_config(fake_upstream.base_url)
    cfg["upstreams"][0]["api_key_env"] = "LG_TEST_UPSTREAM_KEY"
    apply_config(home, cfg)
    key = create_key(home)
    server = make_gateway()
    client(server, key).chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}])
    assert fake_upstream.headers_seen[-1]["Authorization"] == "Bearer sk-upstream"


def test_streaming_first_chunk_arrives_before_upstream_finishes(home, make_gateway):
    from tests.helpers.servers import run_fake_upstream

    with run_fake_upstream(chunk_delay_s=0.3, chunks=5) as fake:
        apply_config(home, chat_config(fake.base_url))
        key = create_key(home)
        server = make_gateway()
        stream = client(server, key).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        first_at = None
        parts = []
        for chunk in stream:
            if first_at is None:
                first_at = time.perf_counter()
            parts.append(chunk.choices[0].delta.content)
        assert "".join(parts) == "tok0 tok1 tok2 tok3 tok4 "
        # A buffering gateway could only hand over the first chunk after the upstream had
        # sent the last one (>= 1.2 s later); ordering, not a time bound, so load cannot flake it.
        assert fake.stream_finished and first_at < fake.stream_finished[-1]


def test_upstream_dying_mid_stream_raises_in_client(home, fake_upstream, make_gateway):
    cfg = chat_config(fake_upstream.base_url)
    cfg["routes"][0]["variants"][0]["model"] = "die-model"
    apply_config(home, cfg)
    key = create_key(home)
    server = make_gateway()
    stream = client(server, key).chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    got = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            got.append(chunk.choices[0].delta.content)
    assert got == ["tok0 ", "tok1 "]
    assert "interrupted" in str(info.value)


@pytest.mark.parametrize(
    ("model", "exc", "status"),
    [("error-400", openai.BadRequestError, 400), ("error-500", openai.InternalServerError, 500)],
)
def test_upstream_errors_pass_through(home, fake_upstream, make_gateway, model, exc, status):
    cfg = chat_config(fake_upstream.base_url)
    cfg["upstreams"][0]["max_retries"] = 0
    cfg["routes"][0]["variants"][0]["model"] = model
    apply_config(home, cfg)
    key = create_key(home)
    server = make_gateway()
    with pytest.raises(exc) as info:
        client(server, key).chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == status
    assert "upstream says" in str(info.value)


def test_error_statuses_and_classes(home, fake_upstream, make_gateway):
    cfg = chat_config(fake_upstream.base_url, limits=["2/minute"])
    cfg["routes"].append(
        {"name": "other", "variants": [{"upstream": "mock", "model": "x", "weight": 1}]}
    )
    apply_config(home, cfg)
    key = create_key(home, "scoped", "--routes", "chat")
    server = make_gateway(max_body_bytes=2048)
    msgs = [{"role": "user", "content": "x"}]
    with pytest.raises(openai.AuthenticationError):
        client(server, "lg-wrong").chat.completions.create(model="chat", messages=msgs)
    with pytest.raises(openai.PermissionDeniedError):
        client(server, key).chat.completions.create(model="other", messages=msgs)
    with pytest.raises(openai.NotFoundError) as nf:
        client(server, key).chat.completions.create(model="nope", messages=msgs)
    assert nf.value.body["code"] == "model_not_found"
    r = httpx.post(server.url + "/v1/chat/completions", content=b"{not json",
                   headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = httpx.post(server.url + "/v1/chat/completions", content=b"x" * 5000,
                   headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 413 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(server.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                   json={"model": "chat", "messages": msgs})
    assert r.status_code == 200
    assert r.headers["x-ratelimit-limit"] == "2" and r.headers["x-ratelimit-remaining"] == "1"
    client(server, key).chat.completions.create(model="chat", messages=msgs)
    with pytest.raises(openai.RateLimitError) as rl:
        client(server, key).chat.completions.create(model="chat", messages=msgs)
    headers = rl.value.response.headers
    assert int(headers["retry-after"]) >= 1
    assert headers["x-ratelimit-remaining"] == "0" and headers["x-ratelimit-limit"] == "2"
    assert int(headers["x-ratelimit-reset"]) > time.time()


def test_unreachable_upstream_is_502_and_timeout_504(home, fake_upstream, make_gateway):
    from tests.helpers.servers import free_port

    cfg = {
        "upstreams": [
            {"name": "dead", "kind": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1",
             "max_retries": 1},
            {"name": "slow", "kind": "openai", "base_url": fake_upstream.base_url, "timeout_s": 0.5},
        ],
        "routes": [
            {"name": "dead", "variants": [{"upstream": "dead", "model": "m"}]},
            {"name": "slow", "variants": [{"upstream": "slow", "model": "slow-model"}]},
        ],
    }
    apply_config(home, cfg)
    key = create_key(home)
    server = make_gateway()
    msgs = [{"role": "user", "content": "x"}]
    with pytest.raises(openai.APIStatusError) as bad:
        client(server, key).chat.completions.create(model="dead", messages=msgs)
    assert bad.value.status_code == 502 and bad.value.body["code"] == "bad_gateway"
    with pytest.raises(openai.APIStatusError) as slow:
        client(server, key).chat.completions.create(model="slow", messages=msgs)
    assert slow.value.status_code == 504 and slow.value.body["code"] == "upstream_timeout"


def test_circuit_opens_then_fallback_route_serves(home, fake_upstream, make_gateway):
    from tests.helpers.servers import free_port

    cfg = {
        "upstreams": [
            {"name": "dead", "kind": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1",
             "max_retries": 0},
            {"name": "mock", "kind": "openai", "base_url": fake_upstream.base_url},
        ],
        "routes": [
            {"name": "primary", "variants": [{"upstream": "dead", "model": "m"}]},
            {"name": "withfb", "variants": [{"upstream": "dead", "model": "m"}], "fallback": "backup"},
            {"name": "backup", "variants": [{"upstream": "mock", "model": "backup-model"}]},
        ],
    }
    apply_config(home, cfg)
    key = create_key(home)
    server = make_gateway(breaker_failures=3, breaker_reset_s=30)
    msgs = [{"role": "user", "content": "x"}]
    statuses = []
    for _ in range(5):
        r = httpx.post(server.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                       json={"model": "primary", "messages": msgs})
        statuses.append(r.status_code)
    assert statuses[:3] == [502, 502, 502] and statuses[3:] == [503, 503]
    assert r.json()["error"]["code"] == "circuit_open" and "retry-after" in r.headers
    r = httpx.post(server.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                   json={"model": "withfb", "messages": msgs})
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == "hello from backup-model"
    assert r.headers["x-litegate-fallback"] == "backup"
    assert r.headers["x-litegate-variant"] == "backup-model"


def test_cache_hit_miss_bypass_and_coalescing(home, make_gateway):
    from tests.helpers.servers import run_fake_upstream

    with run_fake_upstream(slow_s=0.5) as fake:
        cfg = chat_config(fake.base_url, cache={"ttl_s": 60})
        cfg["routes"][0]["variants"][0]["model"] = "slow-model"
        apply_config(home, cfg)
        key = create_key(home)
        server = make_gateway()
        h = {"Authorization": f"Bearer {key}"}
        body = {"model": "chat", "messages": [{"role": "user", "content": "same"}]}
        results: list[httpx.Response] = []

        def call() -> None:
            results.append(httpx.post(server.url + "/v1/chat/completions", headers=h, json=body, timeout=10))

        threads = [threading.Thread(target=call) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [r.status_code for r in results] == [200] * 8
        assert len(fake.calls) == 1, "concurrent identical misses must be coalesced"
        assert sorted(r.headers["x-cache"] for r in results) == ["HIT"] * 7 + ["MISS"]
        assert len({r.content for r in results}) == 1
        # Key order does not matter for the cache key.
        r = httpx.post(server.url + "/v1/chat/completions", headers=h,
                       json={"messages": body["messages"], "model": "chat"})
        assert r.headers["x-cache"] == "HIT" and len(fake.calls) == 1
        r = httpx.post(server.url + "/v1/chat/completions", headers={**h, "Cache-Control": "no-cache"},
                       json=body, timeout=10)
        assert r.headers["x-cache"] == "BYPASS" and len(fake.calls) == 2
        # Errors are not cached.
        cfg["routes"][0]["variants"][0]["model"] = "error-500"
        cfg["upstreams"][0]["max_retries"] = 0
        apply_config(home, cfg)
        time.sleep(0.5)
        err_body = {"model": "chat", "messages": [{"role": "user", "content": "err"}]}
        for _ in range(2):
            r = httpx.post(server.url + "/v1/chat/completions", headers=h, json=err_body)
            assert r.status_code == 500 and r.headers["x-cache"] == "MISS"
        # Streams bypass the cache.
        r = httpx.post(server.url + "/v1/chat/completions", headers=h, json={**body, "stream": True})
        assert r.headers["x-cache"] == "BYPASS"
