"""Semantic cache end to end: the real gateway, the demo MiniLM model embedding prompts,
an upstream that counts its calls and echoes the question, the official ``openai``
client, and a real redis-server shared by two gateway processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
import yaml
from aiohttp import web

from litegate.demo import DEMO_MODEL, setup_demo_model
from litegate.settings import Settings
from tests.helpers.cli import apply_config, create_key, run_cli, serving
from tests.helpers.servers import free_port, serve_aiohttp, wait_ready
from tests.helpers.services import redis_server

QUESTION = "How do I reset my password?"
PARAPHRASE = "What's the way to reset my password?"
UNRELATED = "What is the tallest mountain in the world?"


class EchoUpstream:
    """An OpenAI-compatible upstream answering ``answer to: <last user message>``;
    ``please fail`` in the message gets a 500."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.calls.append(body)
        question = body["messages"][-1]["content"]
        if "please fail" in question:
            return web.json_response({"error": {"message": "boom", "type": "server_error"}},
                                     status=500)
        answer = f"answer to: {question}"
        if body.get("stream"):
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1,
                     "model": body["model"], "choices": [
                         {"index": 0, "delta": {"role": "assistant", "content": answer},
                          "finish_reason": "stop"}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode())
            return resp
        return web.json_response({
            "id": "c1", "object": "chat.completion", "created": 1, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
        })


@pytest.fixture
def upstream() -> Iterator[EchoUpstream]:
    echo = EchoUpstream()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", echo.chat)
    with serve_aiohttp(app) as port:
        echo.port = port
        yield echo


def config(base_url: str, **semantic: Any) -> dict[str, Any]:
    sc = {"embedding_model": DEMO_MODEL, "threshold": 0.9} | semantic
    variants = [{"upstream": "mock", "model": "small-model"}]
    return {
        "upstreams": [{"name": "mock", "kind": "openai", "base_url": base_url, "timeout_s": 5},
                      {"name": "local", "kind": "onnx"}],
        "routes": [{"name": "chat", "variants": variants, "semantic_cache": sc},
                   {"name": "plain", "variants": variants}],
    }


def prepare(home: Path, doc: dict[str, Any]) -> None:
    asyncio.run(setup_demo_model(Settings.load(home=home)))
    code, _, err = apply_config(home, doc)
    assert code == 0, err


def client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


def ask(c: openai.OpenAI, question: str, route: str = "chat", **extra: Any) -> tuple[str, Any]:
    """(the answer's text, the response headers)."""
    raw = c.chat.completions.with_raw_response.create(
        model=route, messages=[{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": question}], **extra)
    return raw.parse().choices[0].message.content or "", raw.headers


def metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name + "{") and line.split("}")[0] == f"{name}{{{want}":
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture
def gateway(home, upstream, make_gateway):
    prepare(home, config(upstream.base_url))
    keys = create_key(home, "alice"), create_key(home, "bob")
    server = make_gateway()
    wait_ready(server.url)
    return server, *keys


def test_a_paraphrase_is_answered_from_the_cache_without_the_upstream(gateway, upstream):
    server, alice, _ = gateway
    c = client(server.url, alice)
    answer, headers = ask(c, QUESTION)
    assert (answer, headers["x-cache"]) == (f"answer to: {QUESTION}", "MISS")
    assert "x-cache-similarity" not in headers
    answer, headers = ask(c, PARAPHRASE)
    assert answer == f"answer to: {QUESTION}"  # the stored answer, not a new one
    assert headers["x-cache"] == "SEMANTIC-HIT"
    assert 0.9 <= float(headers["x-cache-similarity"]) <= 1.0
    assert len(headers["x-cache-similarity"].split(".")[1]) == 4
    assert len(upstream.calls) == 1
    assert metric(server.url, "litegate_semantic_cache_total", route="chat", result="hit") == 1
    assert metric(server.url, "litegate_semantic_cache_total", route="chat", result="miss") == 1
    assert metric(server.url, "litegate_semantic_cache_entries", route="chat") == 1


def test_a_streamed_hit_is_replayed_as_server_sent_events(gateway, upstream):
    server, alice, _ = gateway
    c = client(server.url, alice)
    ask(c, QUESTION)
    with c.chat.completions.with_streaming_response.create(
        model="chat", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": PARAPHRASE}],
    ) as resp:
        assert resp.headers["x-cache"] == "SEMANTIC-HIT"
        assert resp.headers["content-type"].startswith("text/event-stream")
        chunks = list(resp.parse())
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == f"answer to: {QUESTION}"
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 12
    # A streamed miss goes to the upstream as it comes, and is not stored.
    stream = c.chat.completions.create(model="chat", stream=True,
                                       messages=[{"role": "user", "content": UNRELATED}])
    assert "".join(ch.choices[0].delta.content or "" for ch in stream) == f"answer to: {UNRELATED}"
    assert ask(c, UNRELATED)[1]["x-cache"] == "MISS"
    assert len(upstream.calls) == 3


def test_unrelated_numbers_and_parameters_miss(gateway, upstream):
    server, alice, _ = gateway
    c = client(server.url, alice)
    ask(c, QUESTION)
    assert ask(c, UNRELATED)[1]["x-cache"] == "MISS"
    assert ask(c, QUESTION, temperature=0.2)[1]["x-cache"] == "MISS"
    assert ask(c, QUESTION, max_tokens=5)[1]["x-cache"] == "MISS"
    # Pairs that embed above the threshold (0.946 and 0.993) but ask something else.
    assert ask(c, "Give me 3 tips for studying.")[1]["x-cache"] == "MISS"
    assert ask(c, "Give me 10 tips for studying.")[1]["x-cache"] == "MISS"
    assert ask(c, "Is it safe to eat raw eggs?")[1]["x-cache"] == "MISS"
    assert ask(c, "Is it not safe to eat raw eggs?")[1]["x-cache"] == "MISS"
    assert len(upstream.calls) == 8
    # Each of them is now stored under its own parameters.
    assert ask(c, PARAPHRASE, temperature=0.2)[1]["x-cache"] == "SEMANTIC-HIT"
    assert len(upstream.calls) == 8


def test_long_prompts_and_no_cache_bypass(gateway, upstream):
    server, alice, _ = gateway
    c = client(server.url, alice)
    long = "Please summarise this: " + "the gateway caches answers " * 80  # > 256 tokens
    for _ in range(2):
        assert ask(c, long)[1]["x-cache"] == "BYPASS"  # the model would truncate it
    ask(c, QUESTION)
    answer, headers = ask(c, PARAPHRASE, extra_headers={"Cache-Control": "no-cache"})
    assert (answer, headers["x-cache"]) == (f"answer to: {PARAPHRASE}", "BYPASS")
    assert len(upstream.calls) == 4
    assert metric(server.url, "litegate_semantic_cache_total", route="chat", result="bypass") == 3


def test_keys_do_not_share_unless_the_route_says_so(home, upstream, make_gateway):
    doc = config(upstream.base_url)
    doc["routes"].append({"name": "shared", "variants": doc["routes"][0]["variants"],
                          "semantic_cache": {"embedding_model": DEMO_MODEL,
                                             "shared_across_keys": True}})
    prepare(home, doc)
    keys = [create_key(home, n) for n in ("alice", "bob")]
    server = make_gateway()
    wait_ready(server.url)
    alice, bob = (client(server.url, k) for k in keys)
    ask(alice, QUESTION)
    assert ask(bob, PARAPHRASE)[1]["x-cache"] == "MISS"
    assert ask(alice, QUESTION, route="shared")[1]["x-cache"] == "MISS"
    answer, headers = ask(bob, PARAPHRASE, route="shared")
    assert (answer, headers["x-cache"]) == (f"answer to: {QUESTION}", "SEMANTIC-HIT")
    assert len(upstream.calls) == 3


def test_errors_are_not_stored_and_hits_count_against_request_limits(home, upstream,
                                                                     make_gateway):
    doc = config(upstream.base_url)
    doc["routes"][0]["limits"] = ["3/minute"]
    prepare(home, doc)
    key = create_key(home)
    server = make_gateway()
    wait_ready(server.url)
    c = client(server.url, key)
    with pytest.raises(openai.InternalServerError):
        ask(c, "Delete my account, please fail.")
    with pytest.raises(openai.InternalServerError):
        ask(c, "Delete my account, please fail!")  # the error was not stored: asked again
    assert len(upstream.calls) == 2
    assert ask(c, QUESTION)[1]["x-cache"] == "MISS"  # the third request of the minute
    with pytest.raises(openai.RateLimitError):
        ask(c, PARAPHRASE)  # would be a hit, but the key's route limit comes first
    assert len(upstream.calls) == 3


def test_max_entries_bounds_the_index_and_evicts_the_least_recently_used(home, upstream,
                                                                           make_gateway):
    prepare(home, config(upstream.base_url, max_entries=3))
    key = create_key(home)
    server = make_gateway()
    wait_ready(server.url)
    c = client(server.url, key)
    for q in (QUESTION, UNRELATED, "Who painted the Mona Lisa?"):
        assert ask(c, q)[1]["x-cache"] == "MISS"
    assert ask(c, PARAPHRASE)[1]["x-cache"] == "SEMANTIC-HIT"  # QUESTION is now the newest
    assert ask(c, "Why is the sky blue?")[1]["x-cache"] == "MISS"  # evicts UNRELATED
    assert metric(server.url, "litegate_semantic_cache_entries", route="chat") == 3
    assert ask(c, "Which artist painted the Mona Lisa?")[1]["x-cache"] == "SEMANTIC-HIT"
    # UNRELATED's paraphrase (similarity 0.953) would have hit had it not been evicted.
    assert ask(c, "What's the tallest mountain on Earth?")[1]["x-cache"] == "MISS"
    assert metric(server.url, "litegate_semantic_cache_entries", route="chat") == 3
    assert len(upstream.calls) == 5


def test_a_route_without_the_option_is_unaffected(gateway, upstream):
    server, alice, _ = gateway
    c = client(server.url, alice)
    for q in (QUESTION, QUESTION, PARAPHRASE):
        answer, headers = ask(c, q, route="plain")
        assert answer == f"answer to: {q}"
        assert "x-cache" not in headers and "x-cache-similarity" not in headers
    assert len(upstream.calls) == 3
    assert "route=\"plain\"" not in "".join(
        line for line in httpx.get(server.url + "/metrics").text.splitlines()
        if line.startswith("litegate_semantic_cache"))


def test_the_exact_cache_answers_first_and_an_embedding_route_resolves(home, upstream,
                                                                        make_gateway):
    doc = config(upstream.base_url, embedding_model="embedder")
    doc["routes"][0]["cache"] = {"ttl_s": 60}
    doc["routes"].append({"name": "embedder", "variants": [{"upstream": "local",
                                                            "model": DEMO_MODEL}]})
    prepare(home, doc)
    key = create_key(home)
    server = make_gateway()
    wait_ready(server.url)
    c = client(server.url, key)
    assert ask(c, QUESTION)[1]["x-cache"] == "MISS"
    assert ask(c, QUESTION)[1]["x-cache"] == "HIT"  # exact: no embedding needed
    assert ask(c, PARAPHRASE)[1]["x-cache"] == "SEMANTIC-HIT"
    assert len(upstream.calls) == 1
    exported = run_cli("config", "export", home=home)[1]
    assert "semantic_cache:\n    embedding_model: embedder" in exported
    assert "threshold: 0.9" in exported


def test_invalid_settings_are_refused_with_clear_messages(home, upstream):
    asyncio.run(setup_demo_model(Settings.load(home=home)))
    doc = config(upstream.base_url, threshold=1.5, max_entries=0, ttl_s=-1)
    code, _, err = apply_config(home, doc)
    assert code != 0
    assert "routes[0].semantic_cache.threshold: must be a cosine similarity in (0, 1]" in err
    assert "routes[0].semantic_cache.max_entries: must be between 1 and 100000" in err
    assert "routes[0].semantic_cache.ttl_s: must be > 0" in err
    code, _, err = apply_config(home, config(upstream.base_url, embedding_model="nope"))
    assert code != 0 and "no local model or route named 'nope'" in err
    code, _, err = apply_config(home, config(upstream.base_url, embedding_model="plain"))
    assert code != 0 and "route 'plain' serves no local model" in err
    code, _, err = apply_config(home, config(upstream.base_url, thresold=0.8))
    assert code != 0 and "thresold" in err
    doc = config(upstream.base_url)
    doc["routes"][0]["variants"] = [{"upstream": "local", "model": DEMO_MODEL}]
    code, _, err = apply_config(home, doc)
    assert code != 0 and "applies to chat routes" in err
    assert "semantic_cache" not in run_cli("config", "export", home=home)[1]


@contextlib.contextmanager
def second_process(home: Path, redis_url: str) -> Iterator[str]:
    port = free_port()
    with serving("--port", str(port), "--redis", redis_url, home=home):
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        yield url


def test_replicas_share_entries_through_redis_within_the_bound(home, upstream, make_gateway):
    prepare(home, config(upstream.base_url, max_entries=2))
    key = create_key(home)
    with redis_server() as redis_url, second_process(home, redis_url) as other:
        here = make_gateway(redis=redis_url)
        wait_ready(here.url)
        a, b = client(here.url, key), client(other, key)
        r = redis.Redis.from_url(redis_url)
        lru = "litegate:semcache:lru:chat"

        def stored(condition: Callable[[], bool]) -> None:
            """An answer is stored after it reached the client: wait for the store."""
            for _ in range(100):
                if condition():
                    return
                time.sleep(0.05)

        assert ask(a, QUESTION)[1]["x-cache"] == "MISS"
        stored(lambda: r.zcard(lru) == 1)
        first = r.zrange(lru, 0, -1)
        answer, headers = ask(b, PARAPHRASE)  # another process: the entry came from Redis
        assert (answer, headers["x-cache"]) == (f"answer to: {QUESTION}", "SEMANTIC-HIT")
        assert ask(b, UNRELATED)[1]["x-cache"] == "MISS"
        stored(lambda: r.zcard(lru) == 2)
        assert ask(b, "Who painted the Mona Lisa?")[1]["x-cache"] == "MISS"
        stored(lambda: not set(first) & set(r.zrange(lru, 0, -1)))
        assert r.zcard(lru) == 2
        assert len(r.keys("litegate:semcache:a:*")) == 2  # the evicted answer is gone too
        # QUESTION was used last before the two misses, so it went first.
        assert ask(a, "Which artist painted the Mona Lisa?")[1]["x-cache"] == "SEMANTIC-HIT"
        assert ask(a, PARAPHRASE)[1]["x-cache"] == "MISS"
        assert len(upstream.calls) == 4


def test_the_console_route_form_edits_and_keeps_the_setting(home, upstream, make_gateway):
    from tests.e2e.support import browser_fields, create_console_user, http_login

    prepare(home, config(upstream.base_url, max_entries=500, shared_across_keys=True))
    create_console_user(home, "alice", "alice-password")
    gateway = make_gateway()
    console = http_login(gateway.url, "alice", "alice-password")
    route_id = re.search(r'href="/admin/routes/(\d+)">chat<',
                         console.get("/admin/routes").text).group(1)  # type: ignore[union-attr]
    page = console.get(f"/admin/routes/{route_id}").text
    fields = browser_fields(page, 'id="route-form"')
    assert (fields["semantic_embedding_model"], fields["semantic_threshold"],
            fields["semantic_max_entries"], fields["semantic_ttl_s"]) == (
        DEMO_MODEL, "0.9", "500", "3600")
    assert re.search(r'name="semantic_shared" value="on" checked', page)

    def exported() -> dict[str, Any]:
        out = run_cli("config", "export", home=home)[1]
        return {r["name"]: r for r in yaml.safe_load(out)["routes"]}["chat"]

    # Another edit keeps the setting (the checkbox ticked, as a browser sends it).
    r = console.post(f"/admin/routes/{route_id}",
                     data=fields | {"description": "edited"})
    assert r.status_code == 303, r.text
    assert exported()["semantic_cache"] == {
        "embedding_model": DEMO_MODEL, "threshold": 0.9, "max_entries": 500, "ttl_s": 3600.0,
        "shared_across_keys": True}
    # Edited: threshold up, sharing off (checkbox unticked).
    fields = browser_fields(console.get(f"/admin/routes/{route_id}").text, 'id="route-form"')
    del fields["semantic_shared"]
    r = console.post(f"/admin/routes/{route_id}", data=fields | {"semantic_threshold": "0.95"})
    assert r.status_code == 303, r.text
    assert (exported()["semantic_cache"]["threshold"],
            exported()["semantic_cache"]["shared_across_keys"]) == (0.95, False)
    # Refused with the service's messages, on the form.
    fields = browser_fields(console.get(f"/admin/routes/{route_id}").text, 'id="route-form"')
    assert "semantic_shared" not in fields and fields["semantic_threshold"] == "0.95"
    for bad, message in ((("semantic_threshold", "1.5"), "threshold: must be a cosine similarity"),
                         (("semantic_embedding_model", "nope"), "no local model or route named")):
        r = console.post(f"/admin/routes/{route_id}", data=fields | dict([bad]))
        assert r.status_code == 400 and message in r.text, r.text
    # Off.
    r = console.post(f"/admin/routes/{route_id}", data=fields | {"semantic_embedding_model": ""})
    assert r.status_code == 303, r.text
    assert "semantic_cache" not in exported()
